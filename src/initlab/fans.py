"""Fans of a weight tensor and the gain of an activation.

The layout rule, the one place it is stated
-------------------------------------------
initlab stores weights so that ``y = x @ W + b`` (Keras, JAX, scikit-learn):

* dense: ``shape == (fan_in, fan_out)``;
* convolution kernels: ``shape == (*receptive_field, in_channels, out_channels)``, e.g.
  ``(kh, kw, c_in, c_out)``; with ``rf = prod(receptive_field)``,
  ``fan_in = c_in * rf`` and ``fan_out = c_out * rf``.

So the input axis is by default ``-2``, the output axis ``-1``, and every leading axis is
receptive field. Other layouts name their axes, as JAX's ``variance_scaling`` does:
``in_axis`` and ``out_axis`` (an axis or a tuple of axes, whose sizes multiply), and
``batch_axis``, axes of independent weights that count in neither fan; every other axis is
receptive field. An attention kernel ``(dim, heads, key_dim)`` with ``in_axis=0,
out_axis=(1, 2)`` has fan_in = dim and fan_out = heads * key_dim (the default rule would read
it as a 1-D conv: fan_in = dim * heads).

PyTorch stores ``(out, in, *k)`` (and transposed convolutions ``(in, out, *k)``); the torch
adapter converts before it asks for fans.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

from initlab._validate import suggest

Mode = Literal["fan_in", "fan_out", "fan_avg", "fan_geo_avg"]
# fan_geo_avg, sqrt(fan_in * fan_out), is JAX's (jax.nn.initializers.variance_scaling)
MODES = ("fan_in", "fan_out", "fan_avg", "fan_geo_avg")
Axes = int | Sequence[int]


def _axes(name: str, axes: Axes, ndim: int) -> tuple[int, ...]:
    """Axes as non-negative ints, each in range for a weight of ``ndim`` dims."""
    try:
        items = (operator.index(axes),) if isinstance(axes, int | np.integer) else \
            tuple(operator.index(a) for a in axes)
    except TypeError:
        raise TypeError(f"{name} must be an int or a tuple of ints; got {name}={axes!r}") from None
    if any(not -ndim <= a < ndim for a in items):
        raise ValueError(f"{name} must name axes of a {ndim}-dim weight; got {name}={axes!r}")
    return tuple(a % ndim for a in items)


def compute_fans(shape: tuple[int, ...], *, in_axis: Axes = -2, out_axis: Axes = -1,
                 batch_axis: Axes = ()) -> tuple[int, int]:
    """Return ``(fan_in, fan_out)`` of a weight of this shape (layout rule in the module doc).

    ``fan_in = in_size * rf`` and ``fan_out = out_size * rf``, ``in_size`` (``out_size``) the
    product of the sizes of ``in_axis`` (``out_axis``), ``rf`` that of the axes in no role
    (``batch_axis`` is in neither). JAX's ``_compute_fans``.

    >>> compute_fans((512, 8, 64), in_axis=0, out_axis=(1, 2))
    (512, 512)
    """
    if _ints(shape) and all(type(a) is int or _ints(a) for a in (in_axis, out_axis, batch_axis)):
        return _fans(shape, in_axis, out_axis, batch_axis)  # hashable: computed once
    return _fans.__wrapped__(shape, in_axis, out_axis, batch_axis)


def _ints(value: object) -> bool:
    return type(value) is tuple and all(type(v) is int for v in value)


@functools.lru_cache(maxsize=4096)
def _fans(shape: Sequence[int], in_axis: Axes, out_axis: Axes, batch_axis: Axes) -> tuple[int, int]:
    """:func:`compute_fans`, cached for hashable arguments (errors are never cached)."""
    try:  # operator.index: a dim of 2.5 is an error, not a silent 2
        shape = tuple(operator.index(s) for s in shape)
    except TypeError:
        raise TypeError(f"shape must be a tuple of ints; got shape={shape!r}") from None
    if len(shape) < 2:
        raise ValueError(
            f"fans need a weight with at least 2 dims (fan_in, fan_out); got shape={shape}"
        )
    roles = {name: _axes(name, axes, len(shape)) for name, axes in
             (("in_axis", in_axis), ("out_axis", out_axis), ("batch_axis", batch_axis))}
    named = [a for axes in roles.values() for a in axes]
    if len(set(named)) < len(named):
        raise ValueError(f"in_axis, out_axis and batch_axis must be distinct axes; got "
                         f"in_axis={in_axis!r}, out_axis={out_axis!r}, batch_axis={batch_axis!r}"
                         f" for shape={shape}")
    size = {name: math.prod(shape[a] for a in axes) for name, axes in roles.items()}
    receptive_field = math.prod(d for a, d in enumerate(shape) if a not in named)
    fan_in = size["in_axis"] * receptive_field
    fan_out = size["out_axis"] * receptive_field
    if fan_in == 0 or fan_out == 0:
        raise ValueError(f"fans must be positive; got shape={shape} (fan_in={fan_in}, "
                         f"fan_out={fan_out})")
    return fan_in, fan_out


def fan(shape: tuple[int, ...], mode: Mode, *, in_axis: Axes = -2, out_axis: Axes = -1,
        batch_axis: Axes = ()) -> float:
    """The fan a variance-scaling scheme divides by: fan_in, fan_out, their mean or (JAX's
    fan_geo_avg) their geometric mean; the axes as in :func:`compute_fans`."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got mode={mode!r}"
                         f"{suggest(mode, MODES)}")
    fan_in, fan_out = compute_fans(shape, in_axis=in_axis, out_axis=out_axis,
                                   batch_axis=batch_axis)
    return {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2,
            "fan_geo_avg": math.sqrt(fan_in * fan_out)}[mode]


def gaussian_mean(f: Callable[[np.ndarray], np.ndarray], std: float = 1.0) -> float:
    """E[f(z)] for z ~ N(0, std^2), by adaptive Gauss-Kronrod quadrature (QUADPACK).

    The integral is split at 0 so that kinks there (ReLU and friends) cost no accuracy.
    """
    from scipy import integrate, stats  # imported here: scipy.stats costs a second at start-up
    def integrand(z: float) -> float:
        return float(f(np.asarray(z * std, dtype=np.float64))) * stats.norm.pdf(z)

    left = integrate.quad(integrand, -np.inf, 0.0, epsabs=1e-13, epsrel=1e-12, limit=200)[0]
    right = integrate.quad(integrand, 0.0, np.inf, epsabs=1e-13, epsrel=1e-12, limit=200)[0]
    return left + right


# PyTorch's table (torch.nn.init.calculate_gain); selu's 3/4 is PyTorch's choice for
# self-normalizing nets initialised with kaiming_normal_(nonlinearity="linear") * 3/4.
_GAIN_TABLE: dict[str, Callable[[float | None], float]] = {
    "linear": lambda p: 1.0,
    "identity": lambda p: 1.0,
    "conv1d": lambda p: 1.0,
    "conv2d": lambda p: 1.0,
    "conv3d": lambda p: 1.0,
    "conv_transpose1d": lambda p: 1.0,
    "conv_transpose2d": lambda p: 1.0,
    "conv_transpose3d": lambda p: 1.0,
    "sigmoid": lambda p: 1.0,
    "tanh": lambda p: 5.0 / 3.0,
    "relu": lambda p: math.sqrt(2.0),
    "leaky_relu": lambda p: math.sqrt(2.0 / (1.0 + (0.01 if p is None else p) ** 2)),
    "selu": lambda p: 3.0 / 4.0,
}


def calculate_gain(
    nonlinearity: str | Callable[[np.ndarray], np.ndarray], param: float | None = None
) -> float:
    """The gain to multiply a unit-variance init by for this nonlinearity.

    A name from PyTorch's table (linear, conv1d-3d and conv_transpose1d-3d 1, sigmoid 1, tanh
    5/3, relu sqrt(2), leaky_relu sqrt(2 / (1 + slope^2)) with ``param`` the slope, default
    0.01, selu 3/4) gives that value.
    Any other activation, a callable or the name of an initlab activation (gelu, silu, softplus,
    elu, ...), gets the numerical gain ``1 / sqrt(E[phi(z)^2])``, z ~ N(0, 1): the factor that
    keeps the second moment of a unit-variance pre-activation's image at 1 (for ReLU this is
    again sqrt(2)).
    """
    if callable(nonlinearity):
        return 1.0 / math.sqrt(gaussian_mean(lambda z: nonlinearity(z) ** 2))
    if not isinstance(nonlinearity, str):
        raise TypeError(f"nonlinearity must be a name or a callable; got {nonlinearity!r}")
    name = nonlinearity.lower()
    if param is not None and (not isinstance(param, int | float) or isinstance(param, bool)):
        raise ValueError(f"param must be a number; got param={param!r}")
    if name in _GAIN_TABLE:
        return _GAIN_TABLE[name](param)
    from initlab.nn import activations  # the engine's activations, for their numerical gain

    if name not in activations.available():
        choices = sorted(set(_GAIN_TABLE) | set(activations.available()))
        raise ValueError(f"unknown nonlinearity={nonlinearity!r}{suggest(name, choices)}; "
                         f"choose from {', '.join(choices)} or pass a callable")
    if param is not None:
        raise ValueError(f"param is used only by leaky_relu; got param={param!r} for "
                         f"nonlinearity={nonlinearity!r}")
    return calculate_gain(activations.get(name))
