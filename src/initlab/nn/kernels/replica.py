"""The replica kernel: one replica's whole training, epochs of forward, loss, backward and
the optimizer's update, in one compiled call (:func:`train_replica`) that releases the GIL.

It is the kernel Python calls and the one numba caches (with the per-op kernels of
:mod:`~initlab.nn.kernels.ops` and the intrinsics of :mod:`~initlab.nn.kernels.simd`
compiled into it; see :mod:`~initlab.nn.kernels.compiler`).
"""

from __future__ import annotations

import numpy as np

from initlab.nn.kernels import norm as nrm
from initlab.nn.kernels import ops, simd
from initlab.nn.kernels import skip as res
from initlab.nn.kernels.compiler import cached_kernel
from initlab.nn.kernels.ops import ADAM, BLOCK, RELU, SGD
from initlab.nn.kernels.simd import at


@cached_kernel
def train_replica(r, p, s1, s2, work, plan, aprm, T, X, Y, orders, logpos, costs, hyp, hyp64,
                  gemm, loss, eps, opt, epochs, last, batch, ld, ext, rs):
    """Train replica r (parameters p, optimizer state s1, s2: flat and contiguous) in place,
    for ``epochs`` epochs, the last of them ``last`` steps long.

    A batch goes through in chunks of ``ld`` samples: the whole batch in the gemm layout
    (buffers (samples, units); all the data where a BatchNorm layer needs its statistics over
    it, for the cost of the data before an epoch), ld samples in the lanes layout (buffers
    (units, ld); a chunk's columns past its samples, up to a multiple of BLOCK, are zero
    inputs whose loss gradient is 0). ``plan`` is :func:`initlab.nn.kernels.packing.plan`'s: per
    layer li, its input starts at aoff[li] in ab, its z at zoff[li] in zb, its weights at
    woff[li] in p (and g), its bias at boff[li] (or -1); fuse_fwd[li] (fuse_bwd[li]) says
    whether the lanes layout applies its phi (phi') in ops.mix's pass; its row 8 holds where
    the buffers ab, zb, g0, g1, yb, g, cc (scalars rounded to the dtype), nb, ib and sb start
    in ``work``.

    ``ext`` is None for a stack of Dense layers, and numba then compiles none of the code of
    the other layers (the branches on it are pruned before typing). Otherwise it holds eps,
    momentum and 1 - momentum per layer (:mod:`~initlab.nn.kernels.norm`), and the plan's rows
    9 to 15 say per layer its kind (0 Dense, 1 LayerNorm, 2 BatchNorm, 3 a residual block's
    sum, :mod:`~initlab.nn.kernels.skip`), the size of its first parameter array, where its
    xhat starts in nb and its inv in ib, where its running mean (then variance) starts in
    ``rs`` (-1: none), for a sum the block's first layer (-1: not a sum), and whether the
    layer is a block's first. A norm layer's gamma and beta, and a sum's scale, take the
    places of W and b; sb keeps a sum's output gradient until the block's input. ``rs`` is
    then the replica's running statistics and a float64 scratch of twice the widest layer
    (a BatchNorm's per-unit sums). The gemm layout only.
    """
    # the arrays as raw pointers (the caller keeps the arrays alive), and one array for the
    # per-layer rows and one for the buffers: numba lowers every use of an array to a struct
    # of seven fields and reference counts, of a pointer to one address, and this kernel's IR
    # (and its compile time) shrank by a quarter
    # no shape[k], min() or max(): each is an overload numba compiles with its own full
    # pipeline (30-40 ms of the cold compile apiece); unpacking, len() and a conditional are not
    _, row = plan.shape
    dims, woff, boff, aoff, zoff = (at(plan, 0), at(plan, row), at(plan, 2 * row),
                                    at(plan, 3 * row), at(plan, 4 * row))
    acts, fuse_fwd, fuse_bwd, starts = (at(plan, 5 * row), at(plan, 6 * row),
                                        at(plan, 7 * row), at(plan, 8 * row))
    ab, zb, g0, g1, yb, g, cc = (at(work, starts[0]), at(work, starts[1]),
                                 at(work, starts[2]), at(work, starts[3]),
                                 at(work, starts[4]), at(work, starts[5]),
                                 at(work, starts[6]))
    kinds, wsize, xoff, ioff, soff = (at(plan, 9 * row), at(plan, 10 * row), at(plan, 11 * row),
                                      at(plan, 12 * row), at(plan, 13 * row))
    skip_from, opens = at(plan, 14 * row), at(plan, 15 * row)
    nb, ib, sb = at(work, starts[7]), at(work, starts[8]), at(work, starts[9])
    L = len(aprm)
    nx, n, _ = X.shape
    d = dims[0]
    k = dims[L]
    nparam = len(p)
    _, reps = costs.shape
    xr = r if nx > 1 else 0
    yr = r if len(Y) > 1 else 0
    fused = loss == 0 or loss == 2
    shuffled = len(orders) > 0
    per_sample = loss == 2  # softmax CE averages over samples only
    cap = ld
    # a block of samples x units holds (i, u) at i * (units if gemm else 1) + u * fs
    fs = 1 if gemm else ld
    xs = d if gemm else 1  # the input block's sample stride
    ss = k if gemm else 1  # the output's
    lr, mom, b1, ob1, b2, ob2, ep = hyp[0], hyp[1], hyp[2], hyp[3], hyp[4], hyp[5], hyp[6]
    p, s1, s2, T, aprm, logpos, hyp64, costs = (at(p, 0), at(s1, 0), at(s2, 0), at(T, 0),
                                                at(aprm, 0), at(logpos, 0), at(hyp64, 0),
                                                at(costs, 0))
    X = at(X, xr * n * d)
    Y = at(Y, yr * n * k)
    orders = at(orders, r * n if shuffled else 0)  # epoch e's order at e * reps * n
    out = at(zb, zoff[L - 1]) if fused else at(ab, aoff[L])  # what the loss reads
    one = np.int64(1)  # not a literal 1: a literal argument compiles a helper once more
    per_epoch = (n + batch - 1) // batch
    held, held_nv = -1, 0  # the chunk the input buffers hold, when in sample order
    for e in range(epochs):
        lp = logpos[e]
        # step -1: the cost on all of X before this epoch's updates, when minibatches
        # the last epoch makes ``last`` steps: a step budget may end inside it
        for step in range(-1 if lp >= 0 and batch < n else 0,
                          last if e == epochs - 1 else per_epoch):
            training = step >= 0
            lo = step * batch if training else 0
            hi = (lo + batch if lo + batch < n else n) if training else n
            cc[0] = 1.0 / ((hi - lo) if per_sample else (hi - lo) * k)  # rounded as numpy
            fac = cc[0]
            value = lp >= 0 and (not training or batch >= n)
            total = 0.0
            if not gemm:  # (the gemm layout overwrites every gradient)
                for q in range(nparam):
                    g[q] = 0.0
            for c0 in range(lo, hi, cap):
                nv = hi - c0 if hi - c0 < cap else cap
                ns = nv if gemm else cap  # samples in a buffer block
                wb = (nv + BLOCK - 1) // BLOCK * BLOCK
                ordered = not (training and shuffled)
                if not (ordered and held == c0 and held_nv == nv):
                    held, held_nv = (c0 if ordered else -1), nv
                    if gemm:
                        for c in range(nv):
                            src = c0 + c if ordered else orders[e * reps * n + c0 + c]
                            for j in range(d):
                                ab[c * xs + j] = X[src * d + j]
                            for u in range(k):
                                yb[c * ss + u] = Y[src * k + u]
                    else:  # the lanes layout: a feature's row at a time, zeros past nv
                        at_order = e * reps * n + c0
                        for j in range(d):
                            for c in range(nv):
                                src = c0 + c if ordered else orders[at_order + c]
                                ab[j * fs + c] = X[src * d + j]
                            for c in range(nv, wb):
                                ab[j * fs + c] = 0.0
                        for u in range(k):
                            for c in range(nv):
                                src = c0 + c if ordered else orders[at_order + c]
                                yb[u * fs + c] = Y[src * k + u]
                            for c in range(nv, wb):
                                yb[u * fs + c] = 0.0
                # forward: z = x W + b, a = phi(z)
                for li in range(L):
                    F, U = dims[li], dims[li + 1]
                    x, z, a = at(ab, aoff[li]), at(zb, zoff[li]), at(ab, aoff[li + 1])
                    w, b = at(p, woff[li]), at(p, boff[li] if boff[li] > 0 else 0)
                    needed = li < L - 1 or not fused
                    if ext is not None:
                        if kinds[li] == 3:
                            res.forward(x, at(ab, aoff[skip_from[li]]), a, at(p, woff[li]),
                                        ns * U, cc)
                            continue
                        if kinds[li] != 0:
                            so = soff[li] if soff[li] > 0 else 0
                            stats, scratch = rs  # (rs[k] is an overload to compile)
                            nrm.forward(kinds[li], x, z, at(nb, xoff[li]), at(ib, ioff[li]),
                                        at(p, woff[li]), at(p, boff[li]), ns, U,
                                        at(ext, 3 * li), at(stats, so), at(stats, so + U),
                                        training and kinds[li] == nrm.BATCH, cc, at(scratch, 0))
                            if needed:
                                ops.act_forward(acts[li], aprm[li], z, a, ns, U, U, one)
                            continue
                    fuse = not gemm and needed and fuse_fwd[li] != 0  # phi in mix's pass
                    if gemm:
                        simd.gemm(z, x, w, ns, F, U, False, False)
                        if boff[li] >= 0:
                            ops.add_rows(z, b, ns, U)
                    else:
                        # a hidden linear, sigmoid, tanh or ReLU layer keeps a alone: its phi'
                        # reads a (ReLU's a > 0 is where z > 0; nan: neither), and z's rows stay
                        # out of the cache
                        zt = a if fuse and fuse_bwd[li] != 0 and li < L - 1 and acts[li] <= RELU \
                            else z
                        ops.mix(zt, x, w, b, boff[li] >= 0, U, F, one, U, ld, wb,
                                1 if fuse else 0, acts[li], aprm[li], a)
                    if needed and not fuse:
                        ops.act_forward(acts[li], aprm[li], z, a, ns, U, U if gemm else 1, fs)
                total += ops.loss(loss, eps, out, yb, g0, nv if gemm else wb, nv, k, ss, fs, fac,
                                  training, value)
                if not training:
                    continue
                # backward: dz = phi'(z) da; dW = x^T dz; db = 1^T dz; dx = dz W^T
                cur, other = g0, g1
                for li in range(L - 1, -1, -1):
                    F, U = dims[li], dims[li + 1]
                    x, z, a = at(ab, aoff[li]), at(zb, zoff[li]), at(ab, aoff[li + 1])
                    w, gw, gb = (at(p, woff[li]), at(g, woff[li]),
                                 at(g, boff[li] if boff[li] > 0 else 0))
                    if (not (fused and li == L - 1)
                            and (gemm or li == L - 1 or not fuse_bwd[li])):
                        ops.act_backward(acts[li], aprm[li], z, a, cur, ns, U, U if gemm else 1,
                                         fs)
                    if ext is not None:
                        if kinds[li] == 3:
                            res.backward(cur, x, at(p, woff[li]), gw, other, sb, ns * U, cc)
                            cur, other = other, cur
                            continue
                        if kinds[li] != 0:
                            stats, scratch = rs
                            nrm.backward(kinds[li], cur, at(nb, xoff[li]), at(ib, ioff[li]),
                                         at(p, woff[li]), at(g, woff[li]), at(g, boff[li]),
                                         other, ns, U, li > 0, cc, at(scratch, 0))
                            if opens[li] != 0 and li > 0:
                                res.add_kept(other, sb, ns * F)
                            cur, other = other, cur
                            continue
                    if gemm:
                        simd.gemm(gw, x, cur, F, ns, U, True, False)
                        if boff[li] >= 0:
                            ops.sum_rows(gb, cur, ns, U)
                        if li > 0:
                            simd.gemm(other, cur, w, ns, U, F, False, True)
                    else:
                        ops.grad_w(gw, x, cur, F, U, ld, wb)
                        if boff[li] >= 0:
                            ops.grad_b(gb, cur, U, ld, wb)
                        if li > 0:  # phi' of the layer below in the same pass, where it can
                            below = acts[li - 1]
                            aux = x if below <= RELU else at(zb, zoff[li - 1])  # its a, or its z
                            ops.mix(other, cur, w, w, one < 0, F, U, U, one, ld, wb,  # no bias
                                    2 if fuse_bwd[li - 1] else 0, below, aprm[li - 1], aux)
                    if ext is not None:
                        if opens[li] != 0 and li > 0:  # a residual block's first layer
                            res.add_kept(other, sb, ns * F)
                    cur, other = other, cur
            if value:
                costs[lp * reps + r] = total / ((hi - lo) if per_sample else (hi - lo) * k)
            if not training:
                continue
            # the optimizer on every parameter array, W0, b0, W1, ... (Adam's t: T + steps)
            slot = 0  # parameter arrays done, for Adam's step counts T
            for li in range(L):
                for j in range(2):
                    lo = woff[li] if j == 0 else boff[li]
                    if lo < 0:
                        continue
                    if opt == ADAM:
                        t = T[slot] + (e * per_epoch + step) + 1.0
                        cc[0] = hyp64[0] / (1.0 - hyp64[1] ** t)
                        cc[1] = 1.0 - hyp64[2] ** t
                    ops.update(opt, at(p, lo), at(g, lo), at(s1, lo if opt != SGD else 0),
                               at(s2, lo if opt == ADAM else 0),
                               wsize[li] if j == 0 else dims[li + 1],
                               lr, mom, b1, ob1, b2, ob2, ep, cc[0], cc[1])
                    slot += 1
