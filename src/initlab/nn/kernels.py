"""Compiled training loops for stacks of Dense layers: the NumPy engine's arithmetic, in numba.

:func:`train` runs whole epochs of ``a = phi(x W + b)`` forward, the loss, backward and the
optimizer's update for R replicas, one replica at a time per thread, and leaves the weights,
biases and optimizer state where the NumPy engine (:mod:`initlab.nn.training`) would, up to
the order of floating-point sums (~1e-16 relative per step in float64).

Two layouts, one arithmetic:

* ``lanes`` (small networks, such as the moons net): a batch goes through the network in
  chunks of up to ``CHUNK`` samples, feature-major (a unit's values for the chunk's samples
  contiguous and 64-byte aligned), through register-blocked kernels written with explicit
  8-wide vectors (:func:`_vload` and friends): x W sums each sample's inputs in order (then
  adds b, as the engine), x^T dz sums the samples in 16 interleaved lanes added pairwise at
  the end, as a BLAS splits a long sum, and the activation (or its derivative) is applied in
  the same pass where it has a vector form.
* ``gemm`` (the rest): a whole batch, sample-major, with ``np.dot`` (BLAS) for the products
  x W, x^T dz and dz W^T; "auto" picks it from ``GEMM_WEIGHTS`` weights on.

Plain IEEE arithmetic throughout: no fastmath, no fused multiply-add. exp (for sigmoid, silu,
softplus' and the cross-entropy's gradient) and tanh run as vectors within 1 and 3 ulp of libm's
(tested); the rest (erf, expm1, log1p) call libm as numba does. Activations, losses and
optimizers are integer codes read by one kernel, so a dtype compiles once (:func:`warm_up`;
numba caches it on disk). In float32 the sums and updates stay in float32, as the engine's
(the vector exp and tanh compute in float64 and round).

Replicas run on threads (the compiled code releases the GIL), one replica at a time per
thread; with the gemm layout the BLAS is held to one thread meanwhile.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numba
import numpy as np
from llvmlite import ir  # type: ignore[import-untyped]
from numba.core import cgutils, types
from numba.core.extending import intrinsic, models, register_model
from threadpoolctl import threadpool_limits

from initlab.nn import activations as act_mod
from initlab.nn import losses as loss_mod
from initlab.nn import optimizers as opt_mod

Layout = Literal["auto", "lanes", "gemm"]

# integer codes: the kernel branches on these outside its inner loops
ACTIVATIONS = {"linear": 0, "sigmoid": 1, "tanh": 2, "relu": 3, "leaky_relu": 4, "elu": 5,
               "selu": 6, "gelu": 7, "silu": 8, "softplus": 9, "softmax": 10}
LOSSES = {"binary_crossentropy": 0, "clipped_binary_crossentropy": 1,
          "softmax_crossentropy": 2, "mean_squared_error": 3}
_SOFTMAX = ACTIVATIONS["softmax"]
_SGD, _MOMENTUM, _NESTEROV, _ADAM = 0, 1, 2, 3

CHUNK = 512  # samples per pass through the lanes layout (a multiple of _BLOCK)
# from this many weights on, BLAS beats the lanes kernels (measured: 2-12-6-1, 121 weights,
# 1.9x faster in lanes; 16-16-16-1, 528 weights, 1.7x faster by BLAS; even at 4-24-24-1)
GEMM_WEIGHTS = 400

_SELU_ALPHA = float(act_mod.SELU.alpha)
_SELU_SCALE = float(act_mod.SELU.scale)
_SQRT_2PI = math.sqrt(2.0 * math.pi)
_SQRT1_2 = 0.70710678118654752440
_LOG2 = 0.693147180559945309417232121458176568

# numpy's error model: x / 0 is inf or nan as in numpy, not an exception (and loops vectorize)
_jit = numba.njit(cache=True, nogil=True, error_model="numpy")
# for the per-vector helpers inside the kernels' blocks, which LLVM would leave as calls
_inline = numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")


# --- vectors: LLVM <8 x double> (or float) registers, so accumulators stay in registers --------
# numba cannot prove that two arrays do not overlap, so it keeps a sum that lives in an array
# in memory and vectorizes no loop that carries one; these intrinsics say it explicitly.

_VW = 8  # lanes of a vector (a 512-bit register of float64, 256 of float32)
_BLOCK = 4 * _VW  # samples in a block of the lanes layout: a multiple of 2 vectors


class _Vec(types.Type):
    def __init__(self, dtype: types.Type):
        self.dtype = dtype
        super().__init__(name=f"Vec{_VW}({dtype})")


@register_model(_Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm: Any, fe_type: _Vec):
        super().__init__(dmm, fe_type,
                         ir.VectorType(dmm.lookup(fe_type.dtype).get_value_type(), _VW))


def _address(context: Any, builder: Any, aty: Any, a: Any, i: Any, ity: Any) -> Any:
    data = a if isinstance(aty, types.CPointer) else context.make_array(aty)(context, builder,
                                                                              a).data
    return builder.gep(data, [context.cast(builder, i, ity, types.intp)], inbounds=True)


@intrinsic
def _at(typingctx: Any, a: Any, i: Any) -> Any:
    """A raw pointer to a[i]. The kernels hand buffers to their helpers as pointers: an array
    argument costs two atomic reference-count updates a call, and views as many again. The
    caller keeps the array alive (uses it after the last call)."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return _address(context, builder, sig.args[0], args[0], args[1], sig.args[1])
    return types.CPointer(a.dtype)(a, i), codegen


def _splat(builder: Any, vty: Any, x: Any) -> Any:
    v = builder.insert_element(ir.Constant(vty, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(v, ir.Constant(vty, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), _VW), [0] * _VW))


@intrinsic
def _vload(typingctx: Any, a: Any, i: Any) -> Any:
    """a[i:i + _VW] as a vector (no bounds or negative-index checks)."""
    vt = _Vec(a.dtype)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        at = _address(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        vp = builder.bitcast(at, context.get_value_type(vt).as_pointer())
        return builder.load(vp, align=a.dtype.bitwidth // 8)
    return vt(a, i), codegen


@intrinsic
def _vstore(typingctx: Any, a: Any, i: Any, v: Any) -> Any:
    """a[i:i + _VW] = v."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        at = _address(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        builder.store(args[2], builder.bitcast(at, args[2].type.as_pointer()),
                      align=a.dtype.bitwidth // 8)
        return context.get_dummy_value()
    return types.none(a, i, v), codegen


@intrinsic
def _vbcast(typingctx: Any, a: Any, i: Any) -> Any:
    """a[i] in every lane."""
    vt = _Vec(a.dtype)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        at = _address(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        return _splat(builder, context.get_value_type(vt), builder.load(at))
    return vt(a, i), codegen


@intrinsic
def _vzero(typingctx: Any, a: Any) -> Any:
    """A zero vector of a's dtype."""
    vt = _Vec(a.dtype)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return ir.Constant(context.get_value_type(vt), None)
    return vt(a), codegen


@intrinsic
def _vadd(typingctx: Any, a: Any, b: Any) -> Any:
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.fadd(args[0], args[1])
    return a(a, b), codegen


@intrinsic
def _vmul(typingctx: Any, a: Any, b: Any) -> Any:
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.fmul(args[0], args[1])
    return a(a, b), codegen


@intrinsic
def _vsum(typingctx: Any, v: Any) -> Any:
    """The sum of the lanes, pairwise: (v0 + v1) + (v2 + v3)."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        e = [builder.extract_element(args[0], ir.Constant(ir.IntType(32), q))
             for q in range(_VW)]
        while len(e) > 1:
            e = [builder.fadd(e[q], e[q + 1]) for q in range(0, len(e), 2)]
        return e[0]
    return v.dtype(v), codegen


_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # ln 2 in two parts (fdlibm): k * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10
_EXP_TERMS = [1.0 / math.factorial(i) for i in range(2, 14)]


def _exp_ir(builder: Any, x: Any, minus_one: bool = False) -> Any:
    """exp (or, with ``minus_one``, expm1) of a vector of doubles, within 1 ulp of libm's (2 for
    expm1; the tests check both): k = round(x / ln 2), r = x - k ln 2 (Cody-Waite), exp(r) - 1
    = r + r^2 T(r) with T the Taylor series to r^13 by Estrin's scheme, and 2^k built from its
    bits: as two powers of two for exp (so that results near overflow and in the subnormal
    range round once); expm1 is 2^k q + (2^k - 1), for |x| < 700."""
    vty = x.type
    n = vty.count

    def const(c: float) -> Any:
        return ir.Constant(vty, [c] * n)
    t = builder.select(builder.fcmp_ordered(">", x, const(710.0)), const(710.0), x)
    t = builder.select(builder.fcmp_ordered("<", t, const(-746.0)), const(-746.0), t)
    floor = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty]),
                                           f"llvm.floor.v{n}f64")
    kf = builder.call(floor, [builder.fadd(builder.fmul(t, const(_LOG2E)), const(0.5))])
    r = builder.fsub(builder.fsub(t, builder.fmul(kf, const(_LN2_HI))),
                     builder.fmul(kf, const(_LN2_LO)))
    terms, power = [const(c) for c in _EXP_TERMS], r
    while len(terms) > 1:
        terms = [builder.fadd(terms[i], builder.fmul(terms[i + 1], power))
                 for i in range(0, len(terms) - 1, 2)] + terms[len(terms) - len(terms) % 2:]
        power = builder.fmul(power, power)
    q = builder.fadd(r, builder.fmul(builder.fmul(r, r), terms[0]))
    ity = ir.VectorType(ir.IntType(64), n)
    k = builder.fptosi(kf, ity)

    def pow2(e: Any) -> Any:
        bits = builder.shl(builder.add(e, ir.Constant(ity, [1023] * n)),
                           ir.Constant(ity, [52] * n))
        return builder.bitcast(bits, vty)
    if minus_one:
        two_k = pow2(k)
        p = builder.fadd(builder.fmul(two_k, q), builder.fsub(two_k, const(1.0)))
    else:
        half = builder.ashr(k, ir.Constant(ity, [1] * n))
        p = builder.fmul(builder.fmul(builder.fadd(const(1.0), q), pow2(half)),
                         pow2(builder.sub(k, half)))
    return builder.select(builder.fcmp_unordered("uno", x, x), x, p)


def _widened(builder: Any, x: Any, fn: Callable[[Any], Any]) -> Any:
    """fn on x as doubles (a float32 vector computed in float64, then rounded)."""
    wide = ir.VectorType(ir.DoubleType(), _VW)
    y = fn(x if x.type == wide else builder.fpext(x, wide))
    return y if y.type == x.type else builder.fptrunc(y, x.type)


@intrinsic
def _vtanh(typingctx: Any, v: Any) -> Any:
    """tanh lane by lane, as e / (e + 2) with e = expm1(2 x) (no cancellation near 0), x held
    to [-20, 20] where tanh is +-1 in float64."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        def tanh(x: Any) -> Any:
            lim, neg = ir.Constant(x.type, [20.0] * _VW), ir.Constant(x.type, [-20.0] * _VW)
            t = builder.select(builder.fcmp_ordered(">", x, lim), lim, x)
            t = builder.select(builder.fcmp_ordered("<", t, neg), neg, t)
            e = _exp_ir(builder, builder.fadd(t, t), minus_one=True)
            return builder.fdiv(e, builder.fadd(e, ir.Constant(x.type, [2.0] * _VW)))
        return _widened(builder, args[0], tanh)
    return v(v), codegen


@intrinsic
def _vexpit(typingctx: Any, v: Any) -> Any:
    """1 / (1 + exp(-v)) lane by lane."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        def expit(x: Any) -> Any:
            one = ir.Constant(x.type, [1.0] * _VW)
            return builder.fdiv(one, builder.fadd(one, _exp_ir(builder, builder.fneg(x))))
        return _widened(builder, args[0], expit)
    return v(v), codegen


@intrinsic
def _vsub(typingctx: Any, a: Any, b: Any) -> Any:
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.fsub(args[0], args[1])
    return a(a, b), codegen


@intrinsic
def _vfill(typingctx: Any, v: Any, x: Any) -> Any:
    """A vector like v with x (rounded to v's dtype) in every lane."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        x = context.cast(builder, args[1], sig.args[1], v.dtype)
        return _splat(builder, args[0].type, x)
    return v(v, x), codegen


@intrinsic
def _vscale(typingctx: Any, v: Any, x: Any) -> Any:
    """v * x for a scalar x (rounded to v's dtype)."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        x = context.cast(builder, args[1], sig.args[1], v.dtype)
        return builder.fmul(args[0], _splat(builder, args[0].type, x))
    return v(v, x), codegen


def _select(op: str) -> Any:
    def typer(typingctx: Any, z: Any, a: Any, b: Any) -> Any:
        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            zero = ir.Constant(args[0].type, None)
            return builder.select(builder.fcmp_ordered(op, args[0], zero), args[1], args[2])
        return a(z, a, b), codegen
    return intrinsic(typer)


_vifpos = _select(">")  # a where z > 0 else b (nan: b), as ``a if z > 0 else b``
_vifnonpos = _select("<=")  # a where z <= 0 else b (nan: b)


# --- scalar functions, as scipy and numpy compute them -----------------------------------------

@_jit
def _expit(z):
    return 1.0 / (1.0 + math.exp(-z))  # scipy.special.expit


@_jit
def _softplus(z):
    # numpy's logaddexp(0, z), branch for branch
    if z == 0.0:
        return _LOG2
    if -z > 0.0:
        return math.log1p(math.exp(z))
    if -z <= 0.0:
        return z + math.log1p(math.exp(-z))
    return -z  # nan


@_jit
def _ndtr(z):
    # the standard normal cdf as cephes' ndtr (scipy.special.ndtr)
    x = z * _SQRT1_2
    a = abs(x)
    if a < _SQRT1_2:
        return 0.5 + 0.5 * math.erf(x)
    y = 0.5 * math.erfc(a)
    return 1.0 - y if x > 0.0 else y


# --- activations: forward, and the backward right under it ------------------------------------
# A block of ns samples x k units is a 1-D view holding element (i, u) at i * ss + u * fs;
# elementwise activations run down it flat. Every loop indexes a view from 0, so numba's
# negative-index checks fold away and the loops vectorize.

@_jit
def _act_forward(code, prm, z, a, ns, k, ss, fs):
    m = ns * k
    if code == 0:
        for i in range(m):
            a[i] = z[i]
    elif code == 1:
        m4 = m - m % _VW
        for i in range(0, m4, _VW):
            _vstore(a, i, _vexpit(_vload(z, i)))
        for i in range(m4, m):
            a[i] = _expit(z[i])
    elif code == 2:
        m4 = m - m % _VW
        for i in range(0, m4, _VW):
            _vstore(a, i, _vtanh(_vload(z, i)))
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
        m4 = m - m % _VW
        for i in range(0, m4, _VW):
            v4 = _vload(z, i)
            _vstore(a, i, _vmul(v4, _vexpit(v4)))
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
                top = max(top, z[r + u * fs])
            s = 0.0
            for u in range(k):
                e = math.exp(z[r + u * fs] - top)
                a[r + u * fs] = e
                s += e
            for u in range(k):
                a[r + u * fs] = a[r + u * fs] / s


@_jit
def _act_backward(code, prm, z, a, d, ns, k, ss, fs):
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
        m4 = m - m % _VW
        for i in range(0, m4, _VW):
            _vstore(d, i, _vmul(_vload(d, i), _vexpit(_vload(z, i))))
        for i in range(m4, m):
            d[i] = d[i] * _expit(z[i])
    elif code == _SOFTMAX:  # the Jacobian-vector product a (d - <d, a>)
        for i in range(ns):
            r = i * ss
            s = 0.0
            for u in range(k):
                s += d[r + u * fs] * a[r + u * fs]
            for u in range(k):
                q = r + u * fs
                d[q] = a[q] * (d[q] - s)


# --- losses: the summed value over the valid samples, and the gradient of the mean -------------

@_jit
def _loss(code, eps, out, y, g, ns, nv, k, ss, fs, fac, grad, value):
    """With ``value``, the sum over samples i < nv of the loss terms (elements, or samples for
    softmax CE); with ``grad``, fill g with the gradient of the mean (``fac`` is 1 / the
    count of terms), 0 for the padding samples nv <= i < ns."""
    total = 0.0
    if code == 2:
        for i in range(nv):
            r = i * ss
            top = out[r]
            for u in range(1, k):
                top = max(top, out[r + u * fs])
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
                done = nv - nv % _VW
                for i in range(0, done, _VW):
                    q = u * fs + i
                    s4 = _vsub(_vexpit(_vload(out, q)), _vload(y, q))
                    _vstore(g, q, _vscale(s4, fac))
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

@_jit
def _update(opt, p, g, s1, s2, count, lr, mom, b1, ob1, b2, ob2, eps, c1, c2):
    if opt == _SGD:
        for q in range(count):
            p[q] -= lr * g[q]
    elif opt == _MOMENTUM:  # v = m v + g; p -= lr v
        for q in range(count):
            v = mom * s1[q] + g[q]
            s1[q] = v
            p[q] -= lr * v
    elif opt == _NESTEROV:  # p -= lr (g + m v)
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

@_jit
def _vector_forward(code):
    """Whether phi has a vector form (linear, sigmoid, tanh, relu, leaky_relu, silu)."""
    return code <= 4 or code == 8


@_jit
def _vector_backward(code):
    """Whether phi' has a vector form (linear, sigmoid, tanh, relu, leaky_relu)."""
    return code <= 4


@_inline
def _phi(code, prm, z):
    """phi(z) of a vector, as _act_forward computes it."""
    if code == 1:
        return _vexpit(z)
    if code == 2:
        return _vtanh(z)
    if code == 3:
        return _vifnonpos(z, _vfill(z, 0.0), z)
    if code == 4:
        return _vifpos(z, z, _vscale(z, prm))
    if code == 8:
        return _vmul(z, _vexpit(z))
    return z


@_inline
def _dphi(code, prm, d, za):
    """phi'(z) d of a vector, as _act_backward computes it; za is z (relu, leaky_relu) or
    a = phi(z) (sigmoid, tanh)."""
    one = _vfill(d, 1.0)
    if code == 1:
        return _vmul(d, _vmul(za, _vsub(one, za)))
    if code == 2:
        return _vmul(d, _vsub(one, _vmul(za, za)))
    if code == 3:
        return _vmul(d, _vifpos(za, one, _vfill(d, 0.0)))
    if code == 4:
        return _vmul(d, _vifpos(za, one, _vfill(d, prm)))
    return d


@_jit
def _mix(out, inp, coef, bias, with_bias, n_out, n_in, cs_out, cs_in, ld, wb, mode, code, prm,
         aux):
    """out[o, :wb] = sum_k coef[o * cs_out + k * cs_in] inp[k, :wb] (+ bias[o]), the sum in
    k order, rows of ld; x W + b is (cs_out, cs_in) = (1, units), dz W^T is (units, 1).
    mode 1 (a forward) also stores phi(out) into aux; mode 2 (a backward) stores
    phi'(z) out instead, reading z or a = phi(z) from aux."""
    for o in range(0, n_out, 2):  # 2 output rows x 4 vectors of accumulators
        o1 = min(o + 1, n_out - 1)  # past the last row: its duplicate, stored twice
        for i in range(0, wb, _BLOCK):
            a0 = _vzero(out)
            a1, a2, a3, b0, b1, b2, b3 = a0, a0, a0, a0, a0, a0, a0
            for k in range(n_in):
                at = k * ld + i
                x0 = _vload(inp, at)
                x1 = _vload(inp, at + _VW)
                x2 = _vload(inp, at + 2 * _VW)
                x3 = _vload(inp, at + 3 * _VW)
                w = _vbcast(coef, o * cs_out + k * cs_in)
                a0 = _vadd(a0, _vmul(w, x0))
                a1 = _vadd(a1, _vmul(w, x1))
                a2 = _vadd(a2, _vmul(w, x2))
                a3 = _vadd(a3, _vmul(w, x3))
                w = _vbcast(coef, o1 * cs_out + k * cs_in)
                b0 = _vadd(b0, _vmul(w, x0))
                b1 = _vadd(b1, _vmul(w, x1))
                b2 = _vadd(b2, _vmul(w, x2))
                b3 = _vadd(b3, _vmul(w, x3))
            if with_bias:  # + b after the sum, as the engine's z = x W; z += b
                w = _vbcast(bias, o)
                a0, a1, a2, a3 = _vadd(a0, w), _vadd(a1, w), _vadd(a2, w), _vadd(a3, w)
                w = _vbcast(bias, o1)
                b0, b1, b2, b3 = _vadd(b0, w), _vadd(b1, w), _vadd(b2, w), _vadd(b3, w)
            at = o1 * ld + i
            ot = o * ld + i
            if mode == 2:  # the gradient of the layer below: phi'(z) da, z or a from aux
                b0 = _dphi(code, prm, b0, _vload(aux, at))
                b1 = _dphi(code, prm, b1, _vload(aux, at + _VW))
                b2 = _dphi(code, prm, b2, _vload(aux, at + 2 * _VW))
                b3 = _dphi(code, prm, b3, _vload(aux, at + 3 * _VW))
                a0 = _dphi(code, prm, a0, _vload(aux, ot))
                a1 = _dphi(code, prm, a1, _vload(aux, ot + _VW))
                a2 = _dphi(code, prm, a2, _vload(aux, ot + 2 * _VW))
                a3 = _dphi(code, prm, a3, _vload(aux, ot + 3 * _VW))
            _vstore(out, at, b0)
            _vstore(out, at + _VW, b1)
            _vstore(out, at + 2 * _VW, b2)
            _vstore(out, at + 3 * _VW, b3)
            _vstore(out, ot, a0)
            _vstore(out, ot + _VW, a1)
            _vstore(out, ot + 2 * _VW, a2)
            _vstore(out, ot + 3 * _VW, a3)
            if mode == 1:  # a forward: phi(z) into aux
                _vstore(aux, at, _phi(code, prm, b0))
                _vstore(aux, at + _VW, _phi(code, prm, b1))
                _vstore(aux, at + 2 * _VW, _phi(code, prm, b2))
                _vstore(aux, at + 3 * _VW, _phi(code, prm, b3))
                _vstore(aux, ot, _phi(code, prm, a0))
                _vstore(aux, ot + _VW, _phi(code, prm, a1))
                _vstore(aux, ot + 2 * _VW, _phi(code, prm, a2))
                _vstore(aux, ot + 3 * _VW, _phi(code, prm, a3))


@_jit
def _grad_w(g, x, dz, F, U, ld, wb):
    """g[j * U + u] += sum_i x[j, i] dz[u, i] over i < wb, in 2 * _VW interleaved lanes."""
    for j in range(0, F, 2):
        j1 = min(j + 1, F - 1)
        for u in range(0, U, 2):
            u1 = min(u + 1, U - 1)
            a0 = _vzero(g)
            a1, b0, b1, c0, c1, d0, d1 = a0, a0, a0, a0, a0, a0, a0
            for i in range(0, wb, 2 * _VW):
                x0 = _vload(x, j * ld + i)
                x1 = _vload(x, j * ld + i + _VW)
                y0 = _vload(x, j1 * ld + i)
                y1 = _vload(x, j1 * ld + i + _VW)
                p0 = _vload(dz, u * ld + i)
                p1 = _vload(dz, u * ld + i + _VW)
                q0 = _vload(dz, u1 * ld + i)
                q1 = _vload(dz, u1 * ld + i + _VW)
                a0 = _vadd(a0, _vmul(x0, p0))
                a1 = _vadd(a1, _vmul(x1, p1))
                b0 = _vadd(b0, _vmul(x0, q0))
                b1 = _vadd(b1, _vmul(x1, q1))
                c0 = _vadd(c0, _vmul(y0, p0))
                c1 = _vadd(c1, _vmul(y1, p1))
                d0 = _vadd(d0, _vmul(y0, q0))
                d1 = _vadd(d1, _vmul(y1, q1))
            g[j * U + u] += _vsum(_vadd(a0, a1))
            if u1 != u:
                g[j * U + u1] += _vsum(_vadd(b0, b1))
            if j1 != j:
                g[j1 * U + u] += _vsum(_vadd(c0, c1))
                if u1 != u:
                    g[j1 * U + u1] += _vsum(_vadd(d0, d1))


@_jit
def _grad_b(g, dz, U, ld, wb):
    """g[u] += sum_i dz[u, i] over i < wb, in 2 * _VW interleaved lanes."""
    for u in range(U):
        a0 = _vzero(g)
        a1 = a0
        for i in range(0, wb, 2 * _VW):
            a0 = _vadd(a0, _vload(dz, u * ld + i))
            a1 = _vadd(a1, _vload(dz, u * ld + i + _VW))
        g[u] += _vsum(_vadd(a0, a1))


@_jit
def _aligned(size, like):
    """A zeroed 1-D array of like's dtype starting on a 64-byte boundary."""
    buf = np.zeros(size + 64 // like.itemsize, like.dtype)
    at = ((-buf.ctypes.data) % 64) // like.itemsize
    return buf[at:at + size]


@_jit
def _dot(kind, a, b, c, m, k, n):
    """c = a b by BLAS, for (m, n) c from the starts of flat arrays: kind 0 is x W (a (m, k),
    b (k, n)), 1 is x^T dz (a (k, m)), 2 is dz W^T (b (n, k))."""
    out = c[:m * n].reshape((m, n))
    if kind == 0:
        np.dot(a[:m * k].reshape((m, k)), b[:k * n].reshape((k, n)), out)
    elif kind == 1:
        np.dot(a[:k * m].reshape((k, m)).T, b[:k * n].reshape((k, n)), out)
    else:
        np.dot(a[:m * k].reshape((m, k)), b[:n * k].reshape((n, k)).T, out)


@_jit
def _add_rows(z, b, ns, U):
    """z[i, u] += b[u] for a (ns, U) block."""
    for i in range(ns):
        for u in range(U):
            z[i * U + u] += b[u]


@_jit
def _sum_rows(gb, dz, ns, U):
    """gb[u] = sum_i dz[i, u] over a (ns, U) block, in sample order."""
    for u in range(U):
        gb[u] = 0.0
    for i in range(ns):
        for u in range(U):
            gb[u] += dz[i * U + u]


# --- one replica's training ----------------------------------------------------------------------

@_jit
def _replica(r, p, s1, s2, gemm, T, dims, woff, boff, acts, aprm, X, Y, orders, logpos, costs,
             loss, eps, opt, hyp, hyp64, epochs, batch, width, ld):
    """Train replica r (parameters p, optimizer state s1, s2: flat and contiguous) in place.

    A batch goes through in chunks of ``cap`` samples: the whole batch in the gemm layout
    (buffers (samples, units)), ld samples in the lanes layout (buffers (units, ld); a chunk's
    columns past its samples, up to a multiple of _BLOCK, are zero inputs whose loss gradient
    is 0).
    """
    L = acts.shape[0]
    n = X.shape[1]
    d = dims[0]
    k = dims[L]
    xr = r if X.shape[0] > 1 else 0
    yr = r if Y.shape[0] > 1 else 0
    fused = loss == 0 or loss == 2
    shuffled = orders.shape[0] > 0
    per_sample = loss == 2  # softmax CE averages over samples only
    cap = batch if gemm else ld
    ss = k if gemm else 1  # the loss block's strides: sample, unit
    fs = 1 if gemm else ld
    aoff = np.zeros(L + 2, np.int64)  # where layer li's input starts in ab, its z in zb
    zoff = np.zeros(L + 1, np.int64)
    for li in range(L + 1):
        aoff[li + 1] = aoff[li] + cap * dims[li]
    for li in range(L):
        zoff[li + 1] = zoff[li] + cap * dims[li + 1]
    nparam = p.shape[0]
    ab = _aligned(aoff[L + 1], p)
    zb = _aligned(zoff[L], p)
    g0 = _aligned(cap * width, p)
    g1 = _aligned(cap * width, p)
    yb = _aligned(cap * k, p)
    g = np.zeros(nparam, p.dtype)
    cc = np.zeros(2, p.dtype)  # float64 scalars rounded to the dtype, as numpy rounds them
    lr, mom, b1, ob1, b2, ob2, ep = hyp[0], hyp[1], hyp[2], hyp[3], hyp[4], hyp[5], hyp[6]
    out = _at(zb, zoff[L - 1]) if fused else _at(ab, aoff[L])  # what the loss reads
    one = np.int64(1)  # not a literal 1: a literal argument compiles a helper once more
    per_epoch = (n + batch - 1) // batch
    held, held_nv = -1, 0  # the chunk the input buffers hold, when in sample order
    for e in range(epochs):
        lp = logpos[e]
        # step -1: the cost on all of X before this epoch's updates, when minibatches
        for step in range(-1 if lp >= 0 and batch < n else 0, per_epoch):
            training = step >= 0
            lo = step * batch if training else 0
            hi = min(n, lo + batch) if training else n
            cc[0] = 1.0 / ((hi - lo) if per_sample else (hi - lo) * k)
            fac = cc[0]
            value = lp >= 0 and (not training or batch >= n)
            total = 0.0
            if not gemm:  # (the gemm layout overwrites every gradient)
                for q in range(nparam):
                    g[q] = 0.0
            for c0 in range(lo, hi, cap):
                nv = min(cap, hi - c0)
                ns = nv if gemm else cap  # samples in a buffer block
                wb = (nv + _BLOCK - 1) // _BLOCK * _BLOCK
                ordered = not (training and shuffled)
                if not (ordered and held == c0 and held_nv == nv):
                    held, held_nv = (c0 if ordered else -1), nv
                    for c in range(nv if gemm else wb):
                        src = 0
                        if c < nv:
                            src = c0 + c if ordered else orders[e, r, c0 + c]
                        for j in range(d):
                            v = X[xr, src, j] if c < nv else 0.0
                            ab[c * d + j if gemm else j * ld + c] = v
                        for u in range(k):
                            v = Y[yr, src, u] if c < nv else 0.0
                            yb[c * k + u if gemm else u * ld + c] = v
                # forward: z = x W + b, a = phi(z)
                for li in range(L):
                    F = dims[li]
                    U = dims[li + 1]
                    needed = li < L - 1 or not fused
                    activate = needed
                    if gemm:
                        _dot(one - one, ab[aoff[li]:], p[woff[li]:], zb[zoff[li]:], ns, F, U)
                        if boff[li] >= 0:
                            _add_rows(_at(zb, zoff[li]), _at(p, boff[li]), ns, U)
                    else:  # phi in the same pass where it has a vector form
                        activate = needed and not _vector_forward(acts[li])
                        _mix(_at(zb, zoff[li]), _at(ab, aoff[li]), _at(p, woff[li]),
                             _at(p, max(boff[li], 0)), boff[li] >= 0, U, F, one, U, ld, wb,
                             1 if needed and not activate else 0, acts[li], aprm[li],
                             _at(ab, aoff[li + 1]))
                    if activate:
                        _act_forward(acts[li], aprm[li], _at(zb, zoff[li]), _at(ab, aoff[li + 1]),
                                     ns, U, U if gemm else 1, 1 if gemm else ld)
                total += _loss(loss, eps, out, _at(yb, 0), _at(g0, 0), nv if gemm else wb, nv,
                               k, ss, fs, fac, training, value)
                if not training:
                    continue
                # backward: dz = phi'(z) da; dW = x^T dz; db = 1^T dz; dx = dz W^T
                cur, other = g0, g1
                for li in range(L - 1, -1, -1):
                    F = dims[li]
                    U = dims[li + 1]
                    if (not (fused and li == L - 1)
                            and (gemm or li == L - 1 or not _vector_backward(acts[li]))):
                        _act_backward(acts[li], aprm[li], _at(zb, zoff[li]),
                                      _at(ab, aoff[li + 1]), _at(cur, 0), ns, U,
                                      U if gemm else 1, 1 if gemm else ld)
                    if gemm:
                        _dot(one, ab[aoff[li]:], cur, g[woff[li]:], F, ns, U)
                        if boff[li] >= 0:
                            _sum_rows(_at(g, boff[li]), _at(cur, 0), ns, U)
                        if li > 0:
                            _dot(one + one, cur, p[woff[li]:], other, ns, U, F)
                    else:
                        _grad_w(_at(g, woff[li]), _at(ab, aoff[li]), _at(cur, 0), F, U, ld, wb)
                        if boff[li] >= 0:
                            _grad_b(_at(g, boff[li]), _at(cur, 0), U, ld, wb)
                        if li > 0:  # phi' of the layer below in the same pass, where it can
                            below = acts[li - 1]
                            aux = _at(ab, aoff[li]) if below <= 2 else _at(zb, zoff[li - 1])
                            _mix(_at(other, 0), _at(cur, 0), _at(p, woff[li]), _at(p, 0), one < 0,
                                 F, U, U, one, ld, wb, 2 if _vector_backward(below) else 0, below,
                                 aprm[li - 1], aux)
                    cur, other = other, cur
            if value:
                costs[lp, r] = total / ((hi - lo) if per_sample else (hi - lo) * k)
            if not training:
                continue
            # the optimizer on every parameter array, W0, b0, W1, ... (Adam's t: T + steps)
            at = 0
            for li in range(L):
                for j in range(2):
                    lo = woff[li] if j == 0 else boff[li]
                    if lo < 0:
                        continue
                    if opt == _ADAM:
                        t = T[at] + (e * per_epoch + step) + 1.0
                        cc[0] = hyp64[0] / (1.0 - hyp64[1] ** t)
                        cc[1] = 1.0 - hyp64[2] ** t
                    _update(opt, _at(p, lo), _at(g, lo), _at(s1, lo if opt != _SGD else 0),
                            _at(s2, lo if opt == _ADAM else 0),
                            dims[li] * dims[li + 1] if j == 0 else dims[li + 1],
                            lr, mom, b1, ob1, b2, ob2, ep, cc[0], cc[1])
                    at += 1
    # the buffers the helpers saw as pointers stay alive to here
    return ab.shape[0] + zb.shape[0] + g0.shape[0] + g1.shape[0] + yb.shape[0] + g.shape[0]


# --- the Python side ---------------------------------------------------------------------------

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
          layout: Layout = "auto") -> np.ndarray:
    """Train R replicas of a Dense stack for ``epochs`` epochs, as the NumPy engine would.

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
        threads: threads over the replicas (default: every core this process may use); the
            gemm layout holds the BLAS to one thread meanwhile (unless one replica, threads
            None), for the whole process.
        layout: "lanes" or "gemm" (see the module docstring); "auto" picks by size.

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
    dims = [weights[0].shape[1]] + [w.shape[2] for w in weights]
    for i, w in enumerate(weights):
        if w.shape != (R, dims[i], dims[i + 1]) or w.dtype != dtype:
            raise ValueError(f"weights[{i}] must be ({R}, {dims[i]}, {dims[i + 1]}) {dtype}; "
                             f"got {w.shape} {w.dtype}")
        b = biases[i]
        if b is not None and (b.shape != (R, 1, dims[i + 1]) or b.dtype != dtype):
            raise ValueError(f"biases[{i}] must be ({R}, 1, {dims[i + 1]}) {dtype} or None; "
                             f"got {b.shape} {b.dtype}")
    epochs = int(epochs)
    Xk = _per_replica(X, "X", R, dims[0], dtype)
    Yk = _per_replica(y, "y", R, dims[-1], dtype)
    n = Xk.shape[1]
    if Yk.shape[1] != n:
        raise ValueError(f"X and y disagree: {n} samples in X, {Yk.shape[1]} in y")
    batch = n if batch_size is None or batch_size >= n else int(batch_size)
    if batch < 1:
        raise ValueError(f"batch_size must be a positive int or None; got {batch_size!r}")
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

    woff, boff = [], []
    at = 0
    for i in range(L):
        woff.append(at)
        at += dims[i] * dims[i + 1]
        boff.append(at if biases[i] is not None else -1)
        at += dims[i + 1] if biases[i] is not None else 0
    params = [a for w, b in zip(weights, biases, strict=True)
              for a in ((w,) if b is None else (w, b))]
    P = np.empty((R, at), dtype)
    _pack(P, params)
    code = _optimizer_code(optimizer)
    S1, S2, T = _pack_state(optimizer, code, params, R, at, dtype)
    per_epoch = -(-n // batch)
    lr = float(optimizer.learning_rate)
    mom = float(getattr(optimizer, "momentum", 0.0))
    b1, b2 = float(getattr(optimizer, "beta1", 0.0)), float(getattr(optimizer, "beta2", 0.0))
    eps = float(getattr(optimizer, "eps", 0.0))
    hyp = np.array([lr, mom, b1, 1.0 - b1, b2, 1.0 - b2, eps], dtype)
    hyp64 = np.array([lr, b1, b2])
    weights_count = sum(dims[i] * dims[i + 1] for i in range(L))
    gemm = weights_count >= GEMM_WEIGHTS if layout == "auto" else layout == "gemm"
    acts = np.array([ACTIVATIONS[a.name] for a in activations], np.int64)
    aprm = np.array([_act_param(a) for a in activations], dtype)
    loss_eps = float(getattr(loss, "eps", 0.0))
    args = (gemm, T, np.array(dims, np.int64), np.array(woff, np.int64),
            np.array(boff, np.int64), acts, aprm, Xk, Yk, order, logpos, costs,
            LOSSES[loss.name], loss_eps, code, hyp, hyp64, epochs, batch, max(dims),
            min(-(-batch // _BLOCK) * _BLOCK, CHUNK))
    workers = min(R, _cores() if threads is None else max(1, int(threads)))
    # BLAS on one thread under ours: two threads calling a threaded OpenBLAS at once ran W4
    # 3.5x slower, and once 100x; it keeps its threads only for a lone replica
    single = gemm and (workers > 1 or threads is not None)
    with threadpool_limits(1) if single else contextlib.nullcontext():
        _run(workers, R, lambda r: _replica(r, P[r], S1[r], S2[r], *args))
    _unpack(P, params)
    _unpack_state(optimizer, code, params, S1, S2, T + epochs * per_epoch)
    return costs


def _cores() -> int:
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


def _per_replica(a: np.ndarray, name: str, R: int, width: int, dtype: np.dtype) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[0] not in (1, R) or a.shape[2] != width:
        raise ValueError(f"{name} must be (n, {width}) or (1 or {R}, n, {width}); "
                         f"got {name}.shape={a.shape}")
    return np.ascontiguousarray(a, dtype=dtype)


def _act_param(activation: Any) -> float:
    return float(activation.params.get("slope", activation.params.get("alpha", 0.0)))


def _optimizer_code(optimizer: Any) -> int:
    if isinstance(optimizer, opt_mod.Adam):
        return _ADAM
    if not optimizer.momentum:
        return _SGD
    return _NESTEROV if optimizer.nesterov else _MOMENTUM


def _pack(P: np.ndarray, arrays: list[np.ndarray]) -> None:
    at = 0
    for a in arrays:
        size = a[0].size
        P[:, at:at + size] = a.reshape(P.shape[0], size)
        at += size


def _unpack(P: np.ndarray, arrays: list[np.ndarray]) -> None:
    at = 0
    for a in arrays:
        size = a[0].size
        a[...] = P[:, at:at + size].reshape(a.shape)
        at += size


def _pack_state(optimizer: Any, code: int, params: list[np.ndarray], R: int, size: int,
                dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The optimizer's state as flat (R, size) arrays and the step count of each parameter
    array; zeros where the state is empty (a first step from zero state is the engine's)."""
    S1 = np.zeros((R, size) if code != _SGD else (R, 0), dtype)
    S2 = np.zeros((R, size) if code == _ADAM else (R, 0), dtype)
    T = np.zeros(len(params))
    state = optimizer.state
    if state and len(state) != len(params):
        raise ValueError(f"optimizer.state has {len(state)} entries for {len(params)} "
                         f"parameter arrays")
    keys = {_MOMENTUM: ("velocity",), _NESTEROV: ("velocity",), _ADAM: ("m", "v")}.get(code, ())
    for key, S in zip(keys, (S1, S2), strict=False):
        _pack(S, [entry.get(key, np.zeros_like(p)) for entry, p in
                  zip(state or [{}] * len(params), params, strict=True)])
    if code == _ADAM:
        T = np.array([float(entry.get("t", 0.0)) for entry in (state or [{}] * len(params))])
    return S1, S2, T


def _unpack_state(optimizer: Any, code: int, params: list[np.ndarray], S1: np.ndarray,
                  S2: np.ndarray, T: np.ndarray) -> None:
    """Write the state back in the engine's format, into its arrays where they exist."""
    if not optimizer.state:
        optimizer.state = [{} for _ in params]
    keys = {_MOMENTUM: ("velocity",), _NESTEROV: ("velocity",), _ADAM: ("m", "v")}.get(code, ())
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
    if code == _ADAM:
        for entry, t in zip(optimizer.state, T, strict=False):
            if "t" in entry:
                entry["t"][...] = t
            else:
                entry["t"] = np.array(t)


def warm_up(dtype: Any = np.float64,
            progress: Callable[[int, int], None] | None = None) -> float:
    """Compile (or load from numba's cache) the kernel for ``dtype``, one specialization that
    serves every network, by training a tiny one; ``progress(1, 1)`` when done. Returns the
    seconds it took."""
    start = time.perf_counter()
    dt = np.dtype(dtype)
    W = [np.full((1, 2, 3), 0.1, dt), np.full((1, 3, 1), 0.1, dt)]
    b = [np.zeros((1, 1, 3), dt), None]
    train(W, b, [act_mod.get("tanh"), act_mod.get("sigmoid")],
          loss_mod.get("binary_crossentropy"), opt_mod.SGD(0.1), np.ones((4, 2), dt),
          np.ones((4, 1), dt), epochs=1)
    if progress is not None:
        progress(1, 1)
    return time.perf_counter() - start
