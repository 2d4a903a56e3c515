"""The normalization layers' kernels (:mod:`initlab.nn.normalization`), in the gemm layout: a
block of ``ns`` samples x ``U`` units, sample-major, ``x[i * U + u]``.

``kind`` 1 is LayerNorm (the statistics of a sample over its units), 2 BatchNorm (of a unit over
the block's samples, which is the whole batch: a network with a BatchNorm layer runs in blocks
of the whole batch). The arithmetic is the engine's, ``xhat = (x - mean) / sqrt(var + eps)``
with the biased variance, ``z = gamma xhat + beta``; every value the engine keeps in an array
is stored here in one of the dtype (so rounded as the engine rounds it), the sums run in
float64. ``xhat`` and ``inv`` (per sample for LayerNorm, per unit for BatchNorm) are kept for
the backward pass. BatchNorm's sums over the samples run sample by sample into one float64
accumulator per unit (each in the samples' order, as a loop down the unit's column would
sum), so that every pass reads the block contiguously.
"""

from __future__ import annotations

import math

from initlab.nn.kernels.compiler import kernel
from initlab.nn.kernels.simd import like

LAYER, BATCH = 1, 2


@kernel
def forward(kind, x, z, xhat, inv, gamma, beta, ns, U, prm, rm, rv, update, cc, acc):
    """z from x (see the module docstring); ``prm``: eps, momentum and 1 - momentum in the
    dtype; ``update``: a training step of BatchNorm, which moves the running statistics rm and
    rv as the engine does; ``cc``: scratch scalars of the dtype (slot 3); ``acc``: float64
    scratch, 2 U values."""
    if kind == LAYER:
        for i in range(ns):
            base = i * U
            s = 0.0
            for u in range(U):
                s += x[base + u]
            mean = like(x, s / U)  # as the dtype holds it
            s = 0.0
            for u in range(U):
                d = x[base + u] - mean  # x - mean, rounded
                xhat[base + u] = d
                s += d * d
            inv[i] = s / U  # the biased variance
            inv[i] = inv[i] + prm[0]
            inv[i] = math.sqrt(inv[i])
            inv[i] = 1.0 / inv[i]
            r = inv[i]
            for u in range(U):
                h = xhat[base + u] * r
                xhat[base + u] = h
                z[base + u] = gamma[u] * h + beta[u]  # the dtype's product, then its sum
        return
    for u in range(U):
        acc[u] = 0.0
    for i in range(ns):
        for u in range(U):
            acc[u] += x[i * U + u]
    for u in range(U):
        inv[u] = acc[u] / ns  # the mean, as the dtype holds it (inv until the variance)
        acc[u] = 0.0
    for i in range(ns):
        for u in range(U):
            d = x[i * U + u] - inv[u]
            xhat[i * U + u] = d
            acc[u] += d * d
    for u in range(U):
        mean = inv[u]
        inv[u] = acc[u] / ns  # the biased variance
        if update:
            rm[u] = rm[u] * prm[2]
            rm[u] = rm[u] + prm[1] * mean
            cc[3] = inv[u] * (ns / (ns - 1.0))  # the unbiased variance
            rv[u] = rv[u] * prm[2]
            rv[u] = rv[u] + prm[1] * cc[3]
        inv[u] = inv[u] + prm[0]
        inv[u] = math.sqrt(inv[u])
        inv[u] = 1.0 / inv[u]
    for i in range(ns):
        for u in range(U):
            h = xhat[i * U + u] * inv[u]
            xhat[i * U + u] = h
            z[i * U + u] = gamma[u] * h + beta[u]


@kernel
def backward(kind, dz, xhat, inv, gamma, ggamma, gbeta, dx, ns, U, want_dx, cc, acc):
    """The parameter gradients from dz (the gradient at z), summed over the samples, and, with
    ``want_dx``, dx = inv (g - mean(g) - xhat mean(g xhat)), g = gamma dz, the means over the
    normalized axis (Ioffe & Szegedy 2015, section 3)."""
    for u in range(2 * U):  # per unit: the sum over the samples of dz xhat, then of dz
        acc[u] = 0.0
    for i in range(ns):
        for u in range(U):
            q = i * U + u
            acc[u] += like(dz, dz[q] * xhat[q])
            acc[U + u] += dz[q]
    for u in range(U):
        ggamma[u] = acc[u]
        gbeta[u] = acc[U + u]
    if not want_dx:
        return
    if kind == LAYER:
        for i in range(ns):
            base = i * U
            a, b = 0.0, 0.0
            for u in range(U):
                g = like(dx, dz[base + u] * gamma[u])  # g, rounded
                dx[base + u] = g
                a += g
                b += like(dx, g * xhat[base + u])
            mean_g, mean_gx = like(dx, a / U), like(dx, b / U)
            r = inv[i]
            for u in range(U):
                t = dx[base + u] - mean_g
                t = t - like(dx, xhat[base + u] * mean_gx)
                dx[base + u] = t * r
        return
    for u in range(2 * U):
        acc[u] = 0.0
    for i in range(ns):
        for u in range(U):
            q = i * U + u
            g = like(dx, dz[q] * gamma[u])  # g, rounded
            dx[q] = g
            acc[u] += g
            acc[U + u] += like(dx, g * xhat[q])
    for i in range(ns):
        for u in range(U):
            q = i * U + u
            t = dx[q] - like(dx, acc[u] / ns)
            t = t - like(dx, xhat[q] * like(dx, acc[U + u] / ns))
            dx[q] = t * inv[u]
