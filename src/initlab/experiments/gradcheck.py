"""E8 `gradcheck`: back-propagation checked against finite differences for every activation x
loss, on a small network whose inputs keep away from ReLU kinks.

:func:`check_all` is the library function (and ``initlab gradcheck``); :func:`run` is the card.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from initlab.experiments.runner import CardResult, Claim, Context, check, spread  # noqa: E402
from initlab.nn import Dense, Sequential, activations, gradcheck, losses  # noqa: E402

NAME = "gradcheck"
TITLE = "E8 gradcheck: back-propagation is right"
CLAIM = ("For every activation, loss and layer, the analytic gradient of back-propagation "
         "matches central finite differences in float64 (relative error < 1e-6).")
WHY = ("Every other card trusts the engine's gradients. Central differences (f(w + h) - "
       "f(w - h)) / 2h agree with the true derivative to O(h^2) plus rounding of order "
       "eps_machine / h, so with h = 1e-6 a correct gradient shows relative errors near 1e-8 to "
       "1e-10, while a wrong derivative anywhere shows errors of order 1.")
TOL = 1e-6
MAX_SEEDS = 3  # the only randomness is the draw of data and weights
LAYERS = "3,4,3"  # input 3, hidden 4 and 3: a hidden-to-hidden layer is checked too
TINY_LAYERS = "2,3,3"
TINY_ACTIVATIONS = ("tanh",)
SAMPLES = 16
CLAIMS = [
    ("E8.all-match",
     "For every hidden activation x loss x output activation, every layer's analytic gradient "
     "matches central differences in float64 (relative error < 1e-6), for every seed",
     "no number printed; the sources compute gradients by back-propagation and take them as "
     "right (seeds 001, 004)"),
]

# each loss with the output activations it is checked with
OUTPUTS = {
    "binary_crossentropy": ("sigmoid", "linear"),
    "clipped_binary_crossentropy": ("sigmoid",),
    "softmax_crossentropy": ("softmax", "linear"),
    "mean_squared_error": ("linear", "tanh", "softmax"),
}
HIDDEN = [a for a in activations.available() if a != "softmax"]


def _targets(loss: str, units: int, n: int, rng: np.random.Generator) -> np.ndarray:
    if "binary" in loss:
        return rng.integers(0, 2, n)
    if loss == "softmax_crossentropy":
        return rng.integers(0, units, n)
    return rng.standard_normal((n, units))


def _parse_layers(layers: str) -> list[int]:
    try:
        widths = [int(w) for w in layers.split(",")]
    except ValueError:
        message = f"layers must be comma-separated ints like 4,8,6; got layers={layers!r}"
        raise ValueError(message) from None
    if len(widths) < 2 or min(widths) < 1:
        raise ValueError(f"layers needs an input width and at least one hidden width, all >= 1;"
                         f" got layers={layers!r}")
    return widths


def check_all(activation: str = "all", loss: str = "all", *, layers: str = "4,8,6",
              samples: int = 16, tol: float = 1e-6, seed: int = 0) -> Iterator[dict]:
    """Gradient-check a network for each (hidden activation, loss, output activation)."""
    widths = _parse_layers(layers)
    hidden = HIDDEN if activation == "all" else [activations.get(activation).name]
    chosen = list(OUTPUTS) if loss == "all" else [losses.get(loss).name]
    rng = np.random.default_rng(seed)
    for act in hidden:
        for name in chosen:
            for out_act in OUTPUTS[name]:
                units = 1 if "binary" in name else 3
                model = Sequential(
                    [Dense(w, act, init="glorot_normal", bias_init={"name": "normal", "std": 0.1})
                     for w in widths[1:]] + [Dense(units, out_act, init="glorot_normal")])
                loss_spec = {"name": name, "eps": 1e-7} if name.startswith("clipped") else name
                model.compile(loss_spec).build(widths[0], rng=rng)
                X = rng.standard_normal((samples, widths[0]))
                y = _targets(name, units, samples, rng)
                result = gradcheck(model, X, y, tol=tol, raise_on_failure=False)
                yield {"activation": act, "loss": name, "output": out_act,
                       "error": max(result.errors.values()), "ok": result.ok}


def _check_seed(seed: int, *, activation_names: Sequence[str], layers: str) -> list[dict]:
    return [{"seed": seed, **row} for act in activation_names
            for row in check_all(act, "all", layers=layers, samples=SAMPLES, tol=TOL, seed=seed)]


def run(ctx: Context) -> CardResult:
    seeds = ctx.seeds[:MAX_SEEDS]
    names, layers = (TINY_ACTIVATIONS, TINY_LAYERS) if ctx.tiny else (("all",), LAYERS)
    work = partial(_check_seed, activation_names=names, layers=layers)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    workers = min(cores, len(seeds))
    per_seed: list[list[dict]] = []
    if workers > 1 and not ctx.tiny and "fork" in multiprocessing.get_all_start_methods():
        # the seeds are independent: one process each, as many at once as there are cores
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for rows in pool.imap(work, seeds):
                per_seed.append(rows)
                ctx.progress(len(per_seed) / (len(seeds) + 1))
    else:
        for seed in seeds:
            per_seed.append(work(seed))
            ctx.progress(len(per_seed) / (len(seeds) + 1))
    rows = [row for part in per_seed for row in part]
    worst = np.array([max(r["error"] for r in part) for part in per_seed])
    combos = len(per_seed[0])
    failed = [r for r in rows if not r["ok"]]
    worst_row = max(rows, key=lambda r: r["error"])
    measured = (f"worst relative error per seed {spread(worst, '.2g')} over {combos} "
                f"combinations x {len(seeds)} seeds ({len(rows) - len(failed)} of {len(rows)} "
                f"below {TOL:g}); the worst: {worst_row['activation']} hidden, "
                f"{worst_row['loss']} on a {worst_row['output']} output")
    claims = [Claim(*CLAIMS[0], measured, check(not failed and np.max(worst) < TOL))]
    figure = _error_figure(rows, ctx.figure("gradcheck-errors"))
    ctx.progress(1.0)
    hidden = HIDDEN if names == ("all",) else list(names)
    notes = [
        f"{len(seeds)} seed(s) (at most {MAX_SEEDS}: the seed only draws the data and weights); "
        f"one check_all run per seed on a {layers} network (plus the output layer: 1 unit for "
        f"the binary losses, 3 otherwise), {SAMPLES} samples, central differences with step "
        f"1e-6 in float64. The command `initlab gradcheck` runs the same check on any widths "
        f"(default 4,8,6).",
        f"Hidden activations: {', '.join(hidden)}; each loss with its output activations: "
        + "; ".join(f"{loss} with {', '.join(outs)}" for loss, outs in OUTPUTS.items())
        + ". The error of a combination is the worst over its layers and parameters (W and b).",
        "Inputs are standard normal, so a pre-activation lies within a step's reach of a "
        "ReLU-like kink with probability of order 1e-6 per value; a kink hit would show as a "
        "failure, never hide one.",
    ]
    if ctx.tiny:
        notes.append(f"Tiny size: only {', '.join(names)} as hidden activation.")
    return CardResult(NAME, TITLE, claims, {"errors": rows},
                      [str(figure.relative_to(ctx.folder))], notes,
                      data=f"standard normal inputs and random targets, {SAMPLES} samples per "
                           f"check, drawn per seed")


def _error_figure(rows: list[dict], path: Path) -> Path:
    """log10 of the worst error over seeds: hidden activation x (loss, output), tolerance
    marked in the colour bar."""
    acts = list(dict.fromkeys(r["activation"] for r in rows))
    pairs = list(dict.fromkeys((r["loss"], r["output"]) for r in rows))
    grid = np.full((len(acts), len(pairs)), np.nan)
    for r in rows:
        i, j = acts.index(r["activation"]), pairs.index((r["loss"], r["output"]))
        grid[i, j] = np.fmax(grid[i, j], np.log10(max(r["error"], 1e-300)))
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(pairs), 1.2 + 0.35 * len(acts)))
    image = ax.imshow(grid, cmap="viridis", vmin=-12, vmax=0, aspect="auto")
    bar = fig.colorbar(image, ax=ax, label="log10 relative error (worst over seeds)")
    bar.ax.axhline(np.log10(TOL), color="red", linewidth=2)
    ax.set_xticks(range(len(pairs)), [f"{loss}\n({out})" for loss, out in pairs],
                  rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(acts)), acts, fontsize=8)
    ax.set_title(f"E8 gradient check (red line: tolerance {TOL:g})", fontsize=10)
    path = Path(path)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
