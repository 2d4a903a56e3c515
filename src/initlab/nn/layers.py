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
                 need_input_grad: bool = True) -> np.ndarray | None:
        """Back-propagate the loss gradient w.r.t. this layer's output (or, for a loss that
        fuses the activation, w.r.t. its pre-activation z); fills ``self.grads``."""
        x, z, a = self._cache
        dz = grad if wrt_preactivation else self.activation.backward(z, a, grad)
        # dW = x^T dz, summed over samples; x may be shared (n, fan_in) by every replica
        self.grads["W"] = _T(x) @ dz
        if self.use_bias:
            # the sum over samples as a matmul with ones: far faster than sum(axis=1) here
            self.grads["b"] = np.ones((1, dz.shape[-2]), dtype=dz.dtype) @ dz
        self.last_dz = dz  # for backward hooks
        if not need_input_grad:
            return None
        W = self.params["W"]
        if self.units == 1:  # an outer product: broadcasting beats a matmul with inner dim 1
            return _T(W * _T(dz))
        return _T(W @ _T(dz))  # dx = dz W^T, feature-major like z


def _T(a: np.ndarray) -> np.ndarray:
    """The transpose of the last two axes (a view)."""
    return np.swapaxes(a, -1, -2)


def feature_major(a: np.ndarray) -> np.ndarray:
    """The same (..., n, features) array, stored feature-major (as the layers compute)."""
    return _T(np.ascontiguousarray(_T(a)))
