"""E1 `moons`: zero, large random and He initialization of a 2-12-6-1 ReLU network, trained with
the stable loss (from logits) and with the sources' clipped-probability loss."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from initlab import data, schemes
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
from initlab.report import figures as plots

CORE = ("zeros", "large", "he")
CLIPPED = {"name": "clipped_binary_crossentropy", "eps": 1e-15}


@dataclass(frozen=True)
class Settings(Config):
    epochs: int = 15_000
    log_every: int = 1_000
    learning_rate: float = 0.01


card: Card[Measured] = Card(
    "moons",
    title="E1 moons: zeros vs large random vs He",
    claim="Zero weights learn nothing (cost ln 2, 50 % accuracy), large random weights start with "
          "a huge cost and end worse, He initialization reaches about 95 %.",
    why="With every weight 0 every hidden unit outputs 0, so the output is sigmoid(b) and every "
        "weight gradient is 0; on balanced classes the bias gradient mean(p - y) is 0 too, so "
        "nothing ever moves. Weights ×10 saturate the sigmoid: the sources' loss, computed from "
        "the clipped probability, passes no gradient through a saturated output and stalls, "
        "while the loss computed from the logits keeps the gradient p - y and recovers most of "
        "the way: compare the two 'large' claims. What survives of the source's conclusion is "
        "that large weights start far worse and end worse than He; how much worse depends on "
        "the loss.",
    data="make_moons(400 train / 100 test, noise 0.2), drawn per seed",
    sizes=sizes(Settings(), tiny={"seeds": 2, "context_seeds": 1, "epochs": 8000,
                                  "log_every": 1000},
                full={"seeds": 30, "context_seeds": 10}),
    variants={
        "zeros": Variant("zeros"),
        "large": Variant({"name": "scaled_normal", "scale": 10.0}, label="N(0,1) × 10"),
        "he": Variant("he_normal"),
        # context: other inits, and model-level schemes applied to their replicas after build
        # (LSUV on each replica's own training set); the init is where a scheme starts from
        "glorot_uniform": Variant("glorot_uniform", context=True),
        "lecun_normal": Variant("lecun_normal", context=True),
        "torch_default": Variant("torch_default", context=True),
        "orthogonal": Variant("orthogonal", context=True),
        "lsuv": Variant("orthogonal", scheme=lambda model, X: schemes.lsuv(model, X),
                        context=True),
        "zero": Variant("zeros", scheme=lambda model, X: schemes.zero_init(model),
                        context=True),
    },
    control=Control(("E1.he-accuracy",), {"he": Variant("zeros")},
                    why="He's replicas start from zero weights instead"),
)


@dataclass
class Training:
    """One loss's training of the variants it ran: per replica, in ``labels`` order."""

    labels: list[tuple[str, int]]
    model: Sequential
    costs: np.ndarray  # (logs, R)
    epochs: list[int]
    train: np.ndarray
    test: np.ndarray
    X: np.ndarray
    y: np.ndarray

    def of(self, name: str, values: Any) -> np.ndarray:
        return pick(self.labels, name, values)


@dataclass
class Measured:
    cfg: Settings
    seeds: list[int]
    stable: Training  # binary cross-entropy from the logits, every variant
    clipped: Training  # the sources' clipped loss, large and He


def _train(run: Run, names: tuple[str, ...], loss: Any) -> Training:
    cfg: Settings = run.cfg
    labels = run.labels(names)
    splits = {seed: data.moons(seed) for _, seed in labels}
    X, y, X_test, y_test = (np.stack([splits[s][k] for _, s in labels]) for k in range(4))
    model = Sequential([Dense(12, "relu"), Dense(6, "relu"), Dense(1, "sigmoid")]).compile(loss)
    model.build(2, **run.sweep(names))
    run.apply_schemes(model, X)
    model.fit(X, y, learning_rate=cfg.learning_rate, epochs=cfg.epochs, log_every=cfg.log_every)
    return Training(labels, model, np.array(model.history["cost"]), model.history["epoch"],
                    model.evaluate(X, y)["accuracy"], model.evaluate(X_test, y_test)["accuracy"],
                    X, y)


@card.measure
def measure(run: Run) -> Measured:
    stable = _train(run, tuple(run.variants), "binary_crossentropy")
    run.progress(0.7)
    clipped = _train(run, ("large", "he"), CLIPPED)
    return Measured(run.cfg, run.seeds, stable, clipped)


@card.claim("E1.zeros-ln2", "Zero init: the cost is ln 2 at every epoch, for every seed",
            printed="0.6931271807599427 at every epoch", uses=("zeros",))
def zeros_ln2(m: Measured) -> Outcome:
    worst = float(np.max(np.abs(m.stable.of("zeros", m.stable.costs.T) - math.log(2))))
    return Outcome(worst < 1e-12, f"max |cost − ln 2| = {worst:.1e}",
                   f"max |cost − ln 2| = {worst:.1e} over every epoch and seed")


@card.claim("E1.zeros-chance", "Zero init: accuracy is exactly the majority-class rate",
            printed="50 % train / 50 % test", uses=("zeros",))
def zeros_chance(m: Measured) -> Outcome:
    s = m.stable
    majority = np.array([max(np.mean(y), 1 - np.mean(y)) for (n, _), y in
                         zip(s.labels, s.y, strict=True) if n == "zeros"])
    train = s.of("zeros", s.train)
    off = float(np.max(np.abs(train - majority)))
    return Outcome(bool(np.allclose(train, majority, rtol=0, atol=1e-12)),
                   f"train accuracy {np.mean(train):.1%} = the majority rate (max gap {off:.0e})",
                   f"train accuracy {spread(train, '.1%')}, majority rate "
                   f"{spread(majority, '.1%')}")


@card.claim("E1.large-start", "Large init (N(0,1) × 10) starts with a cost far above ln 2",
            printed="7.31 at epoch 0", uses=("large",))
def large_start(m: Measured) -> Outcome:
    start = m.stable.of("large", m.stable.costs[0])
    return Outcome(bool(np.mean(start) > 3 * math.log(2)),
                   f"initial cost {np.mean(start):.3g} (ln 2 = 0.693)",
                   f"initial cost {spread(start, '.3g')} (ln 2 = 0.693)")


@card.claim("E1.he-accuracy", "He init reaches a mean test accuracy of at least 92 %",
            printed="95.4 % train / 94.0 % test", uses=("he",))
def he_accuracy(m: Measured) -> Outcome:
    test = m.stable.of("he", m.stable.test)
    return Outcome(bool(np.mean(test) >= 0.92), f"He test accuracy {np.mean(test):.1%}",
                   f"He test accuracy {spread(test, '.1%')}")


def _gap(t: Training) -> Outcome:
    large, he = t.of("large", t.test), t.of("he", t.test)
    gap = he.mean() - large.mean()
    return Outcome(bool(gap > 0.05), f"He − large = {gap:.1%} test accuracy",
                   f"test accuracy: large {spread(large, '.1%')}, He {spread(he, '.1%')} "
                   f"(gap {gap:.1%})")


@card.claim("E1.large-worse", "Large init ends clearly below He (stable loss from logits)",
            printed="86 % / 83 % vs He 95 % / 94 %", uses=("large", "he"))
def large_worse(m: Measured) -> Outcome:
    return _gap(m.stable)


@card.claim("E1.large-worse-clipped", "Large init ends clearly below He (the sources' clipped "
            "loss)", printed="86 % / 83 % vs He 95 % / 94 %", uses=("large", "he"))
def large_worse_clipped(m: Measured) -> Outcome:
    return _gap(m.clipped)


@card.table("costs")
def costs(m: Measured) -> list[dict]:
    return [row for loss, t in (("binary_crossentropy", m.stable), ("clipped", m.clipped))
            for row in per_epoch_rows(t.labels, t.costs, t.epochs, loss=loss)]


@card.table("accuracy")
def accuracy(m: Measured) -> list[dict]:
    return [{"loss": loss, "variant": name, "seed": seed, "train_accuracy": float(tr),
             "test_accuracy": float(te), "final_cost": float(c)}
            for loss, t in (("binary_crossentropy", m.stable), ("clipped", m.clipped))
            for (name, seed), tr, te, c in zip(t.labels, t.train, t.test, t.costs[-1],
                                               strict=True)]


@card.figure("moons-costs")
def cost_figure(m: Measured, path: Path) -> Path:
    """Small multiples: the three inits of the claims, the context inits, the clipped loss."""
    names = list(dict.fromkeys(n for n, _ in m.stable.labels))
    colors = {n: plots.TAB10[i % 10] for i, n in enumerate(names)}
    colors |= {f"{n} (clipped)": colors[n] for n in ("large", "he")}  # the same init's color
    return plots.cost_panels(
        {"zeros, large, He (loss from logits)": {n: m.stable.of(n, m.stable.costs.T)
                                                 for n in CORE},
         "context inits (loss from logits)": {n: m.stable.of(n, m.stable.costs.T)
                                              for n in names if n not in CORE},
         "the sources' clipped loss": {f"{n} (clipped)": m.clipped.of(n, m.clipped.costs.T)
                                       for n in ("large", "he")}},
        m.stable.epochs, path, title="E1 training cost (band: min-max over seeds)",
        colors=colors)


@card.figure("moons-boundaries")
def boundaries(m: Measured, path: Path) -> Path:
    s = m.stable
    return plots.decision_boundaries({n: (s.model, s.labels.index((n, m.seeds[0])))
                                      for n in CORE}, s.X, s.y, s.labels, path)


@card.notes
def notes(m: Measured) -> list[str]:
    context = len({seed for name, seed in m.stable.labels if name == "orthogonal"})
    return [f"{len(m.seeds)} seeds for zeros, large and He; {context} for the context "
            f"variants; {m.cfg.epochs:,} full-batch epochs at learning rate "
            f"{m.cfg.learning_rate}.",
            "Context variants 'lsuv' (LSUV on each seed's training set, tol 0.1) and 'zero' "
            "(ZerO: identity / Hadamard, the same in every seed) are model-level schemes. "
            "Fixup does not apply: it needs residual blocks, and this 2-12-6-1 network has "
            "none (E7 covers residual networks).",
            "The clipped loss clips p to [1e-15, 1 − 1e-15] and back-propagates through the "
            "sigmoid, as the sources' framework does; the zeros variant is the same under both "
            "losses (its output never leaves 0.5)."]
