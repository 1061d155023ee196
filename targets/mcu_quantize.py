"""Stage-input QuantizeLinear for microcontrollers without a rounding library call.

  y = clamp(round_half_even(x / s) + z, -128, 127)           (onnxruntime's MLAS: divide, clamp, round)

TVM lowers round() to newlib's nearbyintf (~30 instructions on the M4F, hundreds in soft float). Here
v = x / s is the same float32 division, then t = v + M with M = 1.5·2^23: for |v| < 2^22, t lies in
[2^23, 2^24) where floats are the integers, so the one IEEE round-to-nearest-even of that addition
rounds v half to even (M is even) and the bit pattern of t is bits(M) + round(v). Larger |v| saturate
the same way: positive t keep their order as int32 bit patterns (v ≥ 2^22 gives ≥ 2^22 > 127, +inf too),
t ≤ 2^23 gives ≤ -2^22, and negative t (sign bit set, -inf) are mapped to 0 before the subtraction.
So y = clamp(max(bits(t), 0) - (bits(M) - z), -128, 127): one float add instead of the call and the
float clamps. NaN inputs are not defined by this (onnxruntime's result for NaN depends on its SIMD path).
"""

from __future__ import annotations

import numpy as np

MAGIC = 12582912.0  # 1.5 · 2^23
MAGIC_BITS = 0x4B400000


def quantize_kernel(shape, scale: float, zero: int):
    """PrimFunc(x float32[shape], y int8[shape]) computing the module docstring's y."""
    from tvm.script import tirx as T

    n, dims = int(np.prod(shape)), tuple(int(d) for d in shape)
    offset = MAGIC_BITS - int(zero)

    @T.prim_func(private=True, s_tir=True)
    def kernel(x: T.Buffer(dims, "float32"), y: T.Buffer(dims, "int8")):
        T.func_attr({"tirx.noalias": True, "op_pattern": 8})  # opaque: never fused with TVM operators
        with T.sblock("quantize"):  # one opaque block: the form Relax's pattern analysis expects
            xf = T.decl_buffer((n,), "float32", data=x.data)
            yf = T.decl_buffer((n,), "int8", data=y.data)
            for i in range(n):
                bits: T.let[T.int32] = T.reinterpret("int32", xf[i] / T.float32(scale) + T.float32(MAGIC))
                yf[i] = T.Cast("int8", T.max(T.min(T.max(bits, 0) - offset, 127), -128))

    return kernel


def quantize_rule(builder):
    """(pattern, rewriter) turning a per-tensor float32 -> int8 relax.quantize into quantize_kernel."""
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, wildcard

    x, s, z = wildcard(), is_const(), is_const()
    pattern = is_op("relax.quantize")(x, s, z)

    def rewrite(expr, m):
        scale, zero = m[s].value.numpy(), m[z].value.numpy()
        if scale.size != 1 or zero.dtype != np.int8 or m[x].ty.dtype != "float32" or expr.ty.dtype != "int8":
            return expr
        shape = [int(d) for d in m[x].ty.shape.values]
        gv = builder.add_func(quantize_kernel(shape, float(scale.reshape(())), int(zero.reshape(()))), "quantize_int8")
        return relax.call_tir(gv, [m[x]], relax.TensorType(shape, "int8"))

    return pattern, rewrite
