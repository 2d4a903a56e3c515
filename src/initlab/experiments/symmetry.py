"""E2 `symmetry`: constant weights keep every unit of a layer identical, so a wide network
initialised that way trains as a network with one unit per hidden layer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from initlab import data
from initlab.experiments.card import (
    Card,
    Config,
    Control,
    Outcome,
    Run,
    Variant,
    per_epoch_rows,
    pick,
    sizes,
    spread,
)
from initlab.nn import Dense, Sequential
from initlab.probes import distinct_units
from initlab.report import figures as plots

HIDDEN = (12, 6)
RTOL = 1e-9  # distinct units: rows equal to this relative tolerance count as one unit
ACCURACY_TOL = 0.01  # "no better": one test point in a hundred, on the mean over seeds
# the ReLU variants (as E1's network) and the tanh one; the constant ones are compared with
# their 1-unit network
CONSTANTS = {"constant 0.5": 0.5, "constant 1.0": 1.0}
RELU = ("constant 0.5", "constant 1.0", "he")
TANH = ("zeros (tanh)",)


@dataclass(frozen=True)
class Settings(Config):
    epochs: int = 1_500
    log_every: int = 100
    learning_rate: float = 0.01


card: Card[Measured] = Card(
    "symmetry",
    title="E2 symmetry: constant weights keep units identical",
    claim="If every weight starts at the same value (biases 0), every unit of a layer gets the "
          "same gradient and stays identical, so the layer acts as a single unit; random "
          "weights break the symmetry.",
    why="With every weight equal, the units of a layer see the same input through the same "
        "weights and compute the same output; back-propagation then hands each of them the same "
        "gradient, so one update keeps them equal, and so does every later one. The wide "
        "network is then a one-unit-per-layer network in disguise: its function, and so its "
        "accuracy, is one such a network can have.",
    data="make_moons(400 train / 100 test, noise 0.2), drawn per seed",
    sizes=sizes(Settings(), tiny={"seeds": 2, "epochs": 100, "log_every": 20},
                full={"seeds": 30, "epochs": 15_000, "log_every": 1_000}),
    variants={"constant 0.5": Variant({"name": "constant", "value": 0.5}),
              "constant 1.0": Variant({"name": "constant", "value": 1.0}),
              "he": Variant("he_normal"),
              "zeros (tanh)": Variant("zeros")},
    control=Control(("E2.constant-one-unit", "E2.no-better"),
                    {"constant 0.5": Variant({"name": "normal", "mean": 0.5, "std": 1e-3})},
                    why="0.5 + N(0, 1e-3): the units start 1e-3 apart, far beyond the 1e-9 "
                        "tolerance, and the network is no longer its collapsed 1-unit form"),
)


@dataclass
class Training:
    """Every variant x seed of one architecture as replicas of one model."""

    labels: list[tuple[str, int]]
    model: Sequential
    costs: np.ndarray
    epochs: list[int]
    distinct: np.ndarray  # (R, hidden layers)
    train: np.ndarray
    test: np.ndarray
    X_test: np.ndarray

    def of(self, name: str, values) -> np.ndarray:
        return pick(self.labels, name, values)


@dataclass
class Measured:
    cfg: Settings
    wide: Training  # ReLU
    tanh: Training
    one: Training  # the 1-unit networks of the constant variants
    collapse_gap: dict[str, np.ndarray]  # per constant variant, per seed: max |Δp|

    def constant_runs(self) -> list[tuple[Training, str]]:
        return [(self.wide, name) for name in CONSTANTS] + [(self.tanh, n) for n in TANH]


def _train(run: Run, widths: Sequence[int], hidden: str, variants: Mapping[str, object]) \
        -> Training:
    cfg: Settings = run.cfg
    labels = [(name, seed) for name in variants for seed in run.seeds]
    splits = {s: data.moons(s) for s in run.seeds}
    X, y, X_test, y_test = (np.stack([splits[s][k] for _, s in labels]) for k in range(4))
    model = Sequential([Dense(w, hidden) for w in widths] + [Dense(1, "sigmoid")])
    model.compile("binary_crossentropy").build(
        2, rng=[np.random.SeedSequence(s) for _, s in labels],
        variants=[variants[name] for name, _ in labels],
        coords=[{"variant": name, "seed": seed} for name, seed in labels])
    model.fit(X, y, learning_rate=cfg.learning_rate, epochs=cfg.epochs, log_every=cfg.log_every)
    distinct = np.array([[distinct_units(layer.params["W"][r], layer.params["b"][r], RTOL)
                          for layer in model.layers[:-1]] for r in range(len(labels))])
    # atleast_1d: a single replica (one variant, one seed) evaluates to plain numbers
    return Training(labels, model, np.array(model.history["cost"]), model.history["epoch"],
                    distinct, np.atleast_1d(model.evaluate(X, y)["accuracy"]),
                    np.atleast_1d(model.evaluate(X_test, y_test)["accuracy"]), X_test)


def collapse(model: Sequential, replicas: Sequence[int]) -> Sequential:
    """The 2 -> 1 -> ... -> 1 network that computes what the given replicas compute, valid when
    every hidden layer's units are identical: unit 0 of each hidden layer stands for all of
    them, and the next layer's weight from it is the sum of its weights from the copies."""
    hidden, last = model.layers[:-1], model.layers[-1]
    small = Sequential([Dense(1, layer.activation) for layer in hidden]
                       + [Dense(last.units, last.activation)])
    fan_in = model.layers[0].fan_in
    if fan_in is None:
        raise ValueError("collapse needs a built model")
    small.compile(model.loss).build(fan_in, rng=0, replicas=len(replicas))
    index = list(replicas)
    for i, (big, one) in enumerate(zip(model.layers, small.layers, strict=True)):
        W, b = big.params["W"][index], big.params["b"][index]
        if i > 0:
            W = W.sum(axis=1, keepdims=True)  # the identical copies below feed in together
        keep = slice(None) if big is last else slice(0, 1)  # unit 0 stands for its layer
        one.params["W"][:] = W[:, :, keep]
        one.params["b"][:] = b[:, :, keep]
    return small


def _one_unit_variants() -> dict[str, list]:
    """The 1-unit network that computes the same function at epoch 0 as the wide constant one:
    weights c, 12 c, 6 c (each unit sums the 12, then 6, identical copies below it)."""
    widths = (1, *HIDDEN)
    return {name: [{"name": "constant", "value": c * n} for n in widths]
            for name, c in CONSTANTS.items()}


@card.measure
def measure(run: Run) -> Measured:
    init = {name: run.variants[name].init for name in RELU}
    wide = _train(run, HIDDEN, "relu", init)
    run.progress(0.55)
    tanh = _train(run, HIDDEN, "tanh", {name: run.variants[name].init for name in TANH})
    run.progress(0.75)
    one = _train(run, (1, 1), "relu", _one_unit_variants())
    run.progress(0.9)
    m = Measured(run.cfg, wide, tanh, one, {})
    # each trained constant network against its collapsed 1-unit form: equal if units are equal
    for t, name in m.constant_runs():
        index = t.model.select(variant=name)
        wide_p = t.model.take(index).predict(t.X_test[index])
        small_p = collapse(t.model, index).predict(t.X_test[index])
        # (one replica: predict drops the replica axis, so reshape rather than index axes)
        gap = np.abs(wide_p - small_p).reshape(len(index), -1)
        m.collapse_gap[name] = np.max(gap, axis=1)
    return m


def _counts_text(counts: np.ndarray) -> str:
    return "; ".join(f"layer {i + 1}: {spread(counts[:, i], '.3g')}"
                     for i in range(counts.shape[1]))


@card.claim("E2.constant-one-unit",
            "Constant init (every weight c = 0.5, 1.0, or 0 with tanh units; biases 0) leaves "
            "exactly 1 distinct unit in every hidden layer after training, for every seed",
            printed="no number printed; neurons of a layer 'evolve symmetrically' and the layer "
                    "acts as one neuron (seeds 000, 001)",
            uses=("constant 0.5", "constant 1.0", "zeros (tanh)"))
def constant_one_unit(m: Measured) -> Outcome:
    constant = {name: t.of(name, t.distinct) for t, name in m.constant_runs()}
    most = max(int(np.max(c)) for c in constant.values())
    return Outcome(all(bool(np.all(c == 1)) for c in constant.values()),
                   f"most distinct units in a constant-init layer: {most}",
                   "; ".join(f"{name}: {_counts_text(c)}" for name, c in constant.items()))


@card.claim("E2.he-distinct", "He init leaves all 12 + 6 hidden units distinct, for every seed",
            printed="no number printed; random weights make every neuron behave differently "
                    "(seeds 000, 004)", uses=("he",))
def he_distinct(m: Measured) -> Outcome:
    he = m.wide.of("he", m.wide.distinct)
    return Outcome(bool(np.all(he == np.array(HIDDEN))),
                   f"fewest distinct units: {int(he[:, 0].min())} of {HIDDEN[0]}, "
                   f"{int(he[:, 1].min())} of {HIDDEN[1]}",
                   f"he: {_counts_text(he)} (widths {HIDDEN[0]}, {HIDDEN[1]})")


@card.claim("E2.no-better", "The constant-init network is no better than the same network "
            "with one unit per hidden layer",
            printed="no number printed; adding neurons does not make the network more "
                    "expressive (seed 000)", uses=("constant 0.5", "constant 1.0"))
def no_better(m: Measured) -> Outcome:
    worst = max(float(np.max(g)) for g in m.collapse_gap.values())
    accuracy = {name: (m.wide.of(name, m.wide.test), m.one.of(name, m.one.test))
                for name in CONSTANTS}
    gain = max(float(np.mean(a) - np.mean(b)) for a, b in accuracy.values())
    return Outcome(worst < RTOL and gain <= ACCURACY_TOL,
                   f"wide vs its 1-unit form: max |Δp| = {worst:.1e}, accuracy gain {gain:+.1%}",
                   "; ".join(f"{name}: test accuracy {spread(a, '.1%')} vs 1-unit "
                             f"{spread(b, '.1%')}" for name, (a, b) in accuracy.items())
                   + f"; trained constant networks vs their collapsed 1-unit form: max |Δp| = "
                     f"{worst:.1e}")


@card.notes
def notes(m: Measured) -> list[str]:
    return [
        f"{len(m.wide.labels) // len(RELU)} seeds; {m.cfg.epochs:,} full-batch epochs at "
        f"learning rate {m.cfg.learning_rate} "
        f"(the sources train 15,000, as the full size does; the symmetry is exact at any "
        f"epoch count, so fewer epochs do not weaken the unit counts; only the accuracies are "
        f"of less-trained "
        f"networks). The ReLU variants train as one model, zeros-with-tanh and the 1-unit "
        f"networks as two more (other architectures).",
        f"Distinct units: columns of W with their bias that differ by more than {RTOL:g} "
        f"relative, entry by entry (probes.distinct_units).",
        "The fair 1-unit network: a constant-c network is at every epoch exactly a "
        "2 -> 1 -> 1 -> 1 network whose weights start at c, 12 c and 6 c (each unit sums its 12, "
        "then 6, identical inputs). The card checks that directly: each trained network and its "
        "collapsed 1-unit form give the same probabilities (max |Δp| in the claim), so it can be "
        "no better than a 1-unit network. Equal accuracy with a separately trained 1-unit "
        "network is not to be expected: gradient descent on the wide network moves the "
        "collapsed weights with learning rate x (units feeding in / units of the layer), i.e. "
        "x 1/12, x 2 and x 6, and the biases x 1/12, x 1/6 and x 1, not with the plain rate (a "
        "test checks this to 1e-12). So the card trains that 1-unit network (weights c, 12 c, "
        "6 c: the same function at epoch 0) at the plain rate, and calls the wide one 'no "
        f"better' if its mean test accuracy is at most {ACCURACY_TOL:.0%} (one test point in "
        f"100) above it. A 1-unit network with every weight = c would start as a different "
        f"function (second-layer input 12 times, logit 72 times smaller), so it is not the same "
        f"network.",
        "Zeros with tanh never moves: every unit outputs tanh(0) = 0, so every weight gradient "
        "is 0, and the output bias's gradient mean(1/2 - y) is 0 on the balanced classes; its "
        "1-unit form (checked by the collapse) is the same constant 1/2 predictor.",
    ]


@card.table("units")
def units(m: Measured) -> list[dict]:
    return [{"variant": name, "seed": seed, "distinct_layer1": int(d[0]),
             "distinct_layer2": int(d[1]), "train_accuracy": float(tr),
             "test_accuracy": float(te), "final_cost": float(c)}
            for t in (m.wide, m.tanh)
            for (name, seed), d, tr, te, c in zip(t.labels, t.distinct, t.train, t.test,
                                                  t.costs[-1], strict=True)]


@card.table("one-unit")
def one_unit(m: Measured) -> list[dict]:
    rows = []
    for t, name in m.constant_runs():
        test = t.of(name, t.test)
        one_test = m.one.of(name, m.one.test) if name in CONSTANTS else [np.nan] * len(test)
        seeds = [s for n, s in t.labels if n == name]
        rows += [{"variant": name, "seed": s, "test_accuracy": float(a),
                  "one_unit_test_accuracy": float(b), "collapse_max_abs_dp": float(g)}
                 for s, a, b, g in zip(seeds, test, one_test, m.collapse_gap[name],
                                       strict=True)]
    return rows


@card.table("costs")
def costs(m: Measured) -> list[dict]:
    return [row for architecture, t in (("relu", m.wide), ("tanh", m.tanh), ("one-unit", m.one))
            for row in per_epoch_rows(t.labels, t.costs, t.epochs, architecture=architecture)]


@card.figure("symmetry-units")
def units_figure(m: Measured, path: Path) -> Path:
    return _distinct_units_figure({name: t.of(name, t.distinct) for t, name in
                                   [*m.constant_runs(), (m.wide, "he")]}, path)


@card.figure("symmetry-costs")
def cost_figure(m: Measured, path: Path) -> Path:
    curves = {name: t.of(name, t.costs.T) for t in (m.wide, m.tanh)
              for name in dict.fromkeys(n for n, _ in t.labels)}
    curves |= {f"1-unit from {name}": m.one.of(name, m.one.costs.T) for name in CONSTANTS}
    return plots.cost_curves(curves, m.wide.epochs, path,
                             title="E2 training cost (line: median, band: min-max over seeds)")


def _distinct_units_figure(counts: Mapping[str, np.ndarray], path: Path) -> Path:
    """Bars: mean distinct units per hidden layer per variant, min-max whiskers, the widths
    dashed."""
    plt = plots.plt
    fig, ax = plt.subplots(figsize=(7, 3.8))
    x = np.arange(len(counts))
    for i, width in enumerate(HIDDEN):
        values = [c[:, i] for c in counts.values()]
        mean = np.array([v.mean() for v in values])
        err = np.array([[m - v.min() for m, v in zip(mean, values, strict=True)],
                        [v.max() - m for m, v in zip(mean, values, strict=True)]])
        ax.bar(x + (i - 0.5) * 0.38, mean, 0.36, yerr=err, capsize=3,
               label=f"hidden layer {i + 1} (width {width})")
        ax.axhline(width, color=f"C{i}", linestyle="--", linewidth=0.8)
    ax.set_xticks(x, list(counts))
    ax.set_ylabel("distinct units after training")
    ax.set_title("E2 distinct units per hidden layer (whiskers: min-max over seeds)")
    ax.legend(fontsize=8)
    path = Path(path)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
