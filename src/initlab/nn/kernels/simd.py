"""Vectors and raw pointers for the compiled kernels, as numba intrinsics.

numba cannot prove that two arrays do not overlap, so it keeps a sum that lives in an array in
memory and vectorizes no loop that carries one; these intrinsics say it explicitly: a
:data:`VW`-lane vector is an LLVM ``<8 x double>`` (or ``float``) value that stays in a
register. The kernels hand buffers to each other as pointers (:func:`at`): an array argument
costs two atomic reference-count updates a call, and numba lowers every use of one to a
struct of seven fields, a pointer to one address.

exp and tanh are written out in LLVM IR (:func:`exp_ir`), within 1 and 3 ulp of libm's
(tested); float32 vectors compute them in float64 and round (:func:`widened`). IEEE
arithmetic, no fastmath; a product summed into an accumulator is one fused multiply-add
(:func:`vfma`), rounded once, as BLAS's gemm sums.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from llvmlite import ir  # type: ignore[import-untyped]
from numba.core import cgutils, types
from numba.core.extending import intrinsic, models, register_model
from numba.np import linalg

VW = 8  # lanes of a vector (a 512-bit register of float64, 256 of float32)


class _Vec(types.Type):
    def __init__(self, dtype: types.Type):
        self.dtype = dtype
        super().__init__(name=f"Vec{VW}({dtype})")


@register_model(_Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm: Any, fe_type: _Vec):
        super().__init__(dmm, fe_type,
                         ir.VectorType(dmm.lookup(fe_type.dtype).get_value_type(), VW))


def _address(context: Any, builder: Any, aty: Any, a: Any, i: Any, ity: Any) -> Any:
    data = a if isinstance(aty, types.CPointer) else context.make_array(aty)(context, builder,
                                                                              a).data
    return builder.gep(data, [context.cast(builder, i, ity, types.intp)], inbounds=True)


@intrinsic
def at(typingctx: Any, a: Any, i: Any) -> Any:
    """A raw pointer to a[i] (a an array or a pointer). The caller keeps the array alive (its
    argument, or a use after the pointer's last)."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return _address(context, builder, sig.args[0], args[0], args[1], sig.args[1])
    return types.CPointer(a.dtype)(a, i), codegen


def splat(builder: Any, vty: Any, x: Any) -> Any:
    """The scalar x in every lane of a vector of type vty."""
    v = builder.insert_element(ir.Constant(vty, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(v, ir.Constant(vty, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), VW), [0] * VW))


def const(like: Any, c: float) -> Any:
    """c in every lane of a vector of like's type."""
    return ir.Constant(like.type, [c] * like.type.count)


@intrinsic
def like(typingctx: Any, a: Any, v: Any) -> Any:
    """The scalar v rounded to a's dtype (a value of it, kept in a register): what storing v
    into a and reading it back gives."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return context.cast(builder, args[1], sig.args[1], a.dtype)
    return a.dtype(a, v), codegen


@intrinsic
def vload(typingctx: Any, a: Any, i: Any) -> Any:
    """a[i:i + VW] as a vector (no bounds or negative-index checks)."""
    vt = _Vec(a.dtype)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        p = _address(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        vp = builder.bitcast(p, context.get_value_type(vt).as_pointer())
        return builder.load(vp, align=a.dtype.bitwidth // 8)
    return vt(a, i), codegen


@intrinsic
def vstore(typingctx: Any, a: Any, i: Any, v: Any) -> Any:
    """a[i:i + VW] = v."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        p = _address(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        builder.store(args[2], builder.bitcast(p, args[2].type.as_pointer()),
                      align=a.dtype.bitwidth // 8)
        return context.get_dummy_value()
    return types.none(a, i, v), codegen


@intrinsic
def vbcast(typingctx: Any, a: Any, i: Any) -> Any:
    """a[i] in every lane."""
    vt = _Vec(a.dtype)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        p = _address(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        return splat(builder, context.get_value_type(vt), builder.load(p))
    return vt(a, i), codegen


@intrinsic
def vzero(typingctx: Any, a: Any) -> Any:
    """A zero vector of a's dtype."""
    vt = _Vec(a.dtype)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return ir.Constant(context.get_value_type(vt), None)
    return vt(a), codegen


@intrinsic
def vfill(typingctx: Any, v: Any, x: Any) -> Any:
    """A vector like v with x (rounded to v's dtype) in every lane."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        x = context.cast(builder, args[1], sig.args[1], v.dtype)
        return splat(builder, args[0].type, x)
    return v(v, x), codegen


def _binary(op: str) -> Any:
    def typer(typingctx: Any, a: Any, b: Any) -> Any:
        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            return getattr(builder, op)(args[0], args[1])
        return a(a, b), codegen
    return intrinsic(typer)


vadd = _binary("fadd")
vsub = _binary("fsub")
vmul = _binary("fmul")


def fma_ir(builder: Any, a: Any, b: Any, c: Any) -> Any:
    """a * b + c of vectors, rounded once (llvm.fma: one instruction where the CPU has FMA)."""
    vty = a.type
    name = f"llvm.fma.v{vty.count}f{64 if vty.element == ir.DoubleType() else 32}"
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * 3), name)
    return builder.call(fma, [a, b, c])


@intrinsic
def vfma(typingctx: Any, a: Any, b: Any, c: Any) -> Any:
    """a * b + c rounded once (:func:`fma_ir`)."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return fma_ir(builder, *args)
    return a(a, b, c), codegen


@intrinsic
def vsum(typingctx: Any, v: Any) -> Any:
    """The sum of the lanes, pairwise: (v0 + v1) + (v2 + v3)."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        e = [builder.extract_element(args[0], ir.Constant(ir.IntType(32), q))
             for q in range(VW)]
        while len(e) > 1:
            e = [builder.fadd(e[q], e[q + 1]) for q in range(0, len(e), 2)]
        return e[0]
    return v.dtype(v), codegen


def scale_ir(context: Any, builder: Any, v: Any, x: Any, xty: Any, dtype: Any) -> Any:
    """v * x for a scalar x of type xty, rounded to dtype first."""
    return builder.fmul(v, splat(builder, v.type, context.cast(builder, x, xty, dtype)))


@intrinsic
def vscale(typingctx: Any, v: Any, x: Any) -> Any:
    """v * x for a scalar x (rounded to v's dtype)."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return scale_ir(context, builder, args[0], args[1], sig.args[1], v.dtype)
    return v(v, x), codegen


# --- exp, expit and tanh ------------------------------------------------------------------------

_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # ln 2 in two parts (fdlibm): k * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10
_EXP_TERMS = [1.0 / math.factorial(i) for i in range(2, 14)]


def exp_ir(builder: Any, x: Any, minus_one: bool = False) -> Any:
    """exp (or, with ``minus_one``, expm1) of a vector of doubles, within 1 ulp of libm's (2 for
    expm1; the tests check both): k = round(x / ln 2), r = x - k ln 2 (Cody-Waite), exp(r) - 1
    = r + r^2 T(r) with T the Taylor series to r^13 by Estrin's scheme, and 2^k built from its
    bits: as two powers of two for exp (so that results near overflow and in the subnormal
    range round once); expm1 is 2^k q + (2^k - 1), for |x| < 700."""
    vty = x.type
    n = vty.count
    t = builder.select(builder.fcmp_ordered(">", x, const(x, 710.0)), const(x, 710.0), x)
    t = builder.select(builder.fcmp_ordered("<", t, const(x, -746.0)), const(x, -746.0), t)
    floor = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty]),
                                           f"llvm.floor.v{n}f64")
    kf = builder.call(floor, [builder.fadd(builder.fmul(t, const(x, _LOG2E)), const(x, 0.5))])
    r = builder.fsub(builder.fsub(t, builder.fmul(kf, const(x, _LN2_HI))),
                     builder.fmul(kf, const(x, _LN2_LO)))
    terms, power = [const(x, c) for c in _EXP_TERMS], r
    while len(terms) > 1:
        terms = [fma_ir(builder, terms[i + 1], power, terms[i])
                 for i in range(0, len(terms) - 1, 2)] + terms[len(terms) - len(terms) % 2:]
        power = builder.fmul(power, power)
    q = fma_ir(builder, builder.fmul(r, r), terms[0], r)
    ity = ir.VectorType(ir.IntType(64), n)
    k = builder.fptosi(kf, ity)

    def pow2(e: Any) -> Any:
        bits = builder.shl(builder.add(e, ir.Constant(ity, [1023] * n)),
                           ir.Constant(ity, [52] * n))
        return builder.bitcast(bits, vty)
    if minus_one:
        two_k = pow2(k)
        p = builder.fadd(builder.fmul(two_k, q), builder.fsub(two_k, const(x, 1.0)))
    else:
        half = builder.ashr(k, ir.Constant(ity, [1] * n))
        p = builder.fmul(builder.fmul(builder.fadd(const(x, 1.0), q), pow2(half)),
                         pow2(builder.sub(k, half)))
    return builder.select(builder.fcmp_unordered("uno", x, x), x, p)


def widened(builder: Any, x: Any, fn: Callable[[Any], Any]) -> Any:
    """fn on x as doubles (a float32 vector computed in float64, then rounded)."""
    wide = ir.VectorType(ir.DoubleType(), VW)
    y = fn(x if x.type == wide else builder.fpext(x, wide))
    return y if y.type == x.type else builder.fptrunc(y, x.type)


def expit_ir(builder: Any, x: Any) -> Any:
    """1 / (1 + exp(-x)) lane by lane."""
    def expit(x: Any) -> Any:
        one = const(x, 1.0)
        return builder.fdiv(one, builder.fadd(one, exp_ir(builder, builder.fneg(x))))
    return widened(builder, x, expit)


def tanh_ir(builder: Any, x: Any) -> Any:
    """tanh lane by lane, as e / (e + 2) with e = expm1(2 x) (no cancellation near 0), x held
    to [-20, 20] where tanh is +-1 in float64."""
    def tanh(x: Any) -> Any:
        lim, neg = const(x, 20.0), const(x, -20.0)
        t = builder.select(builder.fcmp_ordered(">", x, lim), lim, x)
        t = builder.select(builder.fcmp_ordered("<", t, neg), neg, t)
        e = exp_ir(builder, builder.fadd(t, t), minus_one=True)
        return builder.fdiv(e, builder.fadd(e, const(x, 2.0)))
    return widened(builder, x, tanh)


@intrinsic
def vtanh(typingctx: Any, v: Any) -> Any:
    """tanh lane by lane (:func:`tanh_ir`)."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return tanh_ir(builder, args[0])
    return v(v), codegen


@intrinsic
def vexpit(typingctx: Any, v: Any) -> Any:
    """1 / (1 + exp(-v)) lane by lane."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return expit_ir(builder, args[0])
    return v(v), codegen


def switch_ir(builder: Any, code: Any, cases: dict[int, Callable[[], Any]],
              default: Callable[[], Any]) -> Any:
    """The value of ``cases[code]()`` (else ``default()``), each built in a block of its own:
    LLVM hoists the branch out of the loops around it (``code`` is loop-invariant there)."""
    end = builder.append_basic_block("switch.end")
    blocks = {c: builder.append_basic_block(f"switch.{c}") for c in cases}
    otherwise = builder.append_basic_block("switch.default")
    sw = builder.switch(code, otherwise)
    incoming = []
    for c, make in [*cases.items(), (None, default)]:
        builder.position_at_end(otherwise if c is None else blocks[c])
        if c is not None:
            sw.add_case(ir.Constant(code.type, c), blocks[c])
        value = make()
        incoming.append((value, builder.block))
        builder.branch(end)
    builder.position_at_end(end)
    phi = builder.phi(incoming[0][0].type)
    for value, block in incoming:
        phi.add_incoming(value, block)
    return phi


# --- BLAS ---------------------------------------------------------------------------------------

@intrinsic
def gemm(typingctx: Any, c: Any, a: Any, b: Any, m: Any, k: Any, n: Any, ta: Any,
         tb: Any) -> Any:
    """c = op(a) op(b) by BLAS for row-major blocks from pointers: c (m, n); op(a) (m, k) is a
    (m, k), or a (k, m) transposed where ta; op(b) (k, n) is b (k, n), or b (n, k) where tb.
    It calls numba's xxgemm as ``np.dot(a, b, out)`` does (a row-major product as the
    column-major c^T = op(b)^T op(a)^T), without compiling np.dot's array views."""
    linalg.ensure_blas()
    dtype = c.dtype

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        c, a, b, m, k, n, ta, tb = args
        char, voidp = ir.IntType(8), ir.IntType(8).as_pointer()
        intp = context.get_value_type(types.intp)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(
            ir.IntType(32), [char, char, char, intp, intp, intp, voidp, voidp, intp, voidp,
                             intp, voidp, voidp, intp]), "numba_xxgemm")

        def trans(flag: Any) -> Any:
            return builder.select(flag, ir.Constant(char, ord("t")), ir.Constant(char, ord("n")))

        def scalar(x: float) -> Any:  # alpha and beta, passed by address
            return builder.bitcast(cgutils.alloca_once_value(
                builder, context.get_constant(dtype, x)), voidp)
        kind = ir.Constant(char, ord("d" if dtype == types.float64 else "s"))
        status = builder.call(fn, [kind, trans(tb), trans(ta), n, m, k, scalar(1.0),
                                   builder.bitcast(b, voidp), builder.select(tb, k, n),
                                   builder.bitcast(a, voidp), builder.select(ta, m, k),
                                   scalar(0.0), builder.bitcast(c, voidp), n])
        linalg.check_blas_return(context, builder, status)
        return context.get_dummy_value()
    return types.none(c, a, b, types.intp, types.intp, types.intp, types.boolean,
                      types.boolean), codegen
