"""Figures from probe tables: per-layer std against depth (theory dashed), the layer-by-bin
histogram image, and the awake-layers timeline. Each returns the saved path."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or wanted
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from initlab.probes import HIST_EDGES  # noqa: E402


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def std_vs_depth(curves: Mapping[str, Mapping[str, Sequence[float]]], path: str | Path, *,
                 title: str = "activation std per layer") -> Path:
    """One line per variant: ``curves[name] = {"mean": ..., "min": ..., "max": ...,
    "theory": ... (optional)}`` over layers; log scale, min-max band, theory dashed."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for (name, curve), color in zip(curves.items(), plt.cm.tab10.colors, strict=False):
        layers = np.arange(len(curve["mean"]))  # layer indices, as in the probe tables
        mean = np.asarray(curve["mean"], dtype=float)
        ax.plot(layers, np.where(mean > 0, mean, np.nan), color=color, label=name)
        if "min" in curve:
            lo, hi = np.asarray(curve["min"], float), np.asarray(curve["max"], float)
            ax.fill_between(layers, np.where(lo > 0, lo, np.nan), np.where(hi > 0, hi, np.nan),
                            color=color, alpha=0.2, linewidth=0)
        if curve.get("theory") is not None:
            theory = np.asarray(curve["theory"], dtype=float)
            ax.plot(layers[:len(theory)], np.where(theory > 0, theory, np.nan), "--",
                    color=color, alpha=0.8, label=f"{name}: mean-field theory")
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel("std of the layer's output")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return _save(fig, path)


def histogram_image(counts: np.ndarray, path: str | Path, *, ylabel: str = "layer",
                    title: str = "distribution of outputs") -> Path:
    """Rows of histogram counts (layers or steps) as an image, bins on the x axis, colour the
    log of the count: how the distribution moves with depth or time."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    extent = (HIST_EDGES[1], HIST_EDGES[-2], len(counts) - 0.5, -0.5)
    image = ax.imshow(np.log1p(np.asarray(counts, dtype=float)[:, 1:-1]), aspect="auto",
                      extent=extent, cmap="viridis", interpolation="nearest")
    ax.set_xlabel("output value (bins of 0.2; values beyond +-5 not drawn)")
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
