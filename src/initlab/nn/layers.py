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
from initlab.nn.contract import Gradients, T, Trace

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
        self.buffers: dict[str, np.ndarray] = {}  # a dense layer has none
        self.inits: list[initializers.Initializer] = []  # the weight init of each replica

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
        return sub

    weight_key = "W"

    @property
    def bias_key(self) -> str | None:
        return "b" if self.use_bias else None

    @property
    def sublayers(self) -> tuple[()]:
        return ()

    def unit_params(self) -> np.ndarray:
        W = T(self.params["W"])  # (R, units, fan_in): a unit's incoming weights as a row
        return np.concatenate([W, T(self.params["b"])], axis=-1) if self.use_bias else W

    # --- forward and backward -----------------------------------------------------------------

    def forward(self, x: np.ndarray, *, training: bool = False,
                activate: bool = True) -> Trace:
        """z = x W + b and a = phi(z); with ``activate=False`` (an output layer whose loss
        fuses the activation) only z."""
        # computed as z^T = W^T x^T: arrays are (R, n, units) to the reader but feature-major
        # in memory, where BLAS runs these short, wide products much faster
        z = T(T(self.params["W"]) @ T(x))
        if self.use_bias:
            z += self.params["b"]
        return Trace(x, z, self.activation.forward(z) if activate else None)

    def backward(self, trace: Trace, grad: np.ndarray, *, wrt_preactivation: bool = False,
                 need_input_grad: bool = True, need_param_grads: bool = True) -> Gradients:
        # dz = phi'(z) da;  dW = x^T dz (summed over samples);  db = 1^T dz;  dx = dz W^T
        dz = grad if wrt_preactivation else self.activation.backward(trace.z, trace.a, grad)
        grads: dict[str, np.ndarray] = {}
        if need_param_grads:
            grads["W"] = T(trace.x) @ dz  # x may be shared (n, fan_in) by every replica
            if self.use_bias:
                # the sum over samples as a matmul with ones: far faster than sum(axis=1) here
                grads["b"] = np.ones((1, dz.shape[-2]), dtype=dz.dtype) @ dz
        dx = None
        if need_input_grad:
            W = self.params["W"]
            # units == 1 is an outer product: broadcasting beats a matmul with inner dim 1
            dx = T(W * T(dz)) if self.units == 1 else T(W @ T(dz))
        return Gradients(dx, dz, grads)
