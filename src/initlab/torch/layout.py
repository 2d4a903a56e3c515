"""Where the weights of torch's Linear and convolution layers live, in initlab's layout.

PyTorch stores Linear weights (out, in), convolutions (out, in / groups, *kernel) and
transposed convolutions (in, out / groups, *kernel); initlab's rule is (*kernel, in, out)
(see :mod:`initlab.fans`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
          nn.ConvTranspose3d)
# the static type of a layer in LAYERS: both declare ``weight`` (and ``bias``) as tensors, where
# a plain nn.Module's attributes type as ``Tensor | Module``
Layer = nn.Linear | nn.modules.conv._ConvNd


def layers(module: nn.Module) -> Iterator[tuple[str, Layer]]:
    """The Linear and convolution layers of a module, in registration order."""
    return ((name, m) for name, m in module.named_modules() if isinstance(m, LAYERS))


def _transposed(layer: Layer) -> bool:
    return isinstance(layer, nn.modules.conv._ConvTransposeNd)


def initlab_shape(layer: Layer) -> tuple[int, ...]:
    """The layer's weight shape in initlab's layout, (*kernel, in, out)."""
    shape = tuple(layer.weight.shape)
    c_in, c_out = (shape[0], shape[1]) if _transposed(layer) else (shape[1], shape[0])
    return (*shape[2:], c_in, c_out)


def to_torch(weight: np.ndarray, layer: Layer) -> torch.Tensor:
    """An initlab-layout weight moved into the layer's PyTorch layout."""
    axes = [0, 1] if _transposed(layer) else [1, 0]  # where (in, out) go in PyTorch's order
    moved = np.moveaxis(weight, [-2, -1], axes)
    return torch.from_numpy(np.ascontiguousarray(moved)).to(layer.weight.dtype)


def unit_weights(layer: Layer) -> tuple[np.ndarray, np.ndarray | None]:
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
