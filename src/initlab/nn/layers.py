"""The Dense layer, ``a = phi(x @ W + b)``, for R replicas at once.

Parameters carry a leading replica axis: W is (R, fan_in, units), b is (R, 1, units), inputs
are (R, n, fan_in) or, for data shared by every replica, (n, fan_in). ``matmul`` broadcasts over
the replica axis, so R independent networks run as one.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np

from initlab import initializers
from initlab.nn import activations

InitSpec = str | Mapping[str, Any] | initializers.Initializer | Any


class Dense:
    """A fully connected layer.

    Args:
        units: output width.
        activation: name, ``{"name": ..., **params}`` or Activation (default linear).
        init: weight initializer spec (default glorot_uniform, as Keras); ``initializer`` is
            accepted for the same thing, as the sources write it.
        bias_init: bias initializer spec (default zeros); ``torch_default`` gets the fan_in.
        use_bias: whether the layer has a bias at all.
    """

    def __init__(self, units: int, activation: Any = "linear", init: InitSpec = None, *,
                 initializer: InitSpec = None, bias_init: InitSpec = "zeros",
                 use_bias: bool = True):
        if isinstance(units, bool) or not isinstance(units, int | np.integer) or units < 1:
            raise ValueError(f"units must be a positive int; got units={units!r}")
        if init is not None and initializer is not None:
            raise ValueError("give the weight initializer as init= or initializer=, not both")
        self.units = int(units)
        self.activation = activations.get(activation)
        self.init = initializers.get(init if init is not None else
                                     initializer if initializer is not None else
                                     "glorot_uniform")
        self.bias_init = initializers.get(bias_init)
        self.use_bias = bool(use_bias)
        self.fan_in: int | None = None
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.inits: list[initializers.Initializer] = []  # the weight init of each replica
        self._cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.last_dz: np.ndarray | None = None

    def __repr__(self) -> str:
        fan_in = "?" if self.fan_in is None else self.fan_in
        return f"Dense({fan_in} -> {self.units}, {self.activation!r}, init={self.init!r})"

    # --- parameters ---------------------------------------------------------------------------

    def build(self, fan_in: int, replicas: int, dtype: np.dtype) -> None:
        """Allocate (R, ...) parameters; :meth:`init_replica` then fills each replica."""
        self.fan_in = int(fan_in)
        self.params = {"W": np.zeros((replicas, fan_in, self.units), dtype=dtype)}
        if self.use_bias:
            self.params["b"] = np.zeros((replicas, 1, self.units), dtype=dtype)
        self.inits = [self.init] * replicas

    def init_replica(self, r: int, rng: np.random.Generator,
                     init: initializers.Initializer | None = None) -> None:
        """Draw replica r's weights then bias from ``rng``, exactly as a stand-alone layer."""
        init = init or self.init
        self.inits[r] = init
        W = self.params["W"]
        W[r] = init((self.fan_in, self.units), rng=rng, dtype=W.dtype)
        if self.use_bias:
            extra = {"fan_in": self.fan_in} if self.bias_init.needs_fan_in else {}
            b = self.params["b"]
            b[r, 0] = self.bias_init((self.units,), rng=rng, dtype=b.dtype, **extra)

    def take(self, index: list[int]) -> Dense:
        """A copy of this layer holding only the given replicas."""
        sub = copy.copy(self)
        sub.params = {k: v[index] for k, v in self.params.items()}
        sub.inits = [self.inits[i] for i in index]
        sub.grads, sub._cache, sub.last_dz = {}, None, None
        return sub

    # --- forward and backward -----------------------------------------------------------------

    def forward(self, x: np.ndarray, *, activate: bool = True) -> np.ndarray:
        """The layer's output; with ``activate=False`` (an output layer whose loss fuses the
        activation) only the pre-activation z, which is returned."""
        # z = x W + b, computed as z^T = W^T x^T: arrays are (R, n, units) to the reader but
        # feature-major in memory, where BLAS runs these short, wide products much faster
        z = _T(_T(self.params["W"]) @ _T(x))
        if self.use_bias:
            z += self.params["b"]
        a = self.activation.forward(z) if activate else None
        self._cache = (x, z, a)
        return z if a is None else a

    def backward(self, grad: np.ndarray, *, wrt_preactivation: bool = False,
                 need_input_grad: bool = True,
                 need_param_grads: bool = True) -> np.ndarray | None:
        """Back-propagate the loss gradient w.r.t. this layer's output (or, for a loss that
        fuses the activation, w.r.t. its pre-activation z); fills ``self.grads`` (emptied
        without ``need_param_grads``)."""
        x, z, a = self._cache
        dz = grad if wrt_preactivation else self.activation.backward(z, a, grad)
        self.last_dz = dz  # for backward hooks
        if not need_param_grads:
            self.grads = {}
        else:
            self._param_grads(x, dz)
        if not need_input_grad:
            return None
        W = self.params["W"]
        if self.units == 1:  # an outer product: broadcasting beats a matmul with inner dim 1
            return _T(W * _T(dz))
        return _T(W @ _T(dz))  # dx = dz W^T, feature-major like z

    def _param_grads(self, x: np.ndarray, dz: np.ndarray) -> None:
        # dW = x^T dz, summed over samples; x may be shared (n, fan_in) by every replica
        self.grads["W"] = _T(x) @ dz
        if self.use_bias:
            # the sum over samples as a matmul with ones: far faster than sum(axis=1) here
            self.grads["b"] = np.ones((1, dz.shape[-2]), dtype=dz.dtype) @ dz


def _T(a: np.ndarray) -> np.ndarray:
    """The transpose of the last two axes (a view)."""
    return a.swapaxes(-1, -2)


def feature_major(a: np.ndarray) -> np.ndarray:
    """The same (..., n, features) array, stored feature-major (as the layers compute)."""
    return _T(np.ascontiguousarray(_T(a)))


class Residual:
    """A residual block ``y = x + scale * branch(x)``: a branch of Dense layers (the last one
    linear, back to the input's width) beside the identity, and a trainable scalar multiplier
    per replica (Fixup's, 1 at init). Its parameters are the branch layers' (keys "0.W", "0.b",
    "1.W", ...) and "scale"; with a zero last branch layer the block is the identity map.
    """

    def __init__(self, branch: list[Dense]):
        if len(branch) < 1 or not all(isinstance(layer, Dense) for layer in branch):
            raise ValueError(f"branch must be a non-empty list of Dense layers; got {branch!r}")
        self.branch = list(branch)
        self.activation = activations.get("linear")  # the block adds no nonlinearity after
        self.fan_in: int | None = None
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self._cache: tuple | None = None
        self._h: np.ndarray | None = None  # the branch's output, for the scale's gradient
        self.last_dz: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"Residual({' -> '.join(map(repr, self.branch))})"

    @property
    def units(self) -> int:
        return self.branch[-1].units

    @property
    def init(self) -> initializers.Initializer:
        return self.branch[0].init

    @property
    def inits(self) -> list[initializers.Initializer]:
        return self.branch[0].inits

    def _collect(self, scale: np.ndarray) -> None:
        self.params = {f"{i}.{k}": v for i, layer in enumerate(self.branch)
                       for k, v in layer.params.items()}
        self.params["scale"] = scale

    def build(self, fan_in: int, replicas: int, dtype: np.dtype) -> None:
        if self.branch[-1].units != fan_in:
            raise ValueError(f"a residual branch must end at its input's width {fan_in}; "
                             f"its last layer has units={self.branch[-1].units}")
        self.fan_in = int(fan_in)
        width = fan_in
        for layer in self.branch:
            layer.build(width, replicas, dtype)
            width = layer.units
        self._collect(np.ones((replicas, 1, 1), dtype=dtype))

    def init_replica(self, r: int, rng: np.random.Generator,
                     init: initializers.Initializer | None = None) -> None:
        for layer in self.branch:
            layer.init_replica(r, rng, init)
        self.params["scale"][r] = 1.0

    def take(self, index: list[int]) -> Residual:
        sub = copy.copy(self)
        sub.branch = [layer.take(index) for layer in self.branch]
        sub._collect(self.params["scale"][index])
        sub.grads, sub._cache, sub.last_dz = {}, None, None
        return sub

    def forward(self, x: np.ndarray, *, activate: bool = True) -> np.ndarray:
        h = x
        for layer in self.branch:
            h = layer.forward(h)
        y = x + self.params["scale"] * h
        self._cache, self._h = (x, y, y), h
        return y

    def backward(self, grad: np.ndarray, *, wrt_preactivation: bool = False,
                 need_input_grad: bool = True, need_param_grads: bool = True) -> np.ndarray:
        # y = x + s h(x): dL/ds = sum(grad * h), dL/dh = s grad, dL/dx = grad + h'(x)^T dL/dh
        scale = self.params["scale"]
        self.grads = ({"scale": np.sum(grad * self._h, axis=(-2, -1), keepdims=True)}
                      if need_param_grads else {})
        g = grad * scale
        for layer in reversed(self.branch):
            g = layer.backward(g, need_param_grads=need_param_grads)
        for i, layer in enumerate(self.branch):
            for key, value in layer.grads.items():
                self.grads[f"{i}.{key}"] = value
        self.last_dz = grad
        return grad + g
