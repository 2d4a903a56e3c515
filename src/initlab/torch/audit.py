"""The read-only pass :func:`initlab.torch.doctor` reads: one forward and backward pass of an
example input, seen from each Linear / convolution layer (its input and output moments, dL/dz
at its output and dL/dx through it alone), the probe's statistics, which norms each layer's
output goes straight into, and where it flows (:mod:`initlab.torch.flow`). Nothing of the
model changes: parameters are not written, buffers are restored, the gradients come from
``torch.autograd.grad`` (no ``.grad`` is touched), torch's random state is forked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.autograd.graph import Node

from initlab.torch import flow
from initlab.torch.layout import Layer
from initlab.torch.probes import Probe


def std(t: torch.Tensor | None) -> float:
    return math.nan if t is None else float(t.detach().double().std(correction=0))


def tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out] if out.is_floating_point() else []
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, list | tuple):
        return [t for item in out for t in tensors(item)]
    return []


@dataclass
class Pass:
    """One forward and backward pass, seen from each layer (index into the found layers)."""

    moments: dict[int, tuple[float, float, float]] = field(default_factory=dict)  # in, rms, out
    grads: dict[int, tuple[float, float]] = field(default_factory=dict)  # std dL/dz, dL/dx
    direct: dict[int, list[str]] = field(default_factory=dict)  # norms fed the output itself
    reached: dict[int, set[int | str | None]] | None = None  # None: no autograd graph
    to_output: set[int] = field(default_factory=set)  # a path without a norm to the loss
    chained: set[int] = field(default_factory=set)  # a layer before or after, no norm between
    functional: set[int] = field(default_factory=set)  # weight used, forward never called
    stats: dict[int, dict[str, Any]] = field(default_factory=dict)
    activations: list[str | None] = field(default_factory=list)


def measure(model: nn.Module, X: torch.Tensor, found: list[tuple[str, Layer]]) -> Pass:
    """The pass of ``X`` through ``model``, seen from each of the ``found`` layers."""
    run = Pass()
    seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    handed: dict[int, int] = {}  # id of the copy of a layer's output the model got -> layer
    copies: list[torch.Tensor] = []  # kept alive, so that no other tensor takes their ids
    marks: dict[Node, int | str] = {}

    def layer_hook(i: int):
        def hook(layer, inputs, output):
            if i in seen or not inputs or not isinstance(inputs[0], torch.Tensor) \
                    or not isinstance(output, torch.Tensor):
                return None  # a shared layer: its first call
            x = inputs[0]
            seen[i] = (x, output)
            run.moments[i] = (std(x), float(x.detach().double().pow(2).mean().sqrt()),
                              std(output))
            if output.grad_fn is not None:
                marks[output.grad_fn] = i
            # the model goes on with a copy: an in-place op after the layer (ReLU(inplace=True))
            # leaves z and its gradient as the layer made them
            copy = output.clone()
            handed[id(copy)] = i
            copies.append(copy)
            return copy
        return hook

    def norm_pre_hook(name: str):
        def hook(module, inputs):
            if inputs and id(inputs[0]) in handed and flow.normalizes(module):
                run.direct.setdefault(handed[id(inputs[0])], []).append(name)
        return hook

    def norm_hook(name: str):
        def hook(module, inputs, output):
            if isinstance(output, torch.Tensor) and output.grad_fn is not None \
                    and flow.normalizes(module):
                marks[output.grad_fn] = name
        return hook

    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    cuda = sorted({p.device.index or 0 for p in model.parameters() if p.is_cuda})
    handles = [layer.register_forward_hook(layer_hook(i)) for i, (_, layer) in enumerate(found)]
    for name, m in model.named_modules():
        if isinstance(m, flow.NORMS):
            handles += [m.register_forward_pre_hook(norm_pre_hook(name)),
                        m.register_forward_hook(norm_hook(name))]
    try:
        with torch.random.fork_rng(devices=cuda), Probe(model, symmetry=False,
                                                        histograms=False) as probe:
            outputs = tensors(model(X))
            loss = sum((0.5 * (o.double() ** 2).sum() for o in outputs), torch.zeros(()))
            if isinstance(loss, torch.Tensor) and loss.grad_fn is not None:
                _backward(run, loss, seen, found, marks)
            table = probe.table
    finally:
        for handle in handles:
            handle.remove()
        with torch.no_grad():
            for name, b in model.named_buffers():
                if name in buffers:
                    b.copy_(buffers[name])
    run.stats = {row["layer"]: row for row in table.rows}
    run.activations = probe.activations
    return run


def _backward(run: Pass, loss: torch.Tensor, seen: dict[int, tuple[torch.Tensor, torch.Tensor]],
              found: list[tuple[str, Layer]], marks: dict[Node, int | str]) -> None:
    """dL/dz at each layer's output, dL/dx through that layer alone (the skip of a residual
    block adds to the gradient at x, not to the layer's gain), which unreached layers' weights
    the loss still depends on, and the graph's flow between layers and norms."""
    assert loss.grad_fn is not None
    outs = {i: z for i, (_, z) in seen.items() if z.requires_grad}
    unseen = {i: layer.weight for i, (_, layer) in enumerate(found)
              if i not in seen and layer.weight.requires_grad}
    targets = [*outs.values(), *unseen.values()]
    got = torch.autograd.grad(loss, targets, allow_unused=True, retain_graph=True) \
        if targets else ()
    dz = dict(zip(outs, got[:len(outs)], strict=True))
    run.functional = {i for i, g in zip(unseen, got[len(outs):], strict=True) if g is not None}
    for i, z in outs.items():
        x, g = seen[i][0], dz[i]
        dx = None
        if g is not None and x.requires_grad:
            dx = torch.autograd.grad(z, x, g, allow_unused=True, retain_graph=True)[0]
        run.grads[i] = (std(g), std(dx))
    starts = {i: z.grad_fn for i, z in outs.items() if z.grad_fn is not None}
    run.reached = flow.reached(loss.grad_fn, starts, marks)
    run.to_output, run.chained = flow.chains(run.reached)
