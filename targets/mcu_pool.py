"""int8 max pooling on Armv7E-M with an FPU: one rolled C loop nest per stage (cdriver/ops_fpu.c).

TVM's topi max pool is correct but LLVM unrolls its window loops into straight code, one copy per pool
geometry (kws search stage 0: 1,264 B for a 13 x 3 window, 6 % of the int8 stage's flash). The rule
replaces an int8 relax.nn.max_pool2d (NCHW, batch 1, dilation 1) by a PrimFunc that calls
eecc_maxpool_s8(x, y, C, H, W, OH, OW, KH, KW, SH, SW, PT, PL): the geometry is arguments, so every pool
of a stage shares the loop (separable: the window rows' column maxima 4 int8 lanes per SSUB8 + SEL, then the
window columns). Output shape, padding and ceil_mode come from Relax's own shape inference
(the call's type), so the result is TVM's: max over the window taps inside the image (TVM pads with
-128, the int8 minimum, which never wins).
"""

from __future__ import annotations

SYMBOL = "eecc_maxpool_s8"


def pool_kernel(x_shape, y_shape, pool, strides, pads):
    """PrimFunc(x int8[1, C, H, W], y int8[1, C, OH, OW]) calling SYMBOL; pads (top, left, ...)."""
    from tvm.script import tirx as T

    _, c, h, w = (int(v) for v in x_shape)
    oh, ow = int(y_shape[2]), int(y_shape[3])
    geometry = [c, h, w, oh, ow, int(pool[0]), int(pool[1]), int(strides[0]), int(strides[1]), int(pads[0]),
                int(pads[1])]
    args = [T.int32(v) for v in geometry]

    @T.prim_func(private=True, s_tir=True)
    def kernel(x: T.Buffer((1, c, h, w), "int8"), y: T.Buffer((1, c, oh, ow), "int8")):
        T.func_attr({"tirx.noalias": True, "op_pattern": 8})
        with T.sblock("max_pool"):
            T.evaluate(T.call_extern("int32", SYMBOL, T.address_of(x[0, 0, 0, 0]), T.address_of(y[0, 0, 0, 0]),
                                     *args))

    return kernel


def pool_rule(builder):
    """(pattern, rewriter): an int8 relax.nn.max_pool2d -> relax.call_tir of pool_kernel (others untouched)."""
    from tvm import relax
    from tvm.relax.dpl import is_op, wildcard

    x = wildcard()
    pattern = is_op("relax.nn.max_pool2d")(x)

    def rewrite(expr, m):
        a, ty = expr.attrs, expr.ty
        x_shape = [int(d) for d in m[x].ty.shape.values]
        if (m[x].ty.dtype != "int8" or len(x_shape) != 4 or x_shape[0] != 1 or a.layout != "NCHW"
                or a.out_layout != "NCHW" or any(int(d) != 1 for d in a.dilation)):
            return expr
        y_shape = [int(d) for d in ty.shape.values]
        func = pool_kernel(x_shape, y_shape, a.pool_size, a.strides, [int(p) for p in a.padding])
        gv = builder.add_func(func, "max_pool2d_int8")
        return relax.call_tir(gv, [m[x]], relax.TensorType(y_shape, "int8"))

    return pattern, rewrite
