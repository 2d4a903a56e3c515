"""Which ``torch.nn.init`` scheme a weight looks drawn from, for :func:`initlab.torch.doctor`.

Exact checks first (zeros / constant, orthogonal), then a Kolmogorov-Smirnov test of the weights
against each candidate distribution of :data:`CANDIDATES`: the fan-scaled schemes (std from the
weight's torch fans), the fixed-std normals that model zoos use, and any candidate the caller
adds for the module that holds the weight (an RNN's default bound is set by its hidden size,
which the weight's shape does not say).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

# a candidate scheme fits when its KS test gives at least this p-value (torch's own test_init
# uses 1e-4 for the same test)
P_FIT = 1e-4
KS_SAMPLE = 200_000  # at most this many weights go into a KS test (a fixed subsample)
ORTHO_TOL = 1e-4  # |W W^T / g^2 - I| of an orthogonal_ weight, float32 rounding included
GAINS = {"linear": 1.0, "relu": math.sqrt(2.0), "tanh": 5.0 / 3.0}  # torch.nn.init's table
# the gains a candidate is tried with: Glorot for linear and tanh, He for ReLU and linear (each
# extra gain adds near-ties: xavier tanh is within 4 % of He's fan_out ReLU at fan_in = 2 fan_out)
XAVIER_GAINS, KAIMING_GAINS = ("linear", "tanh"), ("relu", "linear")
# normal_(std=s) with a std no fan sets: 0.02 the initializer_range of BERT, GPT-2 and ViT (and
# DCGAN's N(0, 0.02)); 0.01 VGG's classifier and detection heads; 0.001 detectron2's box
# regression. A short list, not the sample's own std: a normal of any std would then "fit", and
# N(0, 0.3) or N(0, 1) on a 64 x 64 Linear is no scheme (N(0, 1) is nn.Embedding's default: the
# caller adds it for an embedding, as a module's own default)
NORMAL_STDS = (0.02, 0.01, 0.001)


@dataclass(frozen=True)
class Candidate:
    """A ``torch.nn.init`` call and the distribution it draws: uniform on [-a, a] with
    a = sqrt(3) std, or normal with that std. The std comes from the weight's torch fans, or,
    for ``fan="fixed"``, is ``gain`` itself (``normal_(std=0.02)`` draws the same at any shape)."""

    code: str  # the call, e.g. 'kaiming_normal_(mode="fan_out", nonlinearity="relu")'
    distribution: str  # "uniform" or "normal"
    gain: float
    fan: str  # "fan_in", "fan_out", "fan_avg" (xavier: gain sqrt(2 / (in + out))) or "fixed"

    def std(self, fan_in: int, fan_out: int) -> float:
        if self.fan == "fixed":
            return self.gain
        if self.fan == "fan_avg":  # Glorot & Bengio 2010, eq. 16
            return self.gain * math.sqrt(2.0 / (fan_in + fan_out))
        return self.gain / math.sqrt(fan_in if self.fan == "fan_in" else fan_out)  # He 2015


def uniform(bound: float, code: str) -> Candidate:
    """``uniform_(-bound, bound)`` as a fixed candidate, written as ``code``."""
    return Candidate(code, "uniform", bound / math.sqrt(3.0), "fixed")


def module_defaults(module: nn.Module) -> tuple[Candidate, ...]:
    """The holding module's own default, where the weight's shape does not set it, to try
    before :data:`CANDIDATES`: an RNN's U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))
    (torch/nn/modules/rnn.py), an embedding's N(0, 1) (torch/nn/modules/sparse.py)."""
    if isinstance(module, nn.RNNBase):
        h = module.hidden_size
        return (uniform(1 / math.sqrt(h), f"uniform_(-1 / math.sqrt({h}), 1 / math.sqrt({h}))"),)
    if isinstance(module, nn.Embedding):
        return (Candidate("normal_()", "normal", 1.0, "fixed"),)
    return ()


def _gain_arg(name: str) -> str:
    return "" if name == "linear" else f'gain=nn.init.calculate_gain("{name}")'


# PyTorch's default for Linear and Conv: kaiming_uniform_(a=sqrt(5)), gain sqrt(2 / (1 + 5)),
# so the bound gain * sqrt(3 / fan_in) is 1 / sqrt(fan_in) (torch/nn/modules/linear.py)
CANDIDATES: tuple[Candidate, ...] = (
    Candidate("kaiming_uniform_(a=math.sqrt(5))", "uniform",
              math.sqrt(1.0 / 3.0), "fan_in"),
    *(Candidate(f"{kind}_({_gain_arg(g)})", dist, GAINS[g], "fan_avg")
      for kind, dist in (("xavier_uniform", "uniform"), ("xavier_normal", "normal"))
      for g in XAVIER_GAINS),
    *(Candidate(f'{kind}_(mode="{mode}", nonlinearity="{g}")', dist, GAINS[g], mode)
      for kind, dist in (("kaiming_uniform", "uniform"), ("kaiming_normal", "normal"))
      for mode in ("fan_in", "fan_out") for g in KAIMING_GAINS),
    *(Candidate(f"normal_(std={s:g})", "normal", s, "fixed") for s in NORMAL_STDS),
)


@dataclass(frozen=True)
class Recognition:
    """What a weight looks initialised with: ``code`` the ``torch.nn.init`` call (``unknown``
    when nothing fits), ``p_value`` of its KS test (None for the exact checks: constant,
    orthogonal), ``also`` the other candidates that fit as well, best first, and ``ties``
    those of them that draw the very same distribution as ``code`` (He fan_in and fan_out at
    fan_in == fan_out), which no test can tell apart."""

    code: str
    p_value: float | None = None
    also: tuple[str, ...] = ()
    ties: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "p_value": self.p_value, "also": list(self.also),
                "ties": list(self.ties)}


def torch_fans(weight: torch.Tensor) -> tuple[int, int]:
    """The fans ``torch.nn.init`` uses for this weight: (size(1), size(0)) x receptive field.
    (For a transposed convolution these are its fan_out and fan_in, swapped: torch's rule.)"""
    rf = math.prod(weight.shape[2:])
    return int(weight.shape[1]) * rf, int(weight.shape[0]) * rf


def _orthogonal_gain(w: np.ndarray) -> float | None:
    """The gain g if the rows (or columns, whichever are fewer) of w, flattened as
    ``orthogonal_`` flattens it, are orthonormal up to g; else None."""
    flat = w.reshape(w.shape[0], -1)
    if min(flat.shape) < 2 or max(flat.shape) > 8192:  # one row is orthogonal to nothing
        return None
    small = flat if flat.shape[0] <= flat.shape[1] else flat.T
    norms2 = np.einsum("ij,ij->i", small, small)
    g2 = float(np.mean(norms2))
    # orthonormal rows have equal norms: a check in O(size) before the Gram matrix's O(n^3)
    if not g2 > 0 or np.abs(norms2 / g2 - 1).max() >= ORTHO_TOL:
        return None
    gram = small @ small.T
    off = np.abs(gram / g2 - np.eye(len(gram))).max()
    return math.sqrt(g2) if off < ORTHO_TOL else None


def _ks_p(ordered: np.ndarray, cdf: np.ndarray) -> float | None:
    """The p-value of the two-sided one-sample KS test of a sorted sample, given the
    candidate's CDF at it (the D and p of ``scipy.stats.kstest``'s exact mode), or None where
    it is surely below :data:`P_FIT`: by the Dvoretzky-Kiefer-Wolfowitz inequality with
    Massart's (1990) constant, P(D > d) <= 2 exp(-2 n d^2), so the exact p (18 ms at n = 2e5)
    is computed only where a fit is possible."""
    from scipy import stats

    n = len(ordered)
    steps = np.arange(n + 1) / n  # the empirical CDF just before and after each point
    d = float(max((steps[1:] - cdf).max(), (cdf - steps[:-1]).max()))
    if 2.0 * math.exp(-2.0 * n * d * d) < P_FIT:
        return None
    return float(np.clip(stats.kstwo.sf(d, n), 0.0, 1.0))


def recognize(weight: torch.Tensor, extra: Sequence[Candidate] = ()) -> Recognition:
    """Which ``torch.nn.init`` scheme ``weight`` looks drawn from: zeros / constant, orthogonal
    (exact checks), else the candidate of ``extra`` + :data:`CANDIDATES` whose distribution fits
    best by a KS test (p >= :data:`P_FIT`; a uniform one must also hold every weight within its
    bound), else ``unknown``. ``extra`` comes first, so on a tie (the same distribution) the
    holding module's own default names it."""
    from scipy import special  # imported here: scipy costs a second at start-up

    w = weight.detach().double().cpu().numpy()
    if w.size == 0 or not np.all(np.isfinite(w)):
        return Recognition("unknown")
    if np.all(w == w.flat[0]):
        value = float(w.flat[0])
        return Recognition("zeros_()" if value == 0 else f"constant_({value:.4g})")
    gain = _orthogonal_gain(w)
    if gain is not None:
        return Recognition("orthogonal_()" if abs(gain - 1) < 1e-3 else
                           f"orthogonal_(gain={gain:.4g})")
    fan_in, fan_out = torch_fans(weight)
    sample = w.ravel()
    if sample.size > KS_SAMPLE:  # a fixed subsample: the audit draws nothing from user state
        sample = np.random.default_rng(0).choice(sample, KS_SAMPLE, replace=False)
    ordered = np.sort(sample)  # once, for every candidate
    largest = float(np.abs(w).max())
    fits: list[tuple[float, str, str, float]] = []
    for cand in (*extra, *CANDIDATES):
        std = cand.std(fan_in, fan_out)
        if cand.distribution == "uniform":
            bound = math.sqrt(3.0) * std
            if largest > bound * (1 + 1e-5):  # float32 rounding of the bound
                continue
            cdf = np.clip((ordered + bound) / (2 * bound), 0.0, 1.0)
        else:
            cdf = special.ndtr(ordered / std)
        p = _ks_p(ordered, cdf)
        if p is not None and p >= P_FIT:
            fits.append((p, cand.code, cand.distribution, std))
    if not fits:
        return Recognition("unknown")
    # stable: equal p-values (the same distribution, e.g. fan_in == fan_out) keep table order
    fits.sort(key=lambda f: -f[0])
    p, code, dist, std = fits[0]
    ties = tuple(c for _, c, d, s in fits[1:] if d == dist and math.isclose(s, std, rel_tol=1e-9))
    return Recognition(code, p, tuple(c for _, c, _, _ in fits[1:]), ties)
