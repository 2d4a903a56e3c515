"""The PyTorch adapter: initlab initializers, LSUV and the probes on ``torch.nn`` modules.

Layouts: PyTorch stores Linear weights (out, in), convolutions (out, in / groups, *kernel) and
transposed convolutions (in, out / groups, *kernel); initlab's rule is (*kernel, in, out)
(see :mod:`initlab.fans`). Weights are drawn in initlab's layout and moved into PyTorch's, so
fan_in counts the channels a layer reads and fan_out those it writes, for transposed
convolutions too (PyTorch's own ``_calculate_fan_in_and_fan_out`` swaps those two).

torch is optional: importing this module needs it, the rest of initlab does not.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from initlab import initializers
from initlab._validate import RngLike, as_rng, check_positive
from initlab.fans import compute_fans
from initlab.probes import Table, layer_statistics
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


class Probe:
    """Per-layer statistics of a torch module's Linear / convolution layers, as the NumPy
    engine's probes record them (one row per forward pass x layer, replica 0): output mean,
    std, min, max, dead, non-finite fractions, the std of the gradient at the layer's output
    and of its weight gradient. Channels count as units (a conv output (N, C, ...) is read as
    N x ... samples of C units).

        with Probe(model) as probe:
            loss_fn(model(X), y).backward()
        probe.table
    """

    def __init__(self, module: nn.Module):
        self.module = module
        self.layers = list(layers(module))
        if not self.layers:
            raise ValueError(f"module has no Linear or convolution layer to probe: "
                             f"{type(module).__name__}")
        self.rows: list[dict[str, Any]] = []
        self._pending: dict[int, dict[str, Any]] = {}
        self._handles: list = []
        self.step = 0

    def __enter__(self) -> Probe:
        for i, (_, layer) in enumerate(self.layers):
            self._handles.append(layer.register_forward_hook(self._forward_hook(i)))
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
            stats = layer_statistics(self._units_last(output), "linear")
            row = self._pending[i] = {k: float(v[0]) for k, v in stats.items()
                                      if k != "saturated_fraction"}
            if output.requires_grad:  # the gradient at this output, when backward reaches it
                output.register_hook(
                    lambda grad: row.__setitem__("grad_std", float(grad.double().std())))
        return hook

    def _flush(self) -> None:
        for i, stats in sorted(self._pending.items()):
            name, layer = self.layers[i]
            weight = layer.weight.detach().double()
            grad = layer.weight.grad
            row = {"step": self.step, "replica": 0, "layer": i, "name": name,
                   "units": int(layer.weight.shape[1 if _transposed(layer) else 0]), **stats,
                   "grad_std": stats.get("grad_std", float("nan")),
                   "weight_std": float(weight.std()),
                   "weight_grad_std": float("nan") if grad is None else float(grad.double().std())}
            self.rows.append(row)
        if self._pending:
            self.step += 1
        self._pending = {}

    @property
    def table(self) -> Table:
        self._flush()
        return Table(self.rows)


def probe(module: nn.Module) -> Probe:
    """A :class:`Probe` of ``module``: use it as a context manager around forward/backward."""
    return Probe(module)


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


def inspect_module(module: nn.Module, input_shape: tuple[int, ...] | None = None, *,
                   batch: int = 64, seed: int = 0) -> list[dict[str, Any]]:
    """One forward and backward pass of a Gaussian probe batch (cross-entropy on random labels
    of the output width) through ``module``, summarised per Linear / convolution layer with the
    same verdicts as the NumPy engine's ``initlab inspect``."""
    from initlab.inspect import verdict

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
    rows = []
    for row in p.table.rows:
        row = {**row, "saturated_fraction": float("nan")}
        rows.append({**row, "verdict": verdict(row)})
    return rows
