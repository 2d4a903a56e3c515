"""E7 `fixup`: residual MLPs of L blocks without normalisation, He everywhere vs Fixup."""

from __future__ import annotations

import math
import time

import numpy as np

from initlab import data
from initlab.experiments.runner import CardResult, Claim, Context, check, spread
from initlab.nn import Dense, Residual, Sequential
from initlab.report import figures as plots
from initlab.schemes import fixup

NAME = "fixup"
TITLE = "E7 fixup: very deep residual networks without normalisation"
CLAIM = ("With He initialization in every branch the output variance of a residual network "
         "grows with its depth and training diverges or stalls; Fixup keeps it independent of "
         "the depth and trains.")
WHY = ("Each block adds its branch to its input, so with He branches (which preserve the "
       "variance) the variance is multiplied at every block and explodes with depth. Fixup "
       "zeroes each branch's last layer, so every block starts as the identity and the output "
       "does not depend on L, and it scales the other branch layers by L^(-1/(2m-2)) so that "
       "the first updates change the output by O(1) whatever the depth (Zhang et al. 2019).")
WIDTH = 16
SEEDS = 3
CLAIMS = [
    ("E7.he-variance-grows", "He in every branch: the output variance at init grows with the "
     "number of blocks L (overflowing at the largest L is growth too)",
     "(Fixup paper) the output variance explodes with depth without normalisation"),
    ("E7.he-fails", "He in every branch: at the largest L training diverges (NaN/inf) or "
     "stalls (cost not below its start)", "training deep residual nets without normalisation "
     "and without Fixup fails"),
    ("E7.fixup-flat", "Fixup: the output variance at init is the same for every L",
     "Fixup's output variance does not depend on depth"),
    ("E7.fixup-trains", "Fixup: the cost goes down at every L, and every layer of every block "
     "learns (its weights move from their init)", "Fixup trains 10,000 layers"),
]


def _model(blocks: int) -> Sequential:
    layers: list[Dense | Residual] = [Dense(WIDTH, "relu", init="he_normal")]
    layers += [Residual([Dense(WIDTH, "relu", init="he_normal"), Dense(WIDTH, init="he_normal")])
               for _ in range(blocks)]
    return Sequential([*layers, Dense(1, "sigmoid", init="he_normal")]).compile(
        "binary_crossentropy")


def _run_depth(blocks: int, seeds: list[int], X, y, epochs: int) -> dict:
    out = {}
    for variant in ("he", "fixup"):
        model = _model(blocks).build(2, rng=[np.random.SeedSequence(s) for s in seeds])
        if variant == "fixup":
            fixup(model)
        with np.errstate(over="ignore", invalid="ignore"):
            model.predict(X)
            last = model.traces[-2].out  # the last block's output: the stack's output
            variance = np.var(last.reshape(len(seeds), -1), axis=1)
            # an output that is already inf/NaN at init gets one epoch: its cost is NaN
            n = epochs if np.all(np.isfinite(variance)) else 1
            before = [block.params[k].copy() for block in model.layers[1:-1]
                      for k in block.params if k.endswith("W")]
            start = time.perf_counter()
            model.fit(X, y, learning_rate=0.01, epochs=n, log_every=max(1, epochs // 10))
            seconds = time.perf_counter() - start
        after = [block.params[k] for block in model.layers[1:-1]
                 for k in block.params if k.endswith("W")]
        # per seed: the fraction of the blocks' weight matrices that moved
        moved = np.mean([np.any(a != b, axis=(1, 2)) for a, b in zip(after, before, strict=True)],
                        axis=0)
        costs = np.array(model.history["cost"])
        out[variant] = {"variance": variance, "costs": costs, "epochs": model.history["epoch"],
                        "seconds": seconds, "moved": moved}
    return out


def run(ctx: Context) -> CardResult:
    depths = [4, 16] if ctx.tiny else [10, 100, 1000]
    extra = ctx.options.get("depth")
    if extra and extra not in depths:
        depths.append(int(extra))
    epochs = 10
    seeds = ctx.seeds[:SEEDS]
    X, y, _, _ = data.moons(seeds[0], n_train=200)
    results = {}
    for k, blocks in enumerate(depths):
        results[blocks] = _run_depth(blocks, seeds, X, y, epochs)
        ctx.progress((k + 1) / len(depths))
    deepest = depths[-1]
    he_var = np.array([results[L]["he"]["variance"] for L in depths])  # (depths, seeds)
    fx_var = np.array([results[L]["fixup"]["variance"] for L in depths])
    he_mean = np.array([np.mean(v) if np.all(np.isfinite(v)) else math.inf for v in he_var])
    he_costs = results[deepest]["he"]["costs"]
    he_failed = ~np.isfinite(he_costs[-1]) | (he_costs[-1] >= he_costs[0])
    fx_drop = np.array([results[L]["fixup"]["costs"][0] - results[L]["fixup"]["costs"][-1]
                        for L in depths])  # (depths, seeds)
    fx_moved = np.array([results[L]["fixup"]["moved"] for L in depths])  # (depths, seeds)
    claims = [
        Claim(*CLAIMS[0], "; ".join(f"L={L}: {_var_text(v)}" for L, v in zip(depths, he_var,
                                                                            strict=True)),
              check(np.all(np.diff(he_mean) > 0))),
        Claim(*CLAIMS[1], f"L={deepest}: cost {_cost_text(he_costs)}; failed in "
                          f"{int(np.sum(he_failed))} of {len(seeds)} seeds",
              check(np.all(he_failed))),
        Claim(*CLAIMS[2], "; ".join(f"L={L}: {_var_text(v)}" for L, v in zip(depths, fx_var,
                                                                            strict=True)),
              check(np.allclose(fx_var, fx_var[0], rtol=1e-9))),
        Claim(*CLAIMS[3], "; ".join(f"L={L}: cost drop {spread(d, '.3g')}, every block "
                                    f"weight moved in {int(np.sum(m == 1))} of {len(m)} seeds"
                                    for L, d, m in zip(depths, fx_drop, fx_moved, strict=True)),
              check(np.all(fx_drop > 0) and np.all(fx_moved == 1))),
    ]
    logged = results[depths[0]]["fixup"]["epochs"]
    figure = plots.cost_curves(
        {f"{v} L={L}": results[L][v]["costs"].T for L in depths for v in ("he", "fixup")
         if np.all(np.isfinite(results[L][v]["costs"]))
         and len(results[L][v]["epochs"]) == len(logged)},
        logged, ctx.figure("fixup-costs"),
        title="E7 training cost, He vs Fixup (curves with inf/NaN are left out)")
    tables = {"depths": [{"blocks": L, "variant": v, "seed": s,
                          "output_variance": float(results[L][v]["variance"][i]),
                          "first_cost": float(results[L][v]["costs"][0][i]),
                          "last_cost": float(results[L][v]["costs"][-1][i]),
                          "train_seconds": round(results[L][v]["seconds"], 3)}
                         for L in depths for v in ("he", "fixup")
                         for i, s in enumerate(seeds)]}
    notes = [f"{len(seeds)} seeds; residual MLP 2 -> {WIDTH}, L blocks of (Dense {WIDTH} relu, "
             f"Dense {WIDTH}), sigmoid output; {epochs} full-batch epochs at learning rate 0.01 "
             f"on 200 moons points (one epoch where the output is already inf/NaN at init).",
             f"After {epochs} epochs the cost drop is nearly the same at every L: the blocks "
             f"start as the identity and the zero output layer passes them no gradient at the "
             f"first step, so the first updates are the input and output layers' (a shallow "
             f"network's); the blocks then move, which the claim checks.",
             "Training times (all seeds at once): " + ", ".join(
                 f"L={L} Fixup {results[L]['fixup']['seconds']:.1f} s" for L in depths) + "."]
    return CardResult(NAME, TITLE, claims, tables, [str(figure.relative_to(ctx.folder))], notes,
                      data="make_moons(200, noise 0.2), one draw")


def _var_text(v: np.ndarray) -> str:
    return spread(v, ".3g") if np.all(np.isfinite(v)) else \
        f"overflow in {int(np.sum(~np.isfinite(v)))} of {len(v)} seeds"


def _cost_text(costs: np.ndarray) -> str:
    first, last = costs[0], costs[-1]
    if not np.all(np.isfinite(last)):
        return f"start {spread(first, '.3g')}, end non-finite in {int(np.sum(~np.isfinite(last)))}"
    return f"start {spread(first, '.3g')}, end {spread(last, '.3g')}"
