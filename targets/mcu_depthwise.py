"""Hand-scheduled TIR kernels for int8 depthwise convolutions on Cortex-M (see mcu_kernels for RQ, the
channel table and the conventions): y[c, p] = RQ(bias[c] + Σ_t W[c, t] · x̃[c, p + t]), x̃ = one channel
plane padded with the zero point zx."""

from __future__ import annotations

import numpy as np

from eecc.targets.mcu_requant import _rq, fpu_table, split_table

FILL = "eecc_fill_s16"  # cdriver/dot_dsp.c (Armv7E-M): LLVM unrolled this loop in TIR (~400 B per geometry)
DW3 = "eecc_dw3_dsp"  # cdriver/dot_dsp.c (Armv7E-M): one channel of a 3x3 stride-(sh, 1) depthwise conv


def depthwise2d(x_shape, w: np.ndarray, *, bias, scale, zx: int, zo: int, strides, pads, dsp: bool):
    """(PrimFunc(x, w, channels, y, scratch...), constants, outputs) for a depthwise NCHW conv (groups = C,
    one filter per channel). Each channel plane is first copied into a zx-padded scratch plane of x + 128
    bytes, so the tap loop has no bounds checks; the taps are unrolled, two outputs at a time. With `dsp`
    and 3-wide filters (stride 1 or 2) see _depthwise_dsp."""
    from tvm.script import tirx as T

    _, c, h, wd = (int(v) for v in x_shape)
    _, _, kh, kw = w.shape
    sh, sw = strides
    pt, pl, pb, pr = pads
    hp, wp = h + pt + pb, wd + pl + pr
    oh, ow = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    if dsp and (kh, kw, sw) == (3, 3, 1) and ow >= 2:
        return _depthwise_dsp3(x_shape, w, bias=bias, scale=scale, zx=zx, zo=zo, strides=strides, pads=pads)
    if dsp and kw == 3 and sw in (1, 2):
        return _depthwise_dsp(x_shape, w, bias=bias, scale=scale, zx=zx, zo=zo, strides=strides, pads=pads)
    # the plane holds x + 128 (LDRB with an offset on Armv6-M), so the bias takes -128·Σw
    bias = np.asarray(bias, np.int64).reshape(-1) - 128 * w.astype(np.int64).reshape(c, -1).sum(axis=1)
    table, window, split = fpu_table(bias, scale, w, c) + (False,) if dsp else split_table(bias, scale, w, c)
    consts = [np.ascontiguousarray(w.reshape(c, kh * kw)), table]
    owh, taps = -(-ow // 2), kh * kw  # two outputs of a row per step share each tap weight
    words = -(-(hp * wp + 2 * sw + kw) // 4)  # the spare second output of an odd row reads past the plane

    @T.prim_func(private=True, check_well_formed=False)
    def kernel(x: T.Buffer((1, c, h, wd), "int8"), wq: T.Buffer((c, taps), "int8"),
               cq: T.Buffer(table.shape, "int32"), y: T.Buffer((1, c, oh, ow), "int8"), acc: T.Buffer((2,), "int32"),
               tw: T.Buffer((taps,), "int32"), plane: T.Buffer((words,), "int32")):
        T.func_attr({"tirx.noalias": True})
        pu = T.decl_buffer((4 * words,), "uint8", data=plane.data)
        for i in range(4 * words):
            pu[i] = T.uint8(zx + 128)
        for ch in range(c):
            for r, q in T.grid(h, wd):
                pu[(r + pt) * wp + q + pl] = T.Cast("uint8", T.Cast("int32", x[0, ch, r, q]) + 128)
            for t in range(taps):
                tw[t] = T.Cast("int32", wq[ch, t])
            for r, j in T.grid(oh, owh):
                acc[0] = cq[ch, 0]
                acc[1] = cq[ch, 0]
                for ky in T.unroll(kh):
                    for kx in T.unroll(kw):
                        wt: T.let[T.int32] = tw[ky * kw + kx]
                        acc[0] = acc[0] + wt * T.Cast("int32", pu[(r * sh + ky) * wp + 2 * j * sw + kx])
                        acc[1] = acc[1] + wt * T.Cast("int32", pu[(r * sh + ky) * wp + (2 * j + 1) * sw + kx])
                y[0, ch, r, 2 * j] = _rq(T, acc[0], cq, ch, zo, window, halves=not dsp, ties=dsp, split=split)
                if 2 * j + 1 < ow:
                    y[0, ch, r, 2 * j + 1] = _rq(T, acc[1], cq, ch, zo, window, halves=not dsp, ties=dsp, split=split)

    return kernel, consts, [([1, c, oh, ow], "int8"), ([2], "int32"), ([taps], "int32"), ([words], "int32")]


def _depthwise_dsp(x_shape, w, *, bias, scale, zx, zo, strides, pads):
    """Depthwise 3-wide filters on Armv7E-M. The zx-padded int16 plane has an even row pitch, so every
    even column starts an aligned int32 pair (x0, x1). With A = (x0, x1), B = (x2, x3) of one filter row:

      stride 1, outputs j, j+1:  y_j += SMLAD((w0,w1), A) + SMLATB((w1,w2), B),  y_j+1 += SMLABT((w0,w1), A) + SMLAD((w1,w2), B)
      stride 2, output j:        y_j += SMLAD((w0,w1), A) + SMLATB((w1,w2), B)

    i.e. 6 MACs in 2 loads and 4 instructions at stride 1 (the scalar loop needs a load and a MAC each)."""
    from tvm.script import tirx as T

    _, c, h, wd = (int(v) for v in x_shape)
    _, _, kh, kw = w.shape
    sh, sw = strides
    pt, pl, pb, pr = pads
    hp, wp = h + pt + pb, wd + pl + pr
    oh, ow = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    owp = -(-ow // 2) if sw == 1 else ow  # output steps: pairs at stride 1
    pitch = max(wp, 2 * owp + 2 if sw == 1 else 2 * ow + 2)
    pitch += pitch % 2
    table, window = fpu_table(bias, scale, w, c)
    consts = [np.ascontiguousarray(w.reshape(c, kh * 3)), table]
    smlad, smlatb, smlabt = "llvm.arm.smlad", "llvm.arm.smlatb", "llvm.arm.smlabt"

    @T.prim_func(private=True, check_well_formed=False)
    def kernel(x: T.Buffer((1, c, h, wd), "int8"), wq: T.Buffer((c, kh * 3), "int8"),
               cq: T.Buffer((c, 2), "int32"),
               y: T.Buffer((1, c, oh, ow), "int8"), acc: T.Buffer((2,), "int32"), tw: T.Buffer((kh * 2,), "int32"),
               pairs: T.Buffer((hp * pitch // 2,), "int32")):
        T.func_attr({"tirx.noalias": True})
        plane = T.decl_buffer((hp * pitch,), "int16", data=pairs.data)
        T.evaluate(T.call_extern("int32", FILL, T.address_of(plane[0]), hp * pitch, zx))  # cdriver/dot_dsp.c
        for ch in range(c):
            for r, q in T.grid(h, wd):
                plane[(r + pt) * pitch + q + pl] = T.Cast("int16", x[0, ch, r, q])
            for ky in range(kh):  # (w0, w1) and (w1, w2) as int16 pairs, once per channel
                for t in range(2):
                    tw[2 * ky + t] = T.bitwise_or(T.bitwise_and(T.Cast("int32", wq[ch, 3 * ky + t]), 0xFFFF),
                                                  T.shift_left(T.Cast("int32", wq[ch, 3 * ky + t + 1]), 16))
            for r, j in T.grid(oh, owp):
                acc[0] = cq[ch, 0]
                acc[1] = cq[ch, 0]
                for ky in T.unroll(kh):
                    pa: T.let[T.int32] = pairs[(r * sh + ky) * pitch // 2 + j]
                    pb_: T.let[T.int32] = pairs[(r * sh + ky) * pitch // 2 + j + 1]
                    acc[0] = T.call_llvm_pure_intrin("int32", smlatb, tw[2 * ky + 1], pb_,
                                                     T.call_llvm_pure_intrin("int32", smlad, tw[2 * ky], pa, acc[0]))
                    if sw == 1:
                        acc[1] = T.call_llvm_pure_intrin("int32", smlad, tw[2 * ky + 1], pb_,
                                                         T.call_llvm_pure_intrin("int32", smlabt, tw[2 * ky], pa, acc[1]))
                if sw == 1:
                    y[0, ch, r, 2 * j] = _rq(T, acc[0], cq, ch, zo, window)
                    if 2 * j + 1 < ow:
                        y[0, ch, r, 2 * j + 1] = _rq(T, acc[1], cq, ch, zo, window)
                else:
                    y[0, ch, r, j] = _rq(T, acc[0], cq, ch, zo, window)

    return kernel, consts, [([1, c, oh, ow], "int8"), ([2], "int32"), ([kh * 2], "int32"),
                            ([hp * pitch // 2], "int32")]


def _depthwise_dsp3(x_shape, w, *, bias, scale, zx, zo, strides, pads):
    """Depthwise 3x3 at stride (sh, 1) on Armv7E-M, ow >= 2: _depthwise_dsp's zx-padded int16 plane and pair
    taps, each channel's outputs from cdriver/dot_dsp.c's eecc_dw3_dsp (weights, accumulators and row pointers
    in registers; kws cut 1 stage 0's 48-channel 25x5 depthwise: 151,041 -> 130,240 instructions, of which the
    plane copy is 14,032)."""
    from tvm.script import tirx as T

    _, c, h, wd = (int(v) for v in x_shape)
    sh, _ = strides
    pt, pl, pb, pr = pads
    hp, wp = h + pt + pb, wd + pl + pr
    oh, ow = (hp - 3) // sh + 1, wp - 2
    pitch = max(wp, 2 * -(-ow // 2) + 2)  # the last pair (or odd output) reads the word after it
    pitch += pitch % 2
    table, _ = fpu_table(bias, scale, w, c)  # any window: eecc_dw3_dsp's QADD saturates where _rq clamps
    consts = [np.ascontiguousarray(w.reshape(c, 9)), table]

    @T.prim_func(private=True, check_well_formed=False)
    def kernel(x: T.Buffer((1, c, h, wd), "int8"), wq: T.Buffer((c, 9), "int8"), cq: T.Buffer((c, 2), "int32"),
               y: T.Buffer((1, c, oh, ow), "int8"), pairs: T.Buffer((hp * pitch // 2,), "int32")):
        T.func_attr({"tirx.noalias": True, "op_pattern": 8})  # y is written by the call: opaque
        plane = T.decl_buffer((hp * pitch,), "int16", data=pairs.data)
        T.evaluate(T.call_extern("int32", FILL, T.address_of(plane[0]), hp * pitch, zx))  # cdriver/dot_dsp.c
        for ch in range(c):
            for r, q in T.grid(h, wd):
                plane[(r + pt) * pitch + q + pl] = T.Cast("int16", x[0, ch, r, q])
            T.evaluate(T.call_extern("int32", DW3, T.address_of(y[0, ch, 0, 0]), T.address_of(pairs[0]),
                                     T.address_of(wq[ch, 0]), T.address_of(cq[ch, 0]), oh, ow, 2 * pitch,
                                     2 * sh * pitch, zo))

    return kernel, consts, [([1, c, oh, ow], "int8"), ([hp * pitch // 2], "int32")]
