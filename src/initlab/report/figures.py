"""Figures from probe tables: per-layer std against depth (theory dashed), per-layer bands
over seeds, the layer-by-bin histogram image, and the awake-layers timeline. Each returns the
saved path."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or wanted
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.artist import Artist  # noqa: E402
from matplotlib.layout_engine import ConstrainedLayoutEngine  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from initlab.probes import HIST_EDGES  # noqa: E402

# matplotlib's tab10 palette, ten RGB tuples. At run time plt.cm.tab10 is a ListedColormap whose
# ``colors`` is this tuple; matplotlib's stubs type the colormaps of matplotlib.cm as the base
# Colormap, which has no ``colors``.
TAB10: tuple[tuple[float, float, float], ...] = plt.cm.tab10.colors  # type: ignore[attr-defined]


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a constrained layout already fits everything in the figure; "tight" would lay it out
    # and draw it once more, to crop (a third of the time of a three-panel figure)
    constrained = isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine)
    fig.savefig(path, dpi=110, bbox_inches=None if constrained else "tight")
    plt.close(fig)
    return path


def finish_log_panels(fig, axes, path: str | Path, *, title: str, xlabel: str) -> Path:
    """Log y axis, grid and legend on every panel, a title over them; saved."""
    for ax in axes:
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


def _positive(values: Any) -> np.ndarray:
    """Values a log axis can draw: NaN where not finite, not > 0, or so near overflow
    (> 1e300) that the axis's own transform would overflow."""
    v = np.asarray(values, dtype=float)
    return np.where(np.isfinite(v) & (v > 0) & (v < 1e300), v, np.nan)


def std_vs_depth(curves: Mapping[str, Mapping[str, Sequence[float]]], path: str | Path, *,
                 title: str = "activation std per layer",
                 ylabel: str = "std of the layer's output") -> Path:
    """One line per variant: ``curves[name] = {"mean": ..., "min": ..., "max": ...,
    "theory": ... (optional)}`` over layers; log scale, min-max band, theory dashed."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for (name, curve), color in zip(curves.items(), TAB10, strict=False):
        layers = np.arange(len(curve["mean"]))  # layer indices, as in the probe tables
        ax.plot(layers, _positive(curve["mean"]), color=color, label=name)
        if "min" in curve:
            ax.fill_between(layers, _positive(curve["min"]), _positive(curve["max"]),
                            color=color, alpha=0.2, linewidth=0)
        if curve.get("theory") is not None:
            theory = _positive(curve["theory"])
            ax.plot(layers[:len(theory)], theory, "--", color=color, alpha=0.8,
                    label=f"{name}: mean-field theory")
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return _save(fig, path)


def band_curves(curves: Mapping[str, Mapping[str, Sequence[float]]], path: str | Path, *,
                first_layer: int, ylabel: str, title: str, colors: Sequence | None = None,
                marked: Collection[str] = frozenset()) -> Path:
    """Per curve, ``mean`` against the layer with its ``min``-``max`` band (over seeds) on a
    log axis, ``theory`` dashed where given; the ``marked`` curves dash-dotted with a marker
    every 10 layers (to tell apart lines that overlap)."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colors = colors or [TAB10[i % 10] for i in range(len(curves))]
    for (name, curve), color in zip(curves.items(), colors, strict=True):
        layers = np.arange(first_layer, first_layer + len(curve["mean"]))
        mark = name in marked
        ax.plot(layers, _positive(curve["mean"]), "-." if mark else "-", color=color,
                marker="o" if mark else None, markevery=10, markersize=3.5, label=name)
        ax.fill_between(layers, _positive(curve["min"]), _positive(curve["max"]), color=color,
                        alpha=0.2, linewidth=0)
        if curve.get("theory") is not None:
            ax.plot(layers, _positive(curve["theory"]), "--", color=color, alpha=0.8,
                    linewidth=1)
        _mark_stop(ax, layers, np.asarray(curve["mean"], dtype=float), color)
    ax.set_yscale("log")
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if curves:  # a figure may have no curve left, e.g. when every variant broke
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.grid(alpha=0.3, which="both")
    return _save(fig, path)


def _mark_stop(ax, x: Any, raw: np.ndarray, color) -> None:
    """A cross where a log-axis line stops, named by what came next: an overflow (inf or
    > 1e300), an underflow (0) or NaN."""
    drawn = _positive(raw)
    stop = _stops(x, drawn)
    if stop is None:
        return
    after = raw[stop + 1]
    what = ("overflow" if np.isinf(after) or after >= 1e300 else "underflow" if after == 0
            else "NaN after")
    ax.plot([x[stop]], [drawn[stop]], "x", color=color, markersize=8, mew=2)
    ax.annotate(what, (x[stop], drawn[stop]), textcoords="offset points", xytext=(4, 4),
                fontsize=7, color=color)


def histogram_image(counts: np.ndarray, path: str | Path, *, ylabel: str = "layer",
                    title: str = "distribution of outputs") -> Path:
    """Rows of histogram counts (layers or steps) as an image, bins on the x axis, colour the
    log of the count: how the distribution moves with depth or time."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    extent = (HIST_EDGES[1], HIST_EDGES[-2], len(counts) - 0.5, -0.5)
    image = ax.imshow(np.log1p(np.asarray(counts, dtype=float)[:, 1:-1]), aspect="auto",
                      extent=extent, cmap="viridis", interpolation="nearest")
    used = np.flatnonzero(np.asarray(counts)[:, 1:-1].sum(axis=0))
    if used.size:  # zoom on the occupied bins (tanh lives in [-1, 1])
        inner = HIST_EDGES[1:-1]
        ax.set_xlim(inner[max(used[0] - 1, 0)], inner[min(used[-1] + 2, len(inner) - 1)])
    beyond = int(np.asarray(counts)[:, [0, -1]].sum())  # the open end bins, not drawn
    width = HIST_EDGES[2] - HIST_EDGES[1]
    ax.set_xlabel(f"output value (bins of {width:.1f}; "
                  + (f"{beyond:,} values beyond ±{HIST_EDGES[-2]:g} not drawn)" if beyond
                     else "every value drawn)"))
    ax.set_ylabel(ylabel)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="log(1 + count)")
    return _save(fig, path)


def awake_timeline(steps: np.ndarray, awake: np.ndarray, path: str | Path, *,
                   title: str = "layers whose weight gradient is non-zero") -> Path:
    """awake[step, layer] as a grid: dark where the layer receives gradient."""
    fig, ax = plt.subplots(figsize=(7, 2.8))
    ax.imshow(np.asarray(awake, dtype=float).T, aspect="auto", cmap="Greys", vmin=0, vmax=1,
              interpolation="nearest",
              extent=(steps[0] - 0.5, steps[-1] + 0.5, awake.shape[1] - 0.5, -0.5))
    ax.set_xlabel("iteration")
    ax.set_ylabel("layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    return _save(fig, path)


def _stops(x: Sequence[float], y: np.ndarray) -> int | None:
    """Index of the last drawable point of a line that then stops (inf, NaN or <= 0 after it),
    None if it runs to the end."""
    good = np.isfinite(y)  # y has been through _positive
    if good.all() or not good.any():
        return None
    last = int(np.flatnonzero(good)[-1])
    return last if last < len(y) - 1 else None


def _line(ax, x: Sequence[float], costs: np.ndarray, name: str, color, style: str = "-") -> None:
    """Median line, min-max band, and a cross where the median stops (overflow/underflow)."""
    costs = np.atleast_2d(np.asarray(costs, dtype=float))
    with np.errstate(invalid="ignore"):
        _band_line(ax, x, np.median(costs, axis=0), costs.min(axis=0), costs.max(axis=0), name,
                   color, style)


def _band_line(ax, x: Any, middle: np.ndarray, lo: np.ndarray, hi: np.ndarray,
               name: str, color, style: str = "-") -> None:
    median = _positive(middle)
    ax.plot(x, median, style, color=color, label=name)
    ax.fill_between(x, _positive(lo), _positive(hi), color=color, alpha=0.15, linewidth=0)
    if not np.isfinite(median).any():  # nothing drawable at all: say so in the legend
        ax.plot([], [], "x", color=color, label=f"{name}: not finite, not drawn")
    else:
        _mark_stop(ax, x, np.asarray(middle, dtype=float), color)


def cost_curves(curves: Mapping[str, np.ndarray], epochs: Sequence[int], path: str | Path, *,
                title: str = "training cost") -> Path:
    """``curves[name]``: (seeds, logged epochs) costs; median line and min-max band, log y,
    the legend outside the data, a cross where a line stops."""
    return cost_panels({"": curves}, epochs, path, title=title)


def cost_panels(panels: Mapping[str, Mapping[str, np.ndarray]], epochs: Sequence[int],
                path: str | Path, *, title: str = "training cost", xlabel: str = "epoch",
                colors: Mapping[str, tuple[float, float, float]] | None = None) -> Path:
    """Small multiples: one panel per ``panels`` key, its curves as :func:`cost_curves` draws
    them; a curve name keeps its color across panels; one legend below the panels."""
    names = list(dict.fromkeys(n for curves in panels.values() for n in curves))
    colors = colors or {n: TAB10[i % 10] for i, n in enumerate(names)}
    fig, axes = _panels(len(panels))
    for ax, (panel, curves) in zip(axes, panels.items(), strict=True):
        for name, costs in curves.items():
            _line(ax, epochs, costs, name, colors[name], "--" if "clipped" in name else "-")
        _finish_panel(ax, panel, xlabel)
    axes[0].set_ylabel("cost")
    return _legend_below(fig, axes, title, path)


def band_panels(panels: Mapping[str, Mapping[str, Mapping[str, Any]]],
                path: str | Path, *, xlabel: str, ylabel: str, title: str,
                sharey: bool = True) -> Path:
    """Small multiples of per-layer curves: ``panels[panel][name] = {"mean", "min", "max"}``
    over layers 1, 2, ...; log y, a cross where a curve stops, one legend below."""
    names = list(dict.fromkeys(n for curves in panels.values() for n in curves))
    colors = {n: TAB10[i % 10] for i, n in enumerate(names)}
    fig, axes = _panels(len(panels), sharey)
    for ax, (panel, curves) in zip(axes, panels.items(), strict=True):
        for name, c in curves.items():
            x = np.arange(1, len(c["mean"]) + 1)
            _band_line(ax, x, np.asarray(c["mean"], float), np.asarray(c["min"], float),
                       np.asarray(c["max"], float), name, colors[name])
        _finish_panel(ax, panel, xlabel)
    axes[0].set_ylabel(ylabel)
    return _legend_below(fig, axes, title, path)


def _panels(n: int, sharey: bool = True):
    fig, axes = plt.subplots(1, n, figsize=(max(4.2 * n, 7.5), 3.8), sharey=sharey,
                             squeeze=False, layout="constrained")
    return fig, list(axes[0])


def _finish_panel(ax, panel: str, xlabel: str) -> None:
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3, which="both")
    if panel:
        ax.set_title(panel, fontsize=10)


def _legend_below(fig, axes, title: str, path: str | Path) -> Path:
    handles: dict[str, Artist] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center",
                   ncol=min(4, len(handles)), fontsize=8, frameon=False)
    fig.suptitle(title)
    return _save(fig, path)


def decision_boundaries(models: Mapping[str, tuple], X: np.ndarray, y: np.ndarray,
                        labels: Sequence, path: str | Path) -> Path:
    """One panel per variant: ``models[name] = (model, replica)``; the replica's own data
    (X[replica], y[replica]) over its predicted probability."""
    fig, axes = plt.subplots(1, len(models), figsize=(3.4 * len(models), 3.2), squeeze=False)
    for ax, (name, (model, r)) in zip(axes[0], models.items(), strict=True):
        pts, target = X[r], y[r]
        lo, hi = pts.min(axis=0) - 0.8, pts.max(axis=0) + 0.8
        gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 160), np.linspace(lo[1], hi[1], 160))
        grid = np.column_stack([gx.ravel(), gy.ravel()])
        prob = model.take([r]).predict(grid)[:, 0].reshape(gx.shape)
        ax.contourf(gx, gy, prob, levels=np.linspace(0, 1, 11), cmap="RdBu", alpha=0.8)
        ax.scatter(pts[:, 0], pts[:, 1], c=target, cmap="RdBu", edgecolors="k", s=9,
                   linewidths=0.3)
        ax.set_title(f"{name} (seed {labels[r][1]})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, path)


def phase_figure(diagram: Mapping[str, Any], path: str | Path, *, title: str) -> Path:
    """The mean-field phase diagram (:func:`initlab.theory.phase_diagram`): log chi_1 over
    (sigma_w^2, sigma_b^2), diverging at 0 so order and chaos take opposite colors, the
    chi_1 = 1 line, and xi_c as contours (where it is finite)."""
    sw2, sb2 = np.asarray(diagram["sigma_w2"]), np.asarray(diagram["sigma_b2"])
    log_chi = np.log(np.asarray(diagram["chi1"], dtype=float))
    from matplotlib.colors import TwoSlopeNorm

    # each side of chi_1 = 1 spans its own colors: order is far deeper than chaos here
    norm = TwoSlopeNorm(0.0, min(float(np.nanmin(log_chi)), -1e-3),
                        max(float(np.nanmax(log_chi)), 1e-3))
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    mesh = ax.pcolormesh(sw2, sb2, log_chi, cmap="RdBu_r", norm=norm, shading="nearest")
    fig.colorbar(mesh, ax=ax, label="log χ₁  (< 0 ordered, > 0 chaotic)")
    ax.plot(diagram["edge_sigma_w2"], sb2, "k-", lw=2, label="χ₁ = 1 (edge of chaos)")
    xi = np.asarray(diagram["xi_c"], dtype=float)
    finite = np.where(np.isfinite(xi), xi, np.nan)
    if np.isfinite(finite).sum() > 3:
        lines = ax.contour(sw2, sb2, finite, levels=[2, 5, 10, 20], colors="0.3",
                           linewidths=0.8)
        ax.clabel(lines, fmt="ξ_c=%g", fontsize=7)
    ax.set_xlabel("σ_w²")
    ax.set_ylabel("σ_b²")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(0, -0.15), frameon=False, fontsize=8)
    return _save(fig, path)
