"""Stage-input QuantizeLinear and large DequantizeLinear on microcontrollers, without a library call.

Quantize (onnxruntime's MLAS: divide, clamp, round):

  y = clamp(round_half_even(x / s) + z, -128, 127)

TVM lowers round() to newlib's nearbyintf (~30 instructions on the M4F, hundreds in soft float). With an
FPU (cdriver/ops_fpu.c eecc_quantize_s8), v = x / s is the same float32 division, then t = v + M with M = 1.5·2^23: for
|v| < 2^22, t lies in [2^23, 2^24) where floats are the integers, so the one IEEE round-to-nearest-even of
that addition rounds v half to even (M is even) and the bit pattern of t is bits(M) + round(v). Larger |v|
saturate the same way: positive t keep their order as int32 bit patterns (v ≥ 2^22 gives ≥ 2^22 > 127,
+inf too), t ≤ 2^23 gives ≤ -2^22, and negative t (sign bit set, -inf) are mapped to 0 before the
subtraction. So y = clamp(max(bits(t), 0) - (bits(M) - z), -128, 127): one float add instead of the call
and the float clamps.

Without an FPU (the Cortex-M0+, where the soft-float division alone costs ~300 instructions) y is found by
comparing x with the 255 float32 values where y steps: y is a non-decreasing function of x (a correctly rounded
division by s > 0, round half even and the clamp all keep order), and
key(x) = bits(x) ^ ((bits(x) >> 31) & 0x7FFFFFFF) orders float32 values as int32 (negatives reversed).
thresholds() finds, for every level, the smallest key whose y reaches it, by bisection over the keys with
numpy's float32 division (IEEE, the same as MLAS's). quantize_search_kernel (TIR, host-run constants) bisects
that table in 8 integer steps (57 instructions per element on the M0+); cdriver/rq_tie.c estimates j from
the float's exponent and top mantissa bits with one multiply and only confirms it against the table (~37).
The result equals the formula for every non-NaN x by construction. NaN inputs are not defined by either
kernel (onnxruntime's result for NaN depends on its SIMD path).

Dequantize (dequantize_kernel): y = float32(x - z) · s rounds one product of two float32 values, the
same as onnxruntime and TVM, so a 256-entry table of those products (indexed by the byte x) gives the same
bits: a load instead of a conversion and a multiply (soft float on the M0+). Only tensors of at least
TABLE_MIN elements take it, where the table is no larger than the float tensor it fills. With an FPU
(ops_fpu.c's eecc_dequantize_s8) the conversion and the multiply are two instructions, and the 1 KB table would be
a large share of a small stage's flash: y is computed, the same single rounding. Both FPU loops are C, not
TIR: LLVM unrolled the TIR loops (kws search stage 0: 400 + 476 B of code), gcc -O2 keeps them rolled and
one copy serves every call of a stage.
"""

from __future__ import annotations

import numpy as np

MAGIC = 12582912.0  # 1.5 · 2^23
MAGIC_BITS = 0x4B400000
TABLE_MIN = 256  # elements; smaller dequantisations stay TVM's (fused into the kernel before them)


def _key(bits: np.ndarray) -> np.ndarray:
    """int32 float bit patterns -> int32 keys in float order (the kernel's key(x))."""
    bits = bits.astype(np.int64)
    return np.where(bits < 0, bits ^ 0x7FFFFFFF, bits)


def _unkey(key: np.ndarray) -> np.ndarray:
    """int64 keys -> float32 values (_key's inverse)."""
    bits = np.where(key < 0, key ^ 0x7FFFFFFF, key).astype(np.int64) & 0xFFFFFFFF
    return bits.astype(np.uint32).view(np.float32)


def quantize_reference(x: np.ndarray, scale: float, zero: int) -> np.ndarray:
    """The module docstring's y in numpy (float32 division, round half to even); int8."""
    with np.errstate(over="ignore", invalid="ignore"):  # ±inf and NaN are inputs like any other here
        v = np.asarray(x, np.float32) / np.float32(scale)
        return np.clip(np.rint(v.astype(np.float64)) + zero, -128, 127).astype(np.int8)


def thresholds(scale: float, zero: int) -> np.ndarray:
    """int32[256]: [0] = INT32_MIN, [j] = the smallest key(x) with y(x) ≥ j - 128 (bisection over the
    keys from -inf to +inf, where y is -128 and 127)."""
    levels = np.arange(1, 256) - 128
    lo = np.full(levels.shape, int(_key(np.array([0xFF800000 - 2**32]))[0]), np.int64)  # -inf: y < level
    hi = np.full(levels.shape, 0x7F800000, np.int64)  # +inf: y ≥ level
    while np.any(hi - lo > 1):
        mid = (lo + hi) // 2
        reach = quantize_reference(_unkey(mid), scale, zero) >= levels
        hi, lo = np.where(reach, mid, hi), np.where(reach, lo, mid)
    return np.concatenate([[-2**31], hi]).astype(np.int32)


QUANT_V6M = "eecc_quantize_v6m"  # cdriver/rq_tie.c, linked with every Armv6-M stage


def quantize_v6m_constants(scale: float, zero: int) -> tuple[int, int, int]:
    """(r, c, zb) of cdriver/rq_tie.c's estimate 2|x|/s ~ (m10 · r) >> (c - e): r = round(2^P / s) in
    [2^20, 2^21] (m10 < 2^10, so m10 · r < 2^31), c = 135 + P (|x| = m10 · 2^(e - 136) within 2^-9), zb = z + 128."""
    p = 20 - int(np.floor(np.log2(float(scale))))
    while round(2.0 ** p / float(scale)) < 1 << 20:
        p += 1
    while round(2.0 ** p / float(scale)) > 1 << 21:
        p -= 1
    return int(round(2.0 ** p / float(scale))), 135 + p, zero + 128


def quantize_v6m_kernel(shape, r: int, c: int, zb: int):
    """PrimFunc(x float32[shape], t int32[257], y int8[shape]) = one call of cdriver/rq_tie.c's
    eecc_quantize_v6m(x, t, y, n, r, c, zb) (t: v6m_table; r, c, zb: quantize_v6m_constants), called straight
    from stage.c (targets/mcu_direct.py). The same y as quantize_search_kernel."""
    from tvm.script import tirx as T

    n, dims = int(np.prod(shape)), tuple(int(d) for d in shape)
    args = [T.int32(int(v)) for v in (n, r, c, zb)]

    @T.prim_func(private=True, s_tir=True)
    def kernel(x: T.Buffer(dims, "float32"), t: T.Buffer((257,), "int32"), y: T.Buffer(dims, "int8")):
        T.func_attr({"tirx.noalias": True, "op_pattern": 8})
        with T.sblock("extern"):
            xf = T.decl_buffer((n,), "float32", data=x.data)
            yf = T.decl_buffer((n,), "int8", data=y.data)
            T.evaluate(T.call_extern("int32", QUANT_V6M, T.address_of(xf[0]), T.address_of(t[0]),
                                     T.address_of(yf[0]), *args))

    return kernel


def v6m_table(scale: float, zero: int) -> np.ndarray:
    """int32[257]: thresholds(scale, zero), then INT32_MAX (stops eecc_quantize_v6m's upward step at j = 255)."""
    return np.concatenate([thresholds(scale, zero), [2**31 - 1]]).astype(np.int32)


def quantize_search_kernel(shape):
    """PrimFunc(x float32[shape], t int32[256], y int8[shape]): y = (the largest j with t[j] ≤ key(x)) - 128,
    t = thresholds(s, z)."""
    from tvm.script import tirx as T

    n, dims = int(np.prod(shape)), tuple(int(d) for d in shape)

    @T.prim_func(private=True, s_tir=True)
    def kernel(x: T.Buffer(dims, "float32"), t: T.Buffer((256,), "int32"), y: T.Buffer(dims, "int8")):
        T.func_attr({"tirx.noalias": True, "op_pattern": 8})
        with T.sblock("quantize"):
            xb = T.decl_buffer((n,), "int32", data=x.data)
            yf = T.decl_buffer((n,), "int8", data=y.data)
            j = T.alloc_buffer((1,), "int32", scope="local")
            for i in range(n):
                bits: T.let[T.int32] = xb[i]
                key: T.let[T.int32] = T.bitwise_xor(bits, T.bitwise_and(T.shift_right(bits, 31), 0x7FFFFFFF))
                j[0] = 0
                for b in T.unroll(8):
                    if t[j[0] + (128 >> b)] <= key:
                        j[0] = j[0] + (128 >> b)
                yf[i] = T.Cast("int8", j[0] - 128)

    return kernel


def dequantize_table(scale: float, zero: int) -> np.ndarray:
    """float32[256]: entry u is float32(int8(u) - z) · s (u = the byte of x)."""
    q = np.arange(256, dtype=np.uint8).view(np.int8).astype(np.int32)
    return (q - zero).astype(np.float32) * np.float32(scale)


def dequantize_kernel(shape):
    """PrimFunc(x int8[shape], table float32[256], y float32[shape]): y = table[byte of x]."""
    from tvm.script import tirx as T

    n, dims = int(np.prod(shape)), tuple(int(d) for d in shape)

    @T.prim_func(private=True, s_tir=True)
    def kernel(x: T.Buffer(dims, "int8"), tab: T.Buffer((256,), "float32"), y: T.Buffer(dims, "float32")):
        T.func_attr({"tirx.noalias": True, "op_pattern": 8})
        with T.sblock("dequantize"):
            xu = T.decl_buffer((n,), "uint8", data=x.data)
            yf = T.decl_buffer((n,), "float32", data=y.data)
            for i in range(n):
                yf[i] = tab[T.Cast("int32", xu[i])]

    return kernel


def extern_kernel(shape, in_dtype: str, out_dtype: str, symbol: str, *scalars: int):
    """PrimFunc(x in_dtype[shape], y out_dtype[shape]) = the cdriver/ops_fpu.c call symbol(x, y, n, *scalars):
    the element loop stays rolled, one copy per stage (Armv7E-M with an FPU only)."""
    from tvm.script import tirx as T

    n, dims = int(np.prod(shape)), tuple(int(d) for d in shape)
    args = [T.int32(int(v)) for v in scalars]

    @T.prim_func(private=True, s_tir=True)
    def kernel(x: T.Buffer(dims, in_dtype), y: T.Buffer(dims, out_dtype)):
        T.func_attr({"tirx.noalias": True, "op_pattern": 8})
        with T.sblock("extern"):
            xf = T.decl_buffer((n,), in_dtype, data=x.data)
            yf = T.decl_buffer((n,), out_dtype, data=y.data)
            T.evaluate(T.call_extern("int32", symbol, T.address_of(xf[0]), T.address_of(yf[0]), n, *args))

    return kernel


def f32_bits(value: float) -> int:
    """The float32 bit pattern of value as a signed int32 (how ops_fpu.c receives a scale)."""
    return int(np.float32(value).view(np.int32))


def _scalar(m, s, z):
    scale, zero = m[s].value.numpy(), m[z].value.numpy()
    if scale.size != 1 or zero.size != 1 or zero.dtype != np.int8:
        return None
    return float(scale.reshape(())), int(zero.reshape(()))


def quantize_rule(builder, kernels: str | None = None):
    """(pattern, rewriter) turning a per-tensor float32 -> int8 relax.quantize into extern_kernel's call of
    eecc_quantize_s8, or on cores without an FPU (kernels "plain") into quantize_search_kernel."""
    import tvm
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, wildcard

    x, s, z = wildcard(), is_const(), is_const()
    pattern = is_op("relax.quantize")(x, s, z)

    def rewrite(expr, m):
        sz = _scalar(m, s, z)
        if sz is None or m[x].ty.dtype != "float32" or expr.ty.dtype != "int8" or not sz[0] > 0:
            return expr
        if kernels != "plain" and isinstance(m[x], tvm.ir.expr.Constant):  # a constant's (a GELU's 1.0): FoldConstant
            return expr  # runs it at build time, where an extern C call would be JIT-run on the host and not found
        shape = [int(d) for d in m[x].ty.shape.values]
        if kernels == "plain" and isinstance(m[x], tvm.ir.expr.Constant):  # FoldConstant runs it on the host
            gv = builder.add_func(quantize_search_kernel(shape), "quantize_int8")
            return relax.call_tir(gv, [m[x], relax.const(thresholds(*sz), "int32")], relax.TensorType(shape, "int8"))
        if kernels == "plain":
            gv = builder.add_func(quantize_v6m_kernel(shape, *quantize_v6m_constants(*sz)), "quantize_int8")
            table = relax.const(v6m_table(*sz), "int32")
            return relax.call_tir(gv, [m[x], table], relax.TensorType(shape, "int8"))
        gv = builder.add_func(extern_kernel(shape, "float32", "int8", "eecc_quantize_s8", f32_bits(sz[0]),
                                            MAGIC_BITS - sz[1]), "quantize_int8")
        return relax.call_tir(gv, [m[x]], relax.TensorType(shape, "int8"))

    return pattern, rewrite


def dequantize_rule(builder, kernels: str | None = None):
    """(pattern, rewriter) turning a per-tensor int8 -> float32 relax.dequantize of ≥ TABLE_MIN elements
    into dequantize_kernel, or on cores with an FPU (kernels "dsp", any size but a constant's) into extern_kernel's
    call of eecc_dequantize_s8."""
    import tvm
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, wildcard

    x, s, z = wildcard(), is_const(), is_const()
    pattern = is_op("relax.dequantize")(x, s, z)

    def rewrite(expr, m):
        sz = _scalar(m, s, z)
        if sz is None or m[x].ty.dtype != "int8" or expr.ty.dtype != "float32":
            return expr
        shape = [int(d) for d in m[x].ty.shape.values]
        if int(np.prod(shape)) < TABLE_MIN and kernels != "dsp":  # the C loop has no table, and TVM's own
            return expr  # dequantize of even 12 logits is ~280 B of code
        if kernels == "dsp" and isinstance(m[x], tvm.ir.expr.Constant):  # a constant's (a MatMul's bias): TVM folds
            return expr  # it at build time, where an extern C call would be JIT-run on the host and not found
        if kernels == "dsp":
            gv = builder.add_func(extern_kernel(shape, "int8", "float32", "eecc_dequantize_s8", sz[1],
                                                f32_bits(sz[0])), "dequantize_fpu")
            return relax.call_tir(gv, [m[x]], relax.TensorType(shape, "float32"))
        gv = builder.add_func(dequantize_kernel(shape), "dequantize_int8")
        table = relax.const(dequantize_table(*sz), "float32")
        return relax.call_tir(gv, [m[x], table], relax.TensorType(shape, "float32"))

    return pattern, rewrite
