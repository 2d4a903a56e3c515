"""The layer contract: what the model, probes, schemes and gradcheck may rely on in a layer.

A layer holds the parameters of R replicas and nothing of a pass: ``forward`` returns a
:class:`Trace` (what backward needs, and what probes read) and ``backward`` takes it back and
returns :class:`Gradients`. So a layer can be traced twice (a probe batch beside training)
without one pass overwriting the other, and a new layer kind is one class that implements
:class:`Layer`; nothing else in initlab needs to know it exists.

Shapes: inputs and outputs are (R, n, width), or (n, width) for data every replica shares;
every parameter is an array with the replica axis first, (R, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from initlab import initializers
from initlab.nn.activations import Activation


@dataclass
class Trace:
    """One layer's forward pass.

    Attributes:
        x: the layer's input.
        z: its pre-activation (for a block or a normalization layer: the value before the
            layer's own nonlinearity, which for those is the output itself).
        a: its activation, phi(z); None when the pass skipped it (a training pass whose loss
            takes the logits z of the output layer).
        saved: whatever else the layer's backward needs (a block's inner traces, a
            normalization's statistics); not for readers outside the layer.
    """

    x: np.ndarray
    z: np.ndarray
    a: np.ndarray | None
    saved: Any = None

    @property
    def out(self) -> np.ndarray:
        """What the next layer receives: the activation, or z where it was skipped."""
        return self.z if self.a is None else self.a


@dataclass
class Gradients:
    """One layer's backward pass: ``dx`` (None when not asked for), ``dz`` the gradient
    w.r.t. the pre-activation, ``params`` the gradient of every parameter by name (empty when
    parameter gradients were not asked for)."""

    dx: np.ndarray | None
    dz: np.ndarray
    params: dict[str, np.ndarray] = field(default_factory=dict)


@runtime_checkable
class Layer(Protocol):
    """A layer of R replicas. To add a layer kind, implement these members:

    ``units``: output width. ``fan_in``: input width, None until ``build``.
    ``activation``: the nonlinearity applied to ``z`` (``linear`` if none); probes read
    saturation through it and a loss may fuse it.
    ``params``: parameter name -> (R, ...) array, the arrays the optimizer updates in place.
    ``buffers``: name -> (R, ...) array of state the layer updates itself in a training
    forward pass (a batch normalization's running statistics); {} for most layers.
    ``weight_key`` / ``bias_key``: the names in ``params`` of the weight that the layer's
    initializer draws and schemes rescale (a (R, fan_in, units) matrix for a dense layer) and
    of its bias; None where the layer has none.
    ``inits``: the weight initializer each replica was drawn with (for reports).
    ``sublayers``: the layers inside a container (a residual block's branch); () for a leaf.

    ``build(fan_in, replicas, dtype)`` allocates the parameters;
    ``init_replica(r, rng, init=None)`` fills replica r from its own stream, drawing exactly
    what a stand-alone layer would (``init`` overrides the weight initializer);
    ``take(index)`` returns a copy holding those replicas (parameters and buffers);
    ``forward(x, *, training, activate=True) -> Trace`` (``activate=False``: the output
    layer's logits only); ``backward(trace, grad, *, wrt_preactivation, need_input_grad,
    need_param_grads) -> Gradients``, where ``grad`` is the loss gradient w.r.t. the layer's
    output, or w.r.t. ``z`` when ``wrt_preactivation``;
    ``unit_params()``: each output unit's own parameters, (R, units, k), for counting
    distinct units (symmetry), or None where units have none of their own.
    """

    fan_in: int | None
    activation: Activation

    @property
    def units(self) -> int: ...

    @property
    def params(self) -> dict[str, np.ndarray]: ...

    @property
    def buffers(self) -> dict[str, np.ndarray]: ...

    @property
    def inits(self) -> list[initializers.Initializer]: ...

    @property
    def weight_key(self) -> str | None: ...

    @property
    def bias_key(self) -> str | None: ...

    @property
    def sublayers(self) -> Sequence[Layer]: ...

    def build(self, fan_in: int, replicas: int, dtype: np.dtype) -> None: ...

    def init_replica(self, r: int, rng: np.random.Generator,
                     init: initializers.Initializer | None = None) -> None: ...

    def take(self, index: list[int]) -> Layer: ...

    def forward(self, x: np.ndarray, *, training: bool = False,
                activate: bool = True) -> Trace: ...

    def backward(self, trace: Trace, grad: np.ndarray, *, wrt_preactivation: bool = False,
                 need_input_grad: bool = True, need_param_grads: bool = True) -> Gradients: ...

    def unit_params(self) -> np.ndarray | None: ...


def T(a: np.ndarray) -> np.ndarray:
    """The transpose of the last two axes (a view; the method is 4x cheaper than np.swapaxes)."""
    return a.swapaxes(-1, -2)


def feature_major(a: np.ndarray) -> np.ndarray:
    """The same (..., n, features) array, stored feature-major (as the layers compute)."""
    return T(np.ascontiguousarray(T(a)))
