"""E8 `gradcheck`: back-propagation checked against finite differences for every activation x
loss, on a small network whose inputs keep away from ReLU kinks.

:func:`check_all` is the library function (and ``initlab gradcheck``); ``card`` is the card.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from initlab.experiments.card import (  # noqa: E402
    Card,
    Config,
    Control,
    Outcome,
    Run,
    Variant,
    sizes,
    spread,
)
from initlab.nn import Dense, Sequential, activations, gradcheck, losses  # noqa: E402

TOL = 1e-6
MAX_SEEDS = 3  # the only randomness is the draw of data and weights
SAMPLES = 16
INIT = "glorot_normal"  # the weights of every checked network

# each loss with the output activations it is checked with
OUTPUTS = {
    "binary_crossentropy": ("sigmoid", "linear"),
    "clipped_binary_crossentropy": ("sigmoid",),
    "softmax_crossentropy": ("softmax", "linear"),
    "mean_squared_error": ("linear", "tanh", "softmax"),
}
HIDDEN = [a for a in activations.available() if a != "softmax"]


@dataclass(frozen=True)
class Settings(Config):
    seeds: int = MAX_SEEDS
    layers: str = "3,4,3"  # input 3, hidden 4 and 3: a hidden-to-hidden layer is checked too
    activations: tuple[str, ...] = ("all",)  # the hidden activations, "all" or names
    eps: float = 1e-6  # the step of the central differences


card: Card[Measured] = Card(
    "gradcheck",
    title="E8 gradcheck: back-propagation is right",
    claim="For every activation, loss and layer, the analytic gradient of back-propagation "
          "matches central finite differences in float64 (relative error < 1e-6).",
    why="Every other card trusts the engine's gradients. Central differences (f(w + h) - "
        "f(w - h)) / 2h agree with the true derivative to O(h^2) plus rounding of order "
        "eps_machine / h, so with h = 1e-6 a correct gradient shows relative errors near 1e-8 "
        "to 1e-10, while a wrong derivative anywhere shows errors of order 1.",
    data=f"standard normal inputs and random targets, {SAMPLES} samples per check, drawn per "
         f"seed",
    # tiny: one hidden activation on a smaller network (a few checks only); full: the wider
    # network `initlab gradcheck` checks by default
    sizes=sizes(Settings(), tiny={"seeds": 2, "layers": "2,3,3", "activations": ("tanh",)},
                full={"layers": "4,8,6"}),
    variants={INIT: Variant(INIT)},
    max_seeds=MAX_SEEDS,
    control=Control(("E8.all-match",), config={"eps": 1e-1},
                    why="a step of 0.1: the central differences' O(h^2) truncation error, "
                        "about 1e-3 relative, is far above the 1e-6 tolerance, as a wrong "
                        "derivative's error would be"),
)


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
              samples: int = 16, tol: float = 1e-6, seed: int = 0, eps: float = 1e-6,
              init: Any = INIT) -> Iterator[dict]:
    """Gradient-check a network for each (hidden activation, loss, output activation), its
    weights drawn with ``init``, with central differences of step ``eps``."""
    widths = _parse_layers(layers)
    hidden = HIDDEN if activation == "all" else [activations.get(activation).name]
    chosen = list(OUTPUTS) if loss == "all" else [losses.get(loss).name]
    rng = np.random.default_rng(seed)
    for act in hidden:
        for name in chosen:
            for out_act in OUTPUTS[name]:
                units = 1 if "binary" in name else 3
                model = Sequential(
                    [Dense(w, act, init=init, bias_init={"name": "normal", "std": 0.1})
                     for w in widths[1:]] + [Dense(units, out_act, init=init)])
                loss_spec = {"name": name, "eps": 1e-7} if name.startswith("clipped") else name
                model.compile(loss_spec).build(widths[0], rng=rng)
                X = rng.standard_normal((samples, widths[0]))
                y = _targets(name, units, samples, rng)
                result = gradcheck(model, X, y, eps=eps, tol=tol, raise_on_failure=False)
                yield {"activation": act, "loss": name, "output": out_act,
                       "error": max(result.errors.values()), "ok": result.ok}


@dataclass
class Measured:
    cfg: Settings
    seeds: list[int]
    combos: list[tuple[str, str, str]]  # (hidden activation, loss, output activation)
    errors: np.ndarray  # (seeds, combos): the worst relative error over layers and parameters
    ok: np.ndarray  # (seeds, combos): the check's own verdict

    @property
    def hidden(self) -> list[str]:
        return list(dict.fromkeys(act for act, _, _ in self.combos))


def _check_seed(seed: int, *, cfg: Settings, init: Any) -> list[dict]:
    return [row for act in cfg.activations
            for row in check_all(act, "all", layers=cfg.layers, samples=SAMPLES, tol=TOL,
                                 seed=seed, eps=cfg.eps, init=init)]


def _per_seed(run: Run, work: Callable[[int], list[dict]]) -> list[list[dict]]:
    """``work(seed)`` for every seed, in this process: a card never starts processes behind
    its caller's back (a script without a ``__main__`` guard would break under spawn)."""
    done = []
    for seed in run.seeds:
        done.append(work(seed))
        run.progress(len(done) / (len(run.seeds) + 1))
    return done


@card.measure
def measure(run: Run) -> Measured:
    per_seed = _per_seed(run, partial(_check_seed, cfg=run.cfg, init=run.variants[INIT].init))
    combos = [(r["activation"], r["loss"], r["output"]) for r in per_seed[0]]
    return Measured(run.cfg, run.seeds, combos,
                    np.array([[r["error"] for r in rows] for rows in per_seed]),
                    np.array([[r["ok"] for r in rows] for rows in per_seed]))


@card.claim("E8.all-match",
            "For every hidden activation x loss x output activation, every layer's analytic "
            "gradient matches central differences in float64 (relative error < 1e-6), for every "
            "seed",
            printed="no number printed; the sources compute gradients by back-propagation and "
                    "take them as right (seeds 001, 004)", uses=(INIT,))
def all_match(m: Measured) -> Outcome:
    worst = m.errors.max(axis=1)  # per seed
    seed, combo = np.unravel_index(np.argmax(m.errors), m.errors.shape)  # the first worst
    act, loss, out = m.combos[combo]
    checks, passed = m.errors.size, int(m.ok.sum())
    return Outcome(bool(np.all(m.ok) and np.max(worst) < TOL),
                   f"worst relative error {np.max(worst):.2g} (tolerance {TOL:g})",
                   f"worst relative error per seed {spread(worst, '.2g')} over {len(m.combos)} "
                   f"combinations x {len(m.seeds)} seeds ({passed} of {checks} below {TOL:g}); "
                   f"the worst: {act} hidden, {loss} on a {out} output")


@card.table("errors")
def errors(m: Measured) -> list[dict]:
    return [{"seed": seed, "activation": act, "loss": loss, "output": out,
             "error": float(m.errors[i, j]), "ok": bool(m.ok[i, j])}
            for i, seed in enumerate(m.seeds) for j, (act, loss, out) in enumerate(m.combos)]


@card.figure("gradcheck-errors")
def error_figure(m: Measured, path: Path) -> Path:
    """log10 of the worst error over seeds: hidden activation x (loss, output), tolerance
    marked in the colour bar."""
    acts = m.hidden
    pairs = list(dict.fromkeys((loss, out) for _, loss, out in m.combos))
    grid = np.full((len(acts), len(pairs)), np.nan)
    worst = np.fmax.reduce(m.errors, axis=0)  # over seeds; a NaN error does not hide the rest
    for (act, loss, out), error in zip(m.combos, worst, strict=True):
        grid[acts.index(act), pairs.index((loss, out))] = np.log10(max(error, 1e-300))
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


@card.notes
def notes(m: Measured) -> list[str]:
    cfg = m.cfg
    lines = [
        f"{len(m.seeds)} seed(s) (at most {MAX_SEEDS}: the seed only draws the data and "
        f"weights); one check_all run per seed on a {cfg.layers} network (plus the output "
        f"layer: 1 unit for the binary losses, 3 otherwise), {SAMPLES} samples, central "
        f"differences with step {cfg.eps:g} in float64. The command `initlab gradcheck` runs "
        f"the same check on any widths (default 4,8,6).",
        f"Hidden activations: {', '.join(m.hidden)}; each loss with its output activations: "
        + "; ".join(f"{loss} with {', '.join(outs)}" for loss, outs in OUTPUTS.items())
        + ". The error of a combination is the worst over its layers and parameters (W and b).",
        "Inputs are standard normal, so a pre-activation lies within a step's reach of a "
        "ReLU-like kink with probability of order 1e-6 per value; a kink hit would show as a "
        "failure, never hide one.",
    ]
    if "all" not in cfg.activations:
        lines.append(f"Only {', '.join(m.hidden)} as hidden activation (the tiny size).")
    return lines
