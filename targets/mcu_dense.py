"""int8 global average pooling and fully connected layers on Armv7E-M with an FPU: rolled C loops
(cdriver/ops_fpu.c eecc_mean_s8, eecc_fc_s8) instead of TVM's sum and matmul, which LLVM unrolled into one
straight copy per shape (kws: a 125-tap sum 774 B, a 48-input classifier 916 B with its int64 requantisation).

Same arithmetic as int8_lowering's _mean_rule / _matmul_rule, so the same bits: the int32 accumulator
(bias with the input zero point folded in), then TFLite's single rounding clamp(zo + ((acc·M0 + 2^(n-1)) >> n))
with (M0, n) = fixed_point.fixed_point per channel.
"""

from __future__ import annotations

import numpy as np

from eecc.targets.fixed_point import fixed_point

MEAN, FC = "eecc_mean_s8", "eecc_fc_s8"


def mean_call(builder, x, count: int, zx: int, multiplier: float, zo: int, out_ty):
    """relax.call_tir of eecc_mean_s8 over x int8 [..., count] (the reduced axes last and contiguous)."""
    from tvm import relax
    from tvm.script import tirx as T

    shape = [int(d) for d in x.ty.shape.values]
    c = int(np.prod(shape)) // count
    m0, n = fixed_point(multiplier)
    out = [int(d) for d in out_ty.shape.values]
    x_dims, y_dims = tuple(shape), tuple(out)
    scalars = [T.int32(int(v)) for v in (c, count, -count * zx, m0, n, zo)]

    @T.prim_func(private=True, s_tir=True)
    def kernel(xb: T.Buffer(x_dims, "int8"), yb: T.Buffer(y_dims, "int8")):
        T.func_attr({"tirx.noalias": True, "op_pattern": 8})
        with T.sblock("mean"):
            xf = T.decl_buffer((c * count,), "int8", data=xb.data)
            yf = T.decl_buffer((c,), "int8", data=yb.data)
            T.evaluate(T.call_extern("int32", MEAN, T.address_of(xf[0]), T.address_of(yf[0]), *scalars))

    gv = builder.add_func(kernel, "mean_int8")
    return relax.call_tir(gv, [x], relax.TensorType(out, "int8"))


def fc_table(bias: np.ndarray, m0: np.ndarray, n: np.ndarray) -> np.ndarray:
    """eecc_fc_s8's per-row table, int32 words: (bias, M0) per row, then every row's shift n (1..62,
    fixed_point.fixed_point) as one byte, zero-padded to a word: 9 B a row, not 12."""
    shifts = np.concatenate([np.asarray(n).astype(np.int8), np.zeros(-len(n) % 4, np.int8)]).view(np.int32)
    return np.concatenate([np.stack([np.asarray(bias, np.int64), m0], axis=1).astype(np.int32).reshape(-1), shifts])


def fc_call(builder, x, kn: np.ndarray, folded: np.ndarray, multiplier: np.ndarray, zo: int,
            dequantize: tuple[float, int] | None = None):
    """relax.call_tir of eecc_fc_s8: x int8 [1, K] times kn int8 [K, N] plus folded int32 [N], requantised
    with `multiplier` per output (s_x·s_w/s_o): int8 [1, N], or with `dequantize` (scale, zero point of a
    DequantizeLinear after it) that float32 [1, N]: TVM's own dequantize of even 12 logits is ~300 B of code."""
    from tvm import relax
    from tvm.script import tirx as T

    from eecc.targets.mcu_quantize import f32_bits

    k, n_out = kn.shape
    m0, n = fixed_point(np.broadcast_to(np.asarray(multiplier, np.float64).reshape(-1), (n_out,)))
    table = fc_table(folded, m0, n)
    # [N, K] rows, then the spare bytes eecc_fc_s8's tail step reads past the last row (k % 4: 4 - k % 4 zeros)
    weights = np.concatenate([np.ascontiguousarray(kn.T).reshape(-1), np.zeros(-k % 4, np.int8)])
    out_dtype = "int8" if dequantize is None else "float32"
    dq = [0, 0] if dequantize is None else [f32_bits(dequantize[0]), dequantize[1]]

    @T.prim_func(private=True, s_tir=True)
    def kernel(xb: T.Buffer((1, k), "int8"), wb: T.Buffer((weights.size,), "int8"), tb: T.Buffer((table.size,), "int32"),
               yb: T.Buffer((1, n_out), out_dtype)):
        T.func_attr({"tirx.noalias": True, "op_pattern": 8})
        with T.sblock("fc"):
            T.evaluate(T.call_extern("int32", FC, T.address_of(xb[0, 0]), T.address_of(wb[0]),
                                     T.address_of(tb[0]), T.address_of(yb[0, 0]), k, n_out, zo, *dq))

    gv = builder.add_func(kernel, "dense_int8")
    args = [x, relax.const(weights, "int8"), relax.const(table, "int32")]
    return relax.call_tir(gv, args, relax.TensorType([1, n_out], out_dtype))
