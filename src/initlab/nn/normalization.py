"""Normalization layers, ``a = phi(gamma * xhat + beta)``, for R replicas at once.

``xhat = (x - mean) / sqrt(var + eps)`` standardizes the input over one axis: a sample's
features for :class:`LayerNorm` (Ba, Kiros & Hinton 2016), each feature's samples in the batch
for :class:`BatchNorm` (Ioffe & Szegedy 2015); the variance is the biased one, as PyTorch.
Both keep the width (``units`` is the input's, set by ``build``); gamma and beta are
(R, 1, width), 1 and 0 at init. ``BatchNorm(activation="relu")`` after ``Dense(k)`` is the usual
Linear-BN-ReLU block.

A norm layer has no weight for an initializer to draw or a scheme to rescale, so
``weight_key`` and ``bias_key`` are None (probes report no weight statistics for it; LSUV and
Fixup refuse it) although gamma and beta are trained like any parameter; and ``init_replica``
draws nothing from the stream, so adding a norm layer leaves every other layer's draws as they
were. ``inits`` is empty: no initializer is used.
"""

from __future__ import annotations

import copy
from typing import Any, Self

import numpy as np

from initlab import initializers
from initlab._validate import check_positive
from initlab.nn import activations
from initlab.nn.contract import Gradients, Trace

# every parameter and buffer at init (PyTorch's): the identity affine map, unit running variance
_START = {"gamma": 1.0, "beta": 0.0, "running_mean": 0.0, "running_var": 1.0}


class _Normalization:
    """What the two layers share; a subclass says over which axis and from which statistics."""

    axis = -1  # the axis the statistics are taken over: -1 features, -2 samples
    buffer_names: tuple[str, ...] = ()
    weight_key: str | None = None
    bias_key: str | None = None

    def __init__(self, activation: Any = "linear", eps: float = 1e-5):
        self.activation = activations.get(activation)
        self.eps = check_positive("eps", eps)
        # 0 until build, not an error: Sequential.add checks the contract with isinstance,
        # which on Python 3.11 reads every member (a raising property would fail it)
        self.units = 0
        self.fan_in: int | None = None
        self.params: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.inits: list[initializers.Initializer] = []  # no weight is drawn

    def __repr__(self) -> str:
        width = "?" if self.fan_in is None else self.fan_in
        return f"{type(self).__name__}({width}, {self.activation!r})"

    # --- parameters ---------------------------------------------------------------------------

    def build(self, fan_in: int, replicas: int, dtype: np.dtype) -> None:
        self.fan_in = self.units = int(fan_in)
        shape = (replicas, 1, self.units)
        self.params = {k: np.full(shape, _START[k], dtype=dtype) for k in ("gamma", "beta")}
        self.buffers = {k: np.full(shape, _START[k], dtype=dtype) for k in self.buffer_names}

    def init_replica(self, r: int, rng: np.random.Generator,
                     init: initializers.Initializer | None = None) -> None:
        """Reset replica r to gamma 1, beta 0 (and fresh running statistics). Draws nothing
        from ``rng`` and ignores ``init``: a model-wide init variant reaches every layer."""
        for name, value in (*self.params.items(), *self.buffers.items()):
            value[r] = _START[name]

    def take(self, index: list[int]) -> Self:
        sub = copy.copy(self)
        sub.params = {k: v[index] for k, v in self.params.items()}
        sub.buffers = {k: v[index] for k, v in self.buffers.items()}
        return sub

    @property
    def sublayers(self) -> tuple[()]:
        return ()

    def unit_params(self) -> None:
        """None: two units with equal (gamma, beta) still read different input features, so
        their parameters do not make them duplicates (a probe counts no distinct units)."""
        return None

    # --- forward and backward -----------------------------------------------------------------

    def statistics(self, x: np.ndarray, training: bool
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        """(mean, x - mean, biased variance, whether they are x's own and so depend on it).
        The arithmetic of ``x.mean`` and ``x.var``, with x - mean computed once."""
        n = x.shape[self.axis]
        mean = np.add.reduce(x, axis=self.axis, keepdims=True)
        mean /= n
        centred = x - mean
        var = np.add.reduce(centred * centred, axis=self.axis, keepdims=True)
        var /= n
        return mean, centred, var, True

    def forward(self, x: np.ndarray, *, training: bool = False,
                activate: bool = True) -> Trace:
        mean, centred, var, own = self.statistics(x, training)
        inv = np.reciprocal(np.sqrt(var + self.eps))
        xhat = centred * inv  # a new array: statistics may return x - running_mean's view
        z = self.params["gamma"] * xhat
        z += self.params["beta"]
        return Trace(x, z, self.activation.forward(z) if activate else None,
                     saved=(xhat, inv, own))

    def backward(self, trace: Trace, grad: np.ndarray, *, wrt_preactivation: bool = False,
                 need_input_grad: bool = True, need_param_grads: bool = True) -> Gradients:
        xhat, inv, own = trace.saved
        if wrt_preactivation:
            dz = grad
        else:
            assert trace.a is not None, "backward through phi needs a forward with activate=True"
            dz = self.activation.backward(trace.z, trace.a, grad)
        grads: dict[str, np.ndarray] = {}
        if need_param_grads:  # z = gamma xhat + beta, summed over the samples
            grads["gamma"] = np.sum(dz * xhat, axis=-2, keepdims=True)
            grads["beta"] = np.sum(dz, axis=-2, keepdims=True)
        dx = None
        if need_input_grad:
            g = dz * self.params["gamma"]  # dL/dxhat, a new array
            if own:  # through the mean and variance too (Ioffe & Szegedy 2015, section 3):
                # dx = inv (g - mean(g) - xhat mean(g xhat)), the means over the normalized axis
                n = g.shape[self.axis]
                mean_g = np.add.reduce(g, axis=self.axis, keepdims=True)
                mean_g /= n
                mean_gx = np.add.reduce(g * xhat, axis=self.axis, keepdims=True)
                mean_gx /= n
                g -= mean_g
                g -= xhat * mean_gx
            dx = np.multiply(g, inv, out=g)
        return Gradients(dx, dz, grads)


class LayerNorm(_Normalization):
    """Layer normalization (Ba, Kiros & Hinton 2016): each sample standardized over its
    features, then ``phi(gamma * xhat + beta)``; the same in training and evaluation. As
    ``torch.nn.LayerNorm(width, eps)`` followed by the activation.

    Args:
        activation: applied after the affine map (default linear).
        eps: added to the variance before the square root.
    """

    axis = -1


class BatchNorm(_Normalization):
    """Batch normalization (Ioffe & Szegedy 2015): each feature standardized over the batch,
    then ``phi(gamma * xhat + beta)``. As ``torch.nn.BatchNorm1d(width, eps, momentum)``
    followed by the activation, each replica with its own statistics.

    A training forward pass (``training=True``) uses the batch's mean and biased variance and
    updates ``buffers["running_mean"]`` and ``buffers["running_var"]`` (R, 1, width) by
    ``new = (1 - momentum) old + momentum batch``, the variance unbiased, as PyTorch; an
    evaluation pass uses the running statistics (0 and 1 at init).

    Args:
        activation: applied after the affine map (default linear).
        eps: added to the variance before the square root.
        momentum: the weight of each batch in the running statistics, in (0, 1].
    """

    axis = -2
    buffer_names = ("running_mean", "running_var")

    def __init__(self, activation: Any = "linear", eps: float = 1e-5, momentum: float = 0.1):
        super().__init__(activation, eps)
        self.momentum = check_positive("momentum", momentum)
        if self.momentum > 1:
            raise ValueError(f"momentum must be in (0, 1]; got momentum={momentum!r}")

    def statistics(self, x: np.ndarray, training: bool
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        if not training:
            mean = self.buffers["running_mean"]
            return mean, x - mean, self.buffers["running_var"], False
        n = x.shape[-2]
        if n < 2:
            raise ValueError(f"BatchNorm needs a batch of at least 2 samples in training (as "
                             f"PyTorch); got {n}")
        mean, centred, var, _ = super().statistics(x, training)
        m = self.momentum
        for name, batch in (("running_mean", mean), ("running_var", var * (n / (n - 1)))):
            running = self.buffers[name]
            running *= 1.0 - m
            running += m * batch
        return mean, centred, var, True
