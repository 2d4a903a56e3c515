"""`phase`: the trainability phase diagram of deep tanh networks (Schoenholz et al. 2017).

The card runs a small sweep (:mod:`initlab.sweeps`) in this process: every depth is one task,
all sigma_w^2 x seeds its replicas, each replica's stream from the sweep seed and its cell.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from initlab.experiments.card import Card, Config, Control, Outcome, Run, Variant, sizes
from initlab.report import sweep as plots
from initlab.sweeps.grid import Grid
from initlab.sweeps.task import build, expected, expected_c, load, run_task, signal

SIGMA_B2 = 0.05  # the paper's
C_COLLAPSED = 0.9  # a deep correlation this high: the inputs have collapsed together
C_TOL = 0.1  # |measured c - theory| allowed at the probe width (seeds spread ~0.03 there)
PROBE_WIDTH, PROBE_SEEDS = 256, 4  # the correlation is a wide-network limit: measured wide
INSIDE_AT_LEAST, BEYOND_AT_MOST = 0.75, 0.1


@dataclass(frozen=True)
class Settings(Config):
    sigma_w2: tuple[float, ...] = (0.25, 0.5, 1.0, 1.5, 2.5, 4.0)
    depth: tuple[int, ...] = (4, 8, 16, 32)
    width: int = 32
    steps: int = 200
    learning_rate: float = 0.03
    # the weights' variance over the sigma_w^2 the theory is told: 1, except in the control
    drawn_over_told: float = 1.0


card: Card[Measured] = Card(
    "phase",
    title="phase: deep tanh networks train within 6 ξ_c of the input",
    claim="A tanh network at σ_b² = 0.05 trains only where its depth is below about 6 ξ_c, the "
          "depth over which two inputs' correlation reaches its fixed point; ξ_c diverges at "
          "the edge of chaos σ_w² ≈ 1.76 (Schoenholz, Gilmer, Ganguli & Sohl-Dickstein 2017).",
    why="In the ordered phase (χ₁ < 1) every input's signal converges to the same vector "
        "within ξ_c layers and the gradients vanish at the same rate, so a deeper network "
        "cannot tell its inputs apart; in the chaotic phase nearby inputs decorrelate and "
        "the gradients explode. Only near χ₁ = 1 does information cross many layers.",
    data="scikit-learn's digits (1,347 training images), standardised; always digits, so the "
         "default size stays a few seconds",
    sizes=sizes(Settings(seeds=2),
                tiny={"sigma_w2": (0.5, 1.0, 4.0), "depth": (4, 12)},
                # the grid of examples/phase-full.toml, for `initlab sweep` on a cluster
                full={"sigma_w2": tuple(np.linspace(0.25, 4.0, 16).round(4)),
                      "depth": (4, 8, 16, 24, 32, 48, 64, 96), "width": 64, "steps": 400}),
    variants={"tanh": Variant({"name": "variance_scaling", "mode": "fan_in",
                               "distribution": "normal"},
                              label="weights N(0, σ_w²/fan_in), biases N(0, 0.05)")},
    control=Control(("phase.band", "phase.correlation"), config={"drawn_over_told": 4.0},
                    why="the weights are drawn with 4 σ_w² while the theory is told σ_w²: the "
                        "band and the correlations no longer match what it predicts"),
)


@dataclass
class Measured:
    cfg: Settings
    rows: list[dict[str, Any]]  # one per (depth, sigma_w2, seed), as a sweep's results.csv
    wide: list[dict[str, Any]]  # the same at init only, at PROBE_WIDTH: c, c_theory
    theory: list[dict[str, Any]]  # the theory on a fine sigma_w^2 grid, as theory.csv
    edge: float  # the sigma_w^2 of chi_1 = 1

    def cells(self) -> dict[tuple[int, float], list[dict[str, Any]]]:
        """The wide probe's rows by (depth, sigma_w2)."""
        out: dict[tuple[int, float], list[dict[str, Any]]] = {}
        for r in self.wide:
            out.setdefault((r["depth"], r["sigma_w2"]), []).append(r)
        return out


def grid(cfg: Settings) -> Grid:
    """The sweep of the card, in the variances the weights are drawn with."""
    return Grid(activation=("tanh",), sigma_w2=tuple(w * cfg.drawn_over_told
                                                     for w in cfg.sigma_w2),
                sigma_b2=(SIGMA_B2,), depth=cfg.depth, width=(cfg.width,), data=("digits",),
                steps=(cfg.steps,), seeds=cfg.seeds, learning_rate=cfg.learning_rate)


@card.measure
def measure(run: Run) -> Measured:
    cfg: Settings = run.cfg
    g = grid(cfg)
    rows: list[dict[str, Any]] = []
    tasks = g.tasks()
    for i, task in enumerate(tasks):
        rows += run_task(task)["rows"]
        run.progress((i + 1) / (len(tasks) + 1))
    wide = _probe_wide(cfg, g)
    for r in rows + wide:  # label each row with the sigma_w^2 the theory is told, its theory
        r["sigma_w2"] = told = round(r["sigma_w2"] / cfg.drawn_over_told, 12)
        r.update(expected("tanh", told, SIGMA_B2))
        r["c_theory"] = expected_c("tanh", told, SIGMA_B2, r["depth"], "digits", g.seed,
                                   g.probe)
    lo, hi = min(cfg.sigma_w2), max(cfg.sigma_w2)
    theory = [{"activation": "tanh", "sigma_b2": SIGMA_B2, "sigma_w2": float(w),
               **expected("tanh", float(w), SIGMA_B2)}
              for w in sorted({*np.linspace(lo, hi, 60).round(6), *cfg.sigma_w2})]
    from initlab.theory import critical_sigma_w

    edge = critical_sigma_w("tanh", math.sqrt(SIGMA_B2)) ** 2
    run.data_used = "digits (sklearn.datasets.load_digits), standardised"
    order = lambda r: (r["depth"], r["sigma_w2"], r["seed"])  # noqa: E731
    return Measured(cfg, sorted(rows, key=order), sorted(wide, key=order), theory, edge)


def _probe_wide(cfg: Settings, g: Grid) -> list[dict[str, Any]]:
    """The signal at init (no training) of the same cells at width PROBE_WIDTH."""
    wide = dataclasses.replace(g, width=(PROBE_WIDTH,), seeds=PROBE_SEEDS)
    split = load("digits", g.seed)
    X = split.X_train[: g.probe]
    rows = []
    for task in wide.tasks():
        model = build(task, X.shape[1], split.n_classes)
        measured = signal(model, X, task.where["depth"])
        rows += [{**c, "c": float(measured["c"][r]), "q": float(measured["q"][r])}
                 for r, c in enumerate(model.coords)]
    return rows


@card.claim("phase.band", f"Within depth 6 ξ_c at least {INSIDE_AT_LEAST:.0%} of the networks "
            f"train; beyond it at most {BEYOND_AT_MOST:.0%}",
            printed="networks train when depth ≲ 6 ξ_c and not beyond (Fig. 5)")
def band(m: Measured) -> Outcome:
    inside = [r["trainable"] for r in m.rows if r["depth"] <= 6 * r["xi_c"]]
    beyond = [r["trainable"] for r in m.rows if r["depth"] > 6 * r["xi_c"]]
    if not inside or not beyond:
        return Outcome(False, "the grid has no cell on one side of 6 ξ_c", replicas=len(m.rows))
    f_in, f_out = float(np.mean(inside)), float(np.mean(beyond))
    return Outcome(f_in >= INSIDE_AT_LEAST and f_out <= BEYOND_AT_MOST,
                   f"trained within 6 ξ_c {f_in:.0%} ({sum(inside)}/{len(inside)}), beyond "
                   f"{f_out:.0%} ({sum(beyond)}/{len(beyond)})",
                   f"{len(m.rows)} networks; trainable: training accuracy ≥ 55 % (chance + "
                   f"half the way to 1) after {m.cfg.steps} SGD steps", replicas=len(m.rows))


@card.claim("phase.correlation", f"At init (width {PROBE_WIDTH}) the measured correlation of two "
            f"inputs matches the theory's within {C_TOL}, and the deepest layer's inputs "
            f"collapse (c ≥ {C_COLLAPSED}) exactly on the ordered side of the theory's edge "
            f"of chaos",
            printed="c* = 1 for χ₁ < 1, c* < 1 beyond σ_w² ≈ 1.76 (Fig. 1, 2)")
def correlation(m: Measured) -> Outcome:
    cells = m.cells()
    errors = [abs(np.mean([r["c"] for r in rs]) - rs[0]["c_theory"]) for rs in cells.values()]
    worst = float(np.max(errors))
    deep = max(m.cfg.depth)
    c_deep = {w: float(np.mean([r["c"] for r in cells[(deep, w)]])) for w in m.cfg.sigma_w2}
    collapsed = sorted(w for w, c in c_deep.items() if c >= C_COLLAPSED)
    apart = sorted(w for w, c in c_deep.items() if c < C_COLLAPSED)
    measured_edge = (collapsed[-1] if collapsed else None, apart[0] if apart else None)
    sides = all(w < m.edge for w in collapsed) and all(w > m.edge for w in apart)
    bracket = f"between σ_w² {measured_edge[0]} and {measured_edge[1]}"
    return Outcome(worst <= C_TOL and sides,
                   f"max |c − theory| {worst:.3f}; collapse ends {bracket} (theory "
                   f"{m.edge:.3f})",
                   f"width {PROBE_WIDTH}, {PROBE_SEEDS} seeds, at init; at depth {deep}, mean "
                   f"c by σ_w²: " + ", ".join(f"{w:g}: {c:.2f}" for w, c in c_deep.items()),
                   replicas=len(m.wide))


@card.table("phase")
def phase_table(m: Measured) -> list[dict[str, Any]]:
    return m.rows


@card.figure("phase-trainability")
def trainability_figure(m: Measured, path: Path) -> Path:
    key = ("tanh", SIGMA_B2, m.cfg.width, "digits", "sgd", m.cfg.steps)
    return plots.heatmap(m.rows, m.theory, key, path)


@card.figure("phase-correlation")
def correlation_figure(m: Measured, path: Path) -> Path:
    key = ("tanh", SIGMA_B2, m.cfg.width, "digits", "sgd", m.cfg.steps)
    return plots.correlation(m.wide, m.theory, key[:2] + (PROBE_WIDTH,) + key[3:], path)


@card.notes
def notes(m: Measured) -> list[str]:
    return [f"{len(m.rows)} networks: σ_w² {list(m.cfg.sigma_w2)} × depth {list(m.cfg.depth)} "
            f"× {m.cfg.seeds} seeds, tanh, width {m.cfg.width}, σ_b² = {SIGMA_B2}, a linear "
            f"softmax readout; SGD {m.cfg.learning_rate:g}, batches of 128, {m.cfg.steps} "
            f"steps. The correlation is measured at init, in networks of the same depths and "
            f"σ_w² at width {PROBE_WIDTH} ({PROBE_SEEDS} seeds), on 32 pairs of training "
            f"images at the last hidden layer; the theory iterates the correlation map from "
            f"each pair "
            f"(`initlab sweep` runs the same grid at scale, on processes or Dask)."]
