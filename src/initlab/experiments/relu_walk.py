"""The finite-width random walk of a He ReLU stack (Hanin & Rolnick 2018, "How to start
training"): ln of a sample's squared norm after l layers of width n is a sum of i.i.d.
ln R steps, R = (2/n) sum relu(g_i)^2, whose variance is ~5 l/n. The E4 card compares networks
with the walk drawn directly; this module holds the walk, its statistics and its figure."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from initlab.report import figures as plots

WALK_CONSTANT = 5.0  # n Var(ln R) as n -> infinity


@dataclass
class Walk:
    """s_l = ln(|x_l|² / |x_0|²) − ln(n / d) after layers l = 1..L of width n (d the input's;
    the first layer's n / d taken out, every increment is distributed as ln R_n): per width,
    ``net`` (networks, L), one image each, and ``sim`` (walks, L), the walk drawn directly."""

    widths: tuple[int, ...]
    net: tuple[np.ndarray, ...]
    sim: tuple[np.ndarray, ...]

    @cached_property
    def rows(self) -> list[dict[str, Any]]:
        """Per width, s_L's variance and mean over the networks and over the walks, each ± the
        standard error of as many draws of the walk (from its moments, the fourth for the
        variance: s_L's tail is too long for a χ² interval), and z, their difference over it."""
        rows = []
        for n, net, sim in zip(self.widths, self.net, self.sim, strict=True):
            a, b = net[:, -1], sim[:, -1]
            var, fourth = b.var(ddof=1), np.mean((b - b.mean()) ** 4)
            (mean_se, var_se), (walk_mean_se, walk_var_se) = (
                (np.sqrt(var / k), np.sqrt((fourth - var**2 * (k - 3) / (k - 1)) / k))
                for k in (len(a), len(b)))
            row = {"var": a.var(ddof=1), "var_se": var_se, "walk_var": var,
                   "walk_var_se": walk_var_se, "mean": a.mean(), "mean_se": mean_se,
                   "walk_mean": b.mean(), "walk_mean_se": walk_mean_se,
                   "z_var": (a.var(ddof=1) - var) / np.hypot(var_se, walk_var_se),
                   "z_mean": (a.mean() - b.mean()) / np.hypot(mean_se, walk_mean_se)}
            rows.append({"width": n, "networks": len(a), "walks": len(b)}
                        | {k: float(v) for k, v in row.items()})
        return rows

    def constant(self, key: str) -> tuple[float, float]:
        """The mean over widths of n·row[key]/L ("var", "walk_var", "mean", ...), ± its error."""
        scale = np.array(self.widths) / self.net[0].shape[-1]
        values, se = (scale * [r[k] for r in self.rows] for k in (key, f"{key}_se"))
        return float(np.mean(values)), float(np.sqrt(np.sum(se**2)) / len(se))


def simulate_walk(width: int, layers: int, walks: int, *,
                  rng: np.random.Generator | int | None = None) -> np.ndarray:
    """(walks, layers) partial sums of ln R, R = (2/n) Σ_{i≤n} relu(g_i)², g_i i.i.d. N(0, 1):
    a He ReLU stack's log squared-norm ratio, drawn without a network (Hanin & Rolnick 2018).
    relu(g)² is 0 or g² with probability 1/2 each, so Σ relu(g_i)² is χ² with K ~ Bin(n, 1/2)
    degrees of freedom: Gamma(K/2, 2), 0 where K = 0 (then ln R = −inf, as a dead layer's)."""
    rng = np.random.default_rng(rng)
    dof = rng.binomial(width, 0.5, size=(walks, layers))
    with np.errstate(divide="ignore"):
        return np.cumsum(np.log(2.0 / width * rng.gamma(dof / 2, 2.0)), axis=1)


def figure(walk: Walk, layers: int, path: Path) -> Path:
    """Variance and mean over draws of s_l against l/n: per width the networks (solid, ± 2
    standard errors at layer L) and the walk drawn directly (dashed); the leading order dotted."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
    for i, (n, row, net, sim) in enumerate(zip(walk.widths, walk.rows, walk.net, walk.sim,
                                               strict=True)):
        x = np.arange(1, layers + 1) / n
        for ax, key, curve, walked in ((axes[0], "var", net.var(0, ddof=1), sim.var(0, ddof=1)),
                                       (axes[1], "mean", net.mean(0), sim.mean(0))):
            ax.plot(x, curve, color=plots.TAB10[i], label=f"n = {n}: {len(net)} networks")
            ax.plot(x, walked, "--", color=plots.TAB10[i], label=f"n = {n}: walk drawn directly")
            ax.errorbar(x[-1], row[key], 2 * row[f"{key}_se"], color=plots.TAB10[i], capsize=3)
    for ax, slope, what in ((axes[0], WALK_CONSTANT, "variance"),
                            (axes[1], -WALK_CONSTANT / 2, "mean")):
        ax.axline((0, 0), slope=slope, linestyle=":", color="black",
                  label=None if slope < 0 else "leading order: 5·l/n, −2.5·l/n")
        ax.set(xlabel="l / n (layer over width)",
               ylabel=f"{what} over draws of ln(|x_l|² / |x_0|²) − ln(n/d)")
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=4,
               fontsize=8, frameon=False)
    fig.suptitle(f"E4 ReLU + Kaiming, {layers} layers: ln of the squared norm over draws, "
                 f"networks and the walk drawn directly")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
