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
