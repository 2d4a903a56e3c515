"""initlab initializers and the model-level schemes (LSUV, Fixup) on torch modules; each
changes the module in place."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from initlab import initializers
from initlab._validate import RngLike, as_rng, check_positive
from initlab.fans import compute_fans
from initlab.schemes import LSUVResult
from initlab.torch.layout import Layer, initlab_shape, layers, to_torch


def initialize(module: nn.Module, spec: Any, bias: Any = None, *, rng: RngLike = None
               ) -> nn.Module:
    """Draw every Linear / convolution weight of ``module`` with an initlab initializer (a name,
    a mapping or a callable), and its bias with ``bias`` (default zeros; ``torch_default``
    gets the layer's fan_in). CHANGES the module in place and returns it. Every draw is made
    in float64 and cast to the layer's dtype, so half-precision modules (float16, bfloat16) get
    the rounded float64 weights, orthogonal included (PyTorch's ``orthogonal_`` does not run in
    half precision).

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
            dtype = _numpy_dtype(layer.weight.dtype)
            layer.weight.copy_(to_torch(weight_init(shape, rng=gen, dtype=dtype), layer))
            if layer.bias is not None:
                # fans only where a bias with elements asks; a layer with no inputs has
                # fan_in 0, where PyTorch's bound 1 / sqrt(fan_in) becomes 0: zeros
                needs_fan_in = bias_init.needs_fan_in and layer.bias.numel() > 0
                if needs_fan_in and not layer.weight.numel():
                    layer.bias.zero_()
                    continue
                extra = {"fan_in": compute_fans(shape)[0]} if needs_fan_in else {}
                values = bias_init((layer.bias.shape[0],), rng=gen, dtype=dtype, **extra)
                layer.bias.copy_(torch.from_numpy(values).to(layer.bias.dtype))
    if not found:
        raise ValueError(f"module has no Linear or convolution layer to initialize: "
                         f"{type(module).__name__}")
    return module


# torch dtypes NumPy has: initlab draws in float64 and casts to them itself, so that its
# guarantees in the output dtype (U[low, high) stays below high) hold; bfloat16, which NumPy
# lacks, gets the float64 draw cast by torch (round to nearest)
_NUMPY_DTYPES = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}


def _numpy_dtype(dtype: torch.dtype) -> Any:
    return _NUMPY_DTYPES.get(dtype, np.float64)


def _output_std(module: nn.Module, layer: Layer, X: torch.Tensor) -> tuple[float, Any]:
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
    branches: list[list[Layer]] = []
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
