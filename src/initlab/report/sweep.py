"""The report of a sweep folder (``initlab report SWEEP_DIR``), from its files alone
(``sweep.json``, ``results.csv``, ``theory.csv``): per facet (every axis but sigma_w^2, depth
and seed), a heatmap of the trained fraction over sigma_w^2 x depth with the theory's 6 xi_c
drawn on it, and the measured correlation c of two inputs at init beside the theory's c*.
"""

from __future__ import annotations

import html
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from initlab.report.figures import TAB10, _save, plt

FACETS = ("activation", "sigma_b2", "width", "data", "optimizer", "steps")


def _read(folder: Path) -> tuple[dict[str, Any], list[dict], list[dict]]:
    from initlab.sweeps.runner import MANIFEST, read_csv

    if not (folder / MANIFEST).is_file():
        raise FileNotFoundError(f"{folder} is not a sweep folder: it has no {MANIFEST}")
    if not (folder / "results.csv").is_file():
        raise FileNotFoundError(f"{folder} has no results.csv: the sweep has not finished "
                                f"(continue it with `initlab sweep --resume {folder}`)")
    manifest = json.loads((folder / MANIFEST).read_text())
    return manifest, read_csv(folder / "results.csv"), read_csv(folder / "theory.csv")


def facets(rows: list[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[f] for f in FACETS)].append(row)
    return dict(groups)


def trained_fraction(rows: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sigma_w2 values, depths, fraction[depth, sigma_w2]) of one facet's rows."""
    sw2 = np.array(sorted({r["sigma_w2"] for r in rows}), dtype=float)
    depths = np.array(sorted({r["depth"] for r in rows}))
    frac = np.full((len(depths), len(sw2)), np.nan)
    cells: dict[tuple, list[bool]] = defaultdict(list)
    for r in rows:
        cells[(r["depth"], r["sigma_w2"])].append(bool(r["trainable"]))
    for (d, w2), flags in cells.items():
        frac[np.searchsorted(depths, d), np.searchsorted(sw2, w2)] = np.mean(flags)
    return sw2, depths, frac


def _edges(values: np.ndarray, log: bool) -> np.ndarray:
    v = np.log(values) if log else values.astype(float)
    if len(v) == 1:
        mids = np.array([v[0] - 0.5, v[0] + 0.5])
    else:
        inner = (v[1:] + v[:-1]) / 2
        mids = np.concatenate([[2 * v[0] - inner[0]], inner, [2 * v[-1] - inner[-1]]])
    return np.exp(mids) if log else mids


def _label(key: tuple) -> str:
    return ", ".join(f"{name} {value}" for name, value in zip(FACETS, key, strict=True))


def heatmap(rows: list[dict], theory: list[dict], key: tuple, path: Path) -> Path:
    """Trained fraction over sigma_w^2 x depth (log), 6 xi_c from the theory as a line and the
    edge of chaos (chi_1 = 1) as a dotted vertical."""
    sw2, depths, frac = trained_fraction(rows)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    mesh = ax.pcolormesh(_edges(sw2, False), _edges(depths, True), frac, cmap="viridis",
                         vmin=0, vmax=1, shading="flat")
    fig.colorbar(mesh, ax=ax, label="trained fraction (over seeds)")
    curve = sorted((t["sigma_w2"], t["xi_c"], t["chi1"]) for t in theory
                   if t["activation"] == key[0] and t["sigma_b2"] == key[1])
    if curve:
        x = np.array([c[0] for c in curve])
        xi = np.array([c[1] for c in curve], dtype=float)
        ax.plot(x, np.minimum(6 * xi, 1e6), color="tab:red", lw=2, label="6 ξ_c (theory)")
        chi = np.array([c[2] for c in curve], dtype=float)
        cross = np.flatnonzero(np.diff(np.sign(chi - 1)))
        for i in cross:  # linear interpolation of chi_1 = 1 between grid points
            edge = x[i] + (1 - chi[i]) * (x[i + 1] - x[i]) / (chi[i + 1] - chi[i])
            ax.axvline(edge, color="tab:orange", ls=":", lw=2, label="χ₁ = 1 (theory)")
    ax.set_yscale("log")
    ax.set_ylim(_edges(depths, True)[0], _edges(depths, True)[-1])
    ax.set_yticks(depths, [str(d) for d in depths])
    ax.minorticks_off()
    ax.set_xlabel("σ_w² (weights N(0, σ_w²/fan_in))")
    ax.set_ylabel("depth (hidden layers)")
    ax.set_title(_label(key), fontsize=9)
    ax.legend(loc="upper left", bbox_to_anchor=(1.25, 1), fontsize=8, frameon=False)
    return _save(fig, path)


def correlation(rows: list[dict], theory: list[dict], key: tuple, path: Path) -> Path:
    """The measured correlation of two inputs at the last hidden layer at init (dots: mean
    over seeds and input pairs), the theory's for the same inputs and depth (lines), and its
    deep limit c* (dashed)."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    by_depth: dict[int, dict[float, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_depth[r["depth"]][r["sigma_w2"]].append(r)
    for i, (d, cells) in enumerate(sorted(by_depth.items())):
        x = sorted(cells)
        color = TAB10[i % 10]
        ax.plot(x, [np.nanmean([r["c"] for r in cells[w]]) for w in x], "o", ms=4,
                color=color, label=f"depth {d}: measured")
        ax.plot(x, [cells[w][0]["c_theory"] for w in x], "-", lw=1, color=color,
                label=f"depth {d}: theory from the inputs")
    curve = sorted((t["sigma_w2"], t["c_star"]) for t in theory
                   if t["activation"] == key[0] and t["sigma_b2"] == key[1])
    if curve:
        ax.plot(*zip(*curve, strict=True), "k--", label="c* (theory)")
    ax.set_xlabel("σ_w²")
    ax.set_ylabel("correlation of two inputs")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.set_title(_label(key), fontsize=9)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, frameon=False)
    return _save(fig, path)


def render(folder: str | Path) -> tuple[Path, Path]:
    """Draw every facet's figures and write ``report.md`` and ``index.html`` in the folder."""
    import base64

    folder = Path(folder)
    manifest, rows, theory = _read(folder)
    grid = manifest["grid"]
    figures = []
    for n, (key, group) in enumerate(sorted(facets(rows).items(), key=lambda kv: str(kv[0]))):
        figures.append((_label(key),
                        heatmap(group, theory, key, folder / f"phase-{n}.png"),
                        correlation(group, theory, key, folder / f"correlation-{n}.png")))
    trained = sum(bool(r["trainable"]) for r in rows)
    rule = (f"trainable: training accuracy >= chance + {grid['trainable_at']:g} x "
            f"(1 - chance), and the cost never diverged")
    axes = ", ".join(f"{a} {grid[a]}" for a in ("activation", "sigma_w2", "sigma_b2", "depth",
                                                "width", "data", "optimizer", "steps"))
    lines = [f"# Sweep {folder.name}", "",
             f"{len(rows)} trainings ({manifest['cells']} cells x {grid['seeds']} seeds), "
             f"{trained} trainable. {rule}.", "", f"Grid: {axes}; learning rate "
             f"{grid['learning_rate']:g}, batch {grid['batch_size']}, sweep seed "
             f"{grid['seed']}.", ""]
    for label, phase, corr in figures:
        lines += [f"## {label}", "", f"![trained fraction]({phase.name})", "",
                  f"![correlation]({corr.name})", ""]
    md = folder / "report.md"
    md.write_text("\n".join(lines))

    def img(path: Path) -> str:
        data = base64.b64encode(path.read_bytes()).decode()
        return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'

    body = [f"<h1>Sweep {html.escape(folder.name)}</h1>",
            f"<p>{len(rows)} trainings ({manifest['cells']} cells &times; {grid['seeds']} "
            f"seeds), {trained} trainable. {html.escape(rule)}.</p>",
            f"<p>Grid: {html.escape(axes)}.</p>"]
    for label, phase, corr in figures:
        body += [f"<h2>{html.escape(label)}</h2>", img(phase), img(corr)]
    index = folder / "index.html"
    index.write_text("<!doctype html><meta charset='utf-8'><title>initlab sweep</title>"
                     "<style>body{font-family:sans-serif;max-width:60em;margin:auto}"
                     "img{max-width:100%}</style>" + "\n".join(body))
    return md, index

