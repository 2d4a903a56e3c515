"""E9 `normalization`: plain, BatchNorm and LayerNorm ReLU stacks of depth 50 with the naive,
tiny and He inits: what normalization rescues (the forward signal, whatever the weights'
scale) and what it does not (the backward pass of a deep BatchNorm stack, and training)."""

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
from initlab.nn import BatchNorm, Dense, LayerNorm, Sequential
from initlab.probes import Probe
from initlab.report import figures as plots

ARCHS: dict[str, Any] = {"plain": None, "batchnorm": BatchNorm, "layernorm": LayerNorm}
INITS = {"naive": {"name": "normal", "std": 1.0}, "tiny": {"name": "normal", "std": 0.01},
         "he": "he_normal"}
NORMED = [f"{a} {i}" for a in ("batchnorm", "layernorm") for i in INITS]
SIGNAL_BAND = (0.2, 2.0)  # relu of a standardized z has std 0.58
GROWTH = 1.1  # "grows geometrically": the gradient's fitted factor per block, towards the input
PLAIN_RANGE = 1e3  # "overflows" / "vanishes": the last block's std over the first's
TRAINED = 0.5  # train accuracy that counts as trained (chance is 0.1)


@dataclass(frozen=True)
class Settings(Config):
    depth: int = 50
    width: int = 32
    steps: int = 100
    batch: int = 64
    learning_rate: float = 1e-3  # Adam


card: Card[Measured] = Card(
    "normalization",
    title="E9 normalization: BatchNorm and LayerNorm against bad inits",
    claim="Normalization layers rescue the signal that naive and tiny inits destroy in a deep "
          "plain stack, whatever the weights' scale; they do not rescue the backward pass of a "
          "deep BatchNorm stack, nor, on a fixed budget, its training.",
    why="A normalized layer divides its pre-activations by their own std, so its output does "
        "not depend on the scale of its weights: N(0, 1), N(0, 1e-4) and He weights give the "
        "same forward signal. The backward pass divides by that std too, and through the batch "
        "statistics every layer mixes the samples' gradients; Yang et al. (2019, 'A mean field "
        "theory of batch normalization') show that this makes the gradient grow geometrically "
        "with depth in a plain BatchNorm stack, whatever the init.",
    data="scikit-learn's digits (8x8 images, 10 classes), standardized",
    sizes=sizes(Settings(seeds=3), tiny={"seeds": 2, "depth": 10, "width": 16, "steps": 60},
                full={"seeds": 10, "steps": 400}),
    variants={f"{arch} {init}": Variant(spec) for arch in ARCHS for init, spec in INITS.items()},
    control=Control(("N.signal-rescued",), {"batchnorm tiny": Variant("zeros"),
                                            "layernorm tiny": Variant("zeros")},
                    why="all-zero weights: every pre-activation is 0, a normalization has "
                        "nothing to rescale and the signal is 0"),
)


@dataclass
class Measured:
    cfg: Settings
    labels: list[tuple[str, int]]
    std: np.ndarray  # (R, depth): each block's output std at init
    grad: np.ndarray  # (R, depth): the back-propagated gradient's std at each block
    outputs: dict[str, np.ndarray]  # variant -> (seeds, depth, n, width) of the probe batch
    costs: np.ndarray  # (logs, R)
    steps: list[int]
    train: np.ndarray  # (R,) train accuracy after the budget
    test: np.ndarray

    def of(self, name: str, values: Any) -> np.ndarray:
        return pick(self.labels, name, values)


def _stack(arch: str, cfg: Settings) -> Sequential:
    norm = ARCHS[arch]
    blocks = ([Dense(cfg.width, "relu")] if norm is None else [Dense(cfg.width), norm("relu")]
              for _ in range(cfg.depth))
    return Sequential([layer for block in blocks for layer in block] + [Dense(10, "softmax")]
                      ).compile("categorical_crossentropy", optimizer="adam")


@card.measure
def measure(run: Run) -> Measured:
    cfg: Settings = run.cfg
    split = data.digits()
    X, X_test, _ = data.standardize(split.X_train, split.X_test)
    Y, Y_test = np.eye(10)[split.y_train], np.eye(10)[split.y_test]
    parts = []
    for k, arch in enumerate(ARCHS):
        names = [n for n in run.variants if n.startswith(arch)]
        parts.append((run.labels(names), _measure_arch(run, arch, names, X, Y, X_test, Y_test)))
        run.progress((k + 1) / len(ARCHS))
    labels = [label for part, _ in parts for label in part]
    joined = {key: np.concatenate([p[key] for _, p in parts], axis=-1 if key == "costs" else 0)
              for key in ("std", "grad", "costs", "train", "test")}
    outputs = {name: out for _, p in parts for name, out in p["outputs"].items()}
    return Measured(cfg, labels, joined["std"], joined["grad"], outputs, joined["costs"],
                    parts[0][1]["steps"], joined["train"], joined["test"])


def _measure_arch(run: Run, arch: str, names: list[str], X, Y, X_test, Y_test) -> dict:
    """One architecture's variants x seeds as replicas: the signal at init, then training."""
    cfg: Settings = run.cfg
    model = _stack(arch, cfg).build(X.shape[1], **run.sweep(names))
    block = 1 if ARCHS[arch] is None else 2  # layers per block; its output is the last one's
    ends = list(range(block - 1, block * cfg.depth, block))
    with np.errstate(all="ignore"), model.frozen_buffers():  # a measurement, not a step
        table = Probe(model, symmetry=False, histograms=False).record(X[:256], Y[:256])
        outputs = np.stack([model.traces[i].out for i in ends], axis=1)  # (R, depth, n, w)
        std, grad = (table.array(col, step=0)[ends].T for col in ("act_std", "grad_std"))
        model.fit(X, Y, learning_rate=cfg.learning_rate, steps=cfg.steps, batch_size=cfg.batch,
                  log_every=max(1, cfg.steps * cfg.batch // len(X) // 5))
    return {"std": std, "grad": grad, "costs": np.array(model.history["cost"]),
            "steps": [e * -(-len(X) // cfg.batch) for e in model.history["epoch"]],
            "train": model.evaluate(X, Y)["accuracy"],
            "test": model.evaluate(X_test, Y_test)["accuracy"],
            "outputs": {n: outputs[model.select(variant=n)] for n in names}}


@card.claim("N.plain-fails", "Plain ReLU stack: with N(0, 1) weights the last block's std is "
            "over 1e3 times the first's, with N(0, 1) x 0.01 under 1e-3 times, for every seed",
            printed="(E4) N(0, 1) explodes, N(0, 1) x 0.01 vanishes",
            uses=("plain naive", "plain tiny"))
def plain_fails(m: Measured) -> Outcome:
    naive, tiny = (m.of(f"plain {i}", m.std)[:, -1] / m.of(f"plain {i}", m.std)[:, 0]
                   for i in ("naive", "tiny"))
    return Outcome(bool(np.all(naive > PLAIN_RANGE) and np.all(tiny < 1 / PLAIN_RANGE)),
                   f"last / first block's std: naive {np.min(naive):.2g}, tiny "
                   f"{np.max(tiny):.2g}",
                   f"last / first block's std: naive {spread(naive, '.3g')}, tiny "
                   f"{spread(tiny, '.3g')}")


@card.claim("N.signal-rescued", "With BatchNorm or LayerNorm after every layer, every block's "
            "output std at init is within [0.2, 2] for the naive, tiny and He inits, for every "
            "seed", printed="normalization makes the init matter less (the usual advice)",
            uses=tuple(NORMED))
def signal_rescued(m: Measured) -> Outcome:
    per = {name: m.of(name, m.std) for name in NORMED}
    lo, hi = (min(float(np.nanmin(v)) for v in per.values()),
              max(float(np.nanmax(v)) for v in per.values()))
    inside = all(np.all((v >= SIGNAL_BAND[0]) & (v <= SIGNAL_BAND[1])) for v in per.values())
    return Outcome(inside, f"every normalized block's std in [{lo:.3g}, {hi:.3g}]",
                   "; ".join(f"{name}: [{np.nanmin(v):.3g}, {np.nanmax(v):.3g}]"
                             for name, v in per.items()))


@card.claim("N.scale-free", "A normalized layer does not see its weights' scale: at the first "
            "block the naive and He inits of a seed (the same draws, scaled) give the same "
            "outputs to 1e-4 relative under BatchNorm and LayerNorm, and under LayerNorm at "
            "every block", printed="not in the sources",
            uses=tuple(n for n in NORMED if "tiny" not in n))
def scale_free(m: Measured) -> Outcome:
    first = {arch: _relative_gap(m.outputs[f"{arch} naive"][:, :1], m.outputs[f"{arch} he"][:, :1])
             for arch in ("batchnorm", "layernorm")}
    every = {arch: _relative_gap(m.outputs[f"{arch} naive"], m.outputs[f"{arch} he"])
             for arch in ("batchnorm", "layernorm")}
    worst = max(max(float(np.max(g)) for g in first.values()), float(np.max(every["layernorm"])))
    return Outcome(worst < 1e-4, f"largest relative difference naive vs He: {worst:.1e} "
                                 f"(BatchNorm's last block: {np.max(every['batchnorm']):.1e})",
                   "; ".join(f"{arch}: first block {spread(first[arch], '.2e')}, every block "
                             f"{spread(every[arch], '.2e')}" for arch in first)
                   + " (per seed; what remains is eps = 1e-5 added to each variance, which the "
                     "BatchNorm stack amplifies block by block as it does the gradient)")


def _relative_gap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per seed, max |a - b| / max |b| over every block and sample."""
    axes = tuple(range(1, a.ndim))
    return np.max(np.abs(a - b), axis=axes) / np.max(np.abs(b), axis=axes)


@card.claim("N.batchnorm-gradient", "BatchNorm does not rescue the backward pass: at init the "
            "back-propagated gradient grows geometrically towards the input, by more than 1.1x "
            "per block (a fit over the blocks), for every init and seed, while LayerNorm's and "
            "plain He's change by less than 1.1x per block",
            printed="not in the sources; Yang et al. 2019: batch normalization causes "
                    "gradient explosion", uses=(*NORMED, "plain he"))
def batchnorm_gradient(m: Measured) -> Outcome:
    factor = {name: m.of(name, _per_block(m.grad)) for name in (*NORMED, "plain he")}
    bn = [f for n, f in factor.items() if n.startswith("batchnorm")]
    others = [f for n, f in factor.items() if not n.startswith("batchnorm")]
    holds = (all(np.all(f > GROWTH) for f in bn)
             and all(np.all((f < GROWTH) & (f > 1 / GROWTH)) for f in others))
    return Outcome(holds, f"gradient growth per block towards the input: BatchNorm at least "
                          f"{min(float(np.min(f)) for f in bn):.3g}x, the others at most "
                          f"{max(float(np.max(f)) for f in others):.3g}x",
                   "; ".join(f"{name}: {spread(f, '.3g')}" for name, f in factor.items()))


def _per_block(grad: np.ndarray) -> np.ndarray:
    """Per replica, exp(-slope) of a least-squares line through ln(gradient std) against the
    block index: the factor by which the gradient grows per block going back to the input."""
    blocks = np.arange(grad.shape[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        slopes = np.polyfit(blocks, np.log(grad).T, 1)[0]
    return np.exp(-slopes)


@card.claim("N.training", "Normalization does not rescue training on the budget: every "
            "BatchNorm and LayerNorm stack started from the naive or tiny init ends below 50 % "
            "train accuracy (chance: 10 %), in every seed", printed="normalization lets deep "
            "networks train from a poor init (the usual advice)",
            uses=tuple(n for n in NORMED if "he" not in n.split()))
def training(m: Measured) -> Outcome:
    acc = {name: m.of(name, m.train) for name in dict.fromkeys(n for n, _ in m.labels)}
    rescued = [n for n in NORMED if "he" not in n.split()]
    best = max(rescued, key=lambda n: float(np.max(acc[n])))
    return Outcome(all(bool(np.all(acc[n] < TRAINED)) for n in rescued),
                   f"best normalized stack from a bad init: {best} at "
                   f"{float(np.max(acc[best])):.0%} after {m.cfg.steps} steps",
                   "; ".join(f"{name} {spread(a, '.0%')}" for name, a in acc.items()))


@card.table("signal")
def signal_table(m: Measured) -> list[dict]:
    return [{"variant": name, "seed": seed, "block": b + 1, "std": float(m.std[r, b]),
             "grad_std": float(m.grad[r, b])}
            for r, (name, seed) in enumerate(m.labels) for b in range(m.cfg.depth)]


@card.table("training")
def training_table(m: Measured) -> list[dict]:
    return [{"variant": name, "seed": seed, "first_cost": float(m.costs[0, r]),
             "final_cost": float(m.costs[-1, r]), "train_accuracy": float(m.train[r]),
             "test_accuracy": float(m.test[r])} for r, (name, seed) in enumerate(m.labels)]


def _curves(m: Measured, values: np.ndarray) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """Per architecture, per init: median and min-max over seeds, by block."""
    out: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for name in dict.fromkeys(n for n, _ in m.labels):
        arch, init = name.split()
        v = m.of(name, values)
        out.setdefault(arch, {})[init] = {"mean": np.median(v, axis=0), "min": v.min(axis=0),
                                          "max": v.max(axis=0)}
    return out


@card.figure("normalization-signal")
def signal_figure(m: Measured, path: Path) -> Path:
    return plots.band_panels(_curves(m, m.std), path, xlabel="block", ylabel="output std",
                             title="E9 each block's output std at init (median, band: min-max "
                                   "over seeds)")


@card.figure("normalization-gradient")
def gradient_figure(m: Measured, path: Path) -> Path:
    return plots.band_panels(_curves(m, m.grad), path, xlabel="block",
                             ylabel="back-propagated gradient std",
                             title="E9 the gradient at each block at init (each panel its own "
                                   "scale)", sharey=False)


@card.figure("normalization-costs")
def cost_figure(m: Measured, path: Path) -> Path:
    panels: dict[str, dict[str, np.ndarray]] = {}
    for name in dict.fromkeys(n for n, _ in m.labels):
        arch, init = name.split()
        panels.setdefault(arch, {})[init] = m.of(name, m.costs.T)
    return plots.cost_panels(panels, m.steps, path, xlabel="step",
                             title="E9 training cost (Adam, band: min-max over seeds)")


@card.notes
def notes(m: Measured) -> list[str]:
    cfg = m.cfg
    return [f"{cfg.seeds} seeds; {cfg.depth} blocks of width {cfg.width}: Dense then ReLU "
            f"(plain), or Dense, then BatchNorm or LayerNorm, then ReLU; a softmax head. Inits "
            f"of every Dense layer: naive N(0, 1), tiny N(0, 1e-4), He N(0, 2/n_in).",
            f"The signal and gradient at init are of one training-mode pass (batch statistics) "
            f"over 256 training images, the running statistics left untouched; training is "
            f"{cfg.steps} Adam steps of batch {cfg.batch} at learning rate {cfg.learning_rate}, "
            f"accuracy on the 1,347 training images (BatchNorm with its running statistics)."]
