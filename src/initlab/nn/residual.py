"""The residual block, ``y = x + scale * branch(x)``: a container of layers like any other layer."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np

from initlab import initializers
from initlab.nn import activations
from initlab.nn.contract import Gradients, Layer, Trace


class Residual:
    """A residual block: a branch of layers (ending at the input's width) beside the identity,
    and a trainable scalar multiplier per replica (Fixup's, 1 at init). Its parameters are the
    branch layers' under ``"{i}.{name}"`` (``"0.W"``, ``"0.b"``, ``"1.W"``, ...) and
    ``"scale"``; with a zero last branch layer the block is the identity map.
    """

    activation = activations.get("linear")  # the block adds no nonlinearity of its own

    def __init__(self, branch: Sequence[Layer]):
        branch = list(branch)
        if not branch or not all(isinstance(layer, Layer) for layer in branch):
            raise ValueError(f"branch must be a non-empty list of layers; got {branch!r}")
        self.branch = branch
        self.fan_in: int | None = None
        self.scale = np.ones((0, 1, 1))

    def __repr__(self) -> str:
        return f"Residual({' -> '.join(map(repr, self.branch))})"

    @property
    def units(self) -> int:
        return self.branch[-1].units

    @property
    def sublayers(self) -> list[Layer]:
        return self.branch

    @property
    def params(self) -> dict[str, np.ndarray]:
        out = {f"{i}.{k}": v for i, layer in enumerate(self.branch)
               for k, v in layer.params.items()}
        out["scale"] = self.scale
        return out

    @property
    def buffers(self) -> dict[str, np.ndarray]:
        return {f"{i}.{k}": v for i, layer in enumerate(self.branch)
                for k, v in layer.buffers.items()}

    @property
    def weight_key(self) -> str | None:
        """The branch's first weight: what the block's initializer draws first."""
        first = self.branch[0].weight_key
        return None if first is None else f"0.{first}"

    bias_key = None

    @property
    def inits(self) -> list[initializers.Initializer]:
        return self.branch[0].inits

    def unit_params(self) -> None:
        return None  # the block's outputs are sums of the identity and the branch, no units

    def build(self, fan_in: int, replicas: int, dtype: np.dtype) -> None:
        width = fan_in
        for layer in self.branch:  # built first: a width-keeping layer knows its units after
            layer.build(width, replicas, dtype)
            width = layer.units
        if width != fan_in:
            raise ValueError(f"a residual branch must end at its input's width {fan_in}; "
                             f"its last layer has units={width}")
        self.fan_in = int(fan_in)
        self.scale = np.ones((replicas, 1, 1), dtype=dtype)

    def init_replica(self, r: int, rng: np.random.Generator,
                     init: initializers.Initializer | None = None) -> None:
        for layer in self.branch:
            layer.init_replica(r, rng, init)
        self.scale[r] = 1.0

    def take(self, index: list[int]) -> Residual:
        sub = copy.copy(self)
        sub.branch = [layer.take(index) for layer in self.branch]
        sub.scale = self.scale[index]
        return sub

    def forward(self, x: np.ndarray, *, training: bool = False,
                activate: bool = True) -> Trace:
        traces = []
        h = x
        for layer in self.branch:
            traces.append(layer.forward(h, training=training))
            h = traces[-1].out
        y = x + self.scale * h
        return Trace(x, y, y, saved=(traces, h))

    def backward(self, trace: Trace, grad: np.ndarray, *, wrt_preactivation: bool = False,
                 need_input_grad: bool = True, need_param_grads: bool = True) -> Gradients:
        # y = x + s h(x): dL/ds = sum(grad * h), dL/dh = s grad, dL/dx = grad + h'(x)^T dL/dh
        traces, h = trace.saved
        grads: dict[str, np.ndarray] = {}
        if need_param_grads:
            grads["scale"] = np.sum(grad * h, axis=(-2, -1), keepdims=True)
        g: np.ndarray | None = grad * self.scale
        for i in range(len(self.branch) - 1, -1, -1):
            assert g is not None  # asked for: every branch layer but the first passes it on
            result = self.branch[i].backward(traces[i], g, need_param_grads=need_param_grads,
                                             need_input_grad=need_input_grad or i > 0)
            grads.update({f"{i}.{k}": v for k, v in result.params.items()})
            g = result.dx
        return Gradients(None if g is None else grad + g, grad, grads)
