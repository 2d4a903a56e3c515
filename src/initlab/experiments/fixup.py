"""E7 `fixup`: residual MLPs of L blocks without normalisation, He everywhere vs Fixup."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from initlab import data
from initlab.experiments.card import Card, Config, Control, Outcome, Run, Variant, sizes, spread
from initlab.nn import Dense, Residual, Sequential
from initlab.report import figures as plots
from initlab.schemes import fixup

WIDTH = 16
N_TRAIN = 200
LEARNING_RATE = 0.01


@dataclass(frozen=True)
class Settings(Config):
    depths: tuple[int, ...] = (10, 100, 1000)  # blocks L of the residual nets
    depth: int | None = None  # --depth: also run residual nets of this many blocks
    epochs: int = 10


card: Card[Measured] = Card(
    "fixup",
    title="E7 fixup: very deep residual networks without normalisation",
    claim="With He initialization in every branch the output variance of a residual network "
          "grows with its depth and training diverges or stalls; Fixup keeps it independent of "
          "the depth and trains.",
    why="Each block adds its branch to its input, so with He branches (which preserve the "
        "variance) the variance is multiplied at every block and explodes with depth. Fixup "
        "zeroes each branch's last layer, so every block starts as the identity and the output "
        "does not depend on L, and it scales the other branch layers by L^(-1/(2m-2)) so that "
        "the first updates change the output by O(1) whatever the depth (Zhang et al. 2019).",
    data="make_moons(200, noise 0.2), one draw",
    # full keeps the depths: 10,000 blocks x 10 seeds hold over 11 GB of traces (--depth 10000
    # runs it at the seeds asked for)
    sizes=sizes(Settings(seeds=3), tiny={"seeds": 2, "depths": (4, 16)}, full={"seeds": 10}),
    variants={
        "he": Variant("he_normal"),
        # the lambda looks `fixup` up when it runs, so a test can swap in a broken Fixup
        "fixup": Variant("he_normal", scheme=lambda model, X: fixup(model)),
    },
    control=Control(("E7.fixup-flat",), {"fixup": Variant("he_normal")},
                    why="Fixup's replicas are left at He, so their output variance grows with "
                        "the depth"),
)


@dataclass
class Depth:
    """One variant's replicas at one depth, per seed."""

    variance: np.ndarray  # (seeds,): the variance of the last block's output at init
    costs: np.ndarray  # (logs, seeds)
    epochs: list[int]
    moved: np.ndarray  # (seeds,): the fraction of the blocks' weight matrices that moved
    seconds: float  # training, all seeds at once


@dataclass
class Measured:
    cfg: Settings
    seeds: list[int]
    depths: list[int]
    runs: dict[str, list[Depth]]  # per variant, one per depth

    def variance(self, name: str) -> np.ndarray:
        """(depths, seeds)."""
        return np.array([d.variance for d in self.runs[name]])

    def each(self) -> list[tuple[int, str, Depth]]:
        """(L, variant, its run) of every run, depth by depth."""
        return [(L, name, runs[k]) for k, L in enumerate(self.depths)
                for name, runs in self.runs.items()]


def _model(blocks: int) -> Sequential:
    layers: list[Dense | Residual] = [Dense(WIDTH, "relu", init="he_normal")]
    layers += [Residual([Dense(WIDTH, "relu", init="he_normal"), Dense(WIDTH, init="he_normal")])
               for _ in range(blocks)]
    return Sequential([*layers, Dense(1, "sigmoid", init="he_normal")]).compile(
        "binary_crossentropy")


def _block_weights(model: Sequential) -> list[np.ndarray]:
    return [block.params[k] for block in model.layers[1:-1] for k in block.params
            if k.endswith("W")]


def _train(run: Run, name: str, blocks: int, X: np.ndarray, y: np.ndarray) -> Depth:
    """One variant at one depth, as its own model, for the same budget as every other (a He
    output that overflows at init trains its epochs too: its cost is NaN throughout)."""
    cfg: Settings = run.cfg
    model = run.apply_schemes(_model(blocks).build(2, **run.sweep([name])), X)
    with np.errstate(over="ignore", invalid="ignore"):
        model.predict(X)
        last = model.traces[-2].out  # the last block's output: the stack's output
        variance = np.var(last.reshape(model.replicas, -1), axis=1)
        before = [W.copy() for W in _block_weights(model)]
        start = time.perf_counter()
        model.fit(X, y, learning_rate=LEARNING_RATE, epochs=cfg.epochs,
                  log_every=max(1, cfg.epochs // 10))
        seconds = time.perf_counter() - start
    moved = np.mean([np.any(a != b, axis=(1, 2))
                     for a, b in zip(_block_weights(model), before, strict=True)], axis=0)
    return Depth(variance, np.array(model.history["cost"]), model.history["epoch"], moved,
                 seconds)


@card.measure
def measure(run: Run) -> Measured:
    cfg: Settings = run.cfg
    depths = list(cfg.depths)
    if cfg.depth and cfg.depth not in depths:
        depths.append(int(cfg.depth))
    X, y, _, _ = data.moons(run.seeds[0], n_train=N_TRAIN)
    runs: dict[str, list[Depth]] = {name: [] for name in run.variants}
    for k, blocks in enumerate(depths):
        for name in run.variants:
            runs[name].append(_train(run, name, blocks, X, y))
        run.progress((k + 1) / len(depths))
    return Measured(cfg, run.seeds, depths, runs)


def _var_text(v: np.ndarray) -> str:
    return spread(v, ".3g") if np.all(np.isfinite(v)) else \
        f"overflow in {int(np.sum(~np.isfinite(v)))} of {len(v)} seeds"


def _cost_text(costs: np.ndarray) -> str:
    first, last = costs[0], costs[-1]
    if not np.all(np.isfinite(last)):
        return f"start {spread(first, '.3g')}, end non-finite in {int(np.sum(~np.isfinite(last)))}"
    return f"start {spread(first, '.3g')}, end {spread(last, '.3g')}"


def _variances_text(m: Measured, name: str) -> str:
    return "; ".join(f"L={L}: {_var_text(v)}" for L, v in zip(m.depths, m.variance(name),
                                                                strict=True))


@card.claim("E7.he-variance-grows", "He in every branch: the output variance at init grows with "
            "the number of blocks L (overflowing at the largest L is growth too)",
            printed="(Fixup paper) the output variance explodes with depth without "
                    "normalisation", uses=("he",))
def he_variance_grows(m: Measured) -> Outcome:
    # the mean over seeds, an overflow in any seed counting as infinite
    mean = np.array([np.mean(v) if np.all(np.isfinite(v)) else math.inf
                     for v in m.variance("he")])
    ends = ", ".join(f"{v:.3g} at L={L}" if np.isfinite(v) else f"overflow at L={L}"
                     for L, v in ((m.depths[0], mean[0]), (m.depths[-1], mean[-1])))
    return Outcome(bool(np.all(np.diff(mean) > 0)), f"He output variance at init: {ends}",
                   _variances_text(m, "he"))


@card.claim("E7.he-fails", "He in every branch: at the largest L training diverges (NaN/inf) or "
            "stalls (cost not below its start)",
            printed="training deep residual nets without normalisation and without Fixup fails",
            uses=("he",))
def he_fails(m: Measured) -> Outcome:
    deepest, costs = m.depths[-1], m.runs["he"][-1].costs
    failed = ~np.isfinite(costs[-1]) | (costs[-1] >= costs[0])
    count = f"failed in {int(np.sum(failed))} of {len(m.seeds)} seeds"
    return Outcome(bool(np.all(failed)), f"He at L={deepest}: {count}",
                   f"L={deepest}: cost {_cost_text(costs)}; {count}")


@card.claim("E7.fixup-flat", "Fixup: the output variance at init is the same for every L",
            printed="Fixup's output variance does not depend on depth", uses=("fixup",))
def fixup_flat(m: Measured) -> Outcome:
    variance = m.variance("fixup")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        change = float(np.max(np.abs(variance / variance[0] - 1)))
    return Outcome(bool(np.allclose(variance, variance[0], rtol=1e-9)),
                   f"Fixup output variance: largest relative change across L {change:.1e}",
                   _variances_text(m, "fixup"))


@card.claim("E7.fixup-trains", "Fixup: the cost goes down at every L, and every layer of every "
            "block learns (its weights move from their init)",
            printed="Fixup trains 10,000 layers", uses=("fixup",))
def fixup_trains(m: Measured) -> Outcome:
    drop = np.array([d.costs[0] - d.costs[-1] for d in m.runs["fixup"]])  # (depths, seeds)
    moved = np.array([d.moved for d in m.runs["fixup"]])  # (depths, seeds)
    return Outcome(bool(np.all(drop > 0) and np.all(moved == 1)),
                   f"Fixup: smallest cost drop {np.min(drop):.3g}; every block weight moved in "
                   f"{int(np.sum(moved == 1))} of {moved.size} (L, seed) runs",
                   "; ".join(f"L={L}: cost drop {spread(d, '.3g')}, every block weight moved "
                             f"in {int(np.sum(v == 1))} of {len(v)} seeds"
                             for L, d, v in zip(m.depths, drop, moved, strict=True)))


@card.claim("E7.fixup-beats-he", "On the same budget at every L, Fixup ends with a lower cost "
            "than He at the largest L, in every seed (a He cost that diverged counts as higher)",
            printed="Fixup trains where He does not", uses=("he", "fixup"))
def fixup_beats_he(m: Measured) -> Outcome:
    he, fix = m.runs["he"][-1].costs[-1], m.runs["fixup"][-1].costs[-1]
    better = np.isfinite(fix) & (~np.isfinite(he) | (fix < he))
    per_depth = "; ".join(f"L={L}: He {_final(h.costs[-1])}, Fixup {_final(f.costs[-1])}"
                          for L, h, f in zip(m.depths, m.runs["he"], m.runs["fixup"],
                                             strict=True))
    return Outcome(bool(np.all(better)),
                   f"L={m.depths[-1]}: Fixup below He in {int(np.sum(better))} of {len(better)} "
                   f"seeds", f"final cost after {m.cfg.epochs} epochs: {per_depth}")


def _final(costs: np.ndarray) -> str:
    if np.all(np.isfinite(costs)):
        return spread(costs, ".3g")
    return f"non-finite in {int(np.sum(~np.isfinite(costs)))} of {len(costs)} seeds"


@card.table("depths")
def depths_table(m: Measured) -> list[dict]:
    return [{"blocks": L, "variant": name, "seed": s,
             "output_variance": float(d.variance[i]), "first_cost": float(d.costs[0][i]),
             "last_cost": float(d.costs[-1][i]), "train_seconds": round(d.seconds, 3)}
            for L, name, d in m.each() for i, s in enumerate(m.seeds)]


@card.figure("fixup-costs")
def costs_figure(m: Measured, path: Path) -> Path:
    """One panel per depth, He beside Fixup; a cross where a curve stops (overflow)."""
    return plots.cost_panels({f"L = {L}": {name: runs[k].costs.T for name, runs in m.runs.items()}
                              for k, L in enumerate(m.depths)}, m.runs["fixup"][0].epochs, path,
                             title=f"E7 training cost, He vs Fixup, {m.cfg.epochs} epochs at "
                                   f"every depth (band: min-max over seeds)")


@card.notes
def notes(m: Measured) -> list[str]:
    epochs = m.cfg.epochs
    return [f"{len(m.seeds)} seeds; residual MLP 2 -> {WIDTH}, L blocks of (Dense {WIDTH} relu, "
            f"Dense {WIDTH}), sigmoid output; {epochs} full-batch epochs at learning rate "
            f"{LEARNING_RATE} on {N_TRAIN} moons points, the same budget at every depth and for "
            f"both variants (a He output already inf/NaN at init stays NaN).",
            f"After {epochs} epochs the cost drop is nearly the same at every L: the blocks "
            f"start as the identity and the zero output layer passes them no gradient at the "
            f"first step, so the first updates are the input and output layers' (a shallow "
            f"network's); the blocks then move, which the claim checks.",
            "Training times (all seeds at once): " + ", ".join(
                f"L={L} Fixup {d.seconds:.1f} s" for L, d in zip(m.depths, m.runs["fixup"],
                                                                  strict=True)) + "."]
