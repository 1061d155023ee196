"""Relax rewrite of onnxruntime's QDQ patterns to integer kernels with fixed-point requantisation.

TVM 0.27 imports a QDQ model as float ops between quantize and dequantize ("fake quant"). Each rule
below turns one such island into integer arithmetic on the int8 tensors themselves:

  Q(conv(DQ(x), DQ(W)) + DQ(b))   ->  RQ(conv(pad(x, zx), W:int8 -> int32) + (b - zx·ΣW))
  Q(matmul(DQ(x), DQ(W)ᵀ) + DQ(b)) ->  RQ(matmul(x, Wᵀ:int8 -> int32) + (b - zx·ΣW))
  Q(mean(DQ(x)))                   ->  RQ(sum(x:int32) - n·zx)             (global average pooling)
  Q(DQ(a) + DQ(b))                 ->  zo + ((a-za)·Ma + (b-zb)·Mb + ½) >> S   (residual add)
  Q(max_pool(DQ(x))), Q(reshape(DQ(x)))  ->  the same op on x (requantised if the scale changes)
  max_pool(DQ(x)) (a float result)  ->  DQ(max_pool(x))  (DQ increases for s > 0; -128 pads never win)

  RQ(acc) = clamp(zo + (hi32(acc·M0) + 2^(s-1)) >> s, -128, 127),  s_x·s_w/s_o = M0·2^-(32+s)

TFLite's single-rounding requantisation (a multiplier and shift per output channel, fixed_point.py), zx folded
into the int32 bias (x padded with zx). On microcontrollers convolutions become mcu_kernels' fused kernels, which
requantise as onnxruntime does (fixed_point.mlas_scale), stage-edge (de)quantisations mcu_quantize's. A pattern that
does not fit (uint8, asymmetric weights, another layout) is left as TVM imported it and stays correct.
"""

from __future__ import annotations

import numpy as np

from eecc.targets.fixed_point import HI_BITS, ROUND_BITS, fixed_point, fixed_point32, mlas_scale  # noqa: F401
from eecc.targets.int8_patterns import _P, _bias, _channel, _const, _io, _ndim, _np, _requantize, _saturate  # noqa: F401


def lower_int8(mod, *, kernels: str | None = None):
    """A new IRModule whose `main` computes every matched QDQ island in integers.

    kernels: None = TVM's own operators for everything; "plain" / "dsp" = convolutions become the
    hand-scheduled TIR kernels of mcu_kernels (padding and requantisation fused; "dsp" uses the
    Armv7E-M dual-MAC instructions, so it only builds for Cortex-M4/M7/M33 targets)."""
    import tvm
    from tvm import relax
    from tvm.relax.dpl import rewrite_call

    if kernels not in (None, "plain", "dsp"):
        raise ValueError(f"lower_int8: kernels must be None, 'plain' or 'dsp', not {kernels!r}")
    func, builder = mod["main"], relax.BlockBuilder(mod)
    for pattern, rewriter in _rules(kernels, builder, _read_by_islands(func)):
        func = rewrite_call(pattern, rewriter, func)
    out = tvm.IRModule({gv: f for gv, f in builder.get().functions.items() if gv.name_hint != "main"})
    out["main"] = func  # a reshape pair around mcu_kernels' H = 1 view of a 1-D conv: TVM would copy it
    return relax.transform.RemoveRedundantReshape()(relax.transform.DeadCodeElimination(["main"])(out))


def has_qdq(model) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


# ops that start a QDQ island of the rules below when they read a dequantize
ISLAND_OPS = {"relax.matmul", "relax.nn.conv1d", "relax.nn.conv2d", "relax.add", "relax.mean", "relax.nn.max_pool1d",
              "relax.nn.max_pool2d", "relax.reshape", "relax.permute_dims"}


def _read_by_islands(func) -> list:
    """The dequantize calls bound in `func` whose result an op of ISLAND_OPS reads: a DequantizeLinear there must stay
    for that island's rule (fused into the FC before it, the island's Gemm ran as TVM's float matmul: an MLP's int8
    stage on the M4, mlp unit 1010: 349,447 of 407,932 instructions)."""
    from tvm import relax

    bound = [(b.var, b.value) for block in func.body.blocks for b in block.bindings]

    def value_of(arg):
        return next((v for var, v in bound if var.same_as(arg)), None) if isinstance(arg, relax.Var) else None

    reads = []
    for _, value in bound:
        if isinstance(value, relax.Call) and getattr(value.op, "name", None) in ISLAND_OPS:
            reads += [v for v in map(value_of, value.args)
                      if isinstance(v, relax.Call) and getattr(v.op, "name", None) == "relax.dequantize"]
    return reads


def _rules(kernels: str | None = None, builder=None, keep=()):
    from eecc.targets.mcu_pool import pool_rule
    from eecc.targets.mcu_quantize import dequantize_rule, quantize_rule

    dsp = builder if kernels == "dsp" else None  # mcu_dense's C loops: Armv7E-M with an FPU
    fused_dq = [_matmul_rule(True, dsp, True, keep), _matmul_rule(False, dsp, True, keep)] if dsp else []  # first
    rules = [_conv_rule(True, kernels, builder), _conv_rule(False, kernels, builder), *fused_dq,
             _matmul_rule(True, dsp), _matmul_rule(False, dsp), _mean_rule(dsp), _add_rule(),
             _passthrough_rule("relax.nn.max_pool2d"), _passthrough_rule("relax.nn.max_pool1d"),
             _passthrough_rule("relax.reshape"), _pool_first_rule()]
    # what is left on microcontrollers: the stage input's quantize and the outputs' dequantize
    mcu = [quantize_rule(builder, kernels), dequantize_rule(builder, kernels)]
    mcu += [pool_rule(builder)] if kernels == "dsp" else []  # last: after the rules that make int8 pools
    return rules if kernels is None else rules + mcu


def _conv_rule(with_bias: bool, kernels: str | None = None, builder=None):
    from tvm import relax

    from eecc.targets import mcu_kernels

    p = _P()
    dqw, (w, sw, zw) = p.dq_const()
    conv = p.is_op("relax.nn.conv2d")(p.dqx, dqw) | p.is_op("relax.nn.conv1d")(p.dqx, dqw)
    bias = None
    root = conv
    if with_bias:
        dqb, bias = p.dq_const()
        root = p.is_op("relax.add")(conv, p.is_op("relax.reshape")(dqb, p.wildcard()) | dqb)
    pattern = p.q(root)

    def rewrite(expr, m):
        io = _io(p, m)
        call = m[conv]
        weights, scales, zeros = _np(m, w), _np(m, sw).astype(np.float64), _np(m, zw)
        attrs = call.attrs
        two_d = call.op.name == "relax.nn.conv2d"
        layouts = (attrs.data_layout, attrs.kernel_layout) == (("NCHW", "OIHW") if two_d else ("NCW", "OIW"))
        if io is None or weights.dtype != np.int8 or np.any(zeros != 0) or not layouts:
            return expr
        sx, zx, so, zo = io
        cout = weights.shape[0]
        acc_scale = sx * np.broadcast_to(scales.reshape(-1), (cout,))
        pads = [int(v) for v in attrs.padding]
        spatial = len(pads) // 2
        folded = _bias(m, bias, acc_scale, cout) - zx * weights.astype(np.int64).reshape(cout, -1).sum(axis=1)
        if kernels is not None and mcu_kernels.fits(call, weights, kernels):
            return mcu_kernels.relax_call(m[p.x], weights, folded, mlas_scale(sx, scales, so), zx, zo, attrs, pads,
                                          kernels, builder)
        width = [0, 0, 0, 0] + [v for i in range(spatial) for v in (pads[i], pads[i + spatial])]
        x = relax.op.nn.pad(m[p.x], width, pad_value=float(zx)) if any(pads) else m[p.x]
        op = relax.op.nn.conv2d if two_d else relax.op.nn.conv1d
        acc = op(x, _const(weights, "int8"), strides=[int(s) for s in attrs.strides], padding=[0] * len(pads),
                 dilation=[int(d) for d in attrs.dilation], groups=int(attrs.groups),
                 data_layout=attrs.data_layout, kernel_layout=attrs.kernel_layout, out_dtype="int32")
        ndim = 2 + spatial
        acc = relax.op.add(acc, _const(_channel(folded, ndim), "int32"))
        return _requantize(acc, acc_scale / so, zo, ndim)

    return pattern, rewrite


def _matmul_rule(with_bias: bool, dsp=None, dequantized: bool = False, keep=()):
    """dsp: a BlockBuilder where a [1, K] input becomes mcu_dense's C loop; `dequantized` (with dsp): only the
    pattern with a per-tensor DequantizeLinear after it, which that loop then computes too, unless the
    DequantizeLinear is one of `keep` (_read_by_islands)."""
    from tvm import relax

    from eecc.targets import mcu_dense

    p = _P()
    dqw, (w, sw, zw) = p.dq_const()
    transposed = p.is_op("relax.permute_dims")(dqw)
    mm = p.is_op("relax.matmul")(p.dqx, transposed | dqw)
    bias, root = None, mm
    if with_bias:
        dqb, bias = p.dq_const()
        root = p.is_op("relax.add")(mm, dqb)
    pattern, s2, z2 = p.q(root), p.is_const(), p.is_const()
    if dequantized:
        pattern = p.is_op("relax.dequantize")(pattern, s2, z2)

    def rewrite(expr, m):
        io = _io(p, m)
        weights, scales, zeros = _np(m, w), _np(m, sw).astype(np.float64), _np(m, zw)
        if io is None or weights.dtype != np.int8 or weights.ndim != 2 or np.any(zeros != 0):
            return expr
        if _ndim(m[p.x]) != 2:
            return expr
        sx, zx, so, zo = io
        kn = weights.T if transposed in m else weights  # [K, N]; per-channel scales follow N either way
        if transposed in m and [int(a) for a in m[transposed].attrs.axes] != [1, 0]:
            return expr
        n = kn.shape[1]
        acc_scale = sx * np.broadcast_to(scales.reshape(-1), (n,))
        acc = relax.op.matmul(m[p.x], _const(np.ascontiguousarray(kn), "int8"), out_dtype="int32")
        folded = _bias(m, bias, acc_scale, n) - zx * kn.astype(np.int64).sum(axis=0)
        if dequantized and any(expr.same_as(k) for k in keep):
            return expr
        if dsp is not None and int(m[p.x].ty.shape.values[0]) == 1:
            dq = (_np(m, s2), _np(m, z2)) if dequantized else None
            if dq is not None and (dq[0].size != 1 or dq[1].dtype != np.int8 or expr.ty.dtype != "float32"):
                return expr
            dq = dq and (float(dq[0].reshape(())), int(dq[1].reshape(())))
            return mcu_dense.fc_call(dsp, m[p.x], kn, folded, acc_scale / so, zo, dq)
        if dequantized:
            return expr
        acc = relax.op.add(acc, _const(folded.reshape(1, n), "int32"))
        return _requantize(acc, acc_scale / so, zo, 2)

    return pattern, rewrite


def _mean_rule(dsp=None):
    """dsp: a BlockBuilder where a mean over the last axes becomes mcu_dense's C loop."""
    from tvm import relax

    from eecc.targets import mcu_dense

    p = _P()
    mean = p.is_op("relax.mean")(p.dqx)
    pattern = p.q(mean)

    def rewrite(expr, m):
        io = _io(p, m)
        if io is None:
            return expr
        sx, zx, so, zo = io
        call = m[mean]
        shape = [int(d) for d in m[p.x].ty.shape.values]
        axes = [int(a) % len(shape) for a in call.attrs.axis] if call.attrs.axis is not None else range(len(shape))
        count = int(np.prod([shape[a] for a in axes]))
        if dsp is not None and sorted(axes) == list(range(len(shape) - len(axes), len(shape))):
            return mcu_dense.mean_call(dsp, m[p.x], count, zx, np.float64(sx) / (so * count), zo, expr.ty)
        acc = relax.op.sum(relax.op.astype(m[p.x], "int32"), axis=list(axes), keepdims=bool(call.attrs.keepdims))
        acc = relax.op.add(acc, _const(-count * zx, "int32"))
        return _requantize(acc, np.float64(sx) / (so * count), zo, _ndim(call))

    return pattern, rewrite


def _add_rule():
    from tvm import relax

    p = _P()
    y, sy, zy = p.wildcard(), p.is_const(), p.is_const()
    dqy = p.is_op("relax.dequantize")(y, sy, zy)
    pattern = p.q(p.is_op("relax.add")(p.dqx, dqy))

    def rewrite(expr, m):
        io = _io(p, m)
        s2, z2 = _np(m, sy), _np(m, zy)
        if io is None or s2.size != 1 or z2.dtype != np.int8 or m[y].ty.dtype != "int8":
            return expr
        sx, zx, so, zo = io
        ratios = np.array([sx / so, float(s2.reshape(())) / so])
        shift = ROUND_BITS - 1 - int(np.ceil(np.log2(ratios.max())))  # both products fit 2^31 · 2^8
        ma, mb = np.round(ratios * 2.0 ** shift).astype(np.int64)
        a = relax.op.subtract(relax.op.astype(m[p.x], "int64"), _const(zx, "int64"))
        b = relax.op.subtract(relax.op.astype(m[y], "int64"), _const(int(z2.reshape(())), "int64"))
        acc = relax.op.add(relax.op.multiply(a, _const(ma, "int64")), relax.op.multiply(b, _const(mb, "int64")))
        acc = relax.op.add(acc, _const(1 << (shift - 1), "int64"))
        acc = relax.op.right_shift(acc, _const(shift, "int64"))
        return _saturate(relax.op.add(acc, _const(zo, "int64")))

    return pattern, rewrite


def _passthrough_rule(op_name: str):
    """Ops that commute with an affine int8 encoding: max pooling and reshapes run on x itself."""
    from tvm import relax

    p = _P()
    inner = p.is_op(op_name)(p.dqx, p.wildcard()) if op_name == "relax.reshape" else p.is_op(op_name)(p.dqx)
    pattern = p.q(inner)

    def rewrite(expr, m):
        io = _io(p, m)
        if io is None:
            return expr
        sx, zx, so, zo = io
        call = m[inner]
        y = relax.Call(call.op, [m[p.x], *call.args[1:]], call.attrs)
        if sx == so and zx == zo:
            return y
        acc = relax.op.subtract(relax.op.astype(y, "int32"), _const(zx, "int32"))
        return _requantize(acc, np.float64(sx) / so, zo, _ndim(call))

    return pattern, rewrite


def _pool_first_rule():
    """A float max pool of a per-tensor int8 DequantizeLinear (an exit head reading the dequantised hand-off)
    runs on the int8 tensor; only its smaller result is dequantised."""
    from tvm import relax

    p = _P()
    pattern = p.is_op("relax.nn.max_pool2d")(p.dqx) | p.is_op("relax.nn.max_pool1d")(p.dqx)

    def rewrite(expr, m):
        sx, zx = _np(m, p.sx), _np(m, p.zx)
        if sx.size != 1 or zx.dtype != np.int8 or m[p.x].ty.dtype != "int8" or not float(sx.reshape(())) > 0:
            return expr
        pooled = relax.Call(expr.op, [m[p.x], *expr.args[1:]], expr.attrs)
        return relax.op.dequantize(pooled, m[p.sx], m[p.zx], axis=m[p.dqx].attrs.axis, out_dtype="float32")

    return pattern, rewrite
