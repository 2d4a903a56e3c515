"""Fans of a weight tensor and the gain of an activation.

The layout rule, the one place it is stated
-------------------------------------------
initlab stores weights so that ``y = x @ W + b`` (Keras, JAX, scikit-learn):

* dense: ``shape == (fan_in, fan_out)``;
* convolution kernels: ``shape == (*receptive_field, in_channels, out_channels)``, e.g.
  ``(kh, kw, c_in, c_out)``; with ``rf = prod(receptive_field)``,
  ``fan_in = c_in * rf`` and ``fan_out = c_out * rf``.

So the input axis is always ``-2``, the output axis ``-1``, and every leading axis is receptive
field. PyTorch stores ``(out, in, *k)`` (and transposed convolutions ``(in, out, *k)``); the
torch adapter converts before it asks for fans.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Literal

import numpy as np

from initlab._validate import suggest

Mode = Literal["fan_in", "fan_out", "fan_avg"]
MODES = ("fan_in", "fan_out", "fan_avg")


def compute_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """Return ``(fan_in, fan_out)`` of a weight of this shape (layout rule in the module doc)."""
    try:  # operator.index: a dim of 2.5 is an error, not a silent 2
        shape = tuple(operator.index(s) for s in shape)
    except TypeError:
        raise TypeError(f"shape must be a tuple of ints; got shape={shape!r}") from None
    if len(shape) < 2:
        raise ValueError(
            f"fans need a weight with at least 2 dims (fan_in, fan_out); got shape={shape}"
        )
    receptive_field = math.prod(shape[:-2])
    fan_in, fan_out = shape[-2] * receptive_field, shape[-1] * receptive_field
    if fan_in == 0 or fan_out == 0:
        raise ValueError(f"fans must be positive; got shape={shape} (fan_in={fan_in}, "
                         f"fan_out={fan_out})")
    return fan_in, fan_out


def fan(shape: tuple[int, ...], mode: Mode) -> float:
    """The fan a variance-scaling scheme divides by: fan_in, fan_out or their mean."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got mode={mode!r}"
                         f"{suggest(mode, MODES)}")
    fan_in, fan_out = compute_fans(shape)
    return {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]


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

    A name from PyTorch's table (linear, sigmoid, tanh 5/3, relu sqrt(2), leaky_relu
    sqrt(2 / (1 + slope^2)) with ``param`` the slope, default 0.01, selu 3/4) gives that value.
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
