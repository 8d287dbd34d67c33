"""Eight float64 lanes as one value for numba kernels: LLVM's ``<8 x double>``, loaded from
and stored to contiguous arrays (or gathered from eight places), with lane-wise arithmetic
(``fma`` fused, the rest as the scalar operations; every lane rounds as its scalar code
would) and a pairwise sum of the lanes. Numba leaves LLVM's SLP vectoriser off, so eight
scalar chains written out stay scalar; these make the vector instructions explicit (two
256-bit or one 512-bit register per value, as the machine has).

Imported only by compiled kernels (``missing_compiled``); importing it imports numba.
Numba's cache of a kernel does not see changes to this module: after one, change the
kernel's module too (or clear its cache).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

WIDTH = 8


class Lanes(types.Type):
    """Eight float64 values held as one LLVM vector."""

    def __init__(self) -> None:
        super().__init__(name="Lanes8")


lanes8 = Lanes()
_VECTOR = ir.VectorType(ir.DoubleType(), WIDTH)


@register_model(Lanes)
class _LanesModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type) -> None:
        super().__init__(dmm, fe_type, _VECTOR)


def _pointer(context, builder, array_type, array, index):
    """Where element ``index`` (flat, C order) of a contiguous array is, as <8 x double>*."""
    data = context.make_array(array_type)(context, builder, array).data
    return builder.bitcast(builder.gep(data, [index]), _VECTOR.as_pointer())


def _check_array(array) -> bool:
    return isinstance(array, types.Array) and array.dtype == types.float64 and array.layout == "C"


@intrinsic
def load(typingctx, array, index):
    """array.flat[index:index + 8] (a C-contiguous float64 array)."""
    if not (_check_array(array) and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        index = context.cast(builder, args[1], sig.args[1], types.intp)
        return builder.load(_pointer(context, builder, sig.args[0], args[0], index), align=8)

    return lanes8(array, index), codegen


@intrinsic
def store(typingctx, array, index, value):
    """array.flat[index:index + 8] = value."""
    if not (_check_array(array) and isinstance(index, types.Integer) and value == lanes8):
        return None

    def codegen(context, builder, sig, args):
        index = context.cast(builder, args[1], sig.args[1], types.intp)
        builder.store(args[2], _pointer(context, builder, sig.args[0], args[0], index), align=8)
        return context.get_dummy_value()

    return types.none(array, index, value), codegen


def _broadcast(builder, x):
    vector = ir.Constant(_VECTOR, None)
    for j in range(WIDTH):
        vector = builder.insert_element(vector, x, ir.Constant(ir.IntType(32), j))
    return vector


@intrinsic
def splat(typingctx, x):
    """Eight copies of the scalar x."""
    if not isinstance(x, types.Float):
        return None

    def codegen(context, builder, sig, args):
        return _broadcast(builder, context.cast(builder, args[0], sig.args[0], types.float64))

    return lanes8(x), codegen


@intrinsic
def lane(typingctx, value, j):
    """Lane j of value."""
    if not (value == lanes8 and isinstance(j, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        return builder.extract_element(args[0], args[1])

    return types.float64(value, j), codegen


def _binary(operation):
    @intrinsic
    def binary(typingctx, a, b):
        if not (a == lanes8 and b == lanes8):
            return None

        def codegen(context, builder, sig, args):
            return getattr(builder, operation)(args[0], args[1])

        return lanes8(a, b), codegen

    return binary


add = _binary("fadd")
sub = _binary("fsub")
mul = _binary("fmul")
div = _binary("fdiv")


@intrinsic
def fma(typingctx, a, b, c):
    """a b + c, rounded once."""
    if not (a == lanes8 and b == lanes8 and c == lanes8):
        return None

    def codegen(context, builder, sig, args):
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_VECTOR, [_VECTOR] * 3), "llvm.fma.v8f64"
        )
        return builder.call(function, args)

    return lanes8(a, b, c), codegen


@intrinsic
def fnma(typingctx, a, b, c):
    """c − a b, rounded once."""
    if not (a == lanes8 and b == lanes8 and c == lanes8):
        return None

    def codegen(context, builder, sig, args):
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_VECTOR, [_VECTOR] * 3), "llvm.fma.v8f64"
        )
        return builder.call(function, [builder.fneg(args[0]), args[1], args[2]])

    return lanes8(a, b, c), codegen


@intrinsic
def sqrt(typingctx, a):
    """The lanes' square roots (correctly rounded)."""
    if a != lanes8:
        return None

    def codegen(context, builder, sig, args):
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_VECTOR, [_VECTOR]), "llvm.sqrt.v8f64"
        )
        return builder.call(function, args)

    return lanes8(a), codegen


@intrinsic
def within(typingctx, a, low, high):
    """Whether low < a_j < high for every lane j (False for a NaN lane)."""
    if not (a == lanes8 and isinstance(low, types.Float) and isinstance(high, types.Float)):
        return None

    def codegen(context, builder, sig, args):
        def bound(value, t):
            return _broadcast(builder, context.cast(builder, value, t, types.float64))

        above = builder.fcmp_ordered(">", args[0], bound(args[1], sig.args[1]))
        below = builder.fcmp_ordered("<", args[0], bound(args[2], sig.args[2]))
        both = builder.and_(above, below)
        bits = builder.bitcast(both, ir.IntType(WIDTH))
        return builder.icmp_unsigned("==", bits, ir.Constant(ir.IntType(WIDTH), 2**WIDTH - 1))

    return types.boolean(a, low, high), codegen


def _check_indices(array) -> bool:
    return isinstance(array, types.Array) and array.dtype == types.int64 and array.layout == "C"


@intrinsic
def gather(typingctx, array, first, at_first, second, at_second):
    """array.flat[first.flat[at_first + j] + second.flat[at_second + j]] for lanes j = 0 … 7
    (``first`` and ``second`` C-contiguous int64 arrays)."""
    if not (
        _check_array(array)
        and _check_indices(first)
        and _check_indices(second)
        and isinstance(at_first, types.Integer)
        and isinstance(at_second, types.Integer)
    ):
        return None

    def codegen(context, builder, sig, args):
        integers = ir.VectorType(ir.IntType(64), WIDTH)

        def indices(position):
            array_type, index_type = sig.args[position], sig.args[position + 1]
            data = context.make_array(array_type)(context, builder, args[position]).data
            index = context.cast(builder, args[position + 1], index_type, types.intp)
            pointer = builder.bitcast(builder.gep(data, [index]), integers.as_pointer())
            return builder.load(pointer, align=8)

        offsets = builder.add(indices(1), indices(3))
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        vector = ir.Constant(_VECTOR, None)
        for j in range(WIDTH):  # eight loads (LLVM may make them one gather instruction)
            at = ir.Constant(ir.IntType(32), j)
            value = builder.load(builder.gep(data, [builder.extract_element(offsets, at)]))
            vector = builder.insert_element(vector, value, at)
        return vector

    return lanes8(array, first, at_first, second, at_second), codegen


@intrinsic
def total(typingctx, a):
    """The lanes' sum, pairwise: ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7))."""
    if a != lanes8:
        return None

    def codegen(context, builder, sig, args):
        value = args[0]
        half = WIDTH // 2
        while half:
            mask = ir.Constant(
                ir.VectorType(ir.IntType(32), WIDTH), [(j + half) % WIDTH for j in range(WIDTH)]
            )
            value = builder.fadd(value, builder.shuffle_vector(value, value, mask))
            half //= 2
        return builder.extract_element(value, ir.Constant(ir.IntType(32), 0))

    return types.float64(a), codegen


_INTEGERS = ir.VectorType(ir.IntType(64), WIDTH)
_MANTISSA = 0x000FFFFFFFFFFFFF
_ONE_BITS = 0x3FF0000000000000  # the exponent field of 1.0


@intrinsic
def significand(typingctx, a):
    """The lanes' significands, in [1, 2), of positive normal numbers (their exponent field
    replaced by 1.0's)."""
    if a != lanes8:
        return None

    def codegen(context, builder, sig, args):
        bits = builder.bitcast(args[0], _INTEGERS)
        bits = builder.and_(bits, ir.Constant(_INTEGERS, [_MANTISSA] * WIDTH))
        bits = builder.or_(bits, ir.Constant(_INTEGERS, [_ONE_BITS] * WIDTH))
        return builder.bitcast(bits, _VECTOR)

    return lanes8(a), codegen


@intrinsic
def exponent(typingctx, a):
    """The lanes' binary exponents, as float64, of positive normal numbers: e with
    a = 2^e × ``significand(a)``."""
    if a != lanes8:
        return None

    def codegen(context, builder, sig, args):
        bits = builder.lshr(
            builder.bitcast(args[0], _INTEGERS), ir.Constant(_INTEGERS, [52] * WIDTH)
        )
        bits = builder.sub(bits, ir.Constant(_INTEGERS, [1023] * WIDTH))
        return builder.sitofp(bits, _VECTOR)

    return lanes8(a), codegen


@intrinsic
def where_above(typingctx, a, bound, x, y):
    """x_j where a_j > bound, else y_j (lane by lane)."""
    if not (a == lanes8 and isinstance(bound, types.Float) and x == lanes8 and y == lanes8):
        return None

    def codegen(context, builder, sig, args):
        limit = _broadcast(builder, context.cast(builder, args[1], sig.args[1], types.float64))
        return builder.select(builder.fcmp_ordered(">", args[0], limit), args[2], args[3])

    return lanes8(a, bound, x, y), codegen
