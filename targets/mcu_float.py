"""fp32 convolutions on the Cortex-M4F as hand-scheduled TIR kernels (the int8 kernels' tile, in float).

  conv2d(x, W) -> call_tir(conv2d_f32, x, W[O2, K]):  y[o, p] = Σ_k W[o, k] · col_p[k]

A 2 output channels × 2 pixels tile keeps four accumulators in FPU registers, so each weight and each
input value loaded serves two MACs (TVM's default schedule reloads both for every MAC). A 1-D conv
(NCW) runs as the 2-D kernel with H = 1 on the same bytes: TVM's own conv1d unrolled the input channels
with register spills that depend on Cin and the length (6.6-8.2 instructions per MAC on cnn1d). The bias, ReLU
and residual adds stay in TVM's fused elementwise kernels after it. Products and sums stay separate
VMUL/VADD: the Cortex-M4 issues VFMA in 3 cycles against 1 + 1 (Cortex-M4 TRM, FPU instruction
timing), which is also why LLVM does not fuse them for this core.
"""

from __future__ import annotations

import numpy as np


def conv2d_f32(x_shape, w: np.ndarray, *, strides, pads, bias=None, relu: bool = False):
    """(PrimFunc(x, w, b, y, acc, col), [w packed [O2, K], bias [O2]], [(shape, dtype)] of y and the two
    scratch outputs) for a groups=1 NCHW float32 conv, + bias, then max(·, 0) if relu; pads (top, left,
    bottom, right). A 1-D conv: x_shape [1, C, L], w [O, C, K], strides (1, s), pads (0, left, 0, right);
    its x and y buffers keep their 3-D shapes (the kernel reads them as H = 1 planes)."""
    from tvm.script import tirx as T

    x_shape, w_shape = [int(v) for v in x_shape], tuple(int(v) for v in w.shape)
    _, c, h, wd = x_shape if len(x_shape) == 4 else [*x_shape[:2], 1, x_shape[2]]
    o, _, kh, kw = w_shape if len(w_shape) == 4 else (*w_shape[:2], 1, w_shape[2])
    sh, sw = strides
    pt, pl, pb, pr = pads
    oh, ow = (h + pt + pb - kh) // sh + 1, (wd + pl + pr - kw) // sw + 1
    k, o2, npix = c * kh * kw, o + o % 2, oh * ow
    npp = -(-npix // 2)
    packed = np.zeros((o2, k), np.float32)
    packed[:o] = w.reshape(o, k)
    b = np.zeros(o2, np.float32)
    b[:o] = 0 if bias is None else np.asarray(bias, np.float32).reshape(o)
    floor = T.float32(0) if relu else T.float32(-np.inf)
    y_shape = [1, o, oh, ow] if len(x_shape) == 4 else [1, o, ow]

    @T.macro
    def col_fill(col, x, y0, x0, base):
        for ci, ky, kx in T.grid(c, kh, kw):
            col[base + (ci * kh + ky) * kw + kx] = T.if_then_else(
                (y0 + ky >= pt) and (y0 + ky < h + pt) and (x0 + kx >= pl) and (x0 + kx < wd + pl),
                x[0, ci, T.max(T.min(y0 + ky - pt, h - 1), 0), T.max(T.min(x0 + kx - pl, wd - 1), 0)], T.float32(0))

    @T.prim_func(private=True, check_well_formed=False)
    def kernel(xs: T.Buffer(x_shape, "float32"), wq: T.Buffer((o2, k), "float32"), bq: T.Buffer((o2,), "float32"),
               y: T.Buffer(y_shape, "float32"), acc: T.Buffer((4,), "float32"),
               col: T.Buffer((2 * k,), "float32")):
        T.func_attr({"tirx.noalias": True})
        x = T.decl_buffer((1, c, h, wd), "float32", data=xs.data)
        yf = T.decl_buffer((o * npix,), "float32", data=y.data)
        for q in range(npp):
            for p in range(2):
                col_fill(col, x, T.min(2 * q + p, npix - 1) // ow * sh, T.min(2 * q + p, npix - 1) % ow * sw, p * k)
            for j in range(o2 // 2):
                for a in T.unroll(4):
                    acc[a] = bq[2 * j + a // 2]
                for i in range(k):
                    wa: T.let[T.float32] = wq[2 * j, i]
                    wb: T.let[T.float32] = wq[2 * j + 1, i]
                    c0: T.let[T.float32] = col[i]
                    c1: T.let[T.float32] = col[k + i]
                    acc[0] = acc[0] + wa * c0
                    acc[1] = acc[1] + wa * c1
                    acc[2] = acc[2] + wb * c0
                    acc[3] = acc[3] + wb * c1
                for a in T.unroll(4):
                    if 2 * j + a // 2 < o and 2 * q + a % 2 < npix:
                        yf[(2 * j + a // 2) * npix + 2 * q + a % 2] = T.max(acc[a], floor)

    return kernel, [packed, b], [(y_shape, "float32"), ([4], "float32"), ([2 * k], "float32")]


def lower_float_convs(mod):
    """A new IRModule whose float32 groups=1 NCHW (and NCW) convolutions with constant weights (and their
    constant bias add and ReLU, when they follow) call conv2d_f32."""
    import tvm
    from tvm import relax
    from tvm.relax.dpl import rewrite_call

    builder = relax.BlockBuilder(mod)
    main = mod["main"]
    for with_bias, relu in ((True, True), (True, False), (False, False)):
        main = rewrite_call(*_rule(with_bias, relu, builder), main)
    out = tvm.IRModule({gv: f for gv, f in builder.get().functions.items() if gv.name_hint != "main"})
    out["main"] = main
    return relax.transform.DeadCodeElimination(["main"])(out)


def _rule(with_bias: bool, relu: bool, builder):
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, wildcard

    x, w, b = wildcard(), is_const(), is_const()
    conv = is_op("relax.nn.conv2d")(x, w) | is_op("relax.nn.conv1d")(x, w)
    root = is_op("relax.add")(conv, b | is_op("relax.reshape")(b, wildcard())) if with_bias else conv
    root = is_op("relax.nn.relu")(root) if relu else root

    def rewrite(expr, m):
        attrs, weights = m[conv].attrs, m[w].value.numpy()
        shape = [int(d) for d in m[x].ty.shape.values]
        bias = m[b].value.numpy() if with_bias else None
        two_d = m[conv].op.name == "relax.nn.conv2d"
        if (weights.dtype != np.float32 or str(m[conv].ty.dtype) != "float32" or int(attrs.groups) != 1
                or (attrs.data_layout, attrs.kernel_layout) != (("NCHW", "OIHW") if two_d else ("NCW", "OIW"))
                or shape[0] != 1 or any(int(d) != 1 for d in attrs.dilation)
                or (bias is not None and bias.size != weights.shape[0])):
            return expr
        strides, pads = [int(s) for s in attrs.strides], [int(p) for p in attrs.padding]
        if not two_d:  # (left, right) -> (top, left, bottom, right) of an H = 1 plane
            strides, pads = [1, strides[0]], [0, pads[0], 0, pads[1]]
        func, consts, outs = conv2d_f32(shape, weights, strides=strides, pads=pads, bias=bias, relu=relu)
        gv = builder.add_func(func, "conv2d_f32")
        call = relax.call_tir(gv, [m[x], *(relax.const(a, "float32") for a in consts)],
                              [relax.TensorType(s, dt) for s, dt in outs])
        return relax.TupleGetItem(call, 0)

    return root, rewrite
