"""The per-op kernels the replica kernel calls: activations (forward and backward), losses,
optimizer updates, and the lanes layout's register-blocked products.

Activations, losses and optimizers are integer codes (:data:`ACTIVATIONS`, :data:`LOSSES`,
:data:`SGD` ...) read by one kernel, so that one compilation serves every network. Buffers come
as raw pointers (:func:`simd.at <initlab.nn.kernels.simd.at>`); a block of ns samples x k
units holds element (i, u) at i * ss + u * fs, and elementwise activations run down it flat.
The arithmetic is the NumPy engine's (:mod:`initlab.nn.activations`, :mod:`~initlab.nn.losses`,
:mod:`~initlab.nn.optimizers`), expression for expression; exp and tanh run as vectors where a
loop has a vector form, and the rest (erf, expm1, log1p) call libm as numba does.
"""

from __future__ import annotations

import math
from typing import Any

from llvmlite import ir  # type: ignore[import-untyped]
from numba.core.extending import intrinsic

from initlab.nn import activations as act_mod
from initlab.nn.kernels.compiler import kernel, scalar_kernel
from initlab.nn.kernels.simd import (
    VW,
    expit_ir,
    scale_ir,
    splat,
    switch_ir,
    tanh_ir,
    vadd,
    vbcast,
    vexpit,
    vfma,
    vload,
    vmul,
    vscale,
    vstore,
    vsub,
    vsum,
    vtanh,
    vzero,
)

# integer codes: the kernels branch on these outside their inner loops
ACTIVATIONS = {"linear": 0, "sigmoid": 1, "tanh": 2, "relu": 3, "leaky_relu": 4, "elu": 5,
               "selu": 6, "gelu": 7, "silu": 8, "softplus": 9, "softmax": 10}
LOSSES = {"binary_crossentropy": 0, "clipped_binary_crossentropy": 1,
          "softmax_crossentropy": 2, "mean_squared_error": 3}
SOFTMAX = ACTIVATIONS["softmax"]
RELU = ACTIVATIONS["relu"]
SGD, MOMENTUM, NESTEROV, ADAM = 0, 1, 2, 3

BLOCK = 4 * VW  # samples in a block of the lanes layout: a multiple of 2 vectors

_SELU_ALPHA = float(act_mod.SELU.alpha)
_SELU_SCALE = float(act_mod.SELU.scale)
_SQRT_2PI = math.sqrt(2.0 * math.pi)
_SQRT1_2 = 0.70710678118654752440
_LOG2 = 0.693147180559945309417232121458176568


# --- scalar functions, as scipy and numpy compute them -----------------------------------------

@scalar_kernel
def _expit(z):
    return 1.0 / (1.0 + math.exp(-z))  # scipy.special.expit


@scalar_kernel
def _softplus(z):
    # numpy's logaddexp(0, z), branch for branch
    if z == 0.0:
        return _LOG2
    if -z > 0.0:
        return math.log1p(math.exp(z))
    if -z <= 0.0:
        return z + math.log1p(math.exp(-z))
    return -z  # nan


@scalar_kernel
def _ndtr(z):
    # the standard normal cdf as cephes' ndtr (scipy.special.ndtr)
    x = z * _SQRT1_2
    a = abs(x)
    if a < _SQRT1_2:
        return 0.5 + 0.5 * math.erf(x)
    y = 0.5 * math.erfc(a)
    return 1.0 - y if x > 0.0 else y


# --- activations: forward, and the backward right under it ------------------------------------
# z, a, d are pointers: their loops have no index checks, and vectorize

@kernel
def act_forward(code, prm, z, a, ns, k, ss, fs):
    m = ns * k
    if code == 0:
        for i in range(m):
            a[i] = z[i]
    elif code == 1:
        m4 = m - m % VW
        for i in range(0, m4, VW):
            vstore(a, i, vexpit(vload(z, i)))
        for i in range(m4, m):
            a[i] = _expit(z[i])
    elif code == 2:
        m4 = m - m % VW
        for i in range(0, m4, VW):
            vstore(a, i, vtanh(vload(z, i)))
        for i in range(m4, m):
            a[i] = math.tanh(z[i])
    elif code == 3:
        for i in range(m):
            v = z[i]
            a[i] = 0.0 if v <= 0.0 else v  # np.maximum(z, 0): nan stays nan
    elif code == 4:
        for i in range(m):
            v = z[i]
            a[i] = v if v > 0.0 else prm * v
    elif code == 5:
        for i in range(m):
            v = z[i]
            a[i] = v if v > 0.0 else prm * math.expm1(v)
    elif code == 6:
        for i in range(m):
            v = z[i]
            a[i] = _SELU_SCALE * (v if v > 0.0 else _SELU_ALPHA * math.expm1(v))
    elif code == 7:
        for i in range(m):
            v = z[i]
            a[i] = v * _ndtr(v)
    elif code == 8:
        m4 = m - m % VW
        for i in range(0, m4, VW):
            v4 = vload(z, i)
            vstore(a, i, vmul(v4, vexpit(v4)))
        for i in range(m4, m):
            v = z[i]
            a[i] = v * _expit(v)
    elif code == 9:
        for i in range(m):
            a[i] = _softplus(z[i])
    else:  # softmax over the units of each sample, as scipy.special.softmax
        for i in range(ns):
            r = i * ss
            top = z[r]
            for u in range(1, k):
                v = z[r + u * fs]
                top = v if v > top else top  # max(top, v): an overload to compile
            s = 0.0
            for u in range(k):
                e = math.exp(z[r + u * fs] - top)
                a[r + u * fs] = e
                s += e
            for u in range(k):
                a[r + u * fs] = a[r + u * fs] / s


@kernel
def act_backward(code, prm, z, a, d, ns, k, ss, fs):
    """d <- phi'(z) d in place, as the engine's ``da *= ...``."""
    m = ns * k
    if code == 1:
        for i in range(m):  # s' = s (1 - s)
            s = a[i]
            d[i] = d[i] * (s * (1.0 - s))
    elif code == 2:
        for i in range(m):
            t = a[i]
            d[i] = d[i] * (1.0 - t * t)
    elif code == 3:
        for i in range(m):
            d[i] = d[i] * (1.0 if z[i] > 0.0 else 0.0)
    elif code == 4:
        for i in range(m):
            d[i] = d[i] * (1.0 if z[i] > 0.0 else prm)
    elif code == 5:
        for i in range(m):  # alpha (e^z - 1)' = a + alpha
            d[i] = d[i] * (1.0 if z[i] > 0.0 else a[i] + prm)
    elif code == 6:
        sa = _SELU_SCALE * _SELU_ALPHA
        for i in range(m):
            d[i] = d[i] * (_SELU_SCALE if z[i] > 0.0 else a[i] + sa)
    elif code == 7:
        for i in range(m):  # (z Phi(z))' = Phi(z) + z phi(z)
            v = z[i]
            d[i] = d[i] * (_ndtr(v) + v * math.exp(-0.5 * v * v) / _SQRT_2PI)
    elif code == 8:
        for i in range(m):  # (z s)' = s (1 + z (1 - s))
            v = z[i]
            s = _expit(v)
            d[i] = d[i] * (s * (1.0 + v * (1.0 - s)))
    elif code == 9:
        m4 = m - m % VW
        for i in range(0, m4, VW):
            vstore(d, i, vmul(vload(d, i), vexpit(vload(z, i))))
        for i in range(m4, m):
            d[i] = d[i] * _expit(z[i])
    elif code == SOFTMAX:  # the Jacobian-vector product a (d - <d, a>)
        for i in range(ns):
            r = i * ss
            s = 0.0
            for u in range(k):
                s += d[r + u * fs] * a[r + u * fs]
            for u in range(k):
                q = r + u * fs
                d[q] = a[q] * (d[q] - s)


# --- losses: the summed value over the valid samples, and the gradient of the mean -------------

@kernel
def loss(code, eps, out, y, g, ns, nv, k, ss, fs, fac, grad, value):
    """With ``value``, the sum over samples i < nv of the loss terms (elements, or samples for
    softmax CE); with ``grad``, fill g with the gradient of the mean (``fac`` is 1 / the
    count of terms), 0 for the padding samples nv <= i < ns."""
    total = 0.0
    if code == 2:
        for i in range(nv):
            r = i * ss
            top = out[r]
            for u in range(1, k):
                v = out[r + u * fs]
                top = v if v > top else top
            s = 0.0
            dot = 0.0
            for u in range(k):
                q = r + u * fs
                s += math.exp(out[q] - top)
                dot += y[q] * out[q]
            if value:
                total += math.log(s) + top - dot  # logsumexp - <y, z>
            if grad:
                for u in range(k):
                    q = r + u * fs
                    g[q] = (math.exp(out[q] - top) / s - y[q]) * fac
    else:
        hi = 1.0 - eps
        for u in range(k):
            done = 0  # samples whose gradient the vector loop gave
            if code == 0 and grad and ss == 1:
                done = nv - nv % VW
                for i in range(0, done, VW):
                    q = u * fs + i
                    s4 = vsub(vexpit(vload(out, q)), vload(y, q))
                    vstore(g, q, vscale(s4, fac))
            for i in range(0 if value or code != 0 else done, nv):
                q = i * ss + u * fs
                v = out[q]
                t = y[q]
                if code == 0:  # from the logits: softplus(z) - y z, gradient sigmoid(z) - y
                    if value:
                        total += _softplus(v) - t * v
                    if grad and i >= done:
                        g[q] = (_expit(v) - t) * fac
                elif code == 1:  # at p clipped to [eps, 1 - eps], through the sigmoid
                    p = v
                    if p < eps:
                        p = eps
                    if p > hi:
                        p = hi
                    if value:
                        total -= t * math.log(p) + (1.0 - t) * math.log1p(-p)
                    if grad:
                        g[q] = (p - t) / (p * (1.0 - p)) * fac
                else:
                    e = v - t
                    if value:
                        total += e * e
                    if grad:
                        g[q] = 2.0 * e * fac
    if grad:
        for u in range(k):
            for i in range(nv, ns):
                g[i * ss + u * fs] = 0.0
    return total


# --- optimizers, as optimizers.SGD.update and optimizers.Adam.update ---------------------------

@kernel
def update(opt, p, g, s1, s2, count, lr, mom, b1, ob1, b2, ob2, eps, c1, c2):
    if opt == SGD:
        for q in range(count):
            p[q] -= lr * g[q]
    elif opt == MOMENTUM:  # v = m v + g; p -= lr v
        for q in range(count):
            v = mom * s1[q] + g[q]
            s1[q] = v
            p[q] -= lr * v
    elif opt == NESTEROV:  # p -= lr (g + m v)
        for q in range(count):
            v = mom * s1[q] + g[q]
            s1[q] = v
            p[q] -= lr * (g[q] + mom * v)
    else:  # c1 = lr / (1 - b1^t), c2 = 1 - b2^t
        for q in range(count):
            m = s1[q] * b1 + ob1 * g[q]
            v = s2[q] * b2 + ob2 * g[q] * g[q]
            s1[q] = m
            s2[q] = v
            p[q] -= c1 * m / (math.sqrt(v / c2) + eps)


# --- the lanes layout's kernels: rows of ld samples, 2 or 4 vectors of samples at a time ------

# the activations whose phi (phi') has a vector form in _phi (_dphi): the lanes layout applies
# them in mix's pass, the others in act_forward (act_backward)
VECTOR_FORWARD = [ACTIVATIONS[a] for a in ("linear", "sigmoid", "tanh", "relu", "leaky_relu",
                                            "silu")]
VECTOR_BACKWARD = [ACTIVATIONS[a] for a in ("linear", "sigmoid", "tanh", "relu", "leaky_relu")]


@intrinsic
def _phi(typingctx: Any, code: Any, prm: Any, z: Any) -> Any:
    """phi(z) of a vector for the codes in VECTOR_FORWARD, as act_forward computes it (z for
    the others). An intrinsic, not a compiled function: mix applies it to 8 vectors, and
    numba typed and lowered an inlined function's switch over the activations at every one
    of them (2 s of compile time)."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        code, prm, z = args
        zero = ir.Constant(z.type, None)
        return switch_ir(builder, code, {
            1: lambda: expit_ir(builder, z),
            2: lambda: tanh_ir(builder, z),
            # np.maximum(z, 0): nan stays nan
            3: lambda: builder.select(builder.fcmp_ordered("<=", z, zero), zero, z),
            4: lambda: builder.select(builder.fcmp_ordered(">", z, zero), z,
                                      scale_ir(context, builder, z, prm, sig.args[1],
                                               sig.args[2].dtype)),
            8: lambda: builder.fmul(z, expit_ir(builder, z)),
        }, lambda: z)
    return z(code, prm, z), codegen


@intrinsic
def _dphi(typingctx: Any, code: Any, prm: Any, d: Any, za: Any) -> Any:
    """phi'(z) d of a vector for the codes in VECTOR_BACKWARD, as act_backward computes it (d
    for the others); za is z (relu, leaky_relu) or a = phi(z) (sigmoid, tanh)."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        code, prm, d, za = args
        zero, one = ir.Constant(d.type, None), ir.Constant(d.type, [1.0] * VW)

        def where_positive(other: Any) -> Any:  # 1 where z > 0, else other (nan: other)
            return builder.select(builder.fcmp_ordered(">", za, zero), one, other)
        slope = splat(builder, d.type, context.cast(builder, prm, sig.args[1], sig.args[2].dtype))
        return switch_ir(builder, code, {
            1: lambda: builder.fmul(d, builder.fmul(za, builder.fsub(one, za))),  # s (1 - s)
            2: lambda: builder.fmul(d, builder.fsub(one, builder.fmul(za, za))),  # 1 - t^2
            3: lambda: builder.fmul(d, where_positive(zero)),
            4: lambda: builder.fmul(d, where_positive(slope)),
        }, lambda: d)
    return d(code, prm, d, za), codegen


@kernel
def mix(out, inp, coef, bias, with_bias, n_out, n_in, cs_out, cs_in, ld, wb, mode, code, prm,
         aux):
    """out[o, :wb] = sum_k coef[o * cs_out + k * cs_in] inp[k, :wb] (+ bias[o]), the sum in
    k order, rows of ld; x W + b is (cs_out, cs_in) = (1, units), dz W^T is (units, 1).
    mode 1 (a forward) also stores phi(out) into aux; mode 2 (a backward) stores
    phi'(z) out instead, reading z or a = phi(z) from aux."""
    for o in range(0, n_out, 2):  # 2 output rows x 4 vectors of accumulators
        o1 = o + 1 if o + 1 < n_out else o  # past the last row: its duplicate, stored twice
        for i in range(0, wb, BLOCK):
            a0 = vzero(out)
            a1, a2, a3, b0, b1, b2, b3 = a0, a0, a0, a0, a0, a0, a0
            for k in range(n_in):
                at = k * ld + i
                x0 = vload(inp, at)
                x1 = vload(inp, at + VW)
                x2 = vload(inp, at + 2 * VW)
                x3 = vload(inp, at + 3 * VW)
                w = vbcast(coef, o * cs_out + k * cs_in)
                a0 = vfma(w, x0, a0)
                a1 = vfma(w, x1, a1)
                a2 = vfma(w, x2, a2)
                a3 = vfma(w, x3, a3)
                w = vbcast(coef, o1 * cs_out + k * cs_in)
                b0 = vfma(w, x0, b0)
                b1 = vfma(w, x1, b1)
                b2 = vfma(w, x2, b2)
                b3 = vfma(w, x3, b3)
            if with_bias:  # + b after the sum, as the engine's z = x W; z += b
                w = vbcast(bias, o)
                a0, a1, a2, a3 = vadd(a0, w), vadd(a1, w), vadd(a2, w), vadd(a3, w)
                w = vbcast(bias, o1)
                b0, b1, b2, b3 = vadd(b0, w), vadd(b1, w), vadd(b2, w), vadd(b3, w)
            at = o1 * ld + i
            ot = o * ld + i
            if mode == 2:  # the gradient of the layer below: phi'(z) da, z or a from aux
                b0 = _dphi(code, prm, b0, vload(aux, at))
                b1 = _dphi(code, prm, b1, vload(aux, at + VW))
                b2 = _dphi(code, prm, b2, vload(aux, at + 2 * VW))
                b3 = _dphi(code, prm, b3, vload(aux, at + 3 * VW))
                a0 = _dphi(code, prm, a0, vload(aux, ot))
                a1 = _dphi(code, prm, a1, vload(aux, ot + VW))
                a2 = _dphi(code, prm, a2, vload(aux, ot + 2 * VW))
                a3 = _dphi(code, prm, a3, vload(aux, ot + 3 * VW))
            vstore(out, at, b0)
            vstore(out, at + VW, b1)
            vstore(out, at + 2 * VW, b2)
            vstore(out, at + 3 * VW, b3)
            vstore(out, ot, a0)
            vstore(out, ot + VW, a1)
            vstore(out, ot + 2 * VW, a2)
            vstore(out, ot + 3 * VW, a3)
            if mode == 1:  # a forward: phi(z) into aux
                vstore(aux, at, _phi(code, prm, b0))
                vstore(aux, at + VW, _phi(code, prm, b1))
                vstore(aux, at + 2 * VW, _phi(code, prm, b2))
                vstore(aux, at + 3 * VW, _phi(code, prm, b3))
                vstore(aux, ot, _phi(code, prm, a0))
                vstore(aux, ot + VW, _phi(code, prm, a1))
                vstore(aux, ot + 2 * VW, _phi(code, prm, a2))
                vstore(aux, ot + 3 * VW, _phi(code, prm, a3))


@kernel
def grad_w(g, x, dz, F, U, ld, wb):
    """g[j * U + u] += sum_i x[j, i] dz[u, i] over i < wb, in 2 * VW interleaved lanes."""
    for j in range(0, F, 2):
        j1 = j + 1 if j + 1 < F else j
        for u in range(0, U, 2):
            u1 = u + 1 if u + 1 < U else u
            a0 = vzero(g)
            a1, b0, b1, c0, c1, d0, d1 = a0, a0, a0, a0, a0, a0, a0
            for i in range(0, wb, 2 * VW):
                x0 = vload(x, j * ld + i)
                x1 = vload(x, j * ld + i + VW)
                y0 = vload(x, j1 * ld + i)
                y1 = vload(x, j1 * ld + i + VW)
                p0 = vload(dz, u * ld + i)
                p1 = vload(dz, u * ld + i + VW)
                q0 = vload(dz, u1 * ld + i)
                q1 = vload(dz, u1 * ld + i + VW)
                a0 = vfma(x0, p0, a0)
                a1 = vfma(x1, p1, a1)
                b0 = vfma(x0, q0, b0)
                b1 = vfma(x1, q1, b1)
                c0 = vfma(y0, p0, c0)
                c1 = vfma(y1, p1, c1)
                d0 = vfma(y0, q0, d0)
                d1 = vfma(y1, q1, d1)
            g[j * U + u] += vsum(vadd(a0, a1))
            if u1 != u:
                g[j * U + u1] += vsum(vadd(b0, b1))
            if j1 != j:
                g[j1 * U + u] += vsum(vadd(c0, c1))
                if u1 != u:
                    g[j1 * U + u1] += vsum(vadd(d0, d1))


@kernel
def grad_b(g, dz, U, ld, wb):
    """g[u] += sum_i dz[u, i] over i < wb, in 2 * VW interleaved lanes."""
    for u in range(U):
        a0 = vzero(g)
        a1 = a0
        for i in range(0, wb, 2 * VW):
            a0 = vadd(a0, vload(dz, u * ld + i))
            a1 = vadd(a1, vload(dz, u * ld + i + VW))
        g[u] += vsum(vadd(a0, a1))


@kernel
def add_rows(z, b, ns, U):
    """z[i, u] += b[u] for a (ns, U) block."""
    for i in range(ns):
        for u in range(U):
            z[i * U + u] += b[u]


@kernel
def sum_rows(gb, dz, ns, U):
    """gb[u] = sum_i dz[i, u] over a (ns, U) block, in sample order."""
    for u in range(U):
        gb[u] = 0.0
    for i in range(ns):
        for u in range(U):
            gb[u] += dz[i * U + u]


