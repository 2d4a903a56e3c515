"""Per-tensor initializers: pure functions ``(shape, *, rng, dtype, **params) -> new array``.

Conventions (see :mod:`initlab.fans` for the layout): weights are ``(fan_in, fan_out)`` or
``(*receptive_field, c_in, c_out)``. Every draw is made in float64 from the given ``rng`` and then
cast, so a float32 model is the rounded float64 one (except that a uniform draw that would round
onto its open bound ``high`` becomes the largest value below it: U[low, high) holds in every
dtype). The general case is :func:`variance_scaling`; the named schemes are one-line
specializations of it.

A shape with no elements, such as (1, 0), gives an empty array of that shape with a
``UserWarning``, for every initializer (PyTorch warns and does nothing; Keras and JAX return the
empty array).

Where the reference libraries disagree, initlab picks one and names the other:

* ``*_normal`` schemes (glorot, he, lecun) draw from the plain normal, as PyTorch and the papers
  do; Keras and JAX draw them from a truncated normal of the same variance, which is
  ``variance_scaling(..., distribution="truncated_normal")``.
* ``truncated_normal`` has bounds in units of the std and the variance-preserving correction
  (the result has exactly the requested std, like Keras/JAX ``variance_scaling``);
  ``trunc_normal_abs`` is PyTorch's ``trunc_normal_``: absolute bounds, no correction.
* ``uniform`` is U[low, high); JAX's ``uniform(scale)`` is ``uniform(low=0, high=scale)``.
"""

from __future__ import annotations

import fnmatch
import functools
import inspect
import math
import operator
import warnings
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any, Literal

import numpy as np

from initlab._validate import RngLike, as_rng, check_choice, check_positive, suggest
from initlab.fans import MODES, Axes, Mode, calculate_gain, compute_fans, fan

Distribution = Literal["normal", "truncated_normal", "uniform"]
DISTRIBUTIONS = ("normal", "truncated_normal", "uniform")
Float = np.float64

_REGISTRY: dict[str, Callable[..., np.ndarray]] = {}

ALIASES: dict[str, str] = {
    "zero": "zeros",
    "one": "ones",
    "random_normal": "normal",
    "random_uniform": "uniform",
    "xavier": "glorot_normal",
    "glorot": "glorot_normal",
    "xavier_normal": "glorot_normal",
    "xavier_uniform": "glorot_uniform",
    "he": "he_normal",
    "kaiming": "he_normal",
    "kaiming_normal": "he_normal",
    "kaiming_uniform": "he_uniform",
    "lecun": "lecun_normal",
    "eye": "identity",
    "delta": "delta_orthogonal",
    "trunc_normal": "trunc_normal_abs",
    "pytorch_default": "torch_default",
}


def _register(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """Register ``fn``, which then returns an empty array, with a warning, for a shape with no
    elements (the one rule for all initializers, so that none needs fans of nothing)."""
    @functools.wraps(fn)
    def init(shape: Any, /, **params: Any) -> np.ndarray:
        dims = _shape(shape)
        if math.prod(dims) == 0:
            inspect.signature(fn).bind(dims, **params)  # an unknown parameter is still an error
            warnings.warn(f"{fn.__name__}: shape={dims} has no elements; initializing it is a "
                          f"no-op, returning an empty array", UserWarning, stacklevel=2)
            return np.zeros(dims, dtype=params.get("dtype", Float))
        return fn(dims, **params)

    _REGISTRY[fn.__name__] = init
    return init


def _shape(shape: Any) -> tuple[int, ...]:
    if type(shape) is tuple and all(type(d) is int and d >= 0 for d in shape):
        return shape  # the common case, checked fast: a build calls this for every layer
    try:  # operator.index: 2.5 is an error, not a silent 2
        dims = (operator.index(shape),) if np.ndim(shape) == 0 else \
            tuple(operator.index(s) for s in shape)
    except TypeError:
        raise TypeError(f"shape must be an int or a tuple of ints; got shape={shape!r}") from None
    if any(d < 0 for d in dims):
        raise ValueError(f"shape must have non-negative dims; got shape={dims}")
    return dims


def _out(values: np.ndarray, dtype: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).astype(dtype, copy=False)


def _in_interval(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Clip cast draws of U[low, high) into [low, high) as numbers of their own dtype: a draw
    just below ``high`` can round up to it (1 in 2^11 of U[0, 1) in float16, and float64's
    ``low + (high - low) * u`` itself can), and one just above ``low`` below it."""
    if values.dtype.kind != "f" or not high > low:
        return values
    lo, hi = np.asarray(low, values.dtype), np.asarray(high, values.dtype)
    if float(hi) >= high:  # the largest value of the dtype below high
        hi = np.nextafter(hi, np.asarray(-np.inf, values.dtype))
    if float(lo) < low:
        lo = np.nextafter(lo, np.asarray(np.inf, values.dtype))
    if lo <= hi:
        np.clip(values, lo, hi, out=values)
    return values


# --- constants ------------------------------------------------------------------------------

@_register
def zeros(shape, *, rng: RngLike = None, dtype=Float) -> np.ndarray:
    """All zeros. Keeps every unit of a layer identical (no symmetry breaking)."""
    return np.zeros(_shape(shape), dtype=dtype)


@_register
def ones(shape, *, rng: RngLike = None, dtype=Float) -> np.ndarray:
    """All ones."""
    return np.ones(_shape(shape), dtype=dtype)


@_register
def constant(shape, *, value: float = 0.0, rng: RngLike = None, dtype=Float) -> np.ndarray:
    """Every entry equal to ``value``."""
    return np.full(_shape(shape), float(value), dtype=dtype)


# --- plain distributions ----------------------------------------------------------------------

@_register
def normal(shape, *, mean: float = 0.0, std: float = 1.0, rng: RngLike = None,
           dtype=Float) -> np.ndarray:
    """N(mean, std^2) (PyTorch ``normal_``; Keras ``RandomNormal`` defaults to std 0.05)."""
    std = check_positive("std", std, allow_zero=True)
    values = as_rng(rng).standard_normal(_shape(shape))
    values *= std  # in place: deep nets draw hundreds of megabytes
    values += float(mean)
    return _out(values, dtype)


@_register
def scaled_normal(shape, *, scale: float = 1.0, rng: RngLike = None, dtype=Float) -> np.ndarray:
    """N(0, 1) * scale: the sources' ``Initializer(scale)`` (scale 0 gives zeros, 10 'large')."""
    return normal(shape, std=check_positive("scale", scale, allow_zero=True), rng=rng,
                  dtype=dtype)


@_register
def uniform(shape, *, low: float = 0.0, high: float = 1.0, rng: RngLike = None,
            dtype=Float) -> np.ndarray:
    """U[low, high) (PyTorch ``uniform_``; JAX ``uniform(s)`` is low=0, high=s), in the output
    dtype too: a draw that would round onto ``high`` is the largest value below it."""
    if not (np.isfinite(low) and np.isfinite(high)) or low > high:
        raise ValueError(f"uniform needs finite low <= high; got low={low!r}, high={high!r}")
    draws = as_rng(rng).uniform(float(low), float(high), _shape(shape))
    return _in_interval(_out(draws, dtype), float(low), float(high))


@cache
def truncated_std(bound: float) -> float:
    """Std of the standard normal truncated to [-bound, bound]; 0.87962566103423978 at 2."""
    from scipy import stats  # imported where used: scipy.stats is slow to import
    return float(stats.truncnorm.std(-bound, bound))


@_register
def truncated_normal(shape, *, mean: float = 0.0, std: float = 1.0, bound: float = 2.0,
                     rng: RngLike = None, dtype=Float) -> np.ndarray:
    """Normal truncated at ``bound`` standard deviations, rescaled to have exactly ``std``.

    The underlying normal has sigma = std / c(bound), c(2) = 0.87962566103423978, so draws lie in
    mean +- bound * sigma and their std is ``std`` (Keras/JAX ``variance_scaling`` truncation).
    """
    from scipy import stats

    std = check_positive("std", std, allow_zero=True)
    bound = check_positive("bound", bound)
    sigma = std / truncated_std(bound)
    draws = stats.truncnorm.rvs(-bound, bound, size=_shape(shape), random_state=as_rng(rng))
    return _out(float(mean) + sigma * draws, dtype)


@_register
def trunc_normal_abs(shape, *, mean: float = 0.0, std: float = 1.0, a: float = -2.0,
                     b: float = 2.0, rng: RngLike = None, dtype=Float) -> np.ndarray:
    """N(mean, std^2) truncated to the ABSOLUTE interval [a, b], no rescaling (PyTorch
    ``trunc_normal_``): with the defaults and std=1 the draws' std is 0.88, not 1."""
    from scipy import stats

    std = check_positive("std", std)
    if not a < b:
        raise ValueError(f"trunc_normal_abs needs a < b; got a={a!r}, b={b!r}")
    lo, hi = (a - mean) / std, (b - mean) / std
    draws = stats.truncnorm.rvs(lo, hi, loc=mean, scale=std, size=_shape(shape),
                                random_state=as_rng(rng))
    return _out(draws, dtype)


# --- variance scaling: the general case and its specializations -------------------------------

@_register
def variance_scaling(shape, *, scale: float = 1.0, mode: Mode = "fan_in",
                     distribution: Distribution = "truncated_normal", in_axis: Axes = -2,
                     out_axis: Axes = -1, batch_axis: Axes = (), rng: RngLike = None,
                     dtype=Float) -> np.ndarray:
    """Weights of variance ``scale / n``, n = fan_in, fan_out, (fan_in + fan_out) / 2 or
    sqrt(fan_in * fan_out) (mode fan_geo_avg, JAX's).

    normal: N(0, scale/n); truncated_normal: the same std, truncated at 2 std (corrected, see
    :func:`truncated_normal`); uniform: U(-limit, limit) with limit = sqrt(3 * scale / n).
    fan_in preserves the forward signal's variance, fan_out the backward gradient's, fan_avg
    compromises (Glorot & Bengio 2010). Keras ``VarianceScaling``, JAX ``variance_scaling``,
    whose ``in_axis``, ``out_axis`` and ``batch_axis`` say which axes the fans count
    (:func:`initlab.fans.compute_fans`): an attention kernel (dim, heads, key_dim) with
    ``in_axis=0, out_axis=(1, 2)`` has fan_in = dim.
    """
    scale = check_positive("scale", scale, allow_zero=True)
    check_choice("mode", mode, MODES)
    check_choice("distribution", distribution, DISTRIBUTIONS)
    std = math.sqrt(scale / fan(_shape(shape), mode, in_axis=in_axis, out_axis=out_axis,
                                batch_axis=batch_axis))
    if distribution == "normal":
        return normal(shape, std=std, rng=rng, dtype=dtype)
    if distribution == "truncated_normal":
        return truncated_normal(shape, std=std, rng=rng, dtype=dtype)
    limit = math.sqrt(3.0) * std
    return uniform(shape, low=-limit, high=limit, rng=rng, dtype=dtype)


@_register
def glorot_normal(shape, *, gain: float = 1.0, rng: RngLike = None, dtype=Float) -> np.ndarray:
    """N(0, gain^2 * 2 / (fan_in + fan_out)). Glorot & Bengio 2010; PyTorch ``xavier_normal_``."""
    return variance_scaling(shape, scale=gain**2, mode="fan_avg", distribution="normal",
                            rng=rng, dtype=dtype)


@_register
def glorot_uniform(shape, *, gain: float = 1.0, rng: RngLike = None, dtype=Float) -> np.ndarray:
    """U(-l, l), l = gain * sqrt(6 / (fan_in + fan_out)). Glorot & Bengio 2010, eq. 16."""
    return variance_scaling(shape, scale=gain**2, mode="fan_avg", distribution="uniform",
                            rng=rng, dtype=dtype)


@_register
def he_normal(shape, *, a: float = 0.0, mode: Mode = "fan_in", nonlinearity: str = "leaky_relu",
              rng: RngLike = None, dtype=Float) -> np.ndarray:
    """N(0, gain^2 / fan), gain = calculate_gain(nonlinearity, a): 2 / fan_in for ReLU (a = 0).
    He et al. 2015 ("Delving deep into rectifiers"), eq. 10; PyTorch ``kaiming_normal_``, whose
    default nonlinearity, leaky_relu with slope a, it shares."""
    check_choice("mode", mode, HE_MODES)
    return variance_scaling(shape, scale=_kaiming_gain(nonlinearity, a) ** 2, mode=mode,
                            distribution="normal", rng=rng, dtype=dtype)


@_register
def he_uniform(shape, *, a: float = 0.0, mode: Mode = "fan_in", nonlinearity: str = "leaky_relu",
               rng: RngLike = None, dtype=Float) -> np.ndarray:
    """U(-l, l), l = gain * sqrt(3 / fan): sqrt(6 / fan_in) for ReLU. He et al. 2015;
    PyTorch ``kaiming_uniform_``."""
    check_choice("mode", mode, HE_MODES)
    return variance_scaling(shape, scale=_kaiming_gain(nonlinearity, a) ** 2, mode=mode,
                            distribution="uniform", rng=rng, dtype=dtype)


# He et al. derive fan_in (forward signal) and fan_out (gradients); fan_avg is kept from
# initlab's first API; JAX's fan_geo_avg belongs to variance_scaling alone
HE_MODES = ("fan_in", "fan_out", "fan_avg")


def _kaiming_gain(nonlinearity: str, a: float) -> float:
    # `a` is the leaky_relu slope; PyTorch silently ignores it for other nonlinearities
    if nonlinearity == "leaky_relu":
        return calculate_gain(nonlinearity, a)
    if a != 0:
        raise ValueError(f"a is the leaky_relu slope; got a={a!r} with "
                         f"nonlinearity={nonlinearity!r}")
    return calculate_gain(nonlinearity)


@_register
def lecun_normal(shape, *, rng: RngLike = None, dtype=Float) -> np.ndarray:
    """N(0, 1 / fan_in). LeCun et al. 1998 ("Efficient backprop"); with SELU, Klambauer et al.
    2017."""
    return variance_scaling(shape, scale=1.0, mode="fan_in", distribution="normal", rng=rng,
                            dtype=dtype)


@_register
def lecun_uniform(shape, *, rng: RngLike = None, dtype=Float) -> np.ndarray:
    """U(-l, l), l = sqrt(3 / fan_in). LeCun et al. 1998."""
    return variance_scaling(shape, scale=1.0, mode="fan_in", distribution="uniform", rng=rng,
                            dtype=dtype)


@_register
def torch_default(shape, *, fan_in: int | None = None, rng: RngLike = None,
                  dtype=Float) -> np.ndarray:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's ``nn.Linear``/``nn.ConvNd`` default.

    For weights this is ``kaiming_uniform_(a=sqrt(5))``; a bias (1-D shape) uses the same bound
    with its layer's ``fan_in``, which the layer passes in.
    """
    if len(_shape(shape)) >= 2:
        fan_in = compute_fans(_shape(shape))[0]
    elif fan_in is None:
        raise ValueError(f"torch_default for a bias of shape={_shape(shape)} needs its layer's "
                         f"fan_in; got fan_in=None")
    bound = 1.0 / math.sqrt(check_positive("fan_in", fan_in))
    return uniform(shape, low=-bound, high=bound, rng=rng, dtype=dtype)


# --- structured -------------------------------------------------------------------------------

@_register
def orthogonal(shape, *, gain: float = 1.0, rng: RngLike = None, dtype=Float) -> np.ndarray:
    """A Haar-random (semi-)orthogonal matrix times gain: W^T W = gain^2 I when tall, W W^T when
    wide. Saxe et al. 2014. Leading dims are flattened into rows, the output axis is columns.

    QR of a Gaussian matrix with the signs of R's diagonal moved into Q, so that Q is Haar
    distributed (Mezzadri 2007), not biased by the QR convention.
    """
    dims = _shape(shape)
    if len(dims) < 2:
        raise ValueError(f"orthogonal needs a shape with at least 2 dims; got shape={dims}")
    cols = dims[-1]
    rows = math.prod(dims[:-1])
    gaussian = as_rng(rng).standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(gaussian)
    q *= np.where(np.diagonal(r) < 0, -1.0, 1.0)
    if rows < cols:
        q = q.T
    return _out(float(gain) * q.reshape(dims), dtype)


@_register
def delta_orthogonal(shape, *, gain: float = 1.0, rng: RngLike = None,
                     dtype=Float) -> np.ndarray:
    """A convolution kernel that is 0 but at the spatial centre, where it is a Haar orthogonal
    (c_in, c_out) matrix times gain: the convolution starts as an orthogonal 1x1 map. Xiao et
    al. 2018 ("Dynamical isometry and a mean field theory of CNNs"), for (*kernel, c_in, c_out).
    """
    dims = _shape(shape)
    if len(dims) < 3:
        raise ValueError(f"delta_orthogonal needs a conv kernel (*kernel, c_in, c_out); got "
                         f"shape={dims}")
    kernel = np.zeros(dims)
    kernel[tuple(k // 2 for k in dims[:-2])] = orthogonal(dims[-2:], gain=gain, rng=rng)
    return _out(kernel, dtype)


@_register
def dirac(shape, *, groups: int = 1, rng: RngLike = None, dtype=Float) -> np.ndarray:
    """The identity convolution: 1 at the kernel's centre from input channel d to output channel
    d of each of ``groups`` groups, 0 elsewhere, so a conv with as many outputs per group as
    inputs passes its input through. PyTorch ``dirac_``, for initlab's (*kernel, c_in, c_out)
    where ``c_in`` is the channels one group reads (PyTorch's in / groups); groups split c_out.
    """
    dims = _shape(shape)
    if len(dims) < 3:
        raise ValueError(f"dirac needs a conv kernel (*kernel, c_in, c_out); got shape={dims}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 \
            or dims[-1] % groups:
        raise ValueError(f"groups must be a positive int dividing c_out={dims[-1]}; got "
                         f"groups={groups!r}")
    per_group = dims[-1] // groups
    channels = np.arange(min(per_group, dims[-2]))
    kernel = np.zeros(dims)
    centre = [k // 2 for k in dims[:-2]]  # PyTorch's size // 2, for odd and even kernels
    for g in range(groups):
        kernel[(*centre, channels, g * per_group + channels)] = 1.0  # type: ignore[index]
    return _out(kernel, dtype)


@_register
def identity(shape, *, gain: float = 1.0, rng: RngLike = None, dtype=Float) -> np.ndarray:
    """gain * I (ones on the main diagonal of a rectangular matrix). PyTorch ``eye_``."""
    dims = _shape(shape)
    if len(dims) != 2:
        raise ValueError(f"identity needs a 2-D shape; got shape={dims}")
    return float(gain) * np.eye(*dims, dtype=dtype)


@_register
def sparse(shape, *, sparsity: float = 0.9, std: float = 0.01, rng: RngLike = None,
           dtype=Float) -> np.ndarray:
    """N(0, std^2) with ceil(sparsity * fan_out) of each input unit's outgoing weights set to 0.

    PyTorch ``sparse_`` (which zeroes that many entries of every column of its (out, in)
    weight, i.e. of each input's outgoing weights); after Martens 2010.
    """
    dims = _shape(shape)
    if len(dims) != 2:
        raise ValueError(f"sparse needs a 2-D shape; got shape={dims}")
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1]; got sparsity={sparsity!r}")
    rng = as_rng(rng)
    weights = normal(dims, std=std, rng=rng)
    n_zero = math.ceil(sparsity * dims[1])
    zero_cols = rng.random(dims).argsort(axis=1)[:, :n_zero]
    weights[np.arange(dims[0])[:, None], zero_cols] = 0.0
    return _out(weights, dtype)


# --- registry ---------------------------------------------------------------------------------

class Initializer:
    """A registered initializer with its parameters bound: ``init(shape, rng=..., dtype=...)``."""

    def __init__(self, name: str, fn: Callable[..., np.ndarray], params: Mapping[str, Any]):
        self.name, self.fn, self.params = name, fn, dict(params)

    @property
    def needs_fan_in(self) -> bool:
        """Whether a bias drawn with it needs its layer's fan_in (PyTorch's default bias)."""
        return "fan_in" in _parameters(self.fn) and "fan_in" not in self.params

    def __call__(self, shape, *, rng: RngLike = None, dtype: Any = None, **extra) -> np.ndarray:
        """Draw a new array; ``dtype`` None keeps the function's own (float64, or the dtype a
        ``functools.partial`` bound)."""
        if dtype is not None:
            extra["dtype"] = dtype
        return self.fn(shape, rng=rng, **self.params, **extra)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.name}({args})" if args else self.name

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Initializer) and self.fn is other.fn
                and self.params == other.params)

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self.params.items(), key=str))))


def _parameters(fn: Callable) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(fn).parameters)


def canonical_name(name: str) -> str:
    """The registry name for a name or alias; ValueError with a suggestion if unknown."""
    if not isinstance(name, str):
        raise TypeError(f"initializer name must be a str; got {name!r}")
    key = name.lower()
    key = ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise ValueError(f"unknown initializer {name!r}{suggest(key, [*_REGISTRY, *ALIASES])}; "
                         f"`initlab list` shows them all")
    return key


def get(spec: str | Mapping[str, Any] | Callable | Initializer) -> Initializer:
    """Resolve a name, a ``{"name": ..., **params}`` mapping or a callable to an Initializer.

    >>> get({"name": "normal", "std": 0.1})((3, 2), rng=0).shape
    (3, 2)
    """
    if isinstance(spec, Initializer):
        return spec
    if isinstance(spec, str):
        name = canonical_name(spec)
        return Initializer(name, _REGISTRY[name], {})
    if isinstance(spec, Mapping):
        if "name" not in spec:
            raise ValueError(f"an initializer mapping needs a 'name' key; got {dict(spec)!r}")
        name = canonical_name(spec["name"])
        fn = _REGISTRY[name]
        params = {k: v for k, v in spec.items() if k != "name"}
        allowed = [p for p in _parameters(fn) if p not in ("shape", "rng", "dtype")]
        for key in params:
            if key not in allowed:
                raise ValueError(f"{name} takes no parameter {key!r}{suggest(key, allowed)}; "
                                 f"its parameters: {', '.join(allowed) or 'none'}")
        return Initializer(name, fn, params)
    if callable(spec):
        named = spec.func if isinstance(spec, functools.partial) else spec
        return Initializer(getattr(named, "__name__", type(named).__name__), spec, {})
    raise TypeError(f"initializer must be a name, a mapping with 'name' or a callable; "
                    f"got {spec!r}")


def available(pattern: str = "*") -> list[str]:
    """Canonical initializer names matching a shell-style pattern, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def describe(name: str) -> str:
    """The first paragraph of an initializer's docstring, on one line."""
    doc = (_REGISTRY[canonical_name(name)].__doc__ or "").strip().split("\n\n")[0]
    return " ".join(doc.replace("``", "").split())


def aliases_of(name: str) -> list[str]:
    """The aliases that resolve to a canonical name."""
    return sorted(a for a, target in ALIASES.items() if target == name)
