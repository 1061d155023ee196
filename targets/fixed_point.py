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
