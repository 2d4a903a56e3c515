"""Optimizers. Every update is elementwise, so each replica moves exactly as it would alone."""

from __future__ import annotations

import abc
import copy
from collections.abc import Mapping
from typing import Any

import numpy as np

from initlab._validate import check_positive, from_registry


class Optimizer(abc.ABC):
    name = "optimizer"

    def __init__(self, learning_rate: float):
        self.learning_rate = check_positive("learning_rate", learning_rate)
        self.state: list[dict[str, np.ndarray]] = []

    def step(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        """Update every parameter array in place."""
        if not self.state:
            self.state = [{} for _ in params]
        for p, g, s in zip(params, grads, self.state, strict=True):
            self.update(p, g, s)

    @abc.abstractmethod
    def update(self, p: np.ndarray, g: np.ndarray, state: dict[str, np.ndarray]) -> None:
        """Update one parameter array in place from its gradient (g may be overwritten)."""

    def __repr__(self) -> str:
        return f"{self.name}(learning_rate={self.learning_rate})"


class SGD(Optimizer):
    """Gradient descent, with heavy-ball momentum when momentum > 0 (v = m v + g; p -= lr v),
    or Nesterov's variant (p -= lr (g + m v)), as PyTorch's SGD."""

    name = "sgd"

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.0,
                 nesterov: bool = False):
        super().__init__(learning_rate)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1); got momentum={momentum!r}")
        if nesterov and momentum == 0.0:
            raise ValueError("nesterov=True needs momentum > 0; got momentum=0.0")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)

    def update(self, p, g, state):
        if self.momentum:
            v = state.get("velocity")
            v = state["velocity"] = g.copy() if v is None else np.add(self.momentum * v, g, out=v)
            g = g + self.momentum * v if self.nesterov else v
            p -= self.learning_rate * g
            return
        g *= self.learning_rate
        p -= g


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction."""

    name = "adam"

    def __init__(self, learning_rate: float = 0.001, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8):
        super().__init__(learning_rate)
        for label, beta in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"{label} must be in [0, 1); got {label}={beta!r}")
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), check_positive("eps", eps)

    def update(self, p, g, state):
        if not state:
            state.update(m=np.zeros_like(p), v=np.zeros_like(p), t=np.zeros(()))
        state["t"] += 1
        t = float(state["t"])
        m, v = state["m"], state["v"]
        m *= self.beta1
        m += (1.0 - self.beta1) * g
        v *= self.beta2
        v += (1.0 - self.beta2) * g * g
        # Algorithm 1 of the paper (and PyTorch): eps is added to sqrt of the corrected v
        denom = np.sqrt(v / (1.0 - self.beta2**t)) + self.eps
        p -= self.learning_rate / (1.0 - self.beta1**t) * m / denom


_REGISTRY: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam}
ALIASES = {"gd": "sgd", "gradient_descent": "sgd"}


def available() -> list[str]:
    return sorted(_REGISTRY)


def get(spec: str | Mapping[str, Any] | Optimizer, **defaults: Any) -> Optimizer:
    """An optimizer from a name, a ``{"name": ..., **params}`` mapping or an instance;
    ``defaults`` (such as fit's learning_rate) fill parameters the spec does not give."""
    if isinstance(spec, Optimizer):
        return spec
    return from_registry(spec, _REGISTRY, ALIASES, "optimizer", **defaults)


def take_state(opt: Optimizer | None, index: list[int]) -> Optimizer | None:
    """A copy of ``opt`` whose state holds only the given replicas (every state array but a
    scalar step count has the replica axis first)."""
    if opt is None:
        return None
    sub = copy.copy(opt)
    sub.state = [{k: v[index] if v.ndim else v.copy() for k, v in s.items()} for s in opt.state]
    return sub


def merge_state(opt: Optimizer, parts: list[Optimizer]) -> Optimizer:
    """``opt`` with the state of parts (taken over consecutive replica chunks) joined."""
    if not parts[0].state:
        return opt
    merged = copy.copy(opt)
    merged.state = [{k: np.concatenate([p.state[i][k] for p in parts]) if v.ndim else v
                     for k, v in entry.items()} for i, entry in enumerate(parts[0].state)]
    return merged
