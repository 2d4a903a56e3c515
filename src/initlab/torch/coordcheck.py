"""The coordinate check of μP (Yang et al., "Tensor Programs V", 2022, §D.1; ``mup``'s
``get_coord_data``): train a model a few steps at several widths and record, for every
``nn.Linear``, the mean absolute entry of its output (the *coordinate size*) at each step.

In a parametrization that transfers across width every coordinate size stays O(1) as width
grows: plotted against width on log-log axes each line is flat (slope 0). In the standard
parametrization (PyTorch's default init, one fixed learning rate) the output layer's
coordinates grow with width from the first update on, while at init (step 0) every layer is
flat: fan-in init keeps activations O(1) at any width.

Example::

    check = coordcheck(lambda n: nn.Sequential(nn.Linear(8, n), nn.ReLU(), nn.Linear(n, 4)),
                       [64, 128, 256], X, y, lr=0.1)
    check.verdicts(tol=0.1)   # {"0": "flat", "2": "grows"}
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from initlab.probes import Table

Verdict = Literal["flat", "grows", "shrinks", "undefined"]
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {"sgd": torch.optim.SGD,
                                                       "adam": torch.optim.Adam}
# lr(parameter name, width) -> that parameter's learning rate: μP scales them per layer
LearningRate = float | Callable[[str, int], float]


class CoordCheck:
    """The coordinate sizes of a :func:`coordcheck` run: ``table`` has one row per
    (layer, width, seed, step) with the column ``scale`` (mean |output| over the batch)."""

    def __init__(self, table: Table):
        self.table = table
        self.layers: list[str] = list(dict.fromkeys(table.column("layer").tolist()))
        self.widths: list[int] = sorted(set(table.column("width").tolist()))
        self.steps: list[int] = sorted(set(table.column("step").tolist()))

    def __repr__(self) -> str:
        return (f"CoordCheck({len(self.layers)} layers, widths={self.widths}, "
                f"steps={len(self.steps)})")

    def mean_scale(self, layer: str, step: int) -> np.ndarray:
        """The scale of ``layer`` at ``step``, averaged over seeds: one value per width."""
        rows = self.table.where(layer=layer, step=step)
        return np.array([rows.where(width=w).column("scale").mean() for w in self.widths])

    def slopes(self) -> Table:
        """Per (layer, step): the least-squares slope of log(mean scale) against log(width).
        0 where the layer's output is exactly zero at every width; NaN where only some are
        (or where a scale is not finite), since the log-log line is then undefined."""
        rows = []
        for layer in self.layers:
            for step in self.steps:
                s = self.mean_scale(layer, step)
                if np.all(s == 0):
                    slope = 0.0
                elif np.all(np.isfinite(s)) and np.all(s > 0):
                    slope = float(np.polyfit(np.log(self.widths), np.log(s), 1)[0])
                else:
                    slope = float("nan")
                rows.append({"layer": layer, "step": step, "slope": slope})
        return Table(rows)

    def verdicts(self, tol: float = 0.1) -> dict[str, Verdict]:
        """Per layer: "flat" if |slope| <= ``tol`` at every step, else "grows" or "shrinks"
        by the sign of the steepest slope; "undefined" if a slope is NaN."""
        if not tol >= 0:
            raise ValueError(f"tol must be >= 0, got {tol!r}")
        slopes = self.slopes()
        out: dict[str, Verdict] = {}
        for layer in self.layers:
            s = slopes.where(layer=layer).column("slope").astype(float)
            worst = s[np.argmax(np.abs(s))] if np.all(np.isfinite(s)) else float("nan")
            out[layer] = ("undefined" if np.isnan(worst) else "flat" if abs(worst) <= tol
                          else "grows" if worst > 0 else "shrinks")
        return out

    def figure(self, path: str | Path) -> Path:
        """Write one panel per step: scale against width on log-log axes, a line per layer
        (mean over seeds), legend outside the panels. Returns the path."""
        import matplotlib
        matplotlib.use("Agg")  # files only: no display is needed or wanted
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(self.steps), figsize=(3.2 * len(self.steps), 3.0),
                                 sharey=True, squeeze=False)
        for ax, step in zip(axes[0], self.steps, strict=True):
            for layer in self.layers:
                ax.plot(self.widths, self.mean_scale(layer, step), marker="o", label=layer)
            ax.set(xscale="log", yscale="log", title=f"step {step}", xlabel="width")
        axes[0][0].set_ylabel("mean |output|")
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), title="layer")
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, bbox_inches="tight")
        plt.close(fig)
        return path


def _default_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for integer labels, else mean squared error."""
    if y.dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        return nn.functional.cross_entropy(out, y.long())
    return nn.functional.mse_loss(out, y)


def coordcheck(make_model: Callable[[int], nn.Module], widths: Sequence[int],
               X: torch.Tensor, y: torch.Tensor, *,
               loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
               steps: int = 3, lr: LearningRate = 0.1,
               optimizer: Literal["sgd", "adam"] = "sgd", seeds: int = 2) -> CoordCheck:
    """Coordinate check (Tensor Programs V, §D.1): for each width and seed, build
    ``make_model(width)`` after ``torch.manual_seed(seed)``, then take ``steps`` full-batch
    forward passes on (X, y) with an optimizer update after each but the last; a forward hook
    on every ``nn.Linear`` records mean |output| at each pass, so step t is the model after t
    updates (step 0: at init).

    Args:
        make_model: width -> a fresh model; its Linear layers must have the same names at
            every width (they label the rows).
        widths: at least two distinct widths (a slope needs two points).
        loss_fn: (output, y) -> scalar; default cross-entropy for integer y, else MSE.
        steps: forward passes recorded (>= 1); ``steps - 1`` updates.
        lr: one learning rate, or ``lr(parameter_name, width)`` per parameter, which is how
            μP's per-layer scaling is expressed (TP V, Table 3).
        optimizer: "sgd" (plain, no momentum) or "adam".
        seeds: seeds 0 .. seeds-1; scales are averaged over them before slopes are fitted.

    Read-only: it trains only the models it builds, never modifies X or y, and restores the
    global torch RNG state it seeds.
    """
    if len(set(widths)) < 2 or any(int(w) != w or w < 1 for w in widths):
        raise ValueError(f"widths must hold at least two distinct positive integers, "
                         f"got {list(widths)!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps!r}")
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
    loss = loss_fn or _default_loss
    rows: list[dict[str, object]] = []
    with torch.random.fork_rng(devices=[]):
        for width in sorted(set(int(w) for w in widths)):
            for seed in range(seeds):
                torch.manual_seed(seed)
                rows += _run(make_model(width), width, seed, X, y, loss, steps, lr,
                             OPTIMIZERS[optimizer])
    return CoordCheck(Table(rows))


def _run(model: nn.Module, width: int, seed: int, X: torch.Tensor, y: torch.Tensor,
         loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], steps: int,
         lr: LearningRate, opt_class: Callable[..., torch.optim.Optimizer]
         ) -> list[dict[str, object]]:
    """One model's rows: hooks on its Linear layers, removed however the run ends."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p], "lr": lr(n, width) if callable(lr) else lr} for n, p in named]
    opt = opt_class(groups)
    rows: list[dict[str, object]] = []
    step = 0

    def hook_for(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
            scale = float(output.detach().abs().mean())
            rows.append({"layer": name, "width": width, "seed": seed, "step": step,
                         "scale": scale})
        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in model.named_modules()
               if isinstance(m, nn.Linear)]
    if not handles:
        raise ValueError(f"make_model({width}) has no nn.Linear layer to check")
    try:
        for step in range(steps):
            value = loss(model(X), y)
            if step < steps - 1:
                opt.zero_grad()
                value.backward()
                opt.step()
    finally:
        for h in handles:
            h.remove()
    return rows
