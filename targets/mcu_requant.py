"""Requantisation of eecc's int8 Cortex-M kernels (mcu_kernels, mcu_depthwise): the TIR expression RQ and the
per-channel constant tables it reads.

  RQ(acc) = clamp(zo + ((hi32(acc · M0) + 2^(s-1)) >> s), -128, 127)

With an FPU, onnxruntime's own rne(fl32(fl32(acc)·S)) (fpu_table: bias, bits of S); on Armv6-M the product from
16-bit halves with the exact result next to a tie (requant_table, split_table; fixed_point.tie_constants).
"""

from __future__ import annotations

import numpy as np

from eecc.targets.fixed_point import HI_BITS, fixed_point32, mul_split, split_constants, tie_constants


def _rq(T, acc, cq, i, zo, window, halves: bool = False, arm: bool = True, tie: str | None = None,
        ties: bool = True, split: bool = False):
    """TIR expression of RQ (see module docstring) on int32 `acc` with the constants of channel i (see
    requant_table; with an FPU an fpu_table). With an FPU (`halves` False) onnxruntime's own rne(fl32(fl32(acc)·S)): VCVT, VMUL, VCVTR
    (`arm` False: nearbyint, for host tests). Armv6-M (`halves`): the product from 16-bit halves
    (_mul_halves), rounded half up, and _tie's float result only within `window` of a tie (`tie`: the C
    function that computes it, RQ_TIE, else the same in TIR; `ties` False: no such check, half up everywhere);
    `window` None (some S ≥ 1/2): TFLite's int64 single rounding there. `split` (a split_table): the same
    product from two 32-bit multiplies (fixed_point.mul_split) instead of four."""
    if not halves:  # an fpu_table: (bias, bits of S)
        f = T.Cast("float32", acc) * T.reinterpret("float32", cq[i, 1])
        q = T.reinterpret("int32", T.call_llvm_pure_intrin("float32", "llvm.arm.vcvtr", f)) if arm else \
            T.Cast("int32", T.nearbyint(f))
        q = T.max(T.min(q, T.int32(1 << 20)), T.int32(-(1 << 20))) if window is None else q  # |v| ≥ 2^31 - 128
        zo = T.int32(zo) if isinstance(zo, int) else zo  # a constant, or the dsp conv's table entry
        return T.Cast("int8", T.max(T.min(q + zo, T.int32(127)), T.int32(-128)))
    if window is None:
        n = T.Cast("int64", cq[i, 3] + HI_BITS)
        y64 = T.shift_right(T.Cast("int64", acc) * T.Cast("int64", cq[i, 1]) + T.shift_left(T.int64(1), n - 1), n)
        y = T.Cast("int32", T.max(T.min(y64, T.int64(1 << 20)), T.int64(-(1 << 20)))) + T.int32(zo)
        return T.Cast("int8", T.max(T.min(y, T.int32(127)), T.int32(-128)))

    # t & 0xFFFF: the fraction's high half + 2^15, 0 at the tie
    q, t = mul_split(T, acc, cq[i, 1], cq[i, 3]) if split else _mul_halves(T, acc, cq[i, 1])
    near = (-(-window >> 16)) + 1  # the window in units of 2^16, +1 for the low half
    k = q - 1 + T.bitwise_and(T.shift_right(t, 15), 1)  # floor: q less the rounding bit
    exact = T.call_pure_extern("int32", tie, acc, cq[i, 2], k) if tie else _tie(T, acc, cq[i, 2], k)
    q = T.if_then_else(T.bitwise_and(t + near, 0xFFFF) <= 2 * near, exact, q) if ties else q
    return T.Cast("int8", T.max(T.min(q + T.int32(zo), T.int32(127)), T.int32(-128)))


def _tie(T, acc, scale_bits, k):
    """Next to the tie k + 1/2, onnxruntime's rne(fl32(fl32(acc)·S)) (S = the float32 with `scale_bits`):
    k or k + 1 by where 2·fl (exact) lies against 2k + 1, the even one on it; floats compared as ordered ints."""
    def key(f):
        b = T.reinterpret("int32", f)
        return T.bitwise_xor(b, T.bitwise_and(T.shift_right(b, 31), T.int32(0x7FFFFFFF)))

    a = key(T.Cast("float32", acc) * T.reinterpret("float32", scale_bits) * T.float32(2))
    b = key(T.Cast("float32", k * 2 + 1))
    return k + T.Cast("int32", a > b) + T.if_then_else(a == b, T.bitwise_and(k, 1), T.int32(0))


def _mul_halves(T, a, m):
    """(floor(a·m / 2^32 + 1/2), t) for int32 a and 0 ≤ m < 2^31 with 32-bit
    multiplies only (libgcc's __muldi3 call otherwise). a = ah·2^16 + al, m = mh·2^16 + ml (al, ml unsigned
    16-bit); every partial product fits int32 (|ah·ml| ≤ 2^15·(2^16-1)) or uint32 (al·ml), and
    a·m = ah·mh·2^32 + (ah·ml + al·mh)·2^16 + al·ml: hi = ah·mh + (hl >> 16) + (lh >> 16) + (t >> 16) with
    t = (ll >> 16) + (hl & 0xFFFF) + (lh & 0xFFFF) + 2^15 < 4·2^16, whose low half is lo32's high half + 2^15
    (mod 2^16; tests: test_mul_halves_equals_the_64_bit_product)."""
    ah, al = T.shift_right(a, 16), T.bitwise_and(a, 0xFFFF)
    mh, ml = T.shift_right(m, 16), T.bitwise_and(m, 0xFFFF)
    hl, lh = ah * ml, al * mh
    ll = T.Cast("int32", T.shift_right(T.Cast("uint32", al) * T.Cast("uint32", ml), T.uint32(16)))
    t = ll + T.bitwise_and(hl, 0xFFFF) + T.bitwise_and(lh, 0xFFFF) + T.int32(1 << 15)
    q = ah * mh + T.shift_right(hl, 16) + T.shift_right(lh, 16) + T.shift_right(t, 16)
    return q, t


def split_table(bias, scale, w: np.ndarray, n: int) -> tuple[np.ndarray, int | None, bool]:
    """(table, window, split) for the Armv6-M kernels (accumulators bias + Σ w·(x + 128), x + 128 in [0, 255]):
    requant_table's, with M and the spare column replaced by fixed_point.split_constants (mh, ml + 2^16·r) and
    split True where every channel allows them; else requant_table's and False."""
    table, window = requant_table(bias, scale, w, n)
    consts = None if window is None else split_constants(bias, scale, w)
    if consts is None:
        return table, window, False
    table = table.copy()
    table[:, 1], table[:, 3] = _pad_to(consts[0], n), _pad_to(consts[1], n)
    return table, window, True


def fpu_table(bias, scale, w: np.ndarray, n: int) -> tuple[np.ndarray, int | None]:
    """([n, 2] int32: bias, float32 bits of S; window) = the two columns of requant_table that _rq reads with
    an FPU: half the per-channel flash (8 B instead of 16), and the same loads (the row pitch is a shift)."""
    table, window = requant_table(bias, scale, w, n)
    return np.ascontiguousarray(table[:, [0, 2]]), window


def requant_table(bias, scale, w: np.ndarray, n: int) -> tuple[np.ndarray, int | None]:
    """([n, 4] int32 per output channel, window) for _rq: (bias, M = round(S·2^32), float32 bits of S, 0) and
    the near-tie window of fixed_point.tie_constants; where some S ≥ 1/2, (bias, M0, bits of S, s) of TFLite's
    M0·2^-(32+s) and None. Spare channels get zero weights and S's bits 0 (their outputs are never stored)."""
    scale = np.asarray(scale, np.float32).reshape(-1)
    bias = np.asarray(bias, np.int64).reshape(-1)
    bound = np.abs(bias) + 384 * np.abs(w.astype(np.int64)).reshape(w.shape[0], -1).sum(axis=1)
    exact = tie_constants(scale, bound)
    bits = _pad_to(scale.view(np.int32), n)
    if exact is None:
        m0, shift = fixed_point32(scale.astype(np.float64))
        cols = [_pad_to(bias, n), _pad_to(m0, n), bits, _pad_to(shift, n, 1)]
        return np.ascontiguousarray(np.stack(cols, axis=1)), None
    m, window = exact
    return np.ascontiguousarray(np.stack([_pad_to(bias, n), _pad_to(m, n), bits, np.zeros(n, np.int32)], axis=1)), window


def _pad_to(values, n: int, fill: int = 0) -> np.ndarray:
    values = np.asarray(values, np.int32).reshape(-1)
    return np.concatenate([values, np.full(n - values.size, fill, np.int32)])
