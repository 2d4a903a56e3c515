"""Inspect a network at initialization: one probe batch forward and backward, the per-layer
statistics of every replica, the mean-field prediction beside them and a verdict per layer."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from initlab import data as datasets
from initlab import theory
from initlab.nn import Dense, Sequential
from initlab.probes import Probe, Table, summarize

# verdict thresholds, on a layer's output over the probe batch (inputs are standardised)
VANISHING_STD = 1e-2
EXPLODING_STD = 1e2
DEAD_FRACTION = 0.5
SATURATED_FRACTION = 0.5
THRESHOLDS = (f"vanishing: output std < {VANISHING_STD:g}; exploding: output std > "
              f"{EXPLODING_STD:g}; dead: >= {DEAD_FRACTION:.0%} of units output 0 on the whole "
              f"batch; saturated: >= {SATURATED_FRACTION:.0%} of outputs within 0.03 of the "
              f"activation's bounds; overflow: any inf or NaN")


def parse_layers(spec: str) -> list[int]:
    """'784,512x10,10' -> [784, 512, ..., 512, 10]: widths, 'WxK' repeating W K times."""
    widths: list[int] = []
    for part in str(spec).split(","):
        width, cross, times = part.strip().partition("x")
        try:
            count = int(times) if cross else 1
            widths += [int(width)] * count
        except ValueError:
            raise ValueError(f"layers must look like 784,512x10,10; got layers={spec!r}") \
                from None
        if count < 1:
            raise ValueError(f"a repeat count must be >= 1; got {part.strip()!r} in "
                             f"layers={spec!r}")
    if len(widths) < 2 or min(widths) < 1:
        raise ValueError(f"layers needs an input and an output width, all >= 1; "
                         f"got layers={spec!r}")
    return widths


def verdict(row: dict[str, float]) -> str:
    """One word for a layer, from its replica-mean statistics (thresholds in THRESHOLDS)."""
    if row["nonfinite_fraction"] > 0:
        return "overflow"
    if row["dead_fraction"] >= DEAD_FRACTION:
        return "dead"
    if row["saturated_fraction"] >= SATURATED_FRACTION:
        return "saturated"
    if row["act_std"] < VANISHING_STD:
        return "vanishing"
    if row["act_std"] > EXPLODING_STD:
        return "exploding"
    return "healthy"


@dataclass
class Inspection:
    model: Sequential
    table: Table
    probe: Probe
    summary: list[dict[str, Any]] = field(default_factory=list)
    data: str = ""


def inspect_network(layers: str | list[int], *, activation: str = "relu",
                    init: Any = "he_normal", data: str = "gaussian", replicas: int = 5,
                    batch: int = 256, seed: int = 0, dtype: Any = np.float64) -> Inspection:
    """Build the network, forward and back-propagate one probe batch, summarise every layer."""
    widths = parse_layers(layers) if isinstance(layers, str) else list(layers)
    if not isinstance(replicas, int) or replicas < 1:
        raise ValueError(f"replicas must be a positive int; got replicas={replicas!r}")
    if not isinstance(batch, int) or batch < 2:
        raise ValueError(f"batch must be an int >= 2; got batch={batch!r}")
    X, y, source = _probe_batch(data, widths, batch, seed)
    model = Sequential([Dense(w, activation, init=init) for w in widths[1:-1]]
                       + [Dense(widths[-1], "softmax", init=init)])
    model.compile("softmax_crossentropy").build(widths[0], rng=seed, replicas=replicas,
                                                dtype=dtype)
    probe = Probe(model, histograms=True)
    table = probe.record(X, y)
    predicted = predicted_std(model, activation, X)
    summary = []
    for stat in summarize(table, "act_std", by=("layer",)).rows:
        i = stat["layer"]
        rows = table.where(layer=i)
        mean = {k: _nanmean(rows.column(k)) for k in
                ("act_std", "dead_fraction", "saturated_fraction", "nonfinite_fraction",
                 "grad_std", "distinct_units")}
        summary.append({"layer": i, "units": model.layers[i].units,
                        "activation": model.layers[i].activation.name,
                        "act_std": stat["mean"], "act_std_sd": stat["std"],
                        "act_std_min": stat["min"], "act_std_max": stat["max"],
                        "theory_std": float(predicted[i]) if i < len(predicted) else math.nan,
                        **{k: v for k, v in mean.items() if k != "act_std"},
                        "verdict": verdict(mean)})
    return Inspection(model, table, probe, summary, source)


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=float)
    return float(np.nanmean(values)) if np.any(~np.isnan(values)) else math.nan


def _probe_batch(data: str, widths: list[int], batch: int, seed: int):
    if data == "gaussian":
        split = datasets.gaussian(batch, widths[0], widths[-1], rng=seed)
        return split.X_train, split.y_train, split.source
    split = datasets.image_data(data, limit=max(batch, 2000))
    X, _, _ = datasets.standardize(split.X_train, split.X_test)
    if X.shape[1] != widths[0]:
        raise ValueError(f"layers must start with the data's {X.shape[1]} features "
                         f"({split.name}); got {widths[0]}")
    y, classes = split.y_train[:batch], widths[-1]
    wrong = np.unique(y[(y < 0) | (y >= classes)])
    if wrong.size:
        shown = ", ".join(map(str, wrong[:5])) + (", ..." if wrong.size > 5 else "")
        raise ValueError(f"labels of data={data!r} ({split.name}: {split.source}) must be in "
                         f"0..{classes - 1} for the last layer's {classes} outputs; got "
                         f"label{'s' if wrong.size > 1 else ''} {shown}")
    return X[:batch], y, f"{split.name} ({split.source})"


def predicted_std(model: Sequential, activation: str, X: np.ndarray) -> np.ndarray:
    """The mean-field prediction of each hidden layer's output std (replica 0's sigma_w)."""
    hidden = model.layers[:-1]
    if not hidden:
        return np.array([])
    # sigma_w^2 = fan_in * Var(W), measured on the drawn weights (the theory's definition)
    sigma_w = [math.sqrt(float(layer.fan_in or 0)
                         * float(np.mean(layer.params[str(layer.weight_key)] ** 2)))
               for layer in hidden]
    q = theory.propagate(activation, sigma_w, 0.0, float(np.mean(X**2)))
    return np.array([theory.activation_std(activation, qi)[0] if qi > 0 else 0.0 for qi in q])
