"""The NumPy engine's probes as torch hooks: the same table and histograms for any module's
Linear and convolution layers; and the one-batch inspection behind ``initlab inspect --torch``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from threadpoolctl import ThreadpoolController
from torch import nn

from initlab.nn import activations
from initlab.probes import HIST_EDGES, Table, distinct_units, layer_statistics
from initlab.torch.layout import Layer, layers, unit_weights

# activation modules the engine computes exactly alike: a layer's act_* columns read phi(z)
# where one of them follows it (saturation: initlab.probes.SATURATION, tanh and sigmoid)
FOLLOWING: dict[type, str] = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid",
                              nn.SiLU: "silu"}
# the engine's gradient columns, in its order, after the activation and symmetry statistics
GRADIENT_COLUMNS = ("grad_std", "weight_std", "weight_grad_std", "grad_weight_ratio", "awake",
                    "update_ratio")


def _std(t: torch.Tensor) -> float:
    """The population std in float64, as the engine's (``np.std``), not torch's ``n - 1``."""
    return float(t.detach().double().std(correction=0))


def _following(module: nn.Module) -> dict[int, nn.Module | None]:
    """id(child) -> the module applied right after it, in every nn.Sequential of ``module``
    that keeps Sequential's forward (there registration order is the order of application;
    elsewhere it says nothing). None for a child used twice with different successors."""
    after: dict[int, nn.Module | None] = {}
    for m in module.modules():
        if isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward:
            children = list(m)  # with repeats, as forward applies them
            for a, b in zip(children, children[1:], strict=False):
                after[id(a)] = b if after.get(id(a), b) is b else None
    return after


class Probe:
    """Per-layer statistics of a torch module's Linear / convolution layers: the NumPy engine's
    table (:class:`initlab.probes.Probe`), same columns in the same order, plus ``name``. One
    row per forward pass x layer, replica 0. Channels count as units (a conv output
    (N, C, ...) is read as N x ... samples of C units); stds are population stds, float64.

    Where the definitions differ from the engine's, because a torch layer's output is its
    pre-activation z (the engine's layer output is phi(z)):

    - ``pre_*``, ``rank`` and the histograms read z.
    - ``act_*``, ``dead_fraction``, ``nonfinite_fraction`` and ``saturated_fraction`` (the
      engine's rule, :data:`initlab.probes.SATURATION`) read phi(z), where phi is the module
      applied right after the layer: the next module of a plain ``nn.Sequential`` when it is
      ``nn.ReLU``, ``nn.Tanh``, ``nn.Sigmoid`` or ``nn.SiLU`` (:data:`FOLLOWING`). Otherwise
      they read z, as the engine's layer with a linear activation (outside a Sequential the
      order modules were registered in does not say which activation reads the output), and
      ``saturated_fraction`` is NaN.
    - ``distinct_units``: :func:`initlab.probes.distinct_units` of :func:`unit_weights`, each
      output channel's incoming weights and bias.
    - ``grad_std``: the gradient at z; ``weight_grad_std`` and ``awake`` (that gradient not all
      zero) the weight gradient of the first backward through the pass, caught by a hook as
      backward computes it, so ``zero_grad`` before the next pass does not erase it; NaN if
      no backward reached the layer. ``weight_std`` is of the weights the pass used, and
      ``grad_weight_ratio`` = weight_grad_std / weight_std.
    - ``update_ratio`` = std(W' - W) / std(W): W the weights the pass used, W' those at the
      next pass (or when the table is read, or the probe exits), so after ``optimizer.step()``
      a row holds the update its own gradient led to, as the engine's row of an epoch does.
      NaN where no step came in between (the weights neither written in place nor changed),
      as the engine's probe batch without a step. A copy of each layer's weights is kept
      from its pass until then.

    With ``symmetry`` (default), ``distinct_units`` and ``rank`` (an SVD per layer and pass);
    with ``histograms`` (default), the counts of each layer's outputs on
    ``initlab.probes.HIST_EDGES``, kept beside the table as the engine keeps them:
    :meth:`histogram` (non-finite values counted as NumPy's ``nan_to_num`` maps them).

        with Probe(model) as probe:
            for X, y in batches:
                optimizer.zero_grad()
                loss_fn(model(X), y).backward()
                optimizer.step()
        probe.table, probe.histogram(0)
    """

    def __init__(self, module: nn.Module, *, symmetry: bool = True, histograms: bool = True):
        self.module = module
        self.layers = list(layers(module))
        if not self.layers:
            raise ValueError(f"module has no Linear or convolution layer to probe: "
                             f"{type(module).__name__}")
        after = _following(module)
        self.activations = [FOLLOWING.get(type(after.get(id(layer)))) for _, layer in self.layers]
        self.symmetry, self.keep_histograms = symmetry, histograms
        # found once: threadpool_limits() looks the BLAS libraries up again on every call
        self._blas = ThreadpoolController() if symmetry else None
        self.rows: list[dict[str, Any]] = []
        self.histograms: dict[int, list[np.ndarray]] = {i: [] for i in range(len(self.layers))}
        self._pending: dict[int, dict[str, Any]] = {}
        self._pending_counts: dict[int, np.ndarray] = {}
        self._before: dict[int, tuple[torch.Tensor, int]] = {}  # weights the pass used
        self._handles: list = []
        self.step = 0

    def __repr__(self) -> str:
        return f"Probe({type(self.module).__name__}, {len(self.layers)} layers, step={self.step})"

    def __enter__(self) -> Probe:
        for i, (_, layer) in enumerate(self.layers):
            self._handles.append(layer.register_forward_hook(self._forward_hook(i)))
            if layer.weight.requires_grad:
                self._handles.append(layer.weight.register_hook(self._weight_grad_hook(i)))
        return self

    def __exit__(self, *exc: object) -> None:
        self._flush()
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @staticmethod
    def _units_last(t: torch.Tensor) -> np.ndarray:
        a = t.detach().double().cpu().numpy()
        if a.ndim > 2:  # (N, C, *spatial) -> (N * spatial, C)
            a = np.moveaxis(a, 1, -1).reshape(-1, a.shape[1])
        return a[None]  # replica axis

    def _forward_hook(self, i: int):
        def hook(layer, inputs, output):
            if i == 0 and self._pending:
                self._flush()
            a = self._units_last(output)  # the layer's output: its pre-activation z
            phi = self.activations[i]
            stats = (layer_statistics(a, "linear", a) if phi is None
                     else layer_statistics(activations.get(phi)(a), phi, a))
            if self.keep_histograms:  # as the engine's Probe counts: (replica, bins)
                self._pending_counts[i] = np.histogram(np.nan_to_num(a[0]), HIST_EDGES)[0][None]
            row = self._pending[i] = {k: float(v[0]) for k, v in stats.items()}
            if self.symmetry:
                assert self._blas is not None  # found in __init__ when symmetry
                row["distinct_units"] = distinct_units(*unit_weights(layer))
                with self._blas.limit(limits=1):  # as the engine: threaded small SVDs crawl
                    row["rank"] = (int(np.linalg.matrix_rank(a[0])) if np.all(np.isfinite(a))
                                   else -1)
            row["weight_std"] = _std(layer.weight)
            self._before[i] = (layer.weight.detach().clone(), layer.weight._version)
            if output.requires_grad:  # the gradient at this output, when backward reaches it
                output.register_hook(lambda grad: row.__setitem__("grad_std", _std(grad)))
        return hook

    def _weight_grad_hook(self, i: int):
        def hook(grad: torch.Tensor) -> None:
            row = self._pending.get(i)
            if row is not None and "weight_grad_std" not in row:  # the pass's first backward
                row["weight_grad_std"] = _std(grad)
                row["awake"] = bool(torch.any(grad != 0))
        return hook

    def _update_ratio(self, i: int, layer: Layer) -> float:
        before, version = self._before.pop(i)
        now = layer.weight.detach()
        # fused optimizers write without bumping the version: compare the values too
        if now._version == version and torch.equal(now, before):
            return float("nan")
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(np.float64(_std(now.double() - before.double())) / _std(before))

    def _flush(self) -> None:
        for i, stats in sorted(self._pending.items()):
            name, layer = self.layers[i]
            units = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
            row = {"step": self.step, "replica": 0, "layer": i, "name": name, "units": units}
            row.update((k, v) for k, v in stats.items() if k not in GRADIENT_COLUMNS)
            stats = {"weight_grad_std": float("nan"), **stats}
            with np.errstate(divide="ignore", invalid="ignore"):
                stats["grad_weight_ratio"] = float(np.float64(stats["weight_grad_std"])
                                                   / stats["weight_std"])
            stats["update_ratio"] = self._update_ratio(i, layer)
            row.update((k, stats.get(k, float("nan"))) for k in GRADIENT_COLUMNS)
            self.rows.append(row)
        for i, counts in sorted(self._pending_counts.items()):
            self.histograms[i].append(counts)
        if self._pending:
            self.step += 1
        self._pending, self._pending_counts = {}, {}

    @property
    def table(self) -> Table:
        self._flush()
        return Table(self.rows)

    def histogram(self, layer: int, replica: int = 0) -> np.ndarray:
        """Counts (recorded steps, bins) of one layer's outputs, bins ``HIST_EDGES``; replica
        is always 0 (the engine's signature)."""
        self._flush()
        if not self.keep_histograms:
            raise ValueError("this probe keeps no histograms: Probe(module, histograms=True)")
        return np.stack([h[replica] for h in self.histograms[layer]])


def probe(module: nn.Module, *, symmetry: bool = True, histograms: bool = True) -> Probe:
    """A :class:`Probe` of ``module``: use it as a context manager around forward/backward."""
    return Probe(module, symmetry=symmetry, histograms=histograms)


def load_factory(spec: str) -> nn.Module:
    """'package.module:function' -> the module that function returns (called without
    arguments), for ``initlab inspect --torch``."""
    import importlib

    module_name, _, function = spec.partition(":")
    if not module_name or not function:
        raise ValueError(f"--torch must look like package.module:function; got {spec!r}")
    try:
        factory = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot load {spec!r}: {err}") from None
    model = factory()
    if not isinstance(model, nn.Module):
        raise ValueError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def probe_batch(module: nn.Module, input_shape: tuple[int, ...] | None = None, *,
                batch: int = 64, seed: int = 0) -> Probe:
    """One forward and backward pass of a Gaussian probe batch (cross-entropy on random labels
    of the output width) through ``module``, recorded by a :class:`Probe` (histograms
    included). ``input_shape`` is one sample's shape; by default a first Linear's width."""
    first = next(layers(module), (None, None))[1]
    if input_shape is None:
        if not isinstance(first, nn.Linear):
            raise ValueError("give the input shape (without the batch) for a module that does "
                             "not start with a Linear layer, e.g. --input-shape 3,32,32")
        input_shape = (first.in_features,)
    dtype = next(module.parameters()).dtype
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn((batch, *input_shape), generator=gen, dtype=dtype)
    with Probe(module) as p:
        out = module(X)
        labels = torch.randint(0, out.shape[-1], (batch,), generator=gen)
        nn.functional.cross_entropy(out.reshape(batch, -1), labels).backward()
    return p


def verdict_rows(table: Table) -> list[dict[str, Any]]:
    """The rows of a torch probe table with the NumPy engine's ``initlab inspect`` verdict."""
    from initlab.inspect import verdict

    return [{**row, "verdict": verdict(row)} for row in table.rows]


def inspect_module(module: nn.Module, input_shape: tuple[int, ...] | None = None, *,
                   batch: int = 64, seed: int = 0) -> list[dict[str, Any]]:
    """:func:`probe_batch` summarised per Linear / convolution layer with the same verdicts as
    the NumPy engine's ``initlab inspect``."""
    return verdict_rows(probe_batch(module, input_shape, batch=batch, seed=seed).table)
