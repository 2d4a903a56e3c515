"""E4 `depth`: 100 layers of width 512 in float32 at initialization: N(0, 1) weights overflow,
N(0, 1) × 0.01 underflow, Xavier keeps a linear stack's scale, halves a ReLU stack's variance
at every layer, and Kaiming keeps it on average: each draw's log squared norm is a random walk
of variance ≈ 5 L/n (three smaller widths against the walk drawn directly). In context, as E1's
context variants: orthogonal weights in the linear stack, LSUV and ZerO in the ReLU stack."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from initlab import data, schemes
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
from initlab.experiments.depth_probe import Stack, probe, probe_walk
from initlab.experiments.relu_walk import (  # simulate_walk: re-exported, the tests draw it
    WALK_CONSTANT,
    Walk,
    simulate_walk,  # noqa: F401
)
from initlab.nn import Sequential

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
    linear, kept = probe(run, LINEAR, "linear", standardized, keep=set(shared.values()),
                         pre_std=LSUV)
    run.progress(0.6)
    relu, _ = probe(run, RELU, "relu", standardized,
                    start={name: kept[source] for name, source in shared.items()},
                    pre_std=LSUV)
    run.progress(0.9)
    walk = probe_walk(run, standardized, simulated=SIMULATED_WALKS,
                      simulation_seed=SIMULATION_SEED)
    run.progress(0.95)
    return Measured(cfg, split.name, (float(X_train.mean()), float(X_train.std())),
                    (float(X_val.mean()), float(X_val.std())), scale, linear, relu, shared,
                    walk)


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


# --- the table, the figures and the notes (depth_report), in the report's order ----------------
# imported last: depth_report reads this module's variant tables and tolerances
from initlab.experiments import depth_report  # noqa: E402

card.table("layers")(depth_report.layers_table)
card.table("walk")(depth_report.walk_table)
card.figure("depth-relu-walk")(depth_report.walk_figure)
card.figure("depth-activation-std")(depth_report.activation_figure)
card.figure("depth-activation-std-kept")(depth_report.kept_figure)
card.figure("depth-gradient-std")(depth_report.gradient_figure)
card.notes(depth_report.notes)
