"""The E4 `depth` card's tables, figures and notes, from its ``Measured``: the mean-field line
and the bands over seeds of each layer's activation and gradient std. The card (``depth``)
registers them, in the report's order."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from initlab import theory
from initlab.experiments import relu_walk
from initlab.experiments.card import spread
from initlab.experiments.depth import (
    CONTEXT,
    F32,
    LINEAR,
    LSUV,
    LSUV_TOLERANCE,
    RELU,
    SUBNORMAL_MIN,
    THEORY_VAR,
)
from initlab.report import figures as plots

if TYPE_CHECKING:
    from initlab.experiments.depth import Measured


def _theory_std(m: Measured, name: str) -> np.ndarray:
    """The mean-field std after each layer, q_1 = n_in Var(W) q0, q_l = V(q_{l-1}); nan for
    the variants without a line."""
    if name not in THEORY_VAR:
        return np.full(m.cfg.layers, np.nan)
    stack, weight_var, width = m.stack(name), THEORY_VAR[name], m.cfg.width
    activation = "linear" if name in LINEAR else "relu"
    sigma_w = [np.sqrt(stack.fan_in * weight_var(stack.fan_in))]
    sigma_w += [np.sqrt(width * weight_var(width))] * (m.cfg.layers - 1)
    with np.errstate(over="ignore", invalid="ignore"):  # naive weights leave float64 too
        q = theory.propagate(activation, sigma_w, 0.0, stack.q0)
        return theory.activation_std(activation, q)


def _curves(m: Measured) -> dict[str, dict[str, Any]]:
    """Per variant, the bands over seeds of the activation std (index 0 the input, so that
    index l is layer l's output; the theory where it is drawable in float32) and of the
    gradient std."""
    curves: dict[str, dict[str, Any]] = {}
    for name in LINEAR + RELU:
        theory_std = _theory_std(m, name)
        drawable = (theory_std <= F32.max) & (theory_std >= SUBNORMAL_MIN)
        with_input = np.column_stack([m.of(name, "input_std"), m.of(name, "std")])
        theory_line = np.concatenate([[with_input[:, 0].mean()],
                                      np.where(drawable, theory_std, np.nan)]) \
            if name in THEORY_VAR else None
        curves[name] = {"act": _band(with_input) | {"theory": theory_line},
                        "grad": _band(m.of(name, "grad"))}
    return curves


def _band(values: np.ndarray) -> dict[str, np.ndarray]:
    """Mean, min and max over seeds per layer, inf and nan dropped (a line stops there)."""
    clean = np.where(np.isfinite(values), values, np.nan)
    with np.errstate(all="ignore"):
        broken = np.any(np.isnan(clean), axis=0)
        return {"mean": np.where(broken, np.nan, clean.mean(axis=0)),
                "min": np.where(broken, np.nan, clean.min(axis=0)),
                "max": np.where(broken, np.nan, clean.max(axis=0))}


def layers_table(m: Measured) -> list[dict]:
    rows = []
    for name in LINEAR + RELU:
        std, grad, mean = m.of(name, "std"), m.of(name, "grad"), m.of(name, "mean")
        theory_std = _theory_std(m, name)
        for layer in range(std.shape[1]):
            rows.append({"variant": name, "layer": layer + 1,
                         "act_mean": float(np.mean(mean[:, layer])),
                         **_row_stats("act_std", std[:, layer]),
                         "theory_std": float(theory_std[layer]),
                         **_row_stats("grad_std", grad[:, layer])})
    return rows


def walk_table(m: Measured) -> list[dict]:
    return [{"layers": m.cfg.layers, **row} for row in m.walk.rows]


def walk_figure(m: Measured, path: Path) -> Path:
    return relu_walk.figure(m.walk, m.cfg.layers, path)


def _row_stats(key: str, values: np.ndarray) -> dict[str, float]:
    with np.errstate(all="ignore"):
        return {f"{key}_mean": float(np.mean(values)), f"{key}_std": float(np.std(values)),
                f"{key}_min": float(np.min(values)), f"{key}_max": float(np.max(values))}


def activation_figure(m: Measured, path: Path) -> Path:
    return plots.std_vs_depth({k: v["act"] for k, v in _curves(m).items()}, path,
                              title=f"E4 {m.cfg.layers} layers of width {m.cfg.width}, float32 "
                                    f"(dashed: mean-field theory)")


def kept_figure(m: Measured, path: Path) -> Path:
    """The variants that keep their scale, which overlap near 1 on the full figure's range."""
    kept = {k: v["act"] for k, v in _curves(m).items()
            if np.all((v["act"]["mean"] > 1e-2) & (v["act"]["mean"] < 1e2))}
    return _band_figure(kept, path, first_layer=0, ylabel="std of the layer's output",
                        title="E4 the variants that keep their scale (band: min-max over seeds; "
                              "dashed: mean-field theory)")


def gradient_figure(m: Measured, path: Path) -> Path:
    return _band_figure({k: v["grad"] for k, v in _curves(m).items()}, path, first_layer=1,
                        ylabel="std of ∂L/∂z (softmax cross-entropy)",
                        title="E4 back-propagated gradient per layer (band: min-max over seeds)")


def _band_figure(curves: dict, path: Path, *, first_layer: int, ylabel: str, title: str
                 ) -> Path:
    """The per-variant bands, each variant in its colour of the full figure (tab10 in the
    order of LINEAR then RELU) and the context variants dash-dotted with markers."""
    order = LINEAR + RELU
    return plots.band_curves(curves, path, first_layer=first_layer, ylabel=ylabel, title=title,
                             colors=[plots.TAB10[order.index(name) % 10] for name in curves],
                             marked=set(CONTEXT) & set(curves))


def notes(m: Measured) -> list[str]:
    cfg, depth = m.cfg, m.cfg.layers
    kaiming_last = m.of("relu kaiming", "std")[:, -1]
    return [f"{cfg.seeds} seeds and a batch of {cfg.batch} training images per seed, to keep "
            f"the card fast: every replica needs {depth} × {cfg.width}² random weights, whose "
            f"draws are most of the card's time.",
            f"{depth} bias-free layers of width {cfg.width} (the first maps {m.linear.fan_in} "
            f"pixels to {cfg.width}) in float32, then a linear 10-unit head with the same init; "
            f"the backward pass is softmax cross-entropy on the images' labels, and the "
            f"gradient std is that of ∂L/∂z of each layer.",
            "Statistics are computed in float64 from the float32 values, so subnormal values "
            "count as non-zero; 'exactly 0' means every value of the layer's output is 0.",
            "The variants of a seed share its random stream and its batch: naive and tiny are "
            "the same draws, 100 times apart, and the two Xavier stacks the same matrices "
            "(drawn once, for the linear stack).",
            "The dashed theory is the mean-field recursion (theory.variance_map) with each "
            "variant's n·Var(W), drawn where it stays inside float32's range (not for the "
            "context variants).",
            f"At finite width the mean-field std is only the average: per seed, the log of a "
            f"ReLU stack's variance wanders like a random walk whose spread grows with "
            f"depth/width (Hanin & Rolnick 2018), and the batch does not average it out "
            f"because a deep ReLU stack makes its inputs nearly collinear (mean cosine between "
            f"the batch's samples at layer {depth}: ReLU + Kaiming "
            f"{spread(m.of('relu kaiming', 'cosine'), '.3f')}, linear + Xavier "
            f"{spread(m.of('linear xavier', 'cosine'), '.3f')}), while a linear stack keeps "
            f"their spread and stays tighter. Kaiming std at layer {depth} per seed: "
            f"{', '.join(f'{v:.3g}' for v in kaiming_last)} (theory "
            f"{_theory_std(m, 'relu kaiming')[-1]:.3g}). So no band is claimed: "
            f"E4.relu-kaiming-walk measures the walk at widths {cfg.walk_widths}, where tens of "
            f"draws are cheap, one image a network, against the walk drawn directly (not 5·L/n, "
            f"its leading order)."] + _context_notes(m)


def _context_notes(m: Measured) -> list[str]:
    depth, width = m.cfg.layers, m.cfg.width
    orthogonal = m.of("linear orthogonal", "std")
    lsuv, zero = m.of(LSUV, "std"), m.of("relu zero", "std")
    return [f"Context variants, beyond the sources (as E1's): orthogonal weights in the linear "
            f"stack; LSUV (tol {LSUV_TOLERANCE}, on each seed's own batch) and ZerO in the ReLU "
            f"stack. LSUV starts from orthonormal matrices, its own first step: the linear "
            f"orthogonal variant's, drawn once per seed. Orthogonal and LSUV ran on "
            f"{len(orthogonal)} seed(s), ZerO on {len(zero)}: an orthogonal draw is a QR per "
            f"layer (about 4 s a seed at width {width}).",
            f"What they show: orthogonal layers are isometries, so a linear stack's std stays "
            f"at layer 1's ({spread(orthogonal[:, 0], '.3f')}; the first layer maps "
            f"{m.linear.fan_in} pixels to {width} units) to layer {depth} "
            f"({spread(orthogonal[:, -1], '.3f')}) with none of Xavier's drift. LSUV "
            f"measures and divides, so every ReLU layer's pre-activation std is 1 on the batch "
            f"and its output std stays near {spread(np.median(lsuv, axis=1), '.3f')} "
            f"(median over layers) to layer {depth} ({spread(lsuv[:, -1], '.3f')}), where "
            f"Kaiming's per-seed random walk ends at "
            f"{', '.join(f'{v:.3g}' for v in m.of('relu kaiming', 'std')[:, -1])}. ZerO's "
            f"square layers are the identity and ReLU passes non-negative values unchanged, so "
            f"every layer from 2 on repeats layer 1's output exactly (std "
            f"{spread(zero[:, -1], '.3f')}).",
            "Fixup does not apply to this card: it scales the branches of residual blocks and "
            "zeroes each branch's last layer so that every block starts as the identity, and "
            "this plain stack has no branch (schemes.fixup refuses a model without Residual "
            "blocks). E7 `fixup` covers residual networks."]
