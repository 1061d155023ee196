"""Fixed-point requantisation multipliers: a real multiplier as an int32 mantissa and a shift.

  multiplier ≈ M0 · 2^-n,  M0 ∈ [2^30, 2^31)                       (TFLite's QuantizeMultiplier)
  RQ(acc) = (acc·M0 + 2^(n-1)) >> n = (hi32(acc·M0) + 2^(s-1)) >> s,  s = n - 32 ≥ 1
"""

from __future__ import annotations

import numpy as np

ROUND_BITS = 31
HI_BITS = 32  # requantisation keeps the high word of acc·M0 (one SMMUL on an M4), then shifts in int32


def fixed_point(multiplier) -> tuple[np.ndarray, np.ndarray]:
    """(M0, n) with multiplier ≈ M0·2^-n, M0 ∈ [2^30, 2^31) an int32 (TFLite's QuantizeMultiplier)."""
    mant, exp = np.frexp(np.asarray(multiplier, dtype=np.float64))
    m0 = np.round(mant * (1 << ROUND_BITS)).astype(np.int64)
    exp = np.where(m0 == 1 << ROUND_BITS, exp + 1, exp)
    m0 = np.where(m0 == 1 << ROUND_BITS, 1 << (ROUND_BITS - 1), m0)
    shift = ROUND_BITS - exp
    if np.any(shift < 1) or np.any(shift > 62):
        raise ValueError(f"requantisation multiplier {multiplier} is out of the fixed-point range")
    return m0, shift.astype(np.int64)


def fixed_point32(multiplier) -> tuple[np.ndarray, np.ndarray]:
    """(M0 int32, s int32) with multiplier ≈ M0 · 2^-(32+s). For s ≥ 1 (every multiplier < 1/4, all
    convolutions we have seen) RQ(acc) = (hi32(acc·M0) + 2^(s-1)) >> s, which equals TFLite's
    single-rounding (acc·M0 + 2^(n-1)) >> n with n = 32 + s exactly (the rounding term is a multiple of
    2^32), in int32 but for one high multiply. Larger multipliers (s ≤ 0) keep that int64 formula."""
    m0, n = fixed_point(multiplier)
    return m0.astype(np.int32), (n - HI_BITS).astype(np.int32)


# onnxruntime's int8 kernels (MLAS, MlasRequantizeOutput) requantise in float:
#   y = rne(clamp(fl32(fl32(acc) · S))) + zo,  S = fl32(fl32(s_x·s_w) / s_o)  (QLinearConv's output_scales)
# The fixed-point value v = acc·M·2^-32, M = round(S·2^32), rounds as fl does except where fl lands on a tie
# k + 1/2 (then rne picks the even one) or v and fl sit on two sides of one. Both need v within TIE_WINDOW
# (in 2^-32 units) of the tie: fl32(acc) and the product each move fl by ≤ |v|·2^-24 ≤ 2^-16 for |v| < 2^8
# (|v| ≥ 2^8 saturates either way), so 2^-14 covers them twice over; an inexact M adds |acc|·|M - S·2^32|.
TIE_WINDOW = 1 << 18


def mlas_scale(sx, sw, so) -> np.ndarray:
    """float32 per channel: onnxruntime's requantisation scale fl32(fl32(s_x·s_w) / s_o), in its order."""
    return (np.float32(sx) * np.asarray(sw, np.float32).reshape(-1) / np.float32(so)).astype(np.float32)


def tie_constants(scale, acc_bound) -> tuple[np.ndarray, int] | None:
    """(M int32 per channel, window) for RQ's 2^-32 form: v = hi32(acc·M) + lo32(acc·M)·2^-32, and a
    |lo32 - 2^31| ≤ window test that holds wherever v may round otherwise than onnxruntime (see TIE_WINDOW;
    acc_bound ≥ |acc| per channel). None where some S ≥ 1/2 (M would not fit int32)."""
    s = np.asarray(scale, np.float32).astype(np.float64).reshape(-1)
    m = np.round(s * 2.0 ** 32)
    if np.any(m >= 2 ** 31) or np.any(s <= 0):
        return None
    err = np.abs(m - s * 2.0 ** 32)  # exact: s·2^32 and m are float64 values with ≤ 53 bits
    reach = np.minimum(np.asarray(acc_bound, np.float64).reshape(-1), 512 / s)  # beyond: saturated both ways
    return m.astype(np.int32), int(min(TIE_WINDOW + np.ceil((reach * err).max()) + 1, 2 ** 31 - 1))


def split_constants(bias, scale, w: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(mh, ml + 2^16·r) int32 per channel for mul_split: S's 24-bit mantissa = mh·2^12 + ml and
    S = (mh·2^12 + ml)·2^-(28+r), r ≥ 1; None unless every S is a normal float32 in [2^-36, 2^-5) and every
    accumulator bias + Σ w·u (u = x + 128 in [0, 255], the Armv6-M kernels' bytes) stays below 2^19."""
    s = np.asarray(scale, np.float32).reshape(-1)
    w64 = w.astype(np.int64).reshape(w.shape[0], -1)
    b, wa = np.asarray(bias, np.int64).reshape(-1), np.abs(w64).sum(axis=1)
    bound = np.minimum(np.abs(b) + 255 * wa, np.abs(b + 128 * w64.sum(axis=1)) + 128 * wa)  # x in [-128, 127]
    bits = s.view(np.int32).astype(np.int64)
    r = 122 - ((bits >> 23) & 0xFF)  # S = m24·2^(exponent field - 150)
    if np.any(bound >= 2 ** 19) or np.any(s <= 0) or np.any(r < 1) or np.any(r > 31):
        return None
    m24 = (bits & 0x7FFFFF) | 0x800000
    return (m24 >> 12).astype(np.int32), ((m24 & 0xFFF) + (r << 16)).astype(np.int32)


def mul_split(T, a, mh, c3):
    """TIR (floor(v + 1/2), t) with t & 0xFFFF = (floor(v·2^16) + 2^15) mod 2^16 (0 at the tie), as
    mcu_requant._mul_halves gives them, for v = a·S exactly with split_constants' mh and c3 = ml + 2^16·r and
    |a| < 2^19, in two 32-bit multiplies: X = a·mh + floor(a·ml / 2^12) = floor(a·S·2^(16+r)) (no int32
    overflow: |a|·2^12 < 2^31), floor(v·2^16) = X >> r."""
    x = a * mh + T.shift_right(a * T.bitwise_and(c3, 0xFFFF), 12)
    t = T.shift_right(x, T.shift_right(c3, 16)) + T.int32(1 << 15)
    return T.shift_right(t, 16), t
