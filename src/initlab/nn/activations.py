"""Activations: each forward with its derivative right under it.

``forward(z) -> a`` and ``backward(z, a, da) -> dz`` (the chain rule through the activation;
``da`` may be overwritten). Calling an activation applies its forward, so any of them can be
handed to :func:`initlab.fans.calculate_gain` or the theory module as a plain function.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import special

from initlab._validate import check_positive, from_registry


class Activation(abc.ABC):
    name = "activation"
    params: dict[str, float] = {}

    @abc.abstractmethod
    def forward(self, z: np.ndarray) -> np.ndarray:
        """a = phi(z)."""

    @abc.abstractmethod
    def backward(self, z: np.ndarray, a: np.ndarray | None, da: np.ndarray) -> np.ndarray:
        """dz = phi'(z) * da (da may be overwritten); ``a`` is phi(z), where the pass kept it
        (every activation whose derivative reads it is applied in the passes that need it)."""

    def __call__(self, z: Any) -> np.ndarray:
        return self.forward(np.asarray(z, dtype=float))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.name}({args})" if args else self.name

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.params == other.params

    def __hash__(self) -> int:
        return hash((self.name, tuple(self.params.items())))


class Linear(Activation):
    name = "linear"

    def forward(self, z):
        return z

    def backward(self, z, a, da):
        return da


class Sigmoid(Activation):
    name = "sigmoid"

    def forward(self, z):
        return special.expit(z)

    def backward(self, z, a, da):
        da *= a * (1.0 - a)  # s' = s (1 - s)
        return da


class Tanh(Activation):
    name = "tanh"

    def forward(self, z):
        return np.tanh(z)

    def backward(self, z, a, da):
        da *= 1.0 - a * a
        return da


class ReLU(Activation):
    name = "relu"

    def forward(self, z):
        return np.maximum(z, 0.0)

    def backward(self, z, a, da):
        da *= z > 0  # derivative 0 at the kink, as PyTorch
        return da


class LeakyReLU(Activation):
    name = "leaky_relu"

    def __init__(self, slope: float = 0.01):
        self.params = {"slope": check_positive("slope", slope, allow_zero=True)}
        self.slope = self.params["slope"]

    def forward(self, z):
        return np.where(z > 0, z, self.slope * z)

    def backward(self, z, a, da):
        da *= np.where(z > 0, 1.0, self.slope)
        return da


class ELU(Activation):
    name = "elu"

    def __init__(self, alpha: float = 1.0):
        self.params = {"alpha": check_positive("alpha", alpha)}
        self.alpha = self.params["alpha"]

    def forward(self, z):
        return np.where(z > 0, z, self.alpha * np.expm1(np.minimum(z, 0.0)))

    def backward(self, z, a, da):
        da *= np.where(z > 0, 1.0, a + self.alpha)  # alpha (e^z - 1)' = a + alpha
        return da


class SELU(Activation):
    """Klambauer et al. 2017: the constants that make N(0, 1) a fixed point with LeCun init."""

    name = "selu"
    alpha = 1.6732632423543772848170429916717
    scale = 1.0507009873554804934193349852946

    def forward(self, z):
        return self.scale * np.where(z > 0, z, self.alpha * np.expm1(np.minimum(z, 0.0)))

    def backward(self, z, a, da):
        da *= np.where(z > 0, self.scale, a + self.scale * self.alpha)
        return da


class GELU(Activation):
    """The exact GELU, z * Phi(z) (Hendrycks & Gimpel 2016), not the tanh approximation."""

    name = "gelu"

    def forward(self, z):
        return z * special.ndtr(z)

    def backward(self, z, a, da):
        da *= special.ndtr(z) + z * np.exp(-0.5 * z * z) / np.sqrt(2.0 * np.pi)
        return da


class SiLU(Activation):
    name = "silu"

    def forward(self, z):
        return z * special.expit(z)

    def backward(self, z, a, da):
        s = special.expit(z)
        da *= s * (1.0 + z * (1.0 - s))
        return da


class Softplus(Activation):
    name = "softplus"

    def forward(self, z):
        return np.logaddexp(0.0, z)

    def backward(self, z, a, da):
        da *= special.expit(z)
        return da


class Softmax(Activation):
    """Over the last axis; meant for the output layer."""

    name = "softmax"

    def forward(self, z):
        return special.softmax(z, axis=-1)

    def backward(self, z, a, da):
        # Jacobian-vector product: a * (da - <da, a>)
        return a * (da - np.sum(da * a, axis=-1, keepdims=True))


_REGISTRY: dict[str, type[Activation]] = {
    cls.name: cls for cls in (Linear, Sigmoid, Tanh, ReLU, LeakyReLU, ELU, SELU, GELU, SiLU,
                              Softplus, Softmax)
}
ALIASES = {"identity": "linear", "none": "linear", "swish": "silu", "leakyrelu": "leaky_relu"}


def available() -> list[str]:
    return sorted(_REGISTRY)


def get(spec: str | Mapping[str, Any] | Activation | None) -> Activation:
    """An activation from a name, a ``{"name": ..., **params}`` mapping or an instance."""
    if isinstance(spec, Activation):
        return spec
    if spec is None:
        return Linear()
    return from_registry(spec, _REGISTRY, ALIASES, "activation")
