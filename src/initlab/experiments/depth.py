"""E4 `depth`: 100 layers of width 512 in float32 at initialization: N(0, 1) weights overflow,
N(0, 1) × 0.01 underflow, Xavier keeps a linear stack's scale, halves a ReLU stack's variance
at every layer, and Kaiming keeps it on average: each draw's log squared norm is a random walk
of variance ≈ 5 L/n (three smaller widths against the walk drawn directly). In context, as E1's
context variants: orthogonal weights in the linear stack, LSUV and ZerO in the ReLU stack."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from initlab import data, schemes, theory
from initlab.experiments import relu_walk
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
from initlab.experiments.relu_walk import WALK_CONSTANT, Walk, simulate_walk
from initlab.nn import Dense, Sequential
from initlab.report import figures as plots

OVERFLOW_BY = 50  # "well before layer 100"
XAVIER_BAND = (0.5, 2.0)
HALVING_TOLERANCE = 0.05
STANDARDIZE_TOLERANCE = 0.05  # the validation split's |mean| and |std - 1|
ISOMETRY_TOLERANCE = 1e-4  # float32 rounding leaves ~1e-7; i.i.d. weights drift by percents
LSUV_TOLERANCE = 0.1
IDENTITY_TOLERANCE = 1e-6  # ZerO's identity layers copy their input: the deviation is exactly 0
F32 = np.finfo(np.float32)
SUBNORMAL_MIN = float(np.nextafter(np.float32(0), np.float32(1)))
# the walk (Hanin & Rolnick 2018): Var(2 relu(g)²) = 4 (E g⁴ / 2 − (E g² / 2)²) = 5, so
# n Var(ln R_n) = 5 + O(1/n) and E ln R_n = −5 / (2n) + O(1/n²)
WALK_AGREEMENT = 3.0  # standard errors; 6 comparisons: a true walk fails ~2 % of the time
SIMULATED_WALKS, SIMULATION_SEED = 10_000, 2018


@dataclass(frozen=True)
class Settings(Config):
    """``layers``, not ``depth``: the runner would hand the CLI's --depth (fixup's) to a field
    of that name."""

    seeds: int = 3  # every replica needs 100 × 512² random weights: their draws are the time
    # an orthogonal draw is a QR per layer (~40 ms at 512²; 4 s a seed): the variants that need
    # one (orthogonal, and LSUV that starts from it) are context variants, on the first seed
    context_seeds: int = 1
    width: int = 512
    layers: int = 100
    batch: int = 64  # training images per seed
    limit: int = 10_000  # training images loaded from an IDX folder
    # E4.relu-kaiming-walk: He stacks `layers` deep at these widths, this many networks per
    # seed and width (fewer where a network costs more, n² weights a layer)
    walk_widths: tuple[int, ...] = (32, 64, 128)
    walk_draws: tuple[int, ...] = (64, 32, 16)


def _lsuv(model: Sequential, X: np.ndarray) -> schemes.LSUVResult:
    """LSUV from the orthonormal matrices the variant's init drew, its own first step (hence
    orthogonal=False: not drawn a second time), on each seed's own batch."""
    return schemes.lsuv(model, X, tol=LSUV_TOLERANCE, orthogonal=False)


def _zero(model: Sequential, X: np.ndarray) -> Sequential:
    return schemes.zero_init(model)


# the two stacks differ only in the activation; a variant is named by its stack
LINEAR = ("linear naive", "linear tiny", "linear xavier", "linear orthogonal")
RELU = ("relu xavier", "relu kaiming", "relu lsuv", "relu zero")
LSUV = "relu lsuv"
# beyond the sources, drawn dash-dotted; ZerO runs every seed all the same (it draws nothing,
# and its claim is that the seeds get the same weights)
CONTEXT = ("linear orthogonal", "relu lsuv", "relu zero")
# a ReLU variant with the same init as a linear one draws, from the same seed's stream, the same
# matrices: they are drawn once, for the linear stack
SHARED = {"relu xavier": "linear xavier", "relu lsuv": "linear orthogonal"}
# the weight variance the mean-field theory assumes (none for the context variants: LSUV and
# ZerO are not i.i.d. draws, and orthogonal's would repeat Xavier's)
THEORY_VAR = {"linear naive": lambda fan_in: 1.0, "linear tiny": lambda fan_in: 1e-4,
              "linear xavier": lambda fan_in: 1.0 / fan_in,
              "relu xavier": lambda fan_in: 1.0 / fan_in,
              "relu kaiming": lambda fan_in: 2.0 / fan_in}

card: Card[Measured] = Card(
    "depth",
    title="E4 depth: 100 layers with naive, tiny, Xavier and Kaiming init",
    claim="Through 100 layers N(0, 1) weights blow the activations up to infinity (float32: "
          "near layer 28), N(0, 1) × 0.01 shrinks them to 0, Xavier keeps a linear stack's std "
          "near 1 but halves a ReLU stack's variance every layer, and Kaiming fixes that on "
          "average: each draw's log squared norm is a random walk of variance ≈ 5·L/n. In "
          "context: orthogonal weights keep a linear stack's norm exactly, LSUV pins every ReLU "
          "layer's pre-activation std at 1, and ZerO's identity layers pass a ReLU stack's "
          "signal unchanged.",
    why="A layer of n inputs multiplies the variance by n·Var(W): 512 for N(0, 1) weights "
        "(float32 overflows after log(3.4e38)/log(22.6) ≈ 28 layers), 0.0512 for N(0, 1) × "
        "0.01, and 1 for Xavier's Var(W) = 1/n. A ReLU zeroes half its inputs, so E[relu(z)²] = "
        "Var(z)/2 and Xavier loses half the variance per layer; Kaiming's Var(W) = 2/n puts it "
        "back. Per draw, a He layer multiplies a squared norm by R = (2/n) Σ relu(g_i)², g_i "
        "i.i.d. N(0, 1) whatever came before: E[R] = 1, Var(R) = 5/n (Hanin & Rolnick 2018).",
    data="the image data asked for (Fashion-MNIST where installed, else digits), standardised "
         "with the training mean and std",
    sizes=sizes(Settings(), tiny={"seeds": 2, "context_seeds": 2, "width": 64, "batch": 16,
                                  "limit": 1000, "walk_draws": (32, 16, 8)},
                full={"seeds": 10, "context_seeds": 3}),
    variants={
        "linear naive": Variant({"name": "normal", "std": 1.0}),
        "linear tiny": Variant({"name": "normal", "std": 0.01}),
        "linear xavier": Variant("lecun_normal"),
        "linear orthogonal": Variant("orthogonal", context=True),
        "relu xavier": Variant("lecun_normal"),
        "relu kaiming": Variant("he_normal"),
        "relu lsuv": Variant("orthogonal", scheme=_lsuv, context=True),
        "relu zero": Variant("zeros", scheme=_zero),
    },
    control=Control(
        ("E4.naive-overflow", "E4.tiny-underflow", "E4.xavier-linear", "E4.relu-xavier-halves",
         "E4.relu-kaiming-walk", "E4.orthogonal-isometry", "E4.lsuv-unit", "E4.zero-identity"),
        {"linear naive": Variant("lecun_normal"), "linear tiny": Variant("lecun_normal"),
         "linear xavier": Variant({"name": "variance_scaling", "scale": 4.0, "mode": "fan_in",
                                   "distribution": "normal"}),
         "linear orthogonal": Variant("lecun_normal", context=True),
         "relu xavier": Variant("he_normal"), "relu kaiming": Variant("lecun_normal"),
         "relu lsuv": Variant("orthogonal", context=True), "relu zero": Variant("he_normal")},
        why="every variant swapped for one that breaks its claim: Xavier for naive and tiny, "
            "std 2/√n for the linear Xavier, i.i.d. Xavier for orthogonal, He and Xavier "
            "exchanged in the ReLU stack (so its Xavier draws its own, and the walk drifts by "
            "ln(1/2) a layer), LSUV that leaves its orthonormal start alone, and He draws, one "
            "per seed, for ZerO"),
)


@dataclass
class Stack:
    """One stack's batched forward and backward pass of every (variant, seed). ``stats``, per
    replica (in ``labels`` order), computed in float64 from the float32 values (float32 would
    round the squares of subnormal values to 0): of each layer (R, layers) the output's
    "mean" and "std", whether it is all "finite" or all exactly "zero", the std of the
    pre-activation z = x W ("pre_std", LSUV's replicas only, nan elsewhere), the std of ∂L/∂z
    ("grad"); and (R,) the "input_std" and the mean "cosine" between the batch's samples after
    the last layer."""

    labels: list[tuple[str, int]]
    stats: dict[str, np.ndarray]
    q0: float  # the mean square of the input, every seed's batch once
    fan_in: int
    schemes: dict[str, Any]  # what each variant's scheme returned
    identical: dict[str, bool]  # per variant, whether its seeds got the same weights


@dataclass
class Measured:
    cfg: Settings
    data: str  # the image data's name
    train: tuple[float, float]  # mean and std of the standardised training split
    val: tuple[float, float]  # ... and of the validation split
    scale: dict[str, float]  # the training mean and std applied to both
    linear: Stack
    relu: Stack
    shared: dict[str, str]  # the ReLU variants that reused a linear variant's draws
    walk: Walk

    def stack(self, name: str) -> Stack:
        return self.linear if name in LINEAR else self.relu

    def of(self, name: str, key: str) -> np.ndarray:
        """Statistic ``key`` of variant ``name``'s replicas, in seed order."""
        stack = self.stack(name)
        return pick(stack.labels, name, stack.stats[key])


def _shared(run: Run) -> dict[str, str]:
    """The SHARED pairs that may share: the same init on the same seeds (a control that swaps
    one of them makes the other draw its own)."""
    return {name: source for name, source in SHARED.items()
            if run.variants[name].init == run.variants[source].init
            and run.seeds_of(name) == run.seeds_of(source)}


@card.measure
def measure(run: Run) -> Measured:
    cfg: Settings = run.cfg
    split = data.image_data(run.data, limit=cfg.limit)
    X_train, X_val, scale = data.standardize(split.X_train, split.X_test)
    run.data_used = (f"{split.name} ({split.source}): the first {len(split.X_train)} training "
                     f"and {len(split.X_test)} validation images, standardised with the "
                     f"training mean and std")
    standardized = data.Split(X_train, split.y_train, X_val, split.y_test, split.name,
                              split.source)
    run.progress(0.1)
    shared = _shared(run)
    linear, kept = _probe(run, LINEAR, "linear", standardized, keep=set(shared.values()))
    run.progress(0.6)
    relu, _ = _probe(run, RELU, "relu", standardized,
                     start={name: kept[source] for name, source in shared.items()})
    run.progress(0.9)
    walk = _walk(run, standardized)
    run.progress(0.95)
    return Measured(cfg, split.name, (float(X_train.mean()), float(X_train.std())),
                    (float(X_val.mean()), float(X_val.std())), scale, linear, relu, shared,
                    walk)


def _walk(run: Run, split: data.Split) -> Walk:
    """Per width, ``walk_draws`` bias-free ReLU stacks per seed with the "relu kaiming" init,
    from child 1 of the seed's stream (child 0 draws its batch), network k fed image k of the
    seed's batch (cycling: the ratio does not depend on the input); and walks drawn directly."""
    cfg: Settings = run.cfg
    seeds = run.seeds_of("relu kaiming")
    batches = _batches(split, [("", s) for s in seeds], cfg.batch)[2].astype(np.float64)
    simulation, net, sim = np.random.default_rng(SIMULATION_SEED), [], []
    for width, draws in zip(cfg.walk_widths, cfg.walk_draws, strict=True):
        streams = [np.random.SeedSequence(s, spawn_key=(1, width, k))
                   for s in seeds for k in range(draws)]
        model = Sequential([Dense(width, "relu", use_bias=False) for _ in range(cfg.layers)])
        model.build(split.X_train.shape[1], rng=streams, dtype=np.float32,
                    variants=[run.variants["relu kaiming"].init] * len(streams))
        x0 = batches[:, np.arange(draws) % cfg.batch].reshape(len(streams), -1)
        model.forward(model.prepare(x0[:, None])[0], hooks=False)
        squares = np.stack([np.sum(t.out[:, 0].astype(np.float64) ** 2, axis=1)
                            for t in model.traces], axis=1)
        with np.errstate(divide="ignore"):  # a layer whose units are all dead: −inf
            net.append(np.log(squares * x0.shape[1] / width / np.sum(x0**2, axis=1)[:, None]))
        sim.append(simulate_walk(width, cfg.layers, SIMULATED_WALKS, rng=simulation))
    return Walk(tuple(cfg.walk_widths), tuple(net), tuple(sim))


def _probe(run: Run, names: Sequence[str], activation: str, split: data.Split, *,
           start: Mapping[str, Mapping[int, list[np.ndarray]]] | None = None,
           keep: Collection[str] = ()) -> tuple[Stack, dict[str, dict[int, list[np.ndarray]]]]:
    """Build the variants ``names`` of one stack, each seed's replica on its own batch, apply
    their schemes and record one forward and backward pass.

    ``start[name][seed]``: the per-layer weights a variant's replica gets instead of drawing
    them; ``keep``: the variants whose drawn weights are returned, as such a ``start``."""
    cfg: Settings = run.cfg
    start = start or {}
    labels = run.labels(names)
    X, y, each_seed = _batches(split, labels, cfg.batch)
    model = _model(activation, cfg, split.n_classes)
    sweep = run.sweep(names)
    # a replica given its start is built as zeros, which draws nothing
    sweep["variants"] = ["zeros" if name in start else init
                         for (name, _), init in zip(labels, sweep["variants"], strict=True)]
    with threadpool_limits(1):  # orthogonal's QRs: threaded, they crawl when a core is busy
        model.build(X.shape[-1], dtype=np.float32, **sweep)
    for r, (name, seed) in enumerate(labels):
        if name in start:
            for layer, W in zip(model.layers, start[name][seed], strict=True):
                layer.params["W"][r] = W
    kept = {name: {seed: [layer.params["W"][r].copy() for layer in model.layers]
                   for r, (n, seed) in enumerate(labels) if n == name} for name in keep}
    done = _apply_schemes(run, model, X)
    identical = {name: _identical(model, model.select(variant=name)) for name in names}
    stats = _record(model, X, y, cfg.layers, pre=model.select(variant=LSUV))
    stats["input_std"] = X.astype(np.float64).std(axis=(1, 2))
    return Stack(labels, stats, float(np.mean(each_seed.astype(np.float64) ** 2)), X.shape[-1],
                 done, identical), kept


def _batches(split: data.Split, labels: list[tuple[str, int]], size: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each replica's float32 batch and its labels, and every seed's batch once: the variants
    of a seed share its batch, drawn from a child of the seed's stream (so it is not the
    weights' own numbers)."""
    batch = {s: np.random.default_rng(np.random.SeedSequence(s).spawn(1)[0])
             .choice(len(split.X_train), size, replace=False)
             for s in dict.fromkeys(s for _, s in labels)}
    X = np.stack([split.X_train[batch[s]] for _, s in labels]).astype(np.float32)
    y = np.stack([split.y_train[batch[s]] for _, s in labels])
    return X, y, np.stack([split.X_train[b] for b in batch.values()]).astype(np.float32)


def _model(activation: str, cfg: Settings, classes: int) -> Sequential:
    layers = [Dense(cfg.width, activation, use_bias=False) for _ in range(cfg.layers)]
    # a linear 10-unit head gives the backward pass a loss: softmax cross-entropy on the labels
    return Sequential(layers + [Dense(classes, use_bias=False)]).compile("softmax_crossentropy")


def _apply_schemes(run: Run, model: Sequential, X: np.ndarray) -> dict[str, Any]:
    """``Run.apply_schemes``, keeping what each scheme returns (LSUV: its iterations)."""
    done = {}
    for name in dict.fromkeys(model.coordinate("variant")):
        scheme, index = run.variants[name].scheme, model.select(variant=name)
        if scheme is not None:
            sub = model.take(index)
            done[name] = scheme(sub, X[index])
            model.put(index, sub)
    return done


def _identical(model: Sequential, index: list[int]) -> bool:
    return all(np.array_equal(layer.params["W"][index[0]], layer.params["W"][r])
               for layer in model.layers for r in index[1:])


def _record(model: Sequential, X: np.ndarray, y: np.ndarray, depth: int, pre: list[int]
            ) -> dict[str, np.ndarray]:
    """The per-layer statistics of ``Stack.stats`` from one forward and backward pass (the
    head left out); ``pre``: the replicas whose pre-activation std is recomputed from each
    layer's input and weights."""
    stats: dict[str, np.ndarray] = {k: np.zeros((len(X), depth))
                                    for k in ("mean", "std", "finite", "zero", "grad")}
    stats["pre_std"] = np.full((len(X), depth), np.nan)
    stats["cosine"] = np.zeros(len(X))
    layer_input = [X[pre]]

    def forward(i, layer, trace):
        a = trace.out
        if i < depth:
            a64 = a.astype(np.float64)
            stats["mean"][:, i] = a64.mean(axis=(1, 2))
            stats["std"][:, i] = a64.std(axis=(1, 2))
            stats["finite"][:, i] = np.all(np.isfinite(a), axis=(1, 2))
            stats["zero"][:, i] = np.all(a == 0, axis=(1, 2))
            if pre:
                z = layer_input[0] @ layer.params["W"][pre]
                stats["pre_std"][pre, i] = z.astype(np.float64).std(axis=(1, 2))
                layer_input[0] = a[pre]
        if i == depth - 1:
            stats["cosine"][:] = _mean_cosine(a.astype(np.float64))

    def backward(i, layer, result):
        if i < depth:
            stats["grad"][:, i] = result.dz.astype(np.float64).std(axis=(1, 2))

    with np.errstate(all="ignore"), model.register_hook("forward", forward), \
            model.register_hook("backward", backward):
        model.compute_gradients(X, y, param_grads=False)  # the hooks need only dL/dz
    return stats


def _mean_cosine(a: np.ndarray) -> np.ndarray:
    """Per replica, the mean cosine similarity between different samples of (R, n, k) outputs."""
    unit = a / np.linalg.norm(a, axis=2, keepdims=True)
    gram = unit @ np.swapaxes(unit, 1, 2)
    n = a.shape[1]
    return (gram.sum(axis=(1, 2)) - np.trace(gram, axis1=1, axis2=2)) / (n * (n - 1))


# --- the claims -------------------------------------------------------------------------------

def _first(flags: np.ndarray) -> np.ndarray:
    """Per replica, the first layer (1-based) where flags is true; nan where it never is."""
    hit = flags.astype(bool)
    return np.where(hit.any(axis=1), hit.argmax(axis=1) + 1.0, np.nan)


def _factor(std: np.ndarray) -> np.ndarray:
    """Per replica, exp of the least-squares slope of log variance over the layers whose std is
    a finite normal float32 number."""
    layers = np.arange(1, std.shape[1] + 1)
    out = []
    for row in std:
        ok = np.isfinite(row) & (row >= F32.tiny)
        out.append(np.exp(np.polyfit(layers[ok], np.log(row[ok] ** 2), 1)[0])
                   if ok.sum() >= 2 else np.nan)
    return np.array(out)


def _keeps_scale(m: Measured, name: str, band: tuple[float, float]) -> Outcome:
    """Whether every layer's std of every seed is finite and within ``band``."""
    std = m.of(name, "std")
    return Outcome(bool(np.all(np.isfinite(std) & (std >= band[0]) & (std <= band[1]))),
                   f"std between {np.min(std):.3f} and {np.max(std):.3f} over layers and seeds",
                   f"smallest std over layers {spread(std.min(axis=1), '.3f')}, largest "
                   f"{spread(std.max(axis=1), '.3f')}, at layer {m.cfg.layers} "
                   f"{spread(std[:, -1], '.3f')}")


def _rms_drift(m: Measured, name: str) -> np.ndarray:
    """Per replica, the largest |rms_l / rms_1 − 1| over layers 2..depth (rms² = std² + mean²:
    the batch's mean squared activation, which an isometry keeps exactly)."""
    rms = np.hypot(m.of(name, "std"), m.of(name, "mean"))
    return np.max(np.abs(rms[:, 1:] / rms[:, :1] - 1), axis=1)


@card.claim("E4.standardized", "Standardised with the training mean and std, the training "
            "split has mean 0 and std 1 (to 1e-12) and the validation split is within 0.05 of "
            "both", printed="train mean ≈ 0, std ≈ 1; validation normalised with train_mean "
                            "(checked 'close' with a threshold)")  # the data every replica sees
def standardized(m: Measured) -> Outcome:
    train, val, scale = m.train, m.val, m.scale
    return Outcome(abs(train[0]) < 1e-12 and abs(train[1] - 1) < 1e-12
                   and abs(val[0]) <= STANDARDIZE_TOLERANCE
                   and abs(val[1] - 1) <= STANDARDIZE_TOLERANCE,
                   f"validation mean {val[0]:.4f}, std {val[1]:.4f}",
                   f"train mean {train[0]:.1e}, std {train[1]:.15f}; validation mean "
                   f"{val[0]:.4f}, std {val[1]:.4f} ({m.data}, training mean "
                   f"{scale['mean']:.4f} and std {scale['std']:.4f} applied to both)")


@card.claim("E4.naive-overflow", "Linear layers with N(0, 1) weights overflow to inf/nan well "
            "before layer 100 (by layer 50), for every seed",
            printed="reaches infinity near layer 28 (float32)", uses=("linear naive",))
def naive_overflow(m: Measured) -> Outcome:
    overflow = _first(1 - m.of("linear naive", "finite"))
    return Outcome(bool(np.all(overflow <= OVERFLOW_BY)),
                   f"inf or nan by layer {np.max(overflow):.4g} in every seed",
                   f"first layer with an inf or nan: {spread(overflow, '.4g')}")


@card.claim("E4.tiny-underflow", "Linear layers with N(0, 1) × 0.01 weights underflow: every "
            "value is exactly 0 before layer 100, for every seed",
            printed="values reaching 0 (no layer printed)", uses=("linear tiny",))
def tiny_underflow(m: Measured) -> Outcome:
    underflow = _first(m.of("linear tiny", "zero"))
    return Outcome(bool(np.all(underflow < m.cfg.layers)),
                   f"all exactly 0 by layer {np.max(underflow):.4g} in every seed",
                   f"first layer whose values are all exactly 0: {spread(underflow, '.4g')}")


@card.claim("E4.xavier-linear", "Linear layers with Xavier N(0, 1/n_in) keep the std within "
            "[0.5, 2] at every layer to 100, for every seed",
            printed="std stays near 1 to layer 100", uses=("linear xavier",))
def xavier_linear(m: Measured) -> Outcome:
    return _keeps_scale(m, "linear xavier", XAVIER_BAND)


@card.claim("E4.relu-xavier-halves", "ReLU layers with Xavier halve the variance each layer: "
            "fitted per-layer factor, averaged over seeds, 0.5 within 5 %",
            printed="'makes them half their original value' every layer", uses=("relu xavier",))
def relu_xavier_halves(m: Measured) -> Outcome:
    std = m.of("relu xavier", "std")
    halving = _factor(std)
    return Outcome(bool(abs(np.mean(halving) / 0.5 - 1) <= HALVING_TOLERANCE),
                   f"per-layer variance factor {np.mean(halving):.4f}",
                   f"per-layer variance factor {spread(halving, '.4f')}; std at layer "
                   f"{m.cfg.layers} {spread(std[:, -1], '.3g')}")


@card.claim("E4.relu-kaiming-walk", "Through 100 ReLU layers of width n with Kaiming N(0, "
            "2/n_in), ln of the squared norm ratio (the first layer's n/d taken out) is a "
            "random walk: at widths 32, 64 and 128 its variance and mean over independent "
            "networks at layer 100 agree with those of Σ ln R_l drawn directly, R = (2/n) Σ "
            "relu(g_i)², within 3 standard errors at every width: variance c·L/n with c = 5 + "
            "O(1/n), mean ≈ −(c/2)·L/n",
            printed="the std is kept (the mean is not); Hanin & Rolnick 2018: the log of the "
                    "norm wanders with variance ∝ Σ 1/n_l", uses=("relu kaiming",))
def relu_kaiming_walk(m: Measured) -> Outcome:
    walk, layers = m.walk, m.cfg.layers
    z = np.abs([[r["z_var"], r["z_mean"]] for r in walk.rows])
    (c, c_se), (c_walk, _) = walk.constant("var"), walk.constant("walk_var")
    (a, a_se), (a_walk, _) = walk.constant("mean"), walk.constant("walk_mean")
    ended = ", ".join(f"{v:.2g}" for v in m.of("relu kaiming", "std")[:, -1])
    return Outcome(bool(np.all(z <= WALK_AGREEMENT)),
                   f"n·Var/L = {c:.2f} ± {1.96 * c_se:.2f} (95 %; the walk drawn directly: "
                   f"{c_walk:.2f}, {WALK_CONSTANT:g} as n → ∞), mean {a:.2f}·L/n (walk "
                   f"{a_walk:.2f}), largest |z| {np.max(z):.1f}; the width-{m.cfg.width} seeds "
                   f"end at std {ended}",
                   "; ".join(f"n = {r['width']}, {r['networks']} networks: variance at "
                             f"layer {layers} {r['var']:.3g} ± {r['var_se']:.2g} (walk "
                             f"{r['walk_var']:.3g}), mean {r['mean']:.3g} ± {r['mean_se']:.2g} "
                             f"(walk {r['walk_mean']:.3g}), z {r['z_var']:+.1f}, "
                             f"{r['z_mean']:+.1f}" for r in walk.rows)
                   + f" (± the standard error of as many draws of the walk, drawn directly "
                     f"{walk.rows[0]['walks']} times per width); over the widths n·Var/L = "
                     f"{c:.3f} ± {c_se:.3f} (walk {c_walk:.3f}), n·mean/L = {a:.3f} ± "
                     f"{a_se:.3f} (walk {a_walk:.3f})")


@card.claim("E4.orthogonal-isometry", "Linear layers with orthogonal weights keep every "
            "sample's norm: the root-mean-square output of layers 2 to 100 equals layer 1's "
            "within 1e-4, for every seed",
            printed="not in the sources; Saxe et al. 2014: an orthogonal deep linear network is "
                    "an isometry at any depth", uses=("linear orthogonal", "linear xavier"))
def orthogonal_isometry(m: Measured) -> Outcome:
    drift = {name: _rms_drift(m, name) for name in ("linear orthogonal", "linear xavier")}
    std = m.of("linear orthogonal", "std")
    return Outcome(bool(np.all(drift["linear orthogonal"] <= ISOMETRY_TOLERANCE)),
                   f"largest |rms_l / rms_1 − 1| {np.max(drift['linear orthogonal']):.1e}",
                   f"largest |rms_l / rms_1 − 1| over layers 2 to {m.cfg.layers}: "
                   f"{spread(drift['linear orthogonal'], '.1e')} (Xavier's i.i.d. weights: "
                   f"{spread(drift['linear xavier'], '.1e')}); std at layer 1 "
                   f"{spread(std[:, 0], '.4f')}, at layer {m.cfg.layers} "
                   f"{spread(std[:, -1], '.4f')}")


@card.claim("E4.lsuv-unit", "After LSUV (tol 0.1) every ReLU layer's pre-activation std on the "
            "seed's batch is within 0.1 of 1, layers 1 to 100, for every seed",
            printed="not in the sources; Mishkin & Matas 2016: LSUV makes each layer's output "
                    "variance 1", uses=(LSUV,))
def lsuv_unit(m: Measured) -> Outcome:
    off = np.max(np.abs(m.of(LSUV, "pre_std") - 1), axis=1)
    result = m.relu.schemes.get(LSUV)  # none where a control leaves LSUV out
    iterations = int(np.max(result.iterations)) if result is not None else 0
    return Outcome(bool(np.all(off < LSUV_TOLERANCE)),
                   f"largest |std(z) − 1| {np.max(off):.3g}",
                   f"largest |std(z) − 1| over layers 1 to {m.cfg.layers}: {spread(off, '.3g')}, "
                   f"recomputed from each layer's input and weights (LSUV took at most "
                   f"{iterations} scaling(s) a layer); output std at layer {m.cfg.layers} "
                   f"{spread(m.of(LSUV, 'std')[:, -1], '.3f')}")


@card.claim("E4.zero-identity", "ZerO is deterministic and makes every square ReLU layer the "
            "identity on its non-negative input: the same weights for every seed, and the std of "
            "layers 2 to 100 equal to layer 1's (within 1e-6)",
            printed="not in the sources; Zhao et al. 2022: identity and Hadamard matrices, no "
                    "randomness", uses=("relu zero",))
def zero_identity(m: Measured) -> Outcome:
    std = m.of("relu zero", "std")
    off = np.max(np.abs(std[:, 1:] / std[:, :1] - 1), axis=1)
    same = m.relu.identical["relu zero"]
    return Outcome(same and bool(np.all(off <= IDENTITY_TOLERANCE)),
                   f"same weights in every seed: {'yes' if same else 'no'}; largest "
                   f"|std_l / std_1 − 1| {np.max(off):.1e}",
                   f"weights identical across the {len(std)} seed(s): "
                   f"{'yes' if same else 'no'}; largest |std_l / std_1 − 1| over layers 2 to "
                   f"{m.cfg.layers}: {spread(off, '.1e')}; std at layer 1 "
                   f"{spread(std[:, 0], '.4f')} (the seeds differ only in their batch)")


# --- the mean-field line, the table and the figures --------------------------------------------

def _theory_std(m: Measured, name: str) -> np.ndarray:
    """The mean-field std after each layer, q_1 = n_in Var(W) q0, q_l = V(q_{l-1}); nan for
    the variants without a line."""
    if name not in THEORY_VAR:
        return np.full(m.cfg.layers, np.nan)
    stack, weight_var, width = m.stack(name), THEORY_VAR[name], m.cfg.width
    activation = "linear" if name in LINEAR else "relu"
    sigma_w = [np.sqrt(stack.fan_in * weight_var(stack.fan_in))]
    sigma_w += [np.sqrt(width * weight_var(width))] * (m.cfg.layers - 1)
    with np.errstate(over="ignore", invalid="ignore"):  # naive weights leave float64 too
        q = theory.propagate(activation, sigma_w, 0.0, stack.q0)
        return theory.activation_std(activation, q)


def _curves(m: Measured) -> dict[str, dict[str, Any]]:
    """Per variant, the bands over seeds of the activation std (index 0 the input, so that
    index l is layer l's output; the theory where it is drawable in float32) and of the
    gradient std."""
    curves: dict[str, dict[str, Any]] = {}
    for name in LINEAR + RELU:
        theory_std = _theory_std(m, name)
        drawable = (theory_std <= F32.max) & (theory_std >= SUBNORMAL_MIN)
        with_input = np.column_stack([m.of(name, "input_std"), m.of(name, "std")])
        theory_line = np.concatenate([[with_input[:, 0].mean()],
                                      np.where(drawable, theory_std, np.nan)]) \
            if name in THEORY_VAR else None
        curves[name] = {"act": _band(with_input) | {"theory": theory_line},
                        "grad": _band(m.of(name, "grad"))}
    return curves


def _band(values: np.ndarray) -> dict[str, np.ndarray]:
    """Mean, min and max over seeds per layer, inf and nan dropped (a line stops there)."""
    clean = np.where(np.isfinite(values), values, np.nan)
    with np.errstate(all="ignore"):
        broken = np.any(np.isnan(clean), axis=0)
        return {"mean": np.where(broken, np.nan, clean.mean(axis=0)),
                "min": np.where(broken, np.nan, clean.min(axis=0)),
                "max": np.where(broken, np.nan, clean.max(axis=0))}


@card.table("layers")
def layers_table(m: Measured) -> list[dict]:
    rows = []
    for name in LINEAR + RELU:
        std, grad, mean = m.of(name, "std"), m.of(name, "grad"), m.of(name, "mean")
        theory_std = _theory_std(m, name)
        for layer in range(std.shape[1]):
            rows.append({"variant": name, "layer": layer + 1,
                         "act_mean": float(np.mean(mean[:, layer])),
                         **_row_stats("act_std", std[:, layer]),
                         "theory_std": float(theory_std[layer]),
                         **_row_stats("grad_std", grad[:, layer])})
    return rows


@card.table("walk")
def walk_table(m: Measured) -> list[dict]:
    return [{"layers": m.cfg.layers, **row} for row in m.walk.rows]


@card.figure("depth-relu-walk")
def walk_figure(m: Measured, path: Path) -> Path:
    return relu_walk.figure(m.walk, m.cfg.layers, path)


def _row_stats(key: str, values: np.ndarray) -> dict[str, float]:
    with np.errstate(all="ignore"):
        return {f"{key}_mean": float(np.mean(values)), f"{key}_std": float(np.std(values)),
                f"{key}_min": float(np.min(values)), f"{key}_max": float(np.max(values))}


@card.figure("depth-activation-std")
def activation_figure(m: Measured, path: Path) -> Path:
    return plots.std_vs_depth({k: v["act"] for k, v in _curves(m).items()}, path,
                              title=f"E4 {m.cfg.layers} layers of width {m.cfg.width}, float32 "
                                    f"(dashed: mean-field theory)")


@card.figure("depth-activation-std-kept")
def kept_figure(m: Measured, path: Path) -> Path:
    """The variants that keep their scale, which overlap near 1 on the full figure's range."""
    kept = {k: v["act"] for k, v in _curves(m).items()
            if np.all((v["act"]["mean"] > 1e-2) & (v["act"]["mean"] < 1e2))}
    return _band_figure(kept, path, first_layer=0, ylabel="std of the layer's output",
                        title="E4 the variants that keep their scale (band: min-max over seeds; "
                              "dashed: mean-field theory)")


@card.figure("depth-gradient-std")
def gradient_figure(m: Measured, path: Path) -> Path:
    return _band_figure({k: v["grad"] for k, v in _curves(m).items()}, path, first_layer=1,
                        ylabel="std of ∂L/∂z (softmax cross-entropy)",
                        title="E4 back-propagated gradient per layer (band: min-max over seeds)")


def _band_figure(curves: dict, path: Path, *, first_layer: int, ylabel: str, title: str
                 ) -> Path:
    """The per-variant bands, each variant in its colour of the full figure (tab10 in the
    order of LINEAR then RELU) and the context variants dash-dotted with markers."""
    order = LINEAR + RELU
    return plots.band_curves(curves, path, first_layer=first_layer, ylabel=ylabel, title=title,
                             colors=[plots.TAB10[order.index(name) % 10] for name in curves],
                             marked=set(CONTEXT) & set(curves))


@card.notes
def notes(m: Measured) -> list[str]:
    cfg, depth = m.cfg, m.cfg.layers
    kaiming_last = m.of("relu kaiming", "std")[:, -1]
    return [f"{cfg.seeds} seeds and a batch of {cfg.batch} training images per seed, to keep "
            f"the card fast: every replica needs {depth} × {cfg.width}² random weights, whose "
            f"draws are most of the card's time.",
            f"{depth} bias-free layers of width {cfg.width} (the first maps {m.linear.fan_in} "
            f"pixels to {cfg.width}) in float32, then a linear 10-unit head with the same init; "
            f"the backward pass is softmax cross-entropy on the images' labels, and the "
            f"gradient std is that of ∂L/∂z of each layer.",
            "Statistics are computed in float64 from the float32 values, so subnormal values "
            "count as non-zero; 'exactly 0' means every value of the layer's output is 0.",
            "The variants of a seed share its random stream and its batch: naive and tiny are "
            "the same draws, 100 times apart, and the two Xavier stacks the same matrices "
            "(drawn once, for the linear stack).",
            "The dashed theory is the mean-field recursion (theory.variance_map) with each "
            "variant's n·Var(W), drawn where it stays inside float32's range (not for the "
            "context variants).",
            f"At finite width the mean-field std is only the average: per seed, the log of a "
            f"ReLU stack's variance wanders like a random walk whose spread grows with "
            f"depth/width (Hanin & Rolnick 2018), and the batch does not average it out "
            f"because a deep ReLU stack makes its inputs nearly collinear (mean cosine between "
            f"the batch's samples at layer {depth}: ReLU + Kaiming "
            f"{spread(m.of('relu kaiming', 'cosine'), '.3f')}, linear + Xavier "
            f"{spread(m.of('linear xavier', 'cosine'), '.3f')}), while a linear stack keeps "
            f"their spread and stays tighter. Kaiming std at layer {depth} per seed: "
            f"{', '.join(f'{v:.3g}' for v in kaiming_last)} (theory "
            f"{_theory_std(m, 'relu kaiming')[-1]:.3g}). So no band is claimed: "
            f"E4.relu-kaiming-walk measures the walk at widths {cfg.walk_widths}, where tens of "
            f"draws are cheap, one image a network, against the walk drawn directly (not 5·L/n, "
            f"its leading order)."] + _context_notes(m)


def _context_notes(m: Measured) -> list[str]:
    depth, width = m.cfg.layers, m.cfg.width
    orthogonal = m.of("linear orthogonal", "std")
    lsuv, zero = m.of(LSUV, "std"), m.of("relu zero", "std")
    return [f"Context variants, beyond the sources (as E1's): orthogonal weights in the linear "
            f"stack; LSUV (tol {LSUV_TOLERANCE}, on each seed's own batch) and ZerO in the ReLU "
            f"stack. LSUV starts from orthonormal matrices, its own first step: the linear "
            f"orthogonal variant's, drawn once per seed. Orthogonal and LSUV ran on "
            f"{len(orthogonal)} seed(s), ZerO on {len(zero)}: an orthogonal draw is a QR per "
            f"layer (about 4 s a seed at width {width}).",
            f"What they show: orthogonal layers are isometries, so a linear stack's std stays "
            f"at layer 1's ({spread(orthogonal[:, 0], '.3f')}; the first layer maps "
            f"{m.linear.fan_in} pixels to {width} units) to layer {depth} "
            f"({spread(orthogonal[:, -1], '.3f')}) with none of Xavier's drift. LSUV "
            f"measures and divides, so every ReLU layer's pre-activation std is 1 on the batch "
            f"and its output std stays near {spread(np.median(lsuv, axis=1), '.3f')} "
            f"(median over layers) to layer {depth} ({spread(lsuv[:, -1], '.3f')}), where "
            f"Kaiming's per-seed random walk ends at "
            f"{', '.join(f'{v:.3g}' for v in m.of('relu kaiming', 'std')[:, -1])}. ZerO's "
            f"square layers are the identity and ReLU passes non-negative values unchanged, so "
            f"every layer from 2 on repeats layer 1's output exactly (std "
            f"{spread(zero[:, -1], '.3f')}).",
            "Fixup does not apply to this card: it scales the branches of residual blocks and "
            "zeroes each branch's last layer so that every block starts as the identity, and "
            "this plain stack has no branch (schemes.fixup refuses a model without Residual "
            "blocks). E7 `fixup` covers residual networks."]
