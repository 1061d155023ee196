"""Hand-scheduled TIR kernels for int8 convolutions on Cortex-M, with requantisation and padding fused.

  conv2d:    y[o, p] = RQ(bias[o] + Σ_k W[o, k] · col_p[k]),  col_p = the K = C·KH·KW inputs of output
             pixel p (zero point where the window leaves the image), built once per pixel pair
  depthwise: y[c, p] = RQ(bias[c] + Σ_t W[c, t] · x̃[c, p + t]),  x̃ = a channel plane padded with zx (mcu_depthwise)
  RQ(acc) = clamp(zo + ((hi32(acc · M0) + 2^(s-1)) >> s), -128, 127)

With `dsp` (Armv7E-M) the tile is 2 output channels × 2 pixels; weights sit in flash as int8 words with bytes
(a0, a2, a1, a3), so `SXTB16` and `SXTB16 ROR 8` give the int16 pairs (a0, a1), (a2, a3) that `SMLAD` multiplies
by two inputs at once (CMSIS-NN's scheme); the two channels' words alternate (one LDRD). Without it (Armv6-M,
host tests) the tile is 1 channel × 2 pixels of plain multiplies. The tiles' inner loops, and on Armv7E-M the
pixel columns of some convs (column_in_c), are hand-written C in cdriver (dot_dsp.c, dot_v6m.c) that the TIR
calls: LLVM spilled the tile, and unrolled the column copy into straight code.

Per-channel constants (RQ and its tables: mcu_requant): an [O, 4] int32 table on Armv6-M (split_table); with an
FPU the two columns the float requantisation reads, [O, 2] (fpu_table: bias, bits of S), and the DSP conv's table carries
zo in one more row, so convs of one geometry and input zero point are one PrimFunc (Relax's add_func returns
the existing function for a structurally equal one), then the geometry a C column function reads.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from eecc.targets.mcu_requant import _rq, fpu_table, split_table

# Armv6-M (eight low registers, no DSP, LDRSB only with a register offset): the plain kernels keep the
# column / plane as x + 128 bytes (LDRB with an immediate offset) and the bias takes -128·Σw; hi32 comes
# from 16-bit halves (no 32x32->64 multiply). Measured under QEMU on the M0+ they beat TVM's schedule on
# every conv of the kws and ResNet fixtures (kws 7.50 -> 6.78, ResNet 6.88 -> 5.76 instructions/MAC).

V6M_DOT = "eecc_dot2_v6m"  # cdriver/dot_v6m.c: the plain tile's inner loop, linked with every Armv6-M stage
V6M_DOT4 = "eecc_dot4_v6m"  # the same, four pixels (convs with >= 4 output pixels: plain_column)
V6M_COL4 = "eecc_col4_pw_v6m"  # cdriver/dot_v6m.c: the four-pixel column of such a conv
V6M_COLW = "eecc_col4_win_v6m"  # cdriver/dot_v6m.c: the four-pixel column of any other conv (plain_column)
DSP_DOT = "eecc_conv2x2_dsp"  # cdriver/dot_dsp.c: the DSP tile with its requantisation, every Armv7E-M stage
COL, COL_PW = "eecc_col2_s16", "eecc_col2_pw_s16"  # cdriver/dot_dsp.c: the DSP conv's pixel-pair columns
COL_R4 = "eecc_col2_r4_s16"  # cdriver/dot_dsp.c: one input channel, 4-wide window: a word per window row
MACS = {"dsp": DSP_DOT, "plain": V6M_DOT}
RQ_TIE = "eecc_rq_tie"  # cdriver/rq_tie.c: RQ next to a tie (Armv6-M)
DSP_CPUS = ("cortex-m4", "cortex-m7", "cortex-m33", "cortex-m35p", "cortex-m55", "cortex-m85")


def kernel_kind(target) -> str | None:
    """Which int8 convolution kernels a target gets: "dsp" (M cores with the DSP extension), "plain"
    (other M cores), None (not a microcontroller: TVM's own operators)."""
    mtriple, mcpu = str(target.attrs.get("mtriple", "")), str(target.attrs.get("mcpu", ""))
    if not mtriple.startswith("thumb"):
        return None
    return "dsp" if mcpu in DSP_CPUS else "plain"


def pack_weights(w: np.ndarray, dsp: bool) -> tuple[np.ndarray, int, int]:
    """[O, C, KH, KW] int8 -> ([O2, KP] int8, or [O2/2, KP/2] int32 words for SMLAD), KP, O2: K padded to a
    multiple of 4 and O to even with zero weights (their outputs are computed and never stored). The SMLAD
    words of channels 2j and 2j+1 alternate (word 2i + t = channel 2j+t, k = 4i..4i+3), so the kernel loads
    both with one LDRD from one pointer."""
    o, k = w.shape[0], int(np.prod(w.shape[1:]))
    kp, o2 = -(-k // 4) * 4, o + o % 2
    flat = np.zeros((o2, kp), np.int8)
    flat[:o, :k] = w.reshape(o, k)
    if not dsp:
        return flat, kp, o2
    ordered = flat.reshape(o2 // 2, 2, kp // 4, 4)[:, :, :, [0, 2, 1, 3]].transpose(0, 2, 1, 3)
    return np.ascontiguousarray(ordered).view("<i4").reshape(o2 // 2, kp // 2), kp, o2


class _Conv(NamedTuple):
    """Geometry of one groups=1 conv: input [1, c, h, wd], o output channels, kh x kw window, strides,
    padding top/left, output oh x ow = npix pixels (npp pairs), K = c·kh·kw padded to kp, O to o2."""
    c: int
    h: int
    wd: int
    o: int
    kh: int
    kw: int
    sh: int
    sw: int
    pt: int
    pl: int
    oh: int
    ow: int
    k: int
    kp: int
    o2: int
    npix: int
    npp: int


def conv2d(x_shape, w: np.ndarray, *, bias, scale, zx: int, zo: int, strides, pads, dsp: bool,
           mac: str | None = None):
    """(PrimFunc(x, w, channels, y, acc, col), [w, channels] constants (see mcu_requant.requant_table), [(shape, dtype)] of y
    and of the two scratch outputs, which are outputs rather than allocations: TVM would put allocations on the
    workspace allocator, noalias parameters keep the accumulators in registers) for a groups=1 NCHW conv.
    x_shape [1, C, H, W]; w [O, C, KH, KW] int8; pads (top, left, bottom, right); bias int32 and scale float32
    (fixed_point.mlas_scale) per output channel. mac: the C symbol of the tile's inner loop (MACS: DSP_DOT with
    `dsp`; V6M_DOT on Armv6-M, else a TIR loop for host tests, and then the near-tie requantisation calls RQ_TIE)."""
    _, c, h, wd = (int(v) for v in x_shape)
    o, _, kh, kw = w.shape
    pt, pl, pb, pr = pads
    oh, ow = (h + pt + pb - kh) // strides[0] + 1, (wd + pl + pr - kw) // strides[1] + 1
    g = _Conv(c, h, wd, o, kh, kw, strides[0], strides[1], pt, pl, oh, ow, c * kh * kw, -(-c * kh * kw // 4) * 4,
              o + o % 2, oh * ow, -(-oh * ow // 2))  # output pixels in raster order, two at a time
    if dsp and column_in_c(g) == COL_R4:  # its column holds each window row as (x0, x2, x1, x3): the same
        # dot product with the weights in that order (pack_weights then gives SXTB16 the pairs (w0, w2), (w1, w3))
        w = w[..., [0, 2, 1, 3]]
    packed, kp, o2 = pack_weights(w, dsp)
    if not dsp:  # words of four int8 weights; the column holds x + 128, so the bias takes -128·Σw
        packed = packed.view("<i4")
        bias = np.asarray(bias, np.int64).reshape(-1) - 128 * w.astype(np.int64).reshape(o, -1).sum(axis=1)
    table, window, split = fpu_table(bias, scale, w, o2) + (False,) if dsp else split_table(bias, scale, w, o2)
    if dsp:  # zo as a row, not code: convs of one geometry and zx share one kernel; then column_in_c's geometry
        rows = [table, np.array([[zo, 0]], np.int32)] + ([col_geometry(g, zx).view(np.int32).reshape(-1, 2)]
                                                          if column_in_c(g) else [])
        table = np.concatenate(rows)
    elif plain_column(g, mac)[1] == V6M_COLW:  # the geometry the C column function reads, 2 rows of 4
        table = np.concatenate([table, col_geometry(g, zx).view(np.int32).reshape(-1, 4)])
    func, scratch = (_conv2d_dsp(g, packed.shape, zx, zo, window, mac) if dsp
                     else _conv2d_plain(g, packed.shape, zx, zo, window, mac, split, len(table)))
    return func, [packed, table], [([1, o, oh, ow], "int8"), ([4], "int32"), scratch]


def col_geometry(g: _Conv, zx: int) -> np.ndarray:
    """The int16 values cdriver/dot_dsp.c's column functions read (column_in_c: all fit): c, h, w, kh, kw, sh, sw,
    pt, pl, ow, npix, kp, zx, then 0, 0, 0 (8 words: 4 rows of the [rows, 2] int32 table)."""
    return np.array([g.c, g.h, g.wd, g.kh, g.kw, g.sh, g.sw, g.pt, g.pl, g.ow, g.npix, g.kp, zx, 0, 0, 0], np.int16)


def pointwise(g: _Conv) -> bool:
    """A 1x1, stride-1, unpadded conv: output pixel p reads input offset p of each channel (eecc_col2_pw_s16)."""
    return g.kh == g.kw == g.sh == g.sw == 1 and g.pt == g.pl == 0 and (g.oh, g.ow) == (g.h, g.wd)


def column_in_c(g: _Conv) -> str | None:
    """The cdriver/dot_dsp.c function that builds the conv's pixel columns, or None (the TIR col_fill, which LLVM
    unrolls: kws's 40-tap front conv 1.5 KB, a 48-channel pointwise conv 0.8 KB). Per tap the C costs ~1 more
    instruction for the pointwise strided copy, ~6 for the window (per MAC: / O), so the window only for one
    input channel and ≥ 16 taps (ResNet's 16-channel 3x3 convs: +0.7 per MAC; its 3x3 front conv: +0.03); with a
    4-wide window (and an image ≥ 4 wide) COL_R4, a word per window row (2.5 instructions per tap; kws's 10x4
    front conv: col_one ~14), whose column order conv2d gives the weights."""
    if max(g.c, g.h, g.wd, g.npix, g.kp) >= 1 << 15:  # col_geometry's int16
        return None
    if pointwise(g):
        return COL_PW
    return (COL_R4 if g.kw == 4 and g.wd >= 4 else COL) if g.c == 1 and g.kh * g.kw >= 16 else None


def _window(T, x, g: _Conv, zx, y0, x0, ci, ky, kx):
    """x[0, ci, y0 + ky - pt, x0 + kx - pl], or the zero point zx outside the image (padding)."""
    from tvm import tirx

    return T.if_then_else(
        tirx.all(y0 + ky >= g.pt, y0 + ky < g.h + g.pt, x0 + kx >= g.pl, x0 + kx < g.wd + g.pl),
        x[0, ci, T.max(T.min(y0 + ky - g.pt, g.h - 1), 0), T.max(T.min(x0 + kx - g.pl, g.wd - 1), 0)], T.int8(zx))


def _conv2d_dsp(g: _Conv, wshape, zx, zo, window, mac: str):
    """Armv7E-M: int16 columns of a pixel pair, then cdriver/dot_dsp.c's eecc_conv2x2_dsp: 2 channels x 2 pixels of
    SMLAD (see module docstring), requantised and stored, for every channel pair (an odd O's last pair alone, its
    spare channel stored under the real one). `acc` is no longer used here (the tile keeps it in registers)."""
    from tvm.script import tirx as T

    c, h, wd, o, kh, kw, sh, sw, _, _, oh, ow, k, kp, o2, npix, npp = g
    col_fn = column_in_c(g)
    in_c = col_fn is not None
    rows = o2 + 5 if in_c else o2 + 1  # + the geometry col_fn reads (4 rows)
    full = o // 2  # channel pairs without a spare channel

    @T.macro
    def col_fill(col16, x, y0, x0, base):
        for ci, ky, kx in T.grid(c, kh, kw):
            col16[base + (ci * kh + ky) * kw + kx] = T.Cast("int16", _window(T, x, g, zx, y0, x0, ci, ky, kx))

    @T.prim_func(private=True, check_well_formed=False)
    def kernel(x: T.Buffer((1, c, h, wd), "int8"), wq: T.Buffer(wshape, "int32"), cq: T.Buffer((rows, 2), "int32"),
               y: T.Buffer((1, o, oh, ow), "int8"), acc: T.Buffer((4,), "int32"), col: T.Buffer((kp,), "int32")):
        T.func_attr({"tirx.noalias": True, "op_pattern": 8})  # y is written by the calls: opaque
        zov: T.let[T.int32] = cq[o2, 0]  # the table's last row (zx stays a constant: as a register it
        # cost the padding selects of a many-tap column fill ~600 B of code)
        col16 = T.decl_buffer((2 * kp,), "int16", data=col.data)
        for e in range(kp - k):
            col16[k + e] = T.int16(0)
            col16[kp + k + e] = T.int16(0)
        yf = T.decl_buffer((o * npix,), "int8", data=y.data)
        for q in range(npp):
            if in_c:  # see column_in_c
                T.evaluate(T.call_extern("handle", col_fn, T.address_of(col16[0]), T.address_of(x[0, 0, 0, 0]),
                                         T.address_of(cq[o2 + 1, 0]), 2 * q))
            else:
                for p in range(2):
                    col_fill(col16, x, T.min(2 * q + p, npix - 1) // ow * sh, T.min(2 * q + p, npix - 1) % ow * sw,
                             p * kp)
            d: T.let[T.int32] = T.if_then_else(2 * q + 1 < npix, 1, 0)  # 0: the last pixel is alone
            if full > 0:  # cdriver/dot_dsp.c: tile, requantisation and stores in registers (LLVM spilled the tile)
                T.evaluate(T.call_extern("handle", mac, T.address_of(yf[2 * q]), T.address_of(wq[0, 0]),
                                         T.address_of(col[0]), T.address_of(cq[0, 0]), kp // 4, full, npix, d, zov))
            if o % 2 == 1:  # the last pair's second channel is a spare: cstr 0 stores it under the real one
                T.evaluate(T.call_extern("handle", mac, T.address_of(yf[(o - 1) * npix + 2 * q]),
                                         T.address_of(wq[full, 0]), T.address_of(col[0]),
                                         T.address_of(cq[2 * full, 0]), kp // 4, 1, 0, d, zov))

    return kernel, ([kp], "int32")


def plain_column(g: _Conv, mac: str | None) -> tuple[int, str | None]:
    """(L, the cdriver/dot_v6m.c function that fills the [k, L pixels] byte column, or None: the TIR copy) of
    _conv2d_plain. L = 4 (eecc_dot4_v6m) where there are ≥ 4 output pixels: the column of a pointwise conv is
    V6M_COL4's strided copy, of a 2-D window V6M_COLW's where quad_window_pays (col_geometry's int16 bound); else, and
    for host tests (`mac` None) of a windowed conv, L = 2 (dot2) with the TIR copy (which LLVM unrolls: a
    windowed copy 4 times over grew kws's 40-tap front conv by 1.7 KB, hence the rolled C loops)."""
    if g.npix < 4:
        return 2, None
    if pointwise(g):
        return 4, V6M_COL4 if mac is not None else None
    fits16 = max(g.c, g.h, g.wd, g.npix, g.kp) < 1 << 15
    return (4, V6M_COLW) if mac is not None and fits16 and g.kh > 1 and quad_window_pays(g) else (2, None)


def quad_window_pays(g: _Conv) -> bool:
    """Whether the quad tile with V6M_COLW's column beats the pair tile with the TIR copy, per output pixel (M0+
    instruction counts, dot_v6m.c): the quad saves ~2.5 + kp/4 per output channel (a call's share and ~1 per weight
    word); the C window costs ~170 per pixel and ~35 per input channel, +40 where the window leaves the image (the
    padding runs), less the TIR copy's ~3 per tap. Fitted on the cost model's units (layer:conv2d-*, residual-*,
    kws, ResNet, cnn, dscnn): it picks the faster tile on every one that differs by > 0.5 %; 1-D convs (one window
    row per channel; cnn1d +9.7 %) keep the pair tile (plain_column)."""
    def inside(n, stride, pad, k, size):  # output rows (columns) whose window rows (columns) are all in the image
        return sum(0 <= i * stride - pad and i * stride - pad + k <= size for i in range(n))

    border = 1 - inside(g.oh, g.sh, g.pt, g.kh, g.h) * inside(g.ow, g.sw, g.pl, g.kw, g.wd) / g.npix
    return g.o2 * (2.5 + g.kp / 4) > 170 + g.c * (35 + 40 * border) - 3 * g.k


def _plain_fill(g: _Conv, zx: int, lanes: int, col_fn: str | None, o2: int):
    """T.macro fill(cu, x, cq, q): the byte column of pixels lanes·q .. lanes·q + lanes - 1 (see plain_column;
    past the last pixel it repeats), x + 128 as uint8 interleaved [k, pixel]; cq's rows from o2 on hold
    col_geometry for V6M_COLW."""
    from tvm.script import tirx as T

    c, kh, kw, ow, sh, sw, npix = g.c, g.kh, g.kw, g.ow, g.sh, g.sw, g.npix

    @T.macro
    def col_window(cu, x, y0, x0, p):  # y0, x0 bound once per pixel (inside the tap loops LLVM divides per tap)
        for ci, ky, kx in T.grid(c, kh, kw):
            cu[lanes * ((ci * kh + ky) * kw + kx) + p] = T.Cast(
                "uint8", T.Cast("int32", _window(T, x, g, zx, y0, x0, ci, ky, kx)) + 128)

    @T.macro
    def fill(cu, x, cq, q):
        if col_fn == V6M_COL4:  # cdriver/dot_v6m.c: rolled loops (LLVM unrolls the TIR copies)
            T.evaluate(T.call_extern("handle", V6M_COL4, T.address_of(cu[0]), T.address_of(x[0, 0, 0, 0]),
                                     npix, c, lanes * q))
        elif col_fn == V6M_COLW:
            T.evaluate(T.call_extern("handle", V6M_COLW, T.address_of(cu[0]), T.address_of(x[0, 0, 0, 0]),
                                     T.address_of(cq[o2, 0]), lanes * q))
        elif pointwise(g) and lanes == 4:  # pixel i of channel ci is x[ci·npix + i], no window
            xf = T.decl_buffer((c * npix,), "int8", data=x.data)
            for ci in range(c):
                for p in T.unroll(lanes):
                    cu[lanes * ci + p] = T.Cast(
                        "uint8", T.Cast("int32", xf[ci * npix + T.min(lanes * q + p, npix - 1)]) + 128)
        else:
            for p in range(lanes):
                col_window(cu, x, T.min(lanes * q + p, npix - 1) // ow * sh,
                           T.min(lanes * q + p, npix - 1) % ow * sw, p)

    return fill


def _conv2d_plain(g: _Conv, wshape, zx, zo, window, mac: str | None, split: bool = False, rows: int | None = None):
    """Armv6-M: x + 128 bytes of L pixels interleaved [k, pixel] (plain_column), 1 channel x L pixels of MULS
    (dot_v6m.c: eecc_dot4_v6m 3.63 instructions per MAC, eecc_dot2_v6m 4.06). rows: the table's, o2 + the
    geometry rows of V6M_COLW."""
    from tvm.script import tirx as T

    c, h, wd, o, _, _, _, _, _, _, oh, ow, k, kp, o2, npix, _ = g
    lanes, col_fn = plain_column(g, mac)
    mac = {2: mac, 4: V6M_DOT4}[lanes] if mac is not None else None
    tie = RQ_TIE if mac else None  # linked beside dot_v6m.c
    fill = _plain_fill(g, zx, lanes, col_fn, o2)

    @T.prim_func(private=True, check_well_formed=False)
    def kernel(x: T.Buffer((1, c, h, wd), "int8"), wq: T.Buffer(wshape, "int32"),
               cq: T.Buffer((rows or o2, 4), "int32"), y: T.Buffer((1, o, oh, ow), "int8"),
               acc: T.Buffer((4,), "int32"), col: T.Buffer((kp * lanes // 4,), "int32")):
        T.func_attr({"tirx.noalias": True})
        cu = T.decl_buffer((lanes * kp,), "uint8", data=col.data)  # LDRB-addressable with an immediate offset
        yf = T.decl_buffer((o * npix,), "int8", data=y.data)
        for e in range(lanes * (kp - k)):
            cu[lanes * k + e] = T.uint8(128)
        for q in range(-(-npix // lanes)):
            fill(cu, x, cq, q)
            for j in range(o):
                for a in T.unroll(lanes):
                    acc[a] = cq[j, 0]
                if mac is not None:  # Armv6-M: cdriver/dot_v6m.c, every pixel from each widened weight
                    T.evaluate(T.call_extern("handle", mac, T.address_of(acc[0]), T.address_of(wq[j, 0]),
                                             T.address_of(cu[0]), kp // 4))
                else:
                    for i in range(kp // 4):
                        wv: T.let[T.int32] = wq[j, i]
                        for t in T.unroll(4):  # byte t of the word, sign-extended: shifts only (Armv6-M)
                            wt: T.let[T.int32] = T.shift_right(T.shift_left(wv, 24 - 8 * t), 24)
                            for a in T.unroll(lanes):
                                acc[a] = acc[a] + wt * T.Cast("int32", cu[lanes * (4 * i + t) + a])
                for a in T.unroll(lanes):
                    if lanes * q + a < npix:
                        yf[j * npix + lanes * q + a] = _rq(T, acc[a], cq, j, zo, window, halves=True, tie=tie,
                                                           split=split)

    return kernel, ([kp * lanes // 4], "int32")


def fits(call, weights: np.ndarray, kernels: str = "dsp") -> bool:
    """mcu_kernels covers groups=1 and depthwise (multiplier 1), batch 1, dilation 1, 2-D and 1-D (as H = 1)."""
    attrs = call.attrs
    groups, x_shape = int(attrs.groups), [int(d) for d in call.args[0].ty.shape.values]
    if x_shape[0] != 1 or any(int(d) != 1 for d in attrs.dilation):
        return False
    return groups == 1 or (groups == x_shape[1] == weights.shape[0] and weights.shape[1] == 1)


def relax_call(x, weights, folded, scale, zx, zo, attrs, pads, kernels, builder):
    """relax.call_tir of a fused int8 kernel (conv or depthwise + requantisation, padding inside); `scale`:
    fixed_point.mlas_scale per output channel. A 1-D conv (NCW, pads (left, right)) runs as the 2-D one on an
    H = 1 view of the same bytes (relax reshapes: views)."""
    from tvm import relax

    x_shape, strides = [int(d) for d in x.ty.shape.values], [int(s) for s in attrs.strides]
    one_d = len(x_shape) == 3
    if one_d:
        x_shape, weights, strides = [*x_shape[:2], 1, x_shape[2]], weights[:, :, None, :], [1, strides[0]]
        pads, x = [0, pads[0], 0, pads[1]], relax.op.reshape(x, x_shape)
    from eecc.targets.mcu_depthwise import depthwise2d

    depthwise = int(attrs.groups) > 1
    build = depthwise2d if depthwise else conv2d
    func, consts, outs = build(x_shape, weights, bias=folded.astype(np.int32), scale=scale, zx=zx,
                               zo=zo, strides=strides, pads=[pads[0], pads[1], pads[2], pads[3]],
                               dsp=kernels == "dsp", **({} if depthwise else {"mac": MACS[kernels]}))
    gv = builder.add_func(func, f"{build.__name__}_int8")
    args = [x, *(relax.const(c, str(c.dtype)) for c in consts)]
    call = relax.call_tir(gv, args, [relax.TensorType(shape, dtype) for shape, dtype in outs])
    y = relax.TupleGetItem(call, 0)  # the others are the kernel's scratch (see mcu_kernels.conv2d)
    return relax.op.reshape(y, [d for i, d in enumerate(outs[0][0]) if not (one_d and i == 2)]) if one_d else y
