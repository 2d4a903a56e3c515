"""The normalization layers' kernels (:mod:`initlab.nn.normalization`), in the gemm layout: a
block of ``ns`` samples x ``U`` units, sample-major, ``x[i * U + u]``.

``kind`` 1 is LayerNorm (the statistics of a sample over its units), 2 BatchNorm (of a unit over
the block's samples, which is the whole batch: a network with a BatchNorm layer runs in blocks
of the whole batch). The arithmetic is the engine's, ``xhat = (x - mean) / sqrt(var + eps)``
with the biased variance, ``z = gamma xhat + beta``; every value the engine keeps in an array
is stored here in one of the dtype (so rounded as the engine rounds it), the sums run in
float64. ``xhat`` and ``inv`` (per sample for LayerNorm, per unit for BatchNorm) are kept for
the backward pass.
"""

from __future__ import annotations

import math

from initlab.nn.kernels.compiler import kernel
from initlab.nn.kernels.simd import like

LAYER, BATCH = 1, 2


@kernel
def forward(kind, x, z, xhat, inv, gamma, beta, ns, U, prm, rm, rv, update, cc):
    """z from x (see the module docstring); ``prm``: eps, momentum and 1 - momentum in the
    dtype; ``update``: a training step of BatchNorm, which moves the running statistics rm and
    rv as the engine does; ``cc``: scratch scalars of the dtype (slots 2 and 3)."""
    outer, inner = (ns, U) if kind == LAYER else (U, ns)
    so, si = (U, 1) if kind == LAYER else (1, U)  # strides of the outer and the inner index
    for o in range(outer):
        base = o * so
        s = 0.0
        for j in range(inner):
            s += x[base + j * si]
        mean = like(x, s / inner)  # as the dtype holds it
        s = 0.0
        for j in range(inner):
            q = base + j * si
            d = x[q] - mean  # x - mean, rounded
            xhat[q] = d
            s += d * d
        inv[o] = s / inner  # the biased variance
        if update:
            rm[o] = rm[o] * prm[2]
            rm[o] = rm[o] + prm[1] * mean
            cc[3] = inv[o] * (ns / (ns - 1.0))  # the unbiased variance
            rv[o] = rv[o] * prm[2]
            rv[o] = rv[o] + prm[1] * cc[3]
        inv[o] = inv[o] + prm[0]
        inv[o] = math.sqrt(inv[o])
        inv[o] = 1.0 / inv[o]
        r = inv[o]
        for j in range(inner):
            q = base + j * si
            u = j if kind == LAYER else o  # the unit (not q % U: a division per element)
            h = xhat[q] * r
            xhat[q] = h
            z[q] = gamma[u] * h + beta[u]  # the dtype's product, then its sum


@kernel
def backward(kind, dz, xhat, inv, gamma, ggamma, gbeta, dx, ns, U, want_dx, cc):
    """The parameter gradients from dz (the gradient at z), summed over the samples, and, with
    ``want_dx``, dx = inv (g - mean(g) - xhat mean(g xhat)), g = gamma dz, the means over the
    normalized axis (Ioffe & Szegedy 2015, section 3)."""
    for u in range(U):
        a, b = 0.0, 0.0
        for i in range(ns):
            q = i * U + u
            a += like(dz, dz[q] * xhat[q])
            b += dz[q]
        ggamma[u] = a
        gbeta[u] = b
    if not want_dx:
        return
    outer, inner = (ns, U) if kind == LAYER else (U, ns)
    so, si = (U, 1) if kind == LAYER else (1, U)
    for o in range(outer):
        base = o * so
        a, b = 0.0, 0.0
        for j in range(inner):
            q = base + j * si
            g = like(dx, dz[q] * gamma[j if kind == LAYER else o])  # g, rounded
            dx[q] = g
            a += g
            b += like(dx, g * xhat[q])
        mean_g, mean_gx = like(dx, a / inner), like(dx, b / inner)
        r = inv[o]
        for j in range(inner):
            q = base + j * si
            t = dx[q] - mean_g
            t = t - like(dx, xhat[q] * mean_gx)
            dx[q] = t * r
