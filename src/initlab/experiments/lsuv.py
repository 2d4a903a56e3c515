"""`lsuv`: layer-sequential unit-variance init against He and Glorot on a 20-layer network."""

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
from initlab.schemes import lsuv

DEPTH, WIDTH, TOL = 20, 32, 0.1
PROBE, N_TEST, BATCH, LEARNING_RATE = 256, 1000, 100, 1e-3


@dataclass(frozen=True)
class Settings(Config):
    n_train: int = 1000
    epochs: int = 12


card: Card[Measured] = Card(
    "lsuv",
    title="lsuv: LSUV vs He vs Glorot on a 20-layer ReLU network",
    claim="LSUV (orthogonal weights, then each layer scaled until its output has unit variance "
          "on a batch) gives every layer std 1 at init, and trains at least as well as He and "
          "Glorot (Mishkin & Matas 2016).",
    why="He and Glorot fix the variance from the fans alone, which is exact only in the "
        "infinite-width, independent-input limit; LSUV measures it on real data and corrects "
        "each layer in turn, so the scale is right for this network and this data whatever the "
        "activation. With ReLU, Glorot's variance halves at every layer, and 20 layers leave "
        "its signal about 2^-10 of its start.",
    data="Fashion-MNIST or digits (--data), standardised with the training mean and std",
    sizes=sizes(Settings(seeds=3), tiny={"seeds": 2, "n_train": 300, "epochs": 5},
                full={"seeds": 10}),
    variants={
        # LSUV redraws the weights orthogonal, so its init only sets where the stream stands;
        # the lambda looks `lsuv` up when it runs, so a test can swap in a lying scheme
        "lsuv": Variant("lecun_normal", scheme=lambda model, X: lsuv(model, X, tol=TOL)),
        "he": Variant("he_normal"),
        "glorot": Variant("glorot_normal"),
    },
    control=Control(("lsuv.unit-std",), {"lsuv": Variant("lecun_normal")},
                    why="LSUV's replicas keep their LeCun normal draw, unscaled: with ReLU their "
                        "std halves layer by layer"),
)


@dataclass
class Measured:
    cfg: Settings
    labels: list[tuple[str, int]]
    std: np.ndarray  # (R, layers): each layer's pre-activation std at init on the probe batch
    iterations: int | None  # the most scalings LSUV gave a layer; None: no scheme ran
    test: np.ndarray  # (R,): test accuracy after training
    costs: np.ndarray  # (R, logs)
    epochs: list[int]
    data_name: str

    def of(self, name: str, values: Any) -> np.ndarray:
        return pick(self.labels, name, values)

    def names(self) -> list[str]:
        return list(dict.fromkeys(n for n, _ in self.labels))

    def hidden_std(self, name: str) -> np.ndarray:
        """(seeds, DEPTH): the std of the hidden layers, which the claims are about (the
        softmax head is left out)."""
        return self.of(name, self.std)[:, :-1]


def _model() -> Sequential:
    return Sequential([Dense(WIDTH, "relu") for _ in range(DEPTH)]
                      + [Dense(10, "softmax")]).compile("softmax_crossentropy", "adam")


def _pre_activation_std(model: Sequential, X: np.ndarray) -> np.ndarray:
    """(R, layers): the std of each layer's x W + b on X."""
    stds: list[np.ndarray] = []
    with model.register_hook("forward", lambda i, layer, trace: stds.append(
            np.std(trace.z.reshape(model.replicas, -1), axis=1))):
        model.predict(X)
    return np.array(stds).T


@card.measure
def measure(run: Run) -> Measured:
    cfg: Settings = run.cfg
    split = data.image_data(run.data, limit=max(cfg.n_train, N_TEST))
    X, X_test, _ = data.standardize(split.X_train[:cfg.n_train], split.X_test[:N_TEST])
    y, y_test = split.y_train[:cfg.n_train], split.y_test[:N_TEST]
    run.data_used = f"{split.name} ({split.source}), standardised with the training mean and std"
    probe = X[:PROBE]
    model = _model().build(X.shape[1], **run.sweep())
    run.apply_schemes(model, probe)
    report = run.schemes_done.get("lsuv")  # None under the control: no scheme ran
    iterations = None if report is None else int(report.iterations.max())
    std = _pre_activation_std(model, probe)
    run.progress(0.1)
    model.fit(X, y, learning_rate=LEARNING_RATE, epochs=cfg.epochs, batch_size=BATCH,
              log_every=1)
    return Measured(cfg, run.labels(), std, iterations,
                    model.evaluate(X_test, y_test)["accuracy"],
                    np.array(model.history["cost"]).T, model.history["epoch"], split.name)


@card.claim("lsuv.unit-std", "After LSUV every layer's pre-activation std on the probe batch is "
            "within 0.1 of 1, for every seed",
            printed="LSUV: unit variance in every layer by construction", uses=("lsuv",))
def unit_std(m: Measured) -> Outcome:
    worst = float(np.max(np.abs(m.hidden_std("lsuv") - 1.0)))
    iterations = "no LSUV scheme ran" if m.iterations is None else \
        f"iterations per layer ≤ {m.iterations}"
    return Outcome(worst < TOL, f"largest |std − 1| {worst:.3g} (tolerance {TOL})",
                   f"largest |std − 1| over {DEPTH} hidden layers and seeds: {worst:.3g}; "
                   f"{iterations}")


@card.claim("lsuv.trains", "LSUV's test accuracy after a fixed budget is within 2 points of the "
            "best of He and Glorot, or above",
            printed="LSUV matches or beats the standard inits (the paper)")
def trains(m: Measured) -> Outcome:
    lsuv_test = float(np.mean(m.of("lsuv", m.test)))
    best_other = max(float(np.mean(m.of(n, m.test))) for n in ("he", "glorot"))
    return Outcome(lsuv_test >= best_other - 0.02,
                   f"LSUV {lsuv_test:.1%} vs the best of He and Glorot {best_other:.1%}",
                   "test accuracy: " + ", ".join(f"{n} {spread(m.of(n, m.test), '.1%')}"
                                                 for n in m.names()))


@card.table("std")
def std_table(m: Measured) -> list[dict]:
    rows = []
    for name in m.names():
        std, seeds = m.of(name, m.std), [s for n, s in m.labels if n == name]
        rows += [{"variant": name, "layer": i, "seed": s, "std": float(std[j, i])}
                 for i in range(std.shape[1]) for j, s in enumerate(seeds)]
    return rows


@card.figure("lsuv-std")
def std_figure(m: Measured, path: Path) -> Path:
    def band(std: np.ndarray) -> dict[str, Any]:  # over seeds, per layer
        return {"mean": std.mean(axis=0), "min": std.min(axis=0), "max": std.max(axis=0)}
    return plots.std_vs_depth({n: band(m.hidden_std(n)) for n in m.names()}, path,
                              ylabel="pre-activation std at init",
                              title=f"lsuv: each hidden layer's pre-activation std at init "
                                    f"({m.data_name} batch)")


@card.figure("lsuv-costs")
def costs_figure(m: Measured, path: Path) -> Path:
    return plots.cost_curves({n: m.of(n, m.costs) for n in m.names()}, m.epochs, path,
                             title="lsuv: training cost (Adam, 1e-3)")


@card.notes
def notes(m: Measured) -> list[str]:
    return [f"{m.cfg.seeds} seeds; {DEPTH} ReLU layers of width {WIDTH} and a softmax head; "
            f"LSUV on a probe batch of {PROBE} training images, tol {TOL}; then Adam (1e-3), "
            f"{m.cfg.epochs} epochs of minibatches of {BATCH} on {m.cfg.n_train} images, tested "
            f"on 1,000."]
