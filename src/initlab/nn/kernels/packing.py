"""The Python side of :func:`initlab.nn.kernels.train`: the layers it takes beside Dense
(:class:`Norm`, :class:`Skip`), the widths and shapes checked, the parameters, running
statistics and optimizer state packed flat per replica (and back), and the kernel's plan and
work buffers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from initlab.nn import optimizers as opt_mod
from initlab.nn.kernels import norm as nrm
from initlab.nn.kernels import ops


@dataclass
class Norm:
    """A normalization layer for :func:`train`: ``kind`` "layer" or "batch", its eps, and for
    BatchNorm its momentum and running statistics, (R, 1, width), updated in place."""

    kind: Literal["layer", "batch"]
    eps: float
    momentum: float = 0.0
    running_mean: Any = None
    running_var: Any = None


@dataclass
class Skip:
    """The end of a residual block for :func:`train`: y = x + scale h, x the input of layer
    ``start`` (the block's first), h the previous layer's output; its ``weights`` entry is
    the scale, (R, 1, 1), and its ``biases`` entry None."""

    start: int


def widths(weights: Sequence[np.ndarray], biases: Sequence[np.ndarray | None],
            extras: Sequence[Norm | Skip | None], R: int, dtype: np.dtype) -> list[int]:
    """The input width and every layer's output width, the shapes checked."""
    L = len(weights)
    if len(extras) != L:
        raise ValueError(f"extras needs one entry per layer ({L}); got {len(extras)}")
    if extras[-1] is not None:
        raise ValueError("the last layer must be Dense: the loss reads its output")
    dims = [weights[0].shape[1 if extras[0] is None else 2]]
    block = -1  # the last residual block's sum
    for i, (w, b, m) in enumerate(zip(weights, biases, extras, strict=True)):
        width = dims[i] if m is not None else w.shape[2]  # a norm or a sum keeps the width
        shape = (R, dims[i], width) if m is None else (R, 1, width if isinstance(m, Norm) else 1)
        if w.shape != shape or w.dtype != dtype:
            raise ValueError(f"weights[{i}] must be {shape} {dtype}; got {w.shape} {w.dtype}")
        if isinstance(m, Norm) and b is None:
            raise ValueError(f"biases[{i}] of a normalization layer is its beta; got None")
        if isinstance(m, Skip):
            if b is not None:
                raise ValueError(f"biases[{i}] of a residual sum must be None")
            if not block < m.start < i or dims[m.start] != width:
                raise ValueError(f"extras[{i}]: a residual block starts after the previous "
                                 f"one ({block}), before its sum, at its width ({width}); "
                                 f"got start={m.start}")
            block = i
        dims.append(width)
    return dims


def running(extras: Sequence[Norm | Skip | None]) -> list[np.ndarray]:
    """The BatchNorm layers' running means and variances, in order."""
    return [a for m in extras if isinstance(m, Norm) and m.kind == "batch"
            for a in (m.running_mean, m.running_var)]


def plan(dims: list[int], woff: list[int], boff: list[int], acts: np.ndarray, nparam: int,
          cap: int, dtype: np.dtype, wsize: list[int], extras: Sequence[Norm | Skip | None]
          ) -> tuple[int, np.ndarray]:
    """The kernel's work array size and its plan (see :func:`train_replica`): rows dims, woff,
    boff, aoff, zoff, acts, fuse_fwd, fuse_bwd, the starts of the buffers ab, zb, g0, g1, yb,
    g, cc, nb, ib, sb in the work array (each on a 64-byte boundary, for chunks of ``cap``
    samples), then kinds, wsize, xoff, ioff, soff, skip_from and opens."""
    aoff = np.cumsum([0] + [cap * w for w in dims])  # a layer's input, then its output
    zoff = np.cumsum([0] + [cap * w for w in dims[1:]])
    kinds = [0 if m is None else 3 if isinstance(m, Skip) else
             nrm.LAYER if m.kind == "layer" else nrm.BATCH for m in extras]
    starts_of = {m.start for m in extras if isinstance(m, Skip)}
    # per norm layer: xhat (cap, width), inv per sample (LayerNorm) or per unit (BatchNorm)
    xoff = np.cumsum([0] + [cap * dims[i + 1] if k in (1, 2) else 0
                            for i, k in enumerate(kinds)])
    ioff = np.cumsum([0] + [(cap if k == nrm.LAYER else dims[i + 1]) if k in (1, 2) else 0
                            for i, k in enumerate(kinds)])
    soff = np.cumsum([0] + [2 * dims[i + 1] if k == nrm.BATCH else 0
                            for i, k in enumerate(kinds)])
    line = 64 // dtype.itemsize
    sizes = [aoff[-1], zoff[-1], cap * max(dims), cap * max(dims), cap * dims[-1], nparam, 4,
             xoff[-1], ioff[-1], cap * max(dims) if starts_of else 0]
    starts = np.cumsum([0] + [-(-size // line) * line for size in sizes])
    rows: list[Sequence[int] | np.ndarray] = [
        dims, woff, boff, aoff, zoff, acts, np.isin(acts, ops.VECTOR_FORWARD),
        np.isin(acts, ops.VECTOR_BACKWARD), starts[:-1], kinds, wsize, xoff[:-1], ioff[:-1],
        [s if k == nrm.BATCH else -1 for s, k in zip(soff[:-1], kinds, strict=True)],
        [m.start if isinstance(m, Skip) else -1 for m in extras],
        [int(i in starts_of) for i in range(len(extras))]]
    plan = np.zeros((len(rows), max(len(row) for row in rows)), np.int64)
    for i, row in enumerate(rows):
        plan[i, :len(row)] = row
    return int(starts[-1]), plan


def extra_arrays(extras: Sequence[Norm | Skip | None], R: int, dtype: np.dtype
                  ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """None, None for a Dense stack; else eps, momentum and 1 - momentum per layer (the
    kernel's ``ext``) and the BatchNorm layers' running means and variances, (R, ...)."""
    if all(m is None for m in extras):
        return None, None
    prm = np.zeros((len(extras), 3), dtype)
    for i, m in enumerate(extras):
        if isinstance(m, Norm):
            prm[i] = (m.eps, m.momentum, 1.0 - m.momentum)
    stats = running(extras)
    RS = np.empty((R, sum(a[0].size for a in stats)), dtype)
    for a in stats:
        if a.shape != (R, 1, a.shape[-1]) or a.dtype != dtype:
            raise ValueError(f"running statistics must be (R, 1, width) {dtype}; got "
                             f"{a.shape} {a.dtype}")
    pack(RS, stats)
    return prm.ravel(), RS


def aligned(size: int, dtype: np.dtype) -> np.ndarray:
    """A zeroed 1-D array starting on a 64-byte boundary, so that no vector of the lanes
    layout straddles two cache lines."""
    buf = np.zeros(size + 64 // dtype.itemsize, dtype)
    at = (-buf.ctypes.data % 64) // dtype.itemsize
    return buf[at:at + size]


def per_replica(a: np.ndarray, name: str, R: int, width: int, dtype: np.dtype) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[0] not in (1, R) or a.shape[2] != width:
        raise ValueError(f"{name} must be (n, {width}) or (1 or {R}, n, {width}); "
                         f"got {name}.shape={a.shape}")
    return np.ascontiguousarray(a, dtype=dtype)


def optimizer_code(optimizer: Any) -> int:
    if isinstance(optimizer, opt_mod.Adam):
        return ops.ADAM
    if not optimizer.momentum:
        return ops.SGD
    return ops.NESTEROV if optimizer.nesterov else ops.MOMENTUM


def pack(P: np.ndarray, arrays: list[np.ndarray]) -> None:
    at = 0
    for a in arrays:
        size = a[0].size
        P[:, at:at + size] = a.reshape(P.shape[0], size)
        at += size


def unpack(P: np.ndarray, arrays: list[np.ndarray]) -> None:
    at = 0
    for a in arrays:
        size = a[0].size
        a[...] = P[:, at:at + size].reshape(a.shape)
        at += size


# the engine's optimizer state entries that S1 and S2 hold, per optimizer code
_STATE_KEYS = {ops.MOMENTUM: ("velocity",), ops.NESTEROV: ("velocity",), ops.ADAM: ("m", "v")}


def pack_state(optimizer: Any, code: int, params: list[np.ndarray], R: int, size: int,
                dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The optimizer's state as flat (R, size) arrays and the step count of each parameter
    array; zeros where the state is empty (a first step from zero state is the engine's)."""
    S1 = np.zeros((R, size) if code != ops.SGD else (R, 0), dtype)
    S2 = np.zeros((R, size) if code == ops.ADAM else (R, 0), dtype)
    T = np.zeros(len(params))
    state = optimizer.state
    if state and len(state) != len(params):
        raise ValueError(f"optimizer.state has {len(state)} entries for {len(params)} "
                         f"parameter arrays")
    keys = _STATE_KEYS.get(code, ())
    for key, S in zip(keys, (S1, S2), strict=False):
        pack(S, [entry.get(key, np.zeros_like(p)) for entry, p in
                  zip(state or [{}] * len(params), params, strict=True)])
    if code == ops.ADAM:
        T = np.array([float(entry.get("t", 0.0)) for entry in (state or [{}] * len(params))])
    return S1, S2, T


def unpack_state(optimizer: Any, code: int, params: list[np.ndarray], S1: np.ndarray,
                  S2: np.ndarray, T: np.ndarray) -> None:
    """Write the state back in the engine's format, into its arrays where they exist."""
    if not optimizer.state:
        optimizer.state = [{} for _ in params]
    keys = _STATE_KEYS.get(code, ())
    for key, S in zip(keys, (S1, S2), strict=False):
        at = 0
        for entry, p in zip(optimizer.state, params, strict=True):
            size = p[0].size
            value = S[:, at:at + size].reshape(p.shape)
            if key in entry and entry[key].shape == p.shape:
                entry[key][...] = value
            else:
                entry[key] = value.copy()
            at += size
    if code == ops.ADAM:
        for entry, t in zip(optimizer.state, T, strict=False):
            if "t" in entry:
                entry["t"][...] = t
            else:
                entry["t"] = np.array(t)
