"""E3 `deep-linear`: a deep linear network multiplies its signal by the same factor at every
layer: exactly a for W = a·I, and g on average for random weights with n·Var(W) = g²."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from initlab import data
from initlab.experiments.card import (
    Card,
    Config,
    Control,
    Outcome,
    Run,
    Variant,
    pick,
    sizes,
    spread,
)
from initlab.nn import Dense, Sequential
from initlab.report import figures as plots

# part (a): the gain a each variant's claim is about (its init realises it, unless a control
# swaps the init); W[1..9] = a I, then W[10] a random 2 -> 1 output layer
IDENTITY = {"1.5 I": 1.5, "0.5 I": 0.5}
IDENTITY_LAYERS = 9
# part (b): the g each variant's claim is about, realised as n Var(W) = g^2
GAINS = {f"g={g}": g for g in (0.5, 0.9, 1.0, 1.1, 1.5)}
TOLERANCE = 0.05  # the fitted per-layer factor, mean over seeds, against g^2
EXACT = 1e-12  # relative error allowed where the arithmetic is exact up to rounding


def _identity(a: float) -> list[Any]:
    """W[1..9] = a I; the output layer keeps its own init (LeCun normal)."""
    return [{"name": "identity", "gain": a}] * IDENTITY_LAYERS + [None]


def _scaled(g: float) -> dict:
    """N(0, g²/n_in): n·Var(W) = g²."""
    return {"name": "variance_scaling", "scale": g * g, "mode": "fan_in",
            "distribution": "normal"}


@dataclass(frozen=True)
class Settings(Config):
    """Part (b)'s random stacks (part (a) is the same at every size). ``layers``, not
    ``depth``: the runner would hand the CLI's --depth (fixup's) to a field of that name."""

    seeds: int = 10
    width: int = 256
    layers: int = 20
    batch: int = 128


card: Card[Measured] = Card(
    "deep-linear",
    title="E3 deep-linear: 1.5 I explodes, 0.5 I vanishes",
    claim="In a 10-layer linear network with W[1..9] = 1.5 I the activations grow as 1.5^l and "
          "with 0.5 I they shrink as 0.5^l, and the gradients with them; for random weights "
          "n·Var(W) < 1 vanishes, = 1 keeps the variance, > 1 explodes.",
    why="A linear layer with W = a·I multiplies every input by a, so after l layers the signal "
        "is a^l times the input, and back-propagation multiplies by W^T = a·I on the way down. "
        "With random weights each output unit sums n inputs times weights of variance g²/n, so "
        "the variance is multiplied by g² per layer: only g = 1 (Xavier/LeCun) keeps it.",
    data="make_moons(400, noise 0.2) per seed for W = a·I; a batch of N(0, 1) Gaussian inputs "
         "per seed for the random weights",
    sizes=sizes(Settings(), tiny={"seeds": 2, "width": 32, "layers": 10, "batch": 32},
                full={"seeds": 30}),
    variants={name: Variant(_identity(a)) for name, a in IDENTITY.items()}
    | {name: Variant(_scaled(g)) for name, g in GAINS.items()},
    control=Control(("E3.identity-explodes", "E3.identity-gradient", "E3.random-factor",
                     "E3.random-phases"),
                    {"1.5 I": Variant(_identity(1.4)), "g=1.0": Variant(_scaled(1.2))},
                    why="1.4 I where the claim says 1.5 I, and n·Var(W) = 1.44 where it says "
                        "g = 1"),
)


@dataclass
class IdentityRun:
    """Part (a), per replica (in ``labels`` order): norms against the input's, and errors."""

    labels: list[tuple[str, int]]
    ratio_last: np.ndarray  # |a[9]| / |x|
    ratio_layers: np.ndarray  # (R, 9): |a[l]| / |x|
    grad_layers: np.ndarray  # (R, 9): |∂L/∂a[l]| / |δ W[10]ᵀ|
    w1_ratio: np.ndarray  # |∂L/∂W[1]| / |xᵀ δ W[10]ᵀ|
    forward_err: np.ndarray  # the largest relative error against a^l
    backward_err: np.ndarray  # ... against a^(9−l) δ W[10]ᵀ, and a^8 xᵀ δ W[10]ᵀ for W[1]

    def of(self, name: str, values: Any) -> np.ndarray:
        return pick(self.labels, name, values)


@dataclass
class RandomRun:
    """Part (b), per replica: the variance of the input, then after each layer, and the
    fitted per-layer factor."""

    labels: list[tuple[str, int]]
    variance: np.ndarray  # (R, layers + 1)
    factor: np.ndarray

    def of(self, name: str, values: Any) -> np.ndarray:
        return pick(self.labels, name, values)


@dataclass
class Measured:
    cfg: Settings
    ident: IdentityRun
    rand: RandomRun


def _frob(v: np.ndarray) -> np.ndarray:
    """Per replica, the Frobenius norm of (R, ...) values."""
    return np.linalg.norm(v.reshape(len(v), -1), axis=1)


def _relative_error(values: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Per replica, the largest |values − expected| relative to the largest |expected|."""
    return np.max(np.abs(values - expected), axis=(1, 2)) / np.max(np.abs(expected), axis=(1, 2))


def _identity_run(run: Run) -> IdentityRun:
    """The 2-wide network of part (a) on each seed's moons, every (a, seed) one replica: one
    forward and backward pass, every layer's output and gradient kept by hooks."""
    labels = run.labels(IDENTITY)
    moons = {seed: data.moons(seed) for seed in run.seeds}
    X = np.stack([moons[s][0] for _, s in labels])
    y = np.stack([moons[s][1] for _, s in labels])
    model = Sequential([Dense(2, use_bias=False) for _ in range(IDENTITY_LAYERS)]
                       + [Dense(1, "sigmoid", init="lecun_normal", use_bias=False)])
    model.compile("binary_crossentropy").build(2, **run.sweep(IDENTITY))
    acts, grads = {}, {}

    def keep_output(i, layer, trace):
        acts[i] = trace.out.copy()

    def keep_gradient(i, layer, result):
        grads[i] = result.dz.copy()
        if i == 0:
            grads["W1"] = result.params["W"].copy()

    with model.register_hook("forward", keep_output), \
            model.register_hook("backward", keep_gradient):
        model.compute_gradients(X, y)
    # the gain each replica's claim is about, not the one its init used (a control swaps that)
    a = np.array([IDENTITY[name] for name, _ in labels])[:, None, None]  # (R, 1, 1)
    W_out = model.layers[-1].params["W"]  # (R, 2, 1)
    upstream = grads[IDENTITY_LAYERS] @ np.swapaxes(W_out, -1, -2)  # δ W[10]^T, (R, n, 2)
    layers = np.arange(1, IDENTITY_LAYERS + 1)
    # forward: |a[l]| / |x| per sample against a^l
    norms = np.stack([np.linalg.norm(acts[k - 1], axis=-1) for k in layers], axis=1)  # (R, 9, n)
    ratio = norms / np.linalg.norm(X, axis=-1)[:, None, :]
    forward_err = np.max(np.abs(ratio / a ** layers[None, :, None] - 1.0), axis=(1, 2))
    # backward: dL/da[l] = a^(9-l) δ W[10]^T for l = 1..9; dL/dW[1] = a^8 x^T δ W[10]^T
    backward_err = np.max([_relative_error(grads[k - 1], a ** (IDENTITY_LAYERS - k) * upstream)
                           for k in layers], axis=0)
    x_upstream = np.swapaxes(X, -1, -2) @ upstream
    w1_err = _relative_error(grads["W1"], a ** (IDENTITY_LAYERS - 1) * x_upstream)
    return IdentityRun(labels, _frob(acts[IDENTITY_LAYERS - 1]) / _frob(X),
                       np.stack([_frob(acts[k - 1]) / _frob(X) for k in layers], axis=1),
                       np.stack([_frob(grads[k - 1]) / _frob(upstream) for k in layers], axis=1),
                       _frob(grads["W1"]) / _frob(x_upstream), forward_err,
                       np.maximum(backward_err, w1_err))


def _random_run(run: Run) -> RandomRun:
    """Width x layers linear nets, every (g, seed) one replica, on a Gaussian batch per seed."""
    cfg: Settings = run.cfg
    labels = run.labels(GAINS)
    # the batch comes from a child of the seed's stream, so it is not the weights' own numbers
    batches = {s: np.random.default_rng(np.random.SeedSequence(s).spawn(1)[0])
               .standard_normal((cfg.batch, cfg.width)) for s in run.seeds}
    X = np.stack([batches[s] for _, s in labels])
    model = Sequential([Dense(cfg.width, use_bias=False) for _ in range(cfg.layers)])
    model.build(cfg.width, **run.sweep(GAINS))
    variances = [_variance(X)]
    with model.register_hook("forward",
                             lambda i, layer, trace: variances.append(_variance(trace.out))):
        model.predict(X)
    v = np.stack(variances, axis=1)  # (R, layers + 1): the input, then after each layer
    slope = np.polyfit(np.arange(cfg.layers + 1), np.log(v).T, 1)[0]  # least squares, per replica
    return RandomRun(labels, v, np.exp(slope))


def _variance(a: np.ndarray) -> np.ndarray:
    """Per-replica variance of (R, n, k) values: two passes over the data where np.var makes
    four, which matters at 50 replicas x 21 layers."""
    size = a.shape[1] * a.shape[2]
    mean = a.sum(axis=(1, 2)) / size
    return np.einsum("rij,rij->r", a, a) / size - mean**2


@card.measure
def measure(run: Run) -> Measured:
    ident = _identity_run(run)
    run.progress(0.2)
    rand = _random_run(run)
    run.progress(0.8)
    return Measured(run.cfg, ident, rand)


def _identity_norm(m: Measured, name: str) -> Outcome:
    a = IDENTITY[name]
    err = m.ident.of(name, m.ident.forward_err)
    last = m.ident.of(name, m.ident.ratio_last)
    return Outcome(bool(np.all(err < EXACT)),
                   f"|a[9]| / |x| = {np.mean(last):.6g} (a^9 = {a**9:.6g}), largest relative "
                   f"error {np.max(err):.1e}",
                   f"|a[9]| / |x| = {spread(last, '.6g')} (a^9 = {a**9:.6g}); max relative "
                   f"error against a^l over layers, samples and seeds {np.max(err):.1e}")


@card.claim("E3.identity-explodes", "W = 1.5 I: the activation norm after layer l is 1.5^l "
            "times the input's (to 1e-12 relative), for every sample and seed",
            printed="ŷ = W[10]·1.5^9·x: activations grow exponentially (1.5^9 ≈ 38.4)",
            uses=("1.5 I",))
def identity_explodes(m: Measured) -> Outcome:
    return _identity_norm(m, "1.5 I")


@card.claim("E3.identity-vanishes", "W = 0.5 I: the activation norm after layer l is 0.5^l "
            "times the input's (to 1e-12 relative), for every sample and seed",
            printed="ŷ = W[10]·0.5^9·x: activations shrink exponentially (0.5^9 ≈ 0.00195)",
            uses=("0.5 I",))
def identity_vanishes(m: Measured) -> Outcome:
    return _identity_norm(m, "0.5 I")


@card.claim("E3.identity-gradient", "The gradient scales the same way: ∂L/∂a[l] = "
            "a^(9−l)·δ·W[10]ᵀ and ∂L/∂W[1] = a^8·xᵀ·δ·W[10]ᵀ exactly (δ = ∂L/∂z of the "
            "output), for both a and every seed",
            printed="gradients become too big (1.5 I) or too small (0.5 I); no number printed",
            uses=tuple(IDENTITY))
def identity_gradient(m: Measured) -> Outcome:
    err = m.ident.backward_err
    w1 = {name: spread(m.ident.of(name, m.ident.w1_ratio), ".6g") for name in IDENTITY}
    return Outcome(bool(np.all(err < EXACT)),
                   f"largest relative error of a layer's gradient against a^(9−l) "
                   f"{np.max(err):.1e}",
                   "; ".join(f"{name}: |∂L/∂W[1]| / |xᵀδW[10]ᵀ| = {w1[name]} (a^8 = {a**8:.6g})"
                             for name, a in IDENTITY.items())
                   + f"; max relative error of every layer's gradient {np.max(err):.1e}")


@card.claim("E3.random-factor", "Random weights with n·Var(W) = g²: the fitted per-layer "
            "factor of the activation variance, averaged over seeds, is g² within 5 %, for "
            "every g", printed="n·Var(W) < 1 vanishing, = 1 Var(a[L]) = Var(x), > 1 exploding "
                               "(no number printed)", uses=tuple(GAINS))
def random_factor(m: Measured) -> Outcome:
    factors = {name: m.rand.of(name, m.rand.factor) for name in GAINS}
    off = {name: abs(np.mean(factors[name]) / g**2 - 1) for name, g in GAINS.items()}
    worst = max(off, key=lambda name: off[name])
    return Outcome(all(o <= TOLERANCE for o in off.values()),
                   f"largest |mean factor / g² − 1|: {off[worst]:.1%} ({worst})",
                   "per-layer factor " + "; ".join(f"{name}: {spread(factors[name], '.4f')} "
                                                   f"(g² = {g**2:.2f})"
                                                   for name, g in GAINS.items()))


def _phase_holds(g: float, last: np.ndarray) -> bool:
    """g < 1 vanishes (below 1/2 of the input's variance), g > 1 explodes (above 2), g = 1
    holds within [1/2, 2]."""
    if g < 1:
        return bool(np.all(last < 0.5))
    if g > 1:
        return bool(np.all(last > 2))
    return bool(np.all((last >= 0.5) & (last <= 2)))


@card.claim("E3.random-phases", "g < 1 vanishes (variance after the last layer < 1/2 of the "
            "input's), g = 1 holds (within [1/2, 2]), g > 1 explodes (> 2), for every seed",
            printed="n·Var(W) < 1 vanishing, = 1 Var(a[L]) = Var(x), > 1 exploding",
            uses=tuple(GAINS))
def random_phases(m: Measured) -> Outcome:
    layers = m.cfg.layers
    last = {name: m.rand.of(name, m.rand.variance[:, -1] / m.rand.variance[:, 0])
            for name in GAINS}
    wrong = [name for name, g in GAINS.items() if not _phase_holds(g, last[name])]
    return Outcome(not wrong,
                   f"Var(a[{layers}]) / Var(x) at g = 1: {np.mean(last['g=1.0']):.3g}; "
                   f"gains in the wrong phase: {', '.join(wrong) or 'none'}",
                   f"Var(a[{layers}]) / Var(x): "
                   + "; ".join(f"{name}: {spread(last[name], '.3g')} (g^{2 * layers} = "
                               f"{g**(2 * layers):.3g})" for name, g in GAINS.items()))


@card.table("identity")
def identity_table(m: Measured) -> list[dict]:
    rows = []
    for name, a in IDENTITY.items():
        fwd = m.ident.of(name, m.ident.ratio_layers)
        bwd = m.ident.of(name, m.ident.grad_layers)
        for k in range(IDENTITY_LAYERS):
            rows.append({"variant": name, "layer": k + 1, "norm_ratio": float(fwd[:, k].mean()),
                         "theory": a ** (k + 1), "grad_ratio": float(bwd[:, k].mean()),
                         "grad_theory": a ** (IDENTITY_LAYERS - k - 1)})
    return rows


@card.table("random")
def random_table(m: Measured) -> list[dict]:
    rows = []
    for name, g in GAINS.items():
        v = m.rand.of(name, m.rand.variance)
        for layer in range(v.shape[1]):
            rows.append({"variant": name, "layer": layer,
                         "variance_mean": float(v[:, layer].mean()),
                         "variance_std": float(v[:, layer].std()),
                         "variance_min": float(v[:, layer].min()),
                         "variance_max": float(v[:, layer].max()),
                         "theory": float(v[:, 0].mean() * g ** (2 * layer))})
    return rows


@card.figure("deep-linear-identity")
def identity_figure(m: Measured, path: Path) -> Path:
    """Forward and backward norm ratios per layer, measured against a^l and a^(9−l)."""
    fig, axes = plots.plt.subplots(1, 2, figsize=(9.5, 3.8), layout="constrained")
    layers = np.arange(1, IDENTITY_LAYERS + 1)
    for (name, a), color in zip(IDENTITY.items(), plots.TAB10, strict=False):
        for ax, values, power, theory in (
                (axes[0], m.ident.ratio_layers, layers, "a^l"),
                (axes[1], m.ident.grad_layers, IDENTITY_LAYERS - layers, "a^(9−l)")):
            ax.plot(layers, m.ident.of(name, values).mean(axis=0), "o", color=color,
                    label=f"{name} (measured)")
            ax.plot(layers, a**power, "--", color=color, label=f"{name}: {theory}")
    axes[0].set_ylabel("|a[l]| / |x|")
    axes[1].set_ylabel("|∂L/∂a[l]| / |δ W[10]ᵀ|")
    return plots.finish_log_panels(fig, axes, path, xlabel="layer l",
                                   title="E3 W[1..9] = a·I: forward and backward, measured "
                                         "against a^l")


@card.figure("deep-linear-random")
def random_figure(m: Measured, path: Path) -> Path:
    """The std per layer of every g, its band over seeds, and std(x)·g^l dashed."""
    curves = {}
    for name, g in GAINS.items():
        std = np.sqrt(m.rand.of(name, m.rand.variance))  # (seeds, layers + 1)
        layers = np.arange(std.shape[1])
        curves[name] = {"mean": std.mean(axis=0), "min": std.min(axis=0),
                        "max": std.max(axis=0), "theory": std[:, 0].mean() * g**layers}
    return plots.std_vs_depth(curves, path, title=f"E3 width-{m.cfg.width} linear nets, "
                                                  f"n·Var(W) = g² (dashed: std(x)·g^l)")


@card.notes
def notes(m: Measured) -> list[str]:
    cfg = m.cfg
    return [f"Part (a): 2-wide linear layers without biases, W[1..9] = a·I, W[10] ~ LeCun "
            f"normal (2 -> 1, sigmoid), binary cross-entropy from the logits on each seed's "
            f"moons (400 points); {cfg.seeds} seeds per a.",
            f"Part (b): {cfg.layers} linear layers of width {cfg.width}, no biases, "
            f"W ~ N(0, g²/{cfg.width}); a batch of {cfg.batch} N(0, 1) inputs per seed; the "
            f"factor is exp of the least-squares slope of log Var(a[l]) over l = "
            f"0..{cfg.layers}; {cfg.seeds} seeds per g. The variants of a seed share its "
            f"random stream, so the five g's scale the same standard-normal matrices: a paired "
            f"comparison.",
            "The exact gradient statement: with W[l] = a·I, ∂L/∂a[l] = a^(9−l)·δ·W[10]ᵀ and "
            "∂L/∂W[l] = a[l−1]ᵀ ∂L/∂a[l] = a^8·xᵀ·δ·W[10]ᵀ for every l, where δ itself depends "
            "on a through the output a^9·x·W[10]."]
