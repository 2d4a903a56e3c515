"""E2 `symmetry`: constant weights keep every unit of a layer identical, so a wide network
initialised that way trains as a network with one unit per hidden layer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from initlab import data  # noqa: E402
from initlab.experiments.runner import CardResult, Claim, Context, check, spread  # noqa: E402
from initlab.nn import Dense, Sequential  # noqa: E402
from initlab.probes import distinct_units  # noqa: E402
from initlab.report import figures as plots  # noqa: E402

NAME = "symmetry"
TITLE = "E2 symmetry: constant weights keep units identical"
CLAIM = ("If every weight starts at the same value (biases 0), every unit of a layer gets the "
         "same gradient and stays identical, so the layer acts as a single unit; random "
         "weights break the symmetry.")
WHY = ("With every weight equal, the units of a layer see the same input through the same weights "
       "and compute the same output; back-propagation then hands each of them the same gradient, "
       "so one update keeps them equal, and so does every later one. The wide network is then a "
       "one-unit-per-layer network in disguise: its function, and so its accuracy, is one such a "
       "network can have.")
HIDDEN = (12, 6)
LEARNING_RATE = 0.01
RTOL = 1e-9  # distinct units: rows equal to this relative tolerance count as one unit
ACCURACY_TOL = 0.01  # "no better": one test point in a hundred, on the mean over seeds
# ReLU network, as E1; the constant variants are the ones compared with a 1-unit network
VARIANTS = {"constant 0.5": {"name": "constant", "value": 0.5},
            "constant 1.0": {"name": "constant", "value": 1.0},
            "he": "he_normal"}
CONSTANTS = {"constant 0.5": 0.5, "constant 1.0": 1.0}
TANH_VARIANTS = {"zeros (tanh)": "zeros"}
CLAIMS = [
    ("E2.constant-one-unit",
     "Constant init (every weight c = 0.5, 1.0, or 0 with tanh units; biases 0) leaves exactly "
     "1 distinct unit in every hidden layer after training, for every seed",
     "no number printed; neurons of a layer 'evolve symmetrically' and the layer acts as one "
     "neuron (seeds 000, 001)"),
    ("E2.he-distinct", "He init leaves all 12 + 6 hidden units distinct, for every seed",
     "no number printed; random weights make every neuron behave differently (seeds 000, 004)"),
    ("E2.no-better",
     "The constant-init network is no better than the same network with one unit per hidden "
     "layer",
     "no number printed; adding neurons does not make the network more expressive (seed 000)"),
]


def _moons(seeds: Sequence[int]) -> dict[int, tuple]:
    return {s: data.moons(s) for s in dict.fromkeys(seeds)}


def _train(widths: Sequence[int], hidden: str, variants: Mapping, seeds: Sequence[int],
           splits: dict, epochs: int, log_every: int) -> dict:
    """Every variant x seed of one architecture as replicas of one model."""
    labels = [(name, seed) for name in variants for seed in seeds]
    X, y, X_test, y_test = (np.stack([splits[s][k] for _, s in labels]) for k in range(4))
    model = Sequential([Dense(w, hidden) for w in widths] + [Dense(1, "sigmoid")])
    model.compile("binary_crossentropy").build(
        2, rng=[np.random.SeedSequence(s) for _, s in labels],
        variants=[variants[name] for name, _ in labels])
    model.fit(X, y, learning_rate=LEARNING_RATE, epochs=epochs, log_every=log_every)
    distinct = np.array([[distinct_units(layer.params["W"][r], layer.params["b"][r], RTOL)
                          for layer in model.layers[:-1]] for r in range(len(labels))])
    return {"labels": labels, "model": model, "costs": np.array(model.history["cost"]),
            "epochs": model.history["epoch"], "distinct": distinct,
            "train": model.evaluate(X, y)["accuracy"],
            "test": model.evaluate(X_test, y_test)["accuracy"], "X_test": X_test}


def _pick(run: dict, name: str, values) -> np.ndarray:
    return np.array([v for (n, _), v in zip(run["labels"], values, strict=True) if n == name])


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


def run(ctx: Context) -> CardResult:
    epochs, log_every = (100, 20) if ctx.tiny else (1_500, 100)
    seeds = ctx.seeds
    splits = _moons(seeds)
    wide = _train(HIDDEN, "relu", VARIANTS, seeds, splits, epochs, log_every)
    ctx.progress(0.55)
    tanh = _train(HIDDEN, "tanh", TANH_VARIANTS, seeds, splits, epochs, log_every)
    ctx.progress(0.75)
    one = _train((1, 1), "relu", _one_unit_variants(), seeds, splits, epochs, log_every)
    ctx.progress(0.9)
    constant_runs = [(wide, name) for name in CONSTANTS] + [(tanh, n) for n in TANH_VARIANTS]
    # each trained constant network against its collapsed 1-unit form: equal if units are equal
    collapse_gap = {}
    for run_, name in constant_runs:
        index = [r for r, (n, _) in enumerate(run_["labels"]) if n == name]
        wide_p = run_["model"].take(index).predict(run_["X_test"][index])
        small_p = collapse(run_["model"], index).predict(run_["X_test"][index])
        collapse_gap[name] = np.max(np.abs(wide_p - small_p), axis=(1, 2))
    runs = {"relu": wide, "tanh": tanh, "one-unit": one}
    tables = {"units": [row for r in (wide, tanh) for row in _unit_rows(r)],
              "one-unit": _one_unit_rows(wide, tanh, one, collapse_gap),
              "costs": [row for arch, r in runs.items() for row in _cost_rows(r, arch)]}
    curves = {name: _pick(r, name, r["costs"].T) for r in (wide, tanh)
              for name in dict.fromkeys(n for n, _ in r["labels"])}
    curves |= {f"1-unit from {name}": _pick(one, name, one["costs"].T) for name in CONSTANTS}
    figures = [
        _distinct_units_figure({name: _pick(r, name, r["distinct"]) for r, name in
                                [*constant_runs, (wide, "he")]}, ctx.figure("symmetry-units")),
        plots.cost_curves(curves, wide["epochs"], ctx.figure("symmetry-costs"),
                          title="E2 training cost (line: median, band: min-max over seeds)"),
    ]
    ctx.progress(1.0)
    return CardResult(NAME, TITLE, _claims(wide, tanh, one, collapse_gap), tables,
                      [str(f.relative_to(ctx.folder)) for f in figures],
                      _notes(len(seeds), epochs),
                      data="make_moons(400 train / 100 test, noise 0.2), drawn per seed")


def _counts_text(counts: np.ndarray) -> str:
    return "; ".join(f"layer {i + 1}: {spread(counts[:, i], '.3g')}"
                     for i in range(counts.shape[1]))


def _claims(wide: dict, tanh: dict, one: dict, collapse_gap: dict) -> list[Claim]:
    constant = {name: _pick(wide, name, wide["distinct"]) for name in CONSTANTS}
    constant |= {name: _pick(tanh, name, tanh["distinct"]) for name in TANH_VARIANTS}
    he = _pick(wide, "he", wide["distinct"])
    worst_collapse = max(float(np.max(g)) for g in collapse_gap.values())
    accuracy = {name: (_pick(wide, name, wide["test"]), _pick(one, name, one["test"]))
                for name in CONSTANTS}
    no_better = all(np.mean(a) - np.mean(b) <= ACCURACY_TOL for a, b in accuracy.values())
    return [
        Claim(*CLAIMS[0], " | ".join(f"{name}: {_counts_text(c)}" for name, c in constant.items()),
              check(all(np.all(c == 1) for c in constant.values()))),
        Claim(*CLAIMS[1], f"he: {_counts_text(he)} (widths {HIDDEN[0]}, {HIDDEN[1]})",
              check(np.all(he == np.array(HIDDEN)))),
        Claim(*CLAIMS[2], " | ".join(f"{name}: test accuracy {spread(a, '.1%')} vs 1-unit "
                                     f"{spread(b, '.1%')}" for name, (a, b) in accuracy.items())
              + f" | trained constant networks vs their collapsed 1-unit form: max |Δp| = "
                f"{worst_collapse:.1e}",
              check(worst_collapse < RTOL and no_better)),
    ]


def _notes(n_seeds: int, epochs: int) -> list[str]:
    return [
        f"{n_seeds} seeds; {epochs:,} full-batch epochs at learning rate {LEARNING_RATE} "
        f"(EXPERIMENTS.md asks for 15,000; the symmetry is exact at any epoch count, so fewer "
        f"epochs do not weaken the unit counts; only the accuracies are of less-trained "
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


def _unit_rows(run: dict) -> list[dict]:
    return [{"variant": name, "seed": seed, "distinct_layer1": int(d[0]),
             "distinct_layer2": int(d[1]), "train_accuracy": float(tr),
             "test_accuracy": float(te), "final_cost": float(c)}
            for (name, seed), d, tr, te, c in zip(run["labels"], run["distinct"], run["train"],
                                                  run["test"], run["costs"][-1], strict=True)]


def _one_unit_rows(wide: dict, tanh: dict, one: dict, gap: dict) -> list[dict]:
    rows = []
    for name in gap:
        run = wide if name in CONSTANTS else tanh
        test = _pick(run, name, run["test"])
        one_test = _pick(one, name, one["test"]) if name in CONSTANTS else [np.nan] * len(test)
        seeds = [s for n, s in run["labels"] if n == name]
        rows += [{"variant": name, "seed": s, "test_accuracy": float(a),
                  "one_unit_test_accuracy": float(b), "collapse_max_abs_dp": float(g)}
                 for s, a, b, g in zip(seeds, test, one_test, gap[name], strict=True)]
    return rows


def _cost_rows(run: dict, architecture: str) -> list[dict]:
    rows = []
    for e, epoch in enumerate(run["epochs"]):
        for name in dict.fromkeys(n for n, _ in run["labels"]):
            values = _pick(run, name, run["costs"][e])
            rows.append({"architecture": architecture, "variant": name, "epoch": epoch,
                         "mean": float(values.mean()), "std": float(values.std()),
                         "min": float(values.min()), "max": float(values.max())})
    return rows


def _distinct_units_figure(counts: Mapping[str, np.ndarray], path: Path) -> Path:
    """Bars: mean distinct units per hidden layer per variant, min-max whiskers, the widths
    dashed."""
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
