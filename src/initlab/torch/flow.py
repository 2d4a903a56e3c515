"""Where each layer's output goes in one pass of a torch model, read off its autograd graph:
to another layer, into a normalization, or on to the loss. The graph holds the functional ops
(``F.relu``, ``x + branch(x)``, attention) that module hooks cannot see, so this is the layer's
place in the model whatever its ``forward`` is; :func:`initlab.torch.doctor` reads its
verdicts in that place.
"""

from __future__ import annotations

from torch import nn
from torch.autograd.graph import Node

# modules that rescale what they are given (RMSNorm from torch 2.4)
NORMS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.LayerNorm,
    nn.GroupNorm, *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()))
OUTPUT = None  # what :func:`reached` reports where a path gets to the loss


def normalizes(module: nn.Module) -> bool:
    """A norm that rescales its input on this pass: BatchNorm / InstanceNorm in eval mode with
    running statistics apply fixed ones (fresh, the identity), so they do not."""
    if not isinstance(module, NORMS):
        return False
    running = isinstance(module, nn.modules.batchnorm._NormBase) and \
        module.running_mean is not None
    return module.training or not running


def reached(root: Node, starts: dict[int, Node], marks: dict[Node, int | str]
            ) -> dict[int, set[int | str | None]]:
    """What each layer's output (``starts``: layer index -> the node that made it) reaches
    first, forward from the loss's graph ``root``: another layer's output or a norm's output
    (their ``marks``: a layer's index, a norm's name), or the loss (:data:`OUTPUT`). Every other
    node (activations, residual sums, attention, reshapes) is passed through."""
    consumers: dict[Node, list[Node]] = {}
    todo, known = [root], {root}
    while todo:  # each node once: the graph is finite
        node = todo.pop()
        for parent, _ in node.next_functions:
            if parent is not None:
                consumers.setdefault(parent, []).append(node)
                if parent not in known:
                    known.add(parent)
                    todo.append(parent)
    found: dict[int, set[int | str | None]] = {}
    for i, start in starts.items():
        stops: set[int | str | None] = set()
        todo, visited = list(consumers.get(start, [])), set()
        while todo:
            node = todo.pop()
            if node in visited:
                continue
            visited.add(node)
            mark = marks.get(node)
            if mark is not None and mark != i:
                stops.add(mark)
            elif node is root:
                stops.add(OUTPUT)
            else:
                todo.extend(consumers.get(node, []))
        found[i] = stops
    return found


def chains(found: dict[int, set[int | str | None]]) -> tuple[set[int], set[int]]:
    """From :func:`reached`: the layers with a path to the loss that meets no norm, and those
    with another layer before or after them, no norm between. Where both hold the layer is on
    a chain whose mean-field gain compounds with depth, as in an MLP."""
    before: dict[int, set[int]] = {}
    for i, stops in found.items():
        for j in stops:
            if isinstance(j, int):
                before.setdefault(j, set()).add(i)
    todo = [i for i, stops in found.items() if OUTPUT in stops]
    out = set(todo)
    while todo:
        for i in before.get(todo.pop(), ()):
            if i not in out:
                out.add(i)
                todo.append(i)
    return out, {i for i in found if before.get(i) or any(isinstance(j, int) for j in found[i])}
