"""Mean-field signal propagation through a wide fully connected network at initialization.

Weights have variance sigma_w^2 / fan_in, biases variance sigma_b^2. In the infinite-width limit
each pre-activation is Gaussian with variance q_l (Poole et al. 2016, eq. 3):

    q_l = sigma_w^2 E[phi(sqrt(q_{l-1}) z)^2] + sigma_b^2,            z ~ N(0, 1)

and two inputs' correlation follows the correlation map (eq. 5). Its slope at c = 1,

    chi_1 = sigma_w^2 E[phi'(sqrt(q*) z)^2],

separates order (chi_1 < 1: inputs collapse together, gradients vanish) from chaos (chi_1 > 1:
they decorrelate, gradients explode); chi_1 = 1 is the critical initialization, which gives
He (sigma_w^2 = 2) for ReLU and sigma_w = 1 for tanh at sigma_b = 0. The depth scales over which
q and c approach their fixed points are xi_q and xi_c (Schoenholz et al. 2017, eqs. 5 and 9).

Gaussian expectations use Gauss-Hermite quadrature with an even number of nodes, so no node sits
on the kink at 0 and ReLU's moments come out exact by symmetry.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import optimize, special

from initlab._validate import check_positive
from initlab.nn import activations

Phi = Callable[[np.ndarray], np.ndarray]
_NODES = 200
_CRITICAL = 1e-9  # a slope this close to 1 is taken as 1: the depth scale diverges


@functools.cache
def _hermite(n: int = _NODES) -> tuple[np.ndarray, np.ndarray]:
    x, w = special.roots_hermitenorm(n)
    return x, w / math.sqrt(2.0 * math.pi)  # weights of E[f(z)], z ~ N(0, 1)


def _expect(f: Callable[[np.ndarray], np.ndarray]) -> float:
    x, w = _hermite()
    return float(np.dot(w, f(x)))


def _expect2(f: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> float:
    """E[f(z1, z2)] for independent standard normals, on the product grid."""
    x, w = _hermite(60)
    return float(w @ f(x[:, None], x[None, :]) @ w)


def _functions(activation: str | Phi) -> tuple[Phi, Phi, Phi]:
    """phi, phi' and phi'' of a named activation (analytic phi') or any callable (differences)."""
    phi: Phi
    if isinstance(activation, str) or isinstance(activation, activations.Activation):
        act = activations.get(activation)
        phi = act.forward

        def dphi(z):
            z = np.asarray(z, dtype=float)
            return act.backward(z, phi(z), np.ones_like(z))
    elif callable(activation):
        phi = activation

        def dphi(z):  # the same signature as the analytic dphi above
            h = 1e-5
            return (phi(z + h) - phi(z - h)) / (2 * h)
    else:
        raise TypeError(f"activation must be a name or a callable; got activation={activation!r}")

    def d2phi(z, h=1e-4):
        return (dphi(z + h) - dphi(z - h)) / (2 * h)

    return phi, dphi, d2phi


def _check(sigma_w: float, sigma_b: float) -> tuple[float, float]:
    return check_positive("sigma_w", sigma_w), check_positive("sigma_b", sigma_b, allow_zero=True)


def variance_map(activation: str | Phi, q: float, sigma_w: float, sigma_b: float = 0.0) -> float:
    """One layer of the variance recursion: the next pre-activation variance given q."""
    sigma_w, sigma_b = _check(sigma_w, sigma_b)
    phi = _functions(activation)[0]
    return sigma_w**2 * _expect(lambda z: phi(math.sqrt(q) * z) ** 2) + sigma_b**2


def propagate(activation: str | Phi, sigma_w: float | Sequence[float], sigma_b: float,
              q0: float, depth: int | None = None) -> np.ndarray:
    """q_1 ... q_depth: pre-activation variances of a depth-layer network whose input has
    mean square q0 (so q_1 = sigma_w^2 q0 + sigma_b^2, the first layer being linear in x).
    ``sigma_w`` is one value for every layer, or one per layer (then depth is its length);
    a layer of sigma_w = 0 (all-zero weights) passes on q = sigma_b^2.

    This is the one mean-field recursion of initlab: inspect and the cards call it."""
    scales = ([float(s) for s in sigma_w] if isinstance(sigma_w, Sequence | np.ndarray)
              else [float(sigma_w)] * int(depth or 0))
    if depth is not None and len(scales) != depth:
        raise ValueError(f"depth={depth} but {len(scales)} values of sigma_w")
    for s in scales:
        check_positive("sigma_w", s, allow_zero=True)
    sigma_b = check_positive("sigma_b", sigma_b, allow_zero=True)
    q = [scales[0] ** 2 * q0 + sigma_b**2] if scales else []
    for s in scales[1:]:
        q.append(variance_map(activation, q[-1], s, sigma_b) if s > 0 else sigma_b**2)
    return np.array(q)


def activation_std(activation: str | Phi, q: np.ndarray | float) -> np.ndarray:
    """The std of phi(x) for x ~ N(0, q): what a probe measures after the activation."""
    phi = _functions(activation)[0]
    q = np.atleast_1d(np.asarray(q, dtype=float))
    x, w = _hermite()
    values = phi(np.sqrt(q)[:, None] * x)  # (len(q), nodes)
    mean, square = values @ w, values**2 @ w
    return np.sqrt(np.maximum(square - mean**2, 0.0))


def fixed_point(activation: str | Phi, sigma_w: float, sigma_b: float = 0.0) -> float:
    """q*, the stable fixed point of the variance map: 0 if the signal dies out, inf if it grows
    without bound (ReLU with sigma_w^2 > 2). Found as the root where V(q) - q turns from
    positive to negative, bracketed on a log grid and refined by Brent's method."""
    sigma_w, sigma_b = _check(sigma_w, sigma_b)
    if isinstance(activation, str):  # chi1, c* and the depth scales each start from q*
        return _fixed_point_of(activation, sigma_w, sigma_b)
    return _fixed_point(activation, sigma_w, sigma_b)


@functools.lru_cache(maxsize=4096)
def _fixed_point_of(activation: str, sigma_w: float, sigma_b: float) -> float:
    return _fixed_point(activation, sigma_w, sigma_b)


def _fixed_point(activation: str | Phi, sigma_w: float, sigma_b: float) -> float:

    def excess(q: float) -> float:
        return variance_map(activation, q, sigma_w, sigma_b) - q

    grid = np.logspace(-10, 10, 81)
    values = np.array([excess(q) for q in grid])
    if np.all(np.abs(values) <= 1e-10 * grid):
        return 1.0  # marginal (ReLU at sigma_w^2 = 2, sigma_b = 0): every q is fixed
    for i in range(len(grid) - 1):
        if values[i] > 0 >= values[i + 1]:
            return float(optimize.brentq(excess, grid[i], grid[i + 1], xtol=1e-15, rtol=1e-13))
    return 0.0 if values[0] <= 0 else math.inf


def chi1(activation: str | Phi, sigma_w: float, sigma_b: float = 0.0) -> float:
    """chi_1 = sigma_w^2 E[phi'(sqrt(q*) z)^2]; 1 is critical, < 1 ordered, > 1 chaotic."""
    sigma_w, sigma_b = _check(sigma_w, sigma_b)
    q = fixed_point(activation, sigma_w, sigma_b)
    dphi = _functions(activation)[1]
    # q* = 0 or inf: take the limit (phi'(0+) for a dying signal; ReLU-like activations are
    # scale-free, so any finite q gives their chi_1)
    scale = math.sqrt(q) if 0 < q < math.inf else 1e-150 if q == 0 else 1.0
    return sigma_w**2 * _expect(lambda z: dphi(scale * z) ** 2)


def correlation_map(activation: str | Phi, c: float, q: float, sigma_w: float,
                    sigma_b: float = 0.0) -> float:
    """The next layer's correlation of two inputs whose pre-activations have correlation c and
    variance q: their next covariance over the next variance V(q) (Poole et al. 2016, eq. 5,
    where q = q* and so V(q) = q)."""
    sigma_w, sigma_b = _check(sigma_w, sigma_b)
    phi = _functions(activation)[0]
    cov = _cov(phi, math.sqrt(q), c)
    return (sigma_w**2 * cov + sigma_b**2) / variance_map(activation, q, sigma_w, sigma_b)


def _cov(phi: Phi, s: float, c: float) -> float:
    """E[phi(s u1) phi(s u2)] for standard normals u1, u2 of correlation c."""
    root = math.sqrt(max(1.0 - c * c, 0.0))
    return _expect2(lambda z1, z2: phi(s * z1) * phi(s * (c * z1 + root * z2)))


def correlation_steps(activation: str | Phi, c: np.ndarray, q: np.ndarray, sigma_w: float,
                      sigma_b: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """One layer for many pairs of inputs at once: the next correlations (each
    :func:`correlation_map` of c[i] at q[i]) and the next variances (:func:`variance_map`)."""
    sigma_w, sigma_b = _check(sigma_w, sigma_b)
    phi = _functions(activation)[0]
    c, q = np.asarray(c, dtype=float), np.asarray(q, dtype=float)
    s, root = np.sqrt(q)[:, None, None], np.sqrt(np.maximum(1.0 - c * c, 0.0))[:, None, None]
    x, w = _hermite(60)
    z1, z2 = x[:, None], x[None, :]
    cov = (w @ (phi(s * z1) * phi(s * (c[:, None, None] * z1 + root * z2)))) @ w
    x, w = _hermite()
    variance = sigma_w**2 * (phi(np.sqrt(q)[:, None] * x) ** 2 @ w) + sigma_b**2
    return (sigma_w**2 * cov + sigma_b**2) / variance, variance


def depth_scales(activation: str | Phi, sigma_w: float, sigma_b: float = 0.0
                 ) -> tuple[float, float]:
    """(xi_q, xi_c): how many layers the variance and the correlation take to reach their fixed
    points (Schoenholz et al. 2017, eqs. 5, 9); xi_c is infinite at criticality."""
    sigma_w, sigma_b = _check(sigma_w, sigma_b)
    q = fixed_point(activation, sigma_w, sigma_b)
    if not 0 < q < math.inf:
        return math.nan, math.nan
    phi, dphi, d2phi = _functions(activation)
    s = math.sqrt(q)
    chi = chi1(activation, sigma_w, sigma_b)
    slope_q = chi + sigma_w**2 * _expect(lambda z: d2phi(s * z) * phi(s * z))
    if chi <= 1.0 + _CRITICAL:
        slope_c = chi  # ordered or critical: c* = 1 is the stable fixed point, its slope chi_1
    else:  # chaotic: the slope of the correlation map at its fixed point c* < 1
        c = correlation_fixed_point(activation, sigma_w, sigma_b)
        root = math.sqrt(max(1.0 - c * c, 0.0))
        slope_c = sigma_w**2 * _expect2(
            lambda z1, z2: dphi(s * z1) * dphi(s * (c * z1 + root * z2)))
    return _scale(slope_q), _scale(slope_c)


def correlation_fixed_point(activation: str | Phi, sigma_w: float, sigma_b: float = 0.0
                            ) -> float:
    """c*, the correlation two inputs reach deep in the network: 1 in the ordered phase and at
    criticality (chi_1 <= 1), below 1 in the chaotic phase, where the correlation map iterated
    from c = 0.5 at q = q* converges to it (Poole et al. 2016, Fig. 2); NaN if q* is 0 or inf."""
    sigma_w, sigma_b = _check(sigma_w, sigma_b)
    q = fixed_point(activation, sigma_w, sigma_b)
    if not 0 < q < math.inf:
        return math.nan
    if chi1(activation, sigma_w, sigma_b) <= 1.0 + _CRITICAL:
        return 1.0
    c = 0.5
    phi = _functions(activation)[0]
    s, variance = math.sqrt(q), variance_map(activation, q, sigma_w, sigma_b)
    for _ in range(1000):  # a contraction in the chaotic phase: a few dozen steps suffice
        # correlation_map at q = q*, with V(q*) computed once
        c_new = (sigma_w**2 * _cov(phi, s, c) + sigma_b**2) / variance
        if abs(c_new - c) < 1e-12:
            return c_new
        c = c_new
    return c


def phase_diagram(activation: str | Phi, sigma_w2: Sequence[float] | np.ndarray,
                  sigma_b2: Sequence[float] | np.ndarray) -> dict[str, np.ndarray]:
    """chi_1, q*, c* and xi_c on the grid sigma_b2 x sigma_w2 (rows, columns; both given as
    variances, as Schoenholz et al. 2017 write them), with the edge of chaos: for each
    sigma_b^2 the sigma_w^2 where chi_1 = 1 (NaN where there is none in [0.01, 100])."""
    sw2 = np.asarray(sigma_w2, dtype=float)
    sb2 = np.asarray(sigma_b2, dtype=float)
    shape = (len(sb2), len(sw2))
    out = {k: np.full(shape, math.nan) for k in ("chi1", "q_star", "c_star", "xi_c")}
    for i, b2 in enumerate(sb2):
        for j, w2 in enumerate(sw2):
            w, b = math.sqrt(w2), math.sqrt(b2)
            out["chi1"][i, j] = chi1(activation, w, b)
            out["q_star"][i, j] = fixed_point(activation, w, b)
            out["c_star"][i, j] = correlation_fixed_point(activation, w, b)
            out["xi_c"][i, j] = depth_scales(activation, w, b)[1]
    edge = np.full(len(sb2), math.nan)
    for i, b2 in enumerate(sb2):
        try:
            edge[i] = critical_sigma_w(activation, math.sqrt(b2)) ** 2
        except ValueError:
            pass
    return {"sigma_w2": sw2, "sigma_b2": sb2, **out, "edge_sigma_w2": edge}


def _scale(slope: float) -> float:
    """-1 / log(slope): the depth over which a deviation shrinks by e; infinite at slope 1."""
    if slope <= 0:
        return 0.0
    return math.inf if slope >= 1.0 - _CRITICAL else -1.0 / math.log(slope)


def critical_sigma_w(activation: str | Phi, sigma_b: float = 0.0) -> float:
    """The sigma_w where chi_1 = 1 (the edge of chaos), by Brent's method on [0.1, 10]."""
    sigma_b = check_positive("sigma_b", sigma_b, allow_zero=True)
    def excess(sigma_w: float) -> float:
        return chi1(activation, sigma_w, sigma_b) - 1.0

    lo, hi = 0.1, 10.0
    if excess(lo) * excess(hi) > 0:
        raise ValueError(f"chi_1 = 1 has no root for sigma_w in [{lo}, {hi}] with "
                         f"sigma_b={sigma_b}: this activation has no edge of chaos there")
    return float(optimize.brentq(excess, lo, hi, xtol=1e-12, maxiter=500))
