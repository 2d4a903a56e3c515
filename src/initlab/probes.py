"""Per-layer statistics of what an initialization does to a network's signal, for every replica.

A :class:`Probe` attaches forward and backward hooks to a :class:`~initlab.nn.Sequential` and
records, every ``every`` epochs of training or on one probe batch, one row per
replica x layer x step: activation statistics (mean, std, min, max, dead, saturated and
non-finite fractions), gradient statistics (std of the back-propagated gradient and of the
weight gradient, their ratio to the weight std, the update : weight ratio) and symmetry (how many
distinct units the layer has, the numerical rank of its activations). Histograms are kept as
counts on fixed bins. Nothing keeps a whole activation tensor, so memory stays bounded.

    probe = Probe(model, every=100)
    model.fit(X, y, epochs=1000, callbacks=[probe])   # or: with probe: ...
    probe.table.to_pandas()          # or .column("act_std"), .where(layer=3)

Around a fit (``with probe: model.fit(...)``) the epochs the probe does not record train on
the compiled kernels where they apply; as a callback (which also records the update : weight
ratio) the fit runs every epoch on NumPy.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from initlab.nn import Dense, Gradients, Layer, Sequential, Trace
from initlab.nn.contract import T

# saturation: a unit's output this close to the activation's bounds
SATURATION = {"tanh": (-0.97, 0.97), "sigmoid": (0.03, 0.97)}
HIST_EDGES = np.concatenate([[-np.inf], np.linspace(-5, 5, 51), [np.inf]])


class Table:
    """A tidy table: a list of rows (dicts) with the same keys."""

    def __init__(self, rows: Iterable[dict[str, Any]] = ()):
        self.rows = list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"Table({len(self.rows)} rows, columns={self.columns})"

    @property
    def columns(self) -> list[str]:
        return list(self.rows[0]) if self.rows else []

    def column(self, name: str) -> np.ndarray:
        if self.rows and name not in self.rows[0]:
            raise KeyError(f"no column {name!r}; columns: {', '.join(self.columns)}")
        return np.array([row[name] for row in self.rows])

    def where(self, **equal: Any) -> Table:
        return Table(r for r in self.rows if all(r[k] == v for k, v in equal.items()))

    def array(self, column: str, *, rows: str = "layer", cols: str = "replica",
              **where: Any) -> np.ndarray:
        """One column as a 2-D array, by default (layers x replicas), of the rows matching
        ``where`` (e.g. ``array("act_std", step=0)``); NaN where a cell has no row."""
        table = self.where(**where) if where else self
        if not table.rows:
            raise ValueError(f"no rows match {where}")
        values = table.column(column)
        r_keys, r_at = np.unique(table.column(rows), return_inverse=True)
        c_keys, c_at = np.unique(table.column(cols), return_inverse=True)
        if len(set(zip(r_at.tolist(), c_at.tolist(), strict=True))) < len(table.rows):
            others = sorted({k for k in table.columns if k not in (rows, cols, column)
                             and len({row[k] for row in table.rows}) > 1} & {"step"})
            raise ValueError(f"several rows per ({rows}, {cols}) cell; select one with "
                             f"{', '.join(f'{k}=' for k in others) or 'where='}")
        out = np.full((len(r_keys), len(c_keys)), np.nan)
        out[r_at, c_at] = values.astype(float)
        return out

    def to_pandas(self):
        import pandas as pd  # optional: only this method needs it

        return pd.DataFrame(self.rows)

    def to_csv(self, path: str | Path) -> Path:
        path = Path(path)
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(self.rows)
        return path


def distinct_units(W: np.ndarray, b: np.ndarray | None = None, rtol: float = 1e-9) -> int:
    """How many different units a layer has: columns of W (a unit's incoming weights) with their
    bias that differ beyond ``rtol`` relative to the larger magnitude, entry by entry.

    Units are sorted by a random projection first, so only units whose projections are close
    enough to be equal are compared: O(units log units) for a layer of distinct units.
    """
    units = W.T if b is None else np.concatenate([W, np.reshape(b, (1, -1))], axis=0).T
    direction = np.random.default_rng(0).standard_normal(units.shape[1])
    keys = units @ direction
    # two equal units' keys differ by at most this (|u - v| <= rtol * max(|u|, |v|) entrywise)
    slack = 2 * rtol * (np.abs(units) @ np.abs(direction)) + 1e-300
    widest = float(np.max(slack))

    def same(i: int, j: int) -> bool:
        return bool(np.all(np.abs(units[i] - units[j])
                           <= rtol * np.maximum(np.abs(units[i]), np.abs(units[j]))))

    reps: list[int] = []  # representatives, in increasing key order
    for i in np.argsort(keys, kind="stable"):
        duplicate = False
        for j in reversed(reps):
            if keys[i] - keys[j] > slack[i] + widest:
                break  # every earlier representative is further away still
            if same(i, j):
                duplicate = True
                break
        if not duplicate:
            reps.append(i)
    return len(reps)


def moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-replica mean and std of x (R, ...) over its finite entries, in float64 and safe from
    overflow: each replica is scaled by its largest magnitude first, so finite values near
    1e200 give a finite std (their squares would overflow) and values near 1e-200 a non-zero
    one (theirs would underflow). NaN for a replica with no finite entry."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    if x.size and np.isfinite(x).all():  # the common case, without the nan-functions' copies
        top = np.max(np.abs(x), axis=1)  # (the same numbers: nanmean and nanstd sum as these)
        top = np.where(top > 0, top, 1.0)
        unit = x / top[:, None]
        return np.mean(unit, axis=1) * top, np.std(unit, axis=1) * top
    clean = np.where(np.isfinite(x), x, np.nan)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN replicas: NaN
        scale = np.nanmax(np.abs(clean), axis=1)
        scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)[:, None]
        unit = clean / scale
        return np.nanmean(unit, axis=1) * scale[:, 0], np.nanstd(unit, axis=1) * scale[:, 0]


def _extremes(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = x.reshape(len(x), -1)
    if x.size and np.isfinite(x).all():
        return np.min(x, axis=1), np.max(x, axis=1)
    clean = np.where(np.isfinite(x), x, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmin(clean, axis=1), np.nanmax(clean, axis=1)


def layer_statistics(a: np.ndarray, activation: str,
                     z: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-replica statistics of a layer: of its output a = phi(z) (R, n, units), ``act_*``,
    and of its pre-activation z, ``pre_*`` (NaN when z is not given). Float64 and
    overflow-safe (:func:`moments`)."""
    a = np.asarray(a, dtype=np.float64)
    finite = np.isfinite(a)
    stats: dict[str, np.ndarray] = {}
    for prefix, x in (("pre", z), ("act", a)):
        if x is None:
            stats.update({f"{prefix}_{k}": np.full(len(a), np.nan)
                          for k in ("mean", "std", "min", "max")})
            continue
        mean, std = moments(x)
        lo, hi = _extremes(np.asarray(x, dtype=np.float64))
        stats.update({f"{prefix}_mean": mean, f"{prefix}_std": std, f"{prefix}_min": lo,
                      f"{prefix}_max": hi})
    stats["dead_fraction"] = np.mean(np.all(a == 0, axis=1), axis=1)
    stats["nonfinite_fraction"] = 1.0 - np.mean(finite, axis=(1, 2))
    lo_hi = SATURATION.get(activation)
    stats["saturated_fraction"] = (np.mean((a <= lo_hi[0]) | (a >= lo_hi[1]), axis=(1, 2))
                                   if lo_hi else np.full(len(a), np.nan))
    return stats


def _std(x: np.ndarray) -> np.ndarray:
    return moments(x)[1]


class Probe:
    """Records per-layer statistics of every replica of ``model`` (see the module docstring).

    Args:
        model: a built Sequential.
        every: record on epochs that are multiples of this (training), default 1.
        symmetry: also count distinct units and the activations' rank (costs an SVD per layer).
        histograms: keep per-layer histogram counts on ``HIST_EDGES``.
    """

    def __init__(self, model: Sequential, *, every: int = 1, symmetry: bool = True,
                 histograms: bool = True):
        if not model.replicas:
            raise ValueError("build the model before probing it (model.build(input_dim))")
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int; got every={every!r}")
        self.model, self.every = model, every
        self.symmetry, self.keep_histograms = symmetry, histograms
        self.rows: list[dict[str, Any]] = []
        self.steps: list[int] = []  # the steps recorded, in order
        self.histograms: dict[int, list[np.ndarray]] = {i: [] for i in range(len(model.layers))}
        self._handles: list = []
        self._depth = 0  # how many times entered: the hooks stay until the outermost exit
        self._pending: dict[int, dict] = {}  # layer -> statistics of the step being recorded
        self._step: int | None = None
        self._before: list[np.ndarray | None] | None = None  # weights before the step
        self._force = False  # record() records whatever the epoch

    # --- attach / detach ----------------------------------------------------------------------

    def __enter__(self) -> Probe:
        # re-entrant: `with probe: model.fit(..., callbacks=[probe])` enters it twice
        self._depth += 1
        if self._depth == 1:
            # it reads every ``every``-th epoch only: a fit runs the others compiled
            self._handles = [self.model.register_hook("forward", self._on_forward,
                                                      every=self.every),
                             self.model.register_hook("backward", self._on_backward,
                                                      every=self.every)]
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth:
            return
        self._flush()
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __call__(self, model: Sequential, epoch: int) -> None:
        """As a callback of fit (``fit(..., callbacks=[probe])``, which attaches the probe for
        the fit): the update : weight ratio of the step just taken is recorded too."""
        if not self._handles:
            raise RuntimeError("the probe is not attached: pass it to fit(callbacks=[probe]) "
                               "or use it as a context manager around the training")
        if self._before is not None:
            for i, layer in enumerate(model.layers):
                before = self._before[i]
                if i in self._pending and before is not None:
                    W = layer.params[str(layer.weight_key)]
                    with np.errstate(divide="ignore", invalid="ignore"):
                        self._pending[i]["update_ratio"] = _std(W - before) / _std(before)
            self._before = None
        self._flush()

    def record(self, X: Any, y: Any = None) -> Table:
        """One forward and backward pass on a probe batch, recorded at the current epoch; with
        no ``y``, the forward pass alone (the gradient columns are NaN)."""
        self._flush()
        self._force = True
        try:
            with self:
                if y is None:
                    self.model.forward(self.model.prepare(X)[0])
                else:
                    self.model.compute_gradients(X, y)
        finally:
            self._force = False
        return self.table

    # --- hooks --------------------------------------------------------------------------------

    def _on_forward(self, i: int, layer: Layer, trace: Trace) -> None:
        epoch = self.model.epochs_trained
        if i == 0 and self._pending and self._step != epoch:
            self._flush()
        if (epoch % self.every and not self._force) or i in self._pending:
            return  # not a recorded epoch, or a later pass (minibatch) of the recorded one
        self._step = epoch
        a = trace.out
        stats = layer_statistics(a, layer.activation.name, trace.z)
        units = layer.unit_params() if self.symmetry else None
        if units is not None:  # a layer whose units have their own parameters
            stats["distinct_units"] = np.array([distinct_units(T(units[r]))
                                                for r in range(len(units))])
            with threadpool_limits(1):  # threaded small SVDs crawl when another core is busy
                stats["rank"] = np.array([np.linalg.matrix_rank(a[r])
                                          if np.all(np.isfinite(a[r])) else -1
                                          for r in range(len(a))])
        if self.keep_histograms:
            self.histograms[i].append(np.stack([np.histogram(np.nan_to_num(a[r]), HIST_EDGES)[0]
                                                for r in range(len(a))]))
        self._pending[i] = {"stats": stats, "units": layer.units}

    def _on_backward(self, i: int, layer: Layer, grads: Gradients) -> None:
        row = self._pending.get(i)
        if row is None or self._step != self.model.epochs_trained or "grad_std" in row:
            return
        row["grad_std"] = _std(grads.dz)
        key = layer.weight_key  # a Residual block's is its branch's first weight
        if key is not None and key in grads.params:
            W, dW = layer.params[key], grads.params[key]
            row["weight_std"] = _std(W)
            row["weight_grad_std"] = _std(dW)
            with np.errstate(divide="ignore", invalid="ignore"):
                row["grad_weight_ratio"] = row["weight_grad_std"] / row["weight_std"]
            row["awake"] = np.any(dW.reshape(len(dW), -1) != 0, axis=1)
        if i == 0:  # the last backward hook of the pass: the optimizer steps next
            self._before = [None if layer.weight_key is None else
                            layer.params[layer.weight_key].copy()
                            for layer in self.model.layers]

    def _flush(self) -> None:
        if not self._pending:
            return
        assert self._step is not None  # set by the forward hook that filled _pending
        self.steps.append(self._step)
        for i, row in sorted(self._pending.items()):
            for r in range(self.model.replicas):
                out = {"step": self._step, "replica": r, "layer": i, "units": row["units"]}
                out.update({k: _scalar(v[r]) for k, v in row["stats"].items()})
                for key in ("grad_std", "weight_std", "weight_grad_std", "grad_weight_ratio",
                            "awake", "update_ratio"):
                    out[key] = _scalar(row[key][r]) if key in row else np.nan
                self.rows.append(out)
        self._pending = {}

    # --- results ------------------------------------------------------------------------------

    @property
    def table(self) -> Table:
        self._flush()
        return Table(self.rows)

    def histogram(self, layer: int, replica: int = 0) -> np.ndarray:
        """Counts (recorded steps, bins) of one layer's outputs, bins ``HIST_EDGES``."""
        return np.stack([h[replica] for h in self.histograms[layer]])


def _scalar(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def jacobian_singular_values(model: Sequential, X: Any) -> np.ndarray:
    """Singular values of the input-output Jacobian d(output)/d(input) of every sample and
    replica, (R, n, min(n_in, n_out)): all near 1 is dynamical isometry (Saxe et al. 2014,
    Pennington et al. 2017). For small networks: it forms one Jacobian per sample."""
    for layer in model.layers:
        if not isinstance(layer, Dense):
            raise ValueError(f"jacobian_singular_values handles Dense layers only; got {layer!r}")
        if layer.activation.name == "softmax":
            raise ValueError("jacobian_singular_values does not handle a softmax output layer")
    Xp, _ = model.prepare(X)
    model.forward(Xp)
    n_in = int(model.input_dim or 0)
    n = Xp.shape[-2]
    J = np.broadcast_to(np.eye(n_in), (model.replicas, n, n_in, n_in))
    for layer, trace in zip(model.layers, model.traces, strict=True):
        z, a = trace.z, trace.a
        slope = layer.activation.backward(z, a, np.ones_like(z))  # phi'(z), (R, n, units)
        J = (J @ layer.params["W"][:, None]) * slope[:, :, None, :]
    return np.linalg.svd(J, compute_uv=False)


def awake_layers(table: Table, replica: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(steps, awake) with awake[step, layer] True where that layer's weight gradient is
    non-zero: the timeline of which layers learn."""
    rows = table.where(replica=replica)
    steps = np.unique(rows.column("step"))
    layers = np.unique(rows.column("layer"))
    awake = np.zeros((len(steps), len(layers)), dtype=bool)
    for row in rows.rows:
        awake[np.searchsorted(steps, row["step"]), np.searchsorted(layers, row["layer"])] = \
            bool(row["awake"])
    return steps, awake


def summarize(table: Table, column: str, by: Sequence[str] = ("step", "layer")) -> Table:
    """Mean, std, min and max of a column over replicas, for each (step, layer)."""
    groups: dict[tuple, list[float]] = {}
    for row in table.rows:
        groups.setdefault(tuple(row[k] for k in by), []).append(row[column])
    out = []
    for key, values in sorted(groups.items()):
        v = np.asarray(values, dtype=float)
        out.append({**dict(zip(by, key, strict=True)), "mean": float(np.mean(v)),
                    "std": float(np.std(v)), "min": float(np.min(v)), "max": float(np.max(v))})
    return Table(out)
