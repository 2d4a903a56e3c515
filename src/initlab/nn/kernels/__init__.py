"""Compiled training loops for stacks of Dense layers: the NumPy engine's arithmetic, in numba.

:func:`train` runs whole epochs of ``a = phi(x W + b)`` forward, the loss, backward and the
optimizer's update for R replicas, one replica at a time per thread, and leaves the weights,
biases and optimizer state where the NumPy engine (:mod:`initlab.nn.training`) would, up to
the order of floating-point sums (~1e-16 relative per step in float64). LayerNorm, BatchNorm
and the sums of residual blocks (``extras``: :mod:`~initlab.nn.kernels.norm`,
:mod:`~initlab.nn.kernels.skip`) run in a second specialization of the same kernel, in the
gemm layout; a Dense stack's specialization compiles none of their code.

Two layouts, one arithmetic:

* ``lanes`` (small networks, such as the moons net): a batch goes through the network in
  chunks of up to ``CHUNK`` samples, feature-major (a unit's values for the chunk's samples
  contiguous and 64-byte aligned), through register-blocked kernels written with explicit
  8-wide vectors (:mod:`~initlab.nn.kernels.simd`): x W sums each sample's inputs in order (then
  adds b, as the engine), x^T dz sums the samples in 16 interleaved lanes added pairwise at
  the end, as a BLAS splits a long sum, and the activation (or its derivative) is applied in
  the same pass where it has a vector form. A hidden layer whose derivative reads its output
  (linear, sigmoid, tanh, ReLU) keeps that output alone, not z beside it.
* ``gemm`` (the rest): a whole batch, sample-major, with BLAS's gemm (as ``np.dot`` calls it)
  for the products x W, x^T dz and dz W^T; "auto" picks it from ``GEMM_WEIGHTS`` weights on.

IEEE arithmetic throughout, no fastmath; the lanes layout's products and the vector exp's
polynomial use fused multiply-adds (one rounding each, as BLAS's gemm). exp (for sigmoid, silu,
softplus' and the cross-entropy's gradient) and tanh run as vectors within 1 and 3 ulp of libm's
(tested); the rest (erf, expm1, log1p) call libm as numba does. Activations, losses and
optimizers are integer codes read by one kernel, so a dtype compiles once (:func:`warm_up`;
numba caches it on disk). In float32 the sums and updates stay in float32, as the engine's
(the vector exp and tanh compute in float64 and round).

Replicas run on threads (the compiled code releases the GIL), one replica at a time per
thread; with the gemm layout the BLAS is held to one thread meanwhile.

The package: :mod:`~initlab.nn.kernels.simd` (vectors, pointers and BLAS as numba intrinsics),
:mod:`~initlab.nn.kernels.ops` (the per-op kernels), :mod:`~initlab.nn.kernels.replica` (one
replica's training, the kernel Python calls), :mod:`~initlab.nn.kernels.compiler` (how numba
compiles and caches them) and this module, the Python side: checks, packing the parameters
and the optimizer state, buffers, threads.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
from threadpoolctl import threadpool_limits

from initlab.nn import activations as act_mod
from initlab.nn import losses as loss_mod
from initlab.nn import optimizers as opt_mod
from initlab.nn.kernels import ops, packing, simd
from initlab.nn.kernels.ops import ACTIVATIONS, LOSSES
from initlab.nn.kernels.packing import Norm, Skip
from initlab.nn.kernels.replica import train_replica

__all__ = ["ACTIVATIONS", "CHUNK", "GEMM_WEIGHTS", "LOSSES", "Layout", "Norm", "Skip",
           "default_threads",
           "supported", "train", "warm_up"]

Layout = Literal["auto", "lanes", "gemm"]





CHUNK = 512  # samples per pass through the lanes layout (a multiple of ops.BLOCK)
# from this many weights on, BLAS beats the lanes kernels (measured: 2-12-6-1, 121 weights,
# 1.9x faster in lanes; 16-16-16-1, 528 weights, 1.7x faster by BLAS; even at 4-24-24-1)
GEMM_WEIGHTS = 400

# the names tests/test_kernels.py checks the vector tanh and expit by (simd's, before the split)
_VW, _vload, _vstore, _vtanh, _vexpit, _vfill = (simd.VW, simd.vload, simd.vstore, simd.vtanh,
                                                 simd.vexpit, simd.vfill)


def supported(activations: Sequence[Any], loss: Any, optimizer: Any, dtype: Any) -> str | None:
    """None if :func:`train` handles this configuration, else a short reason in words."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        return f"dtype {dtype!r} is not a numpy dtype"
    if dt not in (np.float32, np.float64):
        return f"the kernels compute in float32 or float64; got dtype {dt}"
    if not activations:
        return "the network has no layers"
    for i, activation in enumerate(activations):
        name = getattr(activation, "name", None)
        if name not in ACTIVATIONS or type(activation) is not type(act_mod.get(name)):
            return f"layer {i} has activation {activation!r}, which the kernels do not compile"
        if name == "softmax" and i < len(activations) - 1:
            return f"softmax is an output activation; layer {i} of {len(activations)} has it"
    name = getattr(loss, "name", None)
    if name not in LOSSES or type(loss) is not type(loss_mod.get(name)):
        return f"loss {loss!r} is not one the kernels compile"
    last = activations[-1].name
    if loss.fuses and last not in (loss.fuses, "linear"):
        return f"loss {name} takes the logits of a {loss.fuses} or linear output; got {last}"
    if type(optimizer) not in (opt_mod.SGD, opt_mod.Adam):
        return f"optimizer {optimizer!r} is not SGD or Adam"
    return None


def train(weights: Sequence[np.ndarray], biases: Sequence[np.ndarray | None],
          activations: Sequence[Any], loss: Any, optimizer: Any, X: np.ndarray, y: np.ndarray,
          *, epochs: int, batch_size: int | None = None, orders: np.ndarray | None = None,
          log: np.ndarray | None = None, threads: int | None = None,
          layout: Layout = "auto", extras: Sequence[Norm | Skip | None] | None = None,
          last_steps: int | None = None) -> np.ndarray:
    """Train R replicas of a stack of Dense (and normalization) layers for ``epochs`` epochs,
    as the NumPy engine would.

    Args:
        weights: per layer, (R, fan_in, units); updated in place (views are fine).
        biases: per layer, (R, 1, units) or None; updated in place.
        activations, loss, optimizer: the engine's objects (see :func:`supported`); the
            optimizer's ``state`` is continued, or created as its first step would.
        X: (n, d) shared by every replica, or (R, n, d). y: prepared targets, (n, k) or
            (1 | R, n, k) (one-hot rows for softmax cross-entropy).
        batch_size: None (or >= n) is full batch; else minibatches in sample order, or in
            ``orders[e, r]`` (an (epochs, R, n) int array) for replica r in epoch e.
        log: (epochs,) bools: record each replica's full-batch cost at the start of those
            epochs, before their updates.
        threads: threads over the replicas (default: :func:`default_threads`, else every core
            this process may use); the gemm layout holds the BLAS to one thread meanwhile
            (unless one replica, threads None), for the whole process.
        layout: "lanes" or "gemm" (see the module docstring); "auto" picks by size.
        last_steps: the updates of the last epoch (default: a whole epoch's); a step budget
            that ends inside an epoch.
        extras: per layer, None for a Dense layer, a :class:`Norm` for a LayerNorm or
            BatchNorm layer, whose gamma and beta, (R, 1, width), are then its ``weights``
            and ``biases`` entries, or a :class:`Skip` for a residual block's sum (blocks
            not nested; the gemm layout only; the last layer Dense).

    Returns:
        The recorded costs, (log.sum(), R) float64.
    """
    if layout not in ("auto", "lanes", "gemm"):
        raise ValueError(f"layout must be 'auto', 'lanes' or 'gemm'; got layout={layout!r}")
    reason = supported(activations, loss, optimizer, weights[0].dtype if weights else None)
    if reason is not None:
        raise ValueError(f"train cannot run this configuration: {reason}")
    dtype = weights[0].dtype
    L, R = len(weights), weights[0].shape[0]
    if len(biases) != L or len(activations) != L:
        raise ValueError(f"weights, biases and activations need one entry per layer; got "
                         f"{L}, {len(biases)} and {len(activations)}")
    extras = list(extras) if extras is not None else [None] * L
    dims = packing.widths(weights, biases, extras, R, dtype)
    for i, b in enumerate(biases):
        if b is not None and (b.shape != (R, 1, dims[i + 1]) or b.dtype != dtype):
            raise ValueError(f"biases[{i}] must be ({R}, 1, {dims[i + 1]}) {dtype} or None; "
                             f"got {b.shape} {b.dtype}")
    epochs = int(epochs)
    Xk = packing.per_replica(X, "X", R, dims[0], dtype)
    Yk = packing.per_replica(y, "y", R, dims[-1], dtype)
    n = Xk.shape[1]
    if Yk.shape[1] != n:
        raise ValueError(f"X and y disagree: {n} samples in X, {Yk.shape[1]} in y")
    batch = n if batch_size is None or batch_size >= n else int(batch_size)
    if batch < 1:
        raise ValueError(f"batch_size must be a positive int or None; got {batch_size!r}")
    batch_norm = any(isinstance(m, Norm) and m.kind == "batch" for m in extras)
    if batch_norm and 1 in (batch, n % batch):
        raise ValueError(f"BatchNorm needs a batch of at least 2 samples in training (as "
                         f"PyTorch); batches of {batch} of {n} samples leave one of 1")
    if orders is not None and batch < n:
        order = np.ascontiguousarray(orders, dtype=np.int64)
        if order.shape != (epochs, R, n):
            raise ValueError(f"orders must be (epochs, R, n) = ({epochs}, {R}, {n}); "
                             f"got {order.shape}")
    else:
        order = np.zeros((0, 1, 1), np.int64)
    flags = np.zeros(epochs, bool) if log is None else np.asarray(log, dtype=bool)
    if flags.shape != (epochs,):
        raise ValueError(f"log must have one entry per epoch ({epochs}); got {flags.shape}")
    logpos = np.where(flags, np.cumsum(flags) - 1, -1).astype(np.int64)
    costs = np.full((int(flags.sum()), R), np.nan)
    if epochs == 0 or R == 0:
        return costs

    # the first parameter array: W, a norm layer's gamma (a value per unit), a sum's scale
    wsize = [dims[i] * dims[i + 1] if m is None else dims[i + 1] if isinstance(m, Norm) else 1
             for i, m in enumerate(extras)]
    woff, boff = [], []  # where each layer's weights and bias start in a replica's row of P
    nparam = 0
    for i in range(L):
        woff.append(nparam)
        nparam += wsize[i]
        boff.append(nparam if biases[i] is not None else -1)
        nparam += dims[i + 1] if biases[i] is not None else 0
    params = [a for w, b in zip(weights, biases, strict=True)
              for a in ((w,) if b is None else (w, b))]
    P = np.empty((R, nparam), dtype)
    packing.pack(P, params)
    code = packing.optimizer_code(optimizer)
    S1, S2, T = packing.pack_state(optimizer, code, params, R, nparam, dtype)
    per_epoch = -(-n // batch)
    last = per_epoch if last_steps is None else int(last_steps)
    if not 1 <= last <= per_epoch:
        raise ValueError(f"last_steps must be 1 ... {per_epoch} (the steps of an epoch); got "
                         f"last_steps={last_steps!r}")
    lr = float(optimizer.learning_rate)
    mom = float(getattr(optimizer, "momentum", 0.0))
    b1, b2 = float(getattr(optimizer, "beta1", 0.0)), float(getattr(optimizer, "beta2", 0.0))
    eps = float(getattr(optimizer, "eps", 0.0))
    hyp = np.array([lr, mom, b1, 1.0 - b1, b2, 1.0 - b2, eps], dtype)
    hyp64 = np.array([lr, b1, b2])
    weights_count = sum(dims[i] * dims[i + 1] for i in range(L))
    extended = any(m is not None for m in extras)
    if extended and layout == "lanes":
        raise ValueError("normalization layers and residual blocks run in the gemm layout "
                         "only; got layout='lanes'")
    gemm = extended or (weights_count >= GEMM_WEIGHTS if layout == "auto" else layout == "gemm")
    acts = np.array([ACTIVATIONS[a.name] for a in activations], np.int64)
    aprm = np.array([_act_param(a) for a in activations], dtype)
    loss_eps = float(getattr(loss, "eps", 0.0))
    # samples per chunk: the batch (all the data for a BatchNorm's statistics on it), or the
    # lanes layout's block
    ld = (n if batch_norm else batch) if gemm else min(-(-batch // ops.BLOCK) * ops.BLOCK, CHUNK)
    work, plan = packing.plan(dims, woff, boff, acts, nparam, ld, dtype, wsize, extras)
    args = (plan, aprm, T, Xk, Yk, order, logpos, costs, hyp, hyp64, gemm, LOSSES[loss.name],
            loss_eps, code, epochs, last, batch, ld)
    ext, RS = packing.extra_arrays(extras, R, dtype)
    workers = min(R, _cores() if threads is None else max(1, int(threads)))
    # BLAS on one thread under ours: two threads calling a threaded OpenBLAS at once ran W4
    # 3.5x slower, and once 100x; it keeps its threads only for a lone replica
    single = gemm and (workers > 1 or threads is not None)
    with threadpool_limits(1) if single else contextlib.nullcontext():
        _run(workers, R, lambda r: train_replica(
            r, P[r], S1[r], S2[r], packing.aligned(work, dtype), *args, ext,
            None if RS is None else (RS[r], np.zeros(2 * max(dims)))))
    packing.unpack(P, params)
    if RS is not None:
        packing.unpack(RS, packing.running(extras))
    packing.unpack_state(optimizer, code, params, S1, S2, T + (epochs - 1) * per_epoch + last)
    return costs


_THREADS: int | None = None  # default_threads' setting: None is every core


def default_threads(threads: int | None) -> None:
    """The threads :func:`train` uses when it is not told (None: every core this process may
    use). A process that shares the cores with others, as each of ``initlab reproduce``'s
    worker processes, sets 1, so that its threads do not compete with the other workers'."""
    global _THREADS
    if threads is not None and int(threads) < 1:
        raise ValueError(f"threads must be a positive int or None; got threads={threads!r}")
    _THREADS = None if threads is None else int(threads)


def _cores() -> int:
    if _THREADS is not None:
        return _THREADS
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        (os.cpu_count() or 1)


def _run(workers: int, count: int, job: Callable[[int], None]) -> None:
    """job(r) for r in range(count) on ``workers`` threads, each taking the next r when done
    (the compiled job releases the GIL, so the threads run at once)."""
    if workers <= 1:
        for r in range(count):
            job(r)
        return
    todo = iter(range(count))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                r = next(todo, None)
            if r is None:
                return
            job(r)

    with ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(work) for _ in range(workers)]:
            future.result()














def _act_param(activation: Any) -> float:
    return float(activation.params.get("slope", activation.params.get("alpha", 0.0)))














def warm_up(dtype: Any = np.float64, progress: Callable[[int, int], None] | None = None, *,
            normalization: bool = False) -> float:
    """Compile (or load from numba's cache) the kernel for ``dtype``, one specialization that
    serves every stack of Dense layers, by training a tiny one, and with ``normalization`` the
    one that serves every network with LayerNorm or BatchNorm layers; ``progress(done,
    total)`` after each. Returns the seconds it took."""
    start = time.perf_counter()
    dt = np.dtype(dtype)
    total = 2 if normalization else 1
    X, y = np.arange(8, dtype=dt).reshape(4, 2), np.ones((4, 1), dt)
    tanh, sigmoid = act_mod.get("tanh"), act_mod.get("sigmoid")
    loss = loss_mod.get("binary_crossentropy")
    W = [np.full((1, 2, 3), 0.1, dt), np.full((1, 3, 1), 0.1, dt)]
    b = [np.zeros((1, 1, 3), dt), None]
    train(W, b, [tanh, sigmoid], loss, opt_mod.SGD(0.1), X, y, epochs=1)
    if progress is not None:
        progress(1, total)
    if normalization:  # gamma 1 and beta 0 of a BatchNorm layer of width 3 after the first
        stats = [np.zeros((1, 1, 3), dt), np.ones((1, 1, 3), dt)]
        train([W[0], np.ones((1, 1, 3), dt), W[1]], [b[0], np.zeros((1, 1, 3), dt), None],
              [tanh, tanh, sigmoid], loss, opt_mod.SGD(0.1), X, y, epochs=1,
              extras=[None, Norm("batch", 1e-5, 0.1, *stats), None])
        if progress is not None:
            progress(2, total)
    return time.perf_counter() - start
