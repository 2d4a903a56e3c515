"""The PyTorch adapter: initlab initializers, LSUV, Fixup and the probes on ``torch.nn`` modules.

Layouts: PyTorch stores Linear weights (out, in), convolutions (out, in / groups, *kernel) and
transposed convolutions (in, out / groups, *kernel); initlab's rule is (*kernel, in, out)
(see :mod:`initlab.fans`). Weights are drawn in initlab's layout and moved into PyTorch's, so
fan_in counts the channels a layer reads and fan_out those it writes, for transposed
convolutions too (PyTorch's own ``_calculate_fan_in_and_fan_out`` swaps those two).

torch is optional: importing this module needs it, the rest of initlab does not.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from threadpoolctl import ThreadpoolController
from torch import nn

from initlab import initializers
from initlab._validate import RngLike, as_rng, check_positive
from initlab.fans import compute_fans
from initlab.nn import activations
from initlab.probes import HIST_EDGES, Table, distinct_units, layer_statistics
from initlab.schemes import LSUVResult

LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
          nn.ConvTranspose3d)


def layers(module: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """The Linear and convolution layers of a module, in registration order."""
    return ((name, m) for name, m in module.named_modules() if isinstance(m, LAYERS))


def _transposed(layer: nn.Module) -> bool:
    return isinstance(layer, nn.modules.conv._ConvTransposeNd)


def initlab_shape(layer: nn.Module) -> tuple[int, ...]:
    """The layer's weight shape in initlab's layout, (*kernel, in, out)."""
    shape = tuple(layer.weight.shape)
    c_in, c_out = (shape[0], shape[1]) if _transposed(layer) else (shape[1], shape[0])
    return (*shape[2:], c_in, c_out)


def to_torch(weight: np.ndarray, layer: nn.Module) -> torch.Tensor:
    """An initlab-layout weight moved into the layer's PyTorch layout."""
    axes = [0, 1] if _transposed(layer) else [1, 0]  # where (in, out) go in PyTorch's order
    moved = np.moveaxis(weight, [-2, -1], axes)
    return torch.from_numpy(np.ascontiguousarray(moved)).to(layer.weight.dtype)


def initialize(module: nn.Module, spec: Any, bias: Any = None, *, rng: RngLike = None
               ) -> nn.Module:
    """Draw every Linear / convolution weight of ``module`` with an initlab initializer (a name,
    a mapping or a callable), and its bias with ``bias`` (default zeros; ``torch_default``
    gets the layer's fan_in). CHANGES the module in place and returns it.

    >>> initialize(nn.Sequential(nn.Linear(4, 8), nn.ReLU()), "he_normal", rng=0)
    """
    weight_init = initializers.get(spec)
    bias_init = initializers.get("zeros" if bias is None else bias)
    gen = as_rng(rng)
    found = False
    with torch.no_grad():
        for _, layer in layers(module):
            found = True
            shape = initlab_shape(layer)
            layer.weight.copy_(to_torch(weight_init(shape, rng=gen), layer))
            if layer.bias is not None:
                fan_in = compute_fans(shape)[0]
                extra = {"fan_in": fan_in} if bias_init.needs_fan_in else {}
                values = bias_init((layer.bias.shape[0],), rng=gen, **extra)
                layer.bias.copy_(torch.from_numpy(values).to(layer.bias.dtype))
    if not found:
        raise ValueError(f"module has no Linear or convolution layer to initialize: "
                         f"{type(module).__name__}")
    return module


def _output_std(module: nn.Module, layer: nn.Module, X: torch.Tensor) -> tuple[float, Any]:
    seen: dict[str, torch.Tensor] = {}
    handle = layer.register_forward_hook(lambda m, i, out: seen.setdefault("out", out))
    try:
        with torch.no_grad():
            module(X)
    finally:
        handle.remove()
    return float(seen["out"].double().std()), seen["out"]


def lsuv(module: nn.Module, X: Any, tol: float = 0.1, max_iter: int = 10, *,
         target: float = 1.0, rng: RngLike = None) -> LSUVResult:
    """LSUV (Mishkin & Matas 2016) on a torch module. CHANGES it in place: orthogonal weights
    and zero biases, then each Linear / convolution layer in order is scaled until the std of
    its output on the probe batch ``X`` is within ``tol`` of ``target`` (at most ``max_iter``
    times). Returns which layers converged, in how many iterations, and their final std."""
    check_positive("tol", tol)
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive int; got max_iter={max_iter!r}")
    X = torch.as_tensor(X)
    initialize(module, "orthogonal", rng=rng)
    converged, iterations, stds = [], [], []
    for _, layer in layers(module):
        for step in range(max_iter + 1):
            std, _ = _output_std(module, layer, X)
            if abs(std - target) < tol or step == max_iter or std == 0:
                break
            with torch.no_grad():
                layer.weight.mul_(target / std)
        converged.append([abs(std - target) < tol])
        iterations.append(step)
        stds.append([std])
    return LSUVResult(np.array(converged), np.array(iterations), np.array(stds))


class Residual(nn.Module):
    """A residual block ``y = x + scale * branch(x)`` (He et al. 2016) with Fixup's trainable
    scalar multiplier ``scale``, 1 at init (Zhang, Dauphin & Ma 2019), as the engine's
    :class:`initlab.nn.Residual`: the branch's own layer biases stand in for Fixup's scalar
    biases. ``branch`` must return a tensor of its input's shape.

    >>> block = Residual(nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8)))
    """

    def __init__(self, branch: nn.Module):
        super().__init__()
        if not isinstance(branch, nn.Module):
            raise TypeError(f"branch must be a torch.nn.Module; got branch={branch!r}")
        self.branch = branch
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.branch(x)


@dataclass(frozen=True)
class FixupResult:
    """What :func:`fixup` did. Per block, in order: ``branch_layers`` m, the number of weight
    layers of its branch, and ``scales`` L^(-1/(2m-2)), the factor its first m - 1 layers were
    scaled by (1.0 for m = 1: no layer to scale). ``output``: the name of the layer zeroed as
    the output layer, None if no layer comes after the last block."""

    blocks: int
    branch_layers: tuple[int, ...]
    scales: tuple[float, ...]
    output: str | None


def fixup(module: nn.Module, blocks: Sequence[nn.Module] | None = None, *,
          rng: RngLike = None) -> FixupResult:
    """Fixup (Zhang, Dauphin & Ma 2019, section 3) on a torch module. CHANGES it in place.

    ``blocks`` default to every :class:`Residual` in ``module``; a list of your own block
    modules may be given instead, each block's branch being every Linear / convolution layer
    inside it, in registration order (so a block must not hold its shortcut's projection).
    For L blocks, in a block whose branch has m weight layers, the first m - 1 layers are drawn
    He normal, N(0, 2 / fan_in), and multiplied by L^(-1/(2m-2)); the last is 0, so a block
    x + scale * branch(x) starts as the identity map; branch biases are 0 and the scalar
    multipliers 1. The output layer, the last Linear / convolution layer registered after the
    last block, is set to 0 (weight and bias), as the paper's classification layer; layers
    before the blocks keep their weights. The draws come from ``rng`` block by block, layer by
    layer, so the same generator gives the weights :func:`initlab.schemes.fixup` gives a
    replica of the same network.

    >>> fixup(nn.Sequential(Residual(nn.Sequential(nn.Linear(8, 8), nn.ReLU(),
    ...                                            nn.Linear(8, 8))), nn.Linear(8, 2)), rng=0)
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module; got module={module!r}")
    names = {id(m): name for name, m in module.named_modules()}
    if blocks is None:
        blocks = [m for m in module.modules() if isinstance(m, Residual)]
        if not blocks:
            raise ValueError(f"fixup found no initlab.torch.Residual block in module "
                             f"{type(module).__name__}: wrap the residual branches in "
                             f"Residual, or pass blocks=[...]")
        labels = [f"the Residual block {names[id(b)]!r}" for b in blocks]
    else:
        blocks = list(blocks)
        if not blocks:
            raise ValueError(f"blocks must be a non-empty list; got blocks={blocks!r}")
        labels = [f"blocks[{i}]" for i in range(len(blocks))]
    branches: list[list[nn.Module]] = []
    seen: set[int] = set()
    for block, label in zip(blocks, labels, strict=True):
        if not isinstance(block, nn.Module) or id(block) not in names:
            raise ValueError(f"{label} must be a submodule of module; got {label}="
                             f"{type(block).__name__} (not registered in "
                             f"{type(module).__name__})")
        branch, shown = ((block.branch, "branch") if isinstance(block, Residual)
                         else (block, label))
        weights = [layer for _, layer in layers(branch)]
        if not weights:
            raise ValueError(f"{label} has no Linear or convolution layer in its branch; got "
                             f"{shown}={branch!r}")
        if seen & {id(layer) for layer in weights}:
            raise ValueError(f"{label} shares layers with an earlier block (nested blocks?); "
                             f"got {label}={names[id(block)]!r}")
        seen |= {id(layer) for layer in weights}
        branches.append(weights)

    L, gen, he = len(branches), as_rng(rng), initializers.get("he_normal")
    scales = []
    with torch.no_grad():
        for weights in branches:
            m = len(weights)
            scale = L ** (-1.0 / (2 * m - 2)) if m > 1 else 1.0  # the paper's L^(-1/(2m-2))
            for layer in weights[:-1]:
                layer.weight.copy_(to_torch(scale * he(initlab_shape(layer), rng=gen), layer))
            weights[-1].weight.zero_()
            for layer in weights:
                if layer.bias is not None:
                    layer.bias.zero_()
            scales.append(scale)
        for block in blocks:
            if isinstance(block, Residual):
                block.scale.fill_(1.0)
        ordered = list(layers(module))
        last = max(i for i, (_, layer) in enumerate(ordered) if id(layer) in seen)
        output = ordered[-1] if last < len(ordered) - 1 else None
        if output is not None:
            output[1].weight.zero_()
            if output[1].bias is not None:
                output[1].bias.zero_()
    return FixupResult(L, tuple(len(w) for w in branches), tuple(scales),
                       None if output is None else output[0])


# activation modules whose saturation the engine defines (initlab.probes.SATURATION)
SATURATING = {nn.Tanh: "tanh", nn.Sigmoid: "sigmoid"}
# the engine's gradient columns, in its order, after the activation and symmetry statistics
GRADIENT_COLUMNS = ("grad_std", "weight_std", "weight_grad_std", "grad_weight_ratio", "awake",
                    "update_ratio")


def _std(t: torch.Tensor) -> float:
    """The population std in float64, as the engine's (``np.std``), not torch's ``n - 1``."""
    return float(t.detach().double().std(correction=0))


def unit_weights(layer: nn.Module) -> tuple[np.ndarray, np.ndarray | None]:
    """The layer's (W, b) in the engine's Dense convention: column j of W (fan_in, units)
    holds every weight output channel j reads, zero outside its group, so two columns are
    equal only if the two units compute the same function of the layer's input."""
    weight = layer.weight.detach().double()
    groups = getattr(layer, "groups", 1)
    if _transposed(layer):  # (in, out / groups, *kernel) -> (out / groups, in, *kernel) blocks
        c_in, c_out = weight.shape[0], weight.shape[1] * groups
        blocks = weight.reshape(groups, c_in // groups, *weight.shape[1:]).transpose(1, 2)
    else:  # (out, in / groups, *kernel)
        c_in, c_out = weight.shape[1] * groups, weight.shape[0]
        blocks = weight.reshape(groups, c_out // groups, *weight.shape[1:])
    full = weight.new_zeros((c_out, c_in, *weight.shape[2:]))
    o, i = c_out // groups, c_in // groups
    for g in range(groups):
        full[g * o:(g + 1) * o, g * i:(g + 1) * i] = blocks[g]
    bias = None if layer.bias is None else layer.bias.detach().double().cpu().numpy()
    return full.reshape(c_out, -1).T.cpu().numpy(), bias


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

    - ``act_*``, ``dead_fraction``, ``nonfinite_fraction``, ``rank`` and the histograms read z.
    - ``saturated_fraction`` is the engine's rule (:data:`initlab.probes.SATURATION`) on
      phi(z), where phi is the module applied right after the layer: the next module of a
      plain ``nn.Sequential`` when it is ``nn.Tanh`` or ``nn.Sigmoid``. NaN otherwise: the
      engine has no saturation rule for other activations either, and outside a Sequential
      the order modules were registered in does not say which activation reads the output.
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
        self.activations = [SATURATING.get(type(after.get(id(layer)))) for _, layer in self.layers]
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
            a = self._units_last(output)
            stats = layer_statistics(a, "linear")
            phi = self.activations[i]
            if phi is not None:
                stats["saturated_fraction"] = layer_statistics(
                    activations.get(phi)(a), phi)["saturated_fraction"]
            if self.keep_histograms:  # as the engine's Probe counts: (replica, bins)
                self._pending_counts[i] = np.histogram(np.nan_to_num(a[0]), HIST_EDGES)[0][None]
            row = self._pending[i] = {k: float(v[0]) for k, v in stats.items()}
            if self.symmetry:
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

    def _update_ratio(self, i: int, layer: nn.Module) -> float:
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
