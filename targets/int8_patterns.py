"""Shared pieces of int8_lowering's rules: constants, per-channel vectors, requantisation, the island pattern
(_P) and what a match says about its scales and zero points.

RQ(acc) = clamp(zo + (hi32(acc·M0) + 2^(s-1)) >> s, -128, 127) (fixed_point.fixed_point32: TFLite's single
rounding); the matched graph is a QDQ island as TVM 0.27 imports it (int8_lowering.py's module docstring)."""

from __future__ import annotations

import numpy as np

from eecc.targets.fixed_point import HI_BITS, fixed_point32

def _const(value, dtype):
    from tvm import relax

    return relax.const(np.asarray(value, dtype=dtype), dtype)


def _channel(values: np.ndarray, ndim: int, axis: int = 1) -> np.ndarray:
    """A per-channel vector shaped to broadcast along `axis` of an ndim tensor (a scalar stays one)."""
    values = np.asarray(values)
    if values.size == 1:
        return values.reshape(())
    shape = [1] * ndim
    shape[axis] = values.size
    return values.reshape(shape)


def _requantize(acc, multiplier, zo: int, ndim: int, axis: int = 1):
    """int32 accumulator in units of s_in -> int8 in units of s_out, multiplier = s_in/s_out (RQ above)."""
    from tvm import relax

    m0, shift = fixed_point32(multiplier)
    x = relax.op.multiply(relax.op.astype(acc, "int64"), _const(_channel(m0, ndim, axis), "int64"))
    if np.any(shift < 1):
        n = shift.astype(np.int64) + HI_BITS
        x = relax.op.add(x, _const(_channel(np.left_shift(np.int64(1), n - 1), ndim, axis), "int64"))
        x = relax.op.right_shift(x, _const(_channel(n, ndim, axis), "int64"))
        return _saturate(relax.op.add(x, _const(zo, "int64")))
    x = relax.op.astype(relax.op.right_shift(x, _const(HI_BITS, "int64")), "int32")
    x = relax.op.add(x, _const(_channel(np.left_shift(np.int32(1), shift - 1), ndim, axis), "int32"))
    x = relax.op.right_shift(x, _const(_channel(shift, ndim, axis), "int32"))
    return _saturate(relax.op.add(x, _const(zo, "int32")), "int32")


def _saturate(x, dtype: str = "int64"):
    """int64/int32 -> int8 with saturation."""
    from tvm import relax

    x = relax.op.minimum(relax.op.maximum(x, _const(-128, dtype)), _const(127, dtype))
    return relax.op.astype(x, "int8")


def _ndim(expr) -> int:
    return int(expr.ty.ndim)


class _P:
    """The named sub-patterns one rule matches against."""

    def __init__(self):
        from tvm.relax.dpl import is_const, is_op, wildcard
        self.is_op, self.is_const, self.wildcard = is_op, is_const, wildcard
        self.x, self.sx, self.zx = wildcard(), is_const(), is_const()
        self.dqx = is_op("relax.dequantize")(self.x, self.sx, self.zx)
        self.so, self.zo = is_const(), is_const()

    def dq_const(self):
        w, s, z = self.is_const(), self.is_const(), self.is_const()
        return self.is_op("relax.dequantize")(w, s, z), (w, s, z)

    def q(self, inner):
        return self.is_op("relax.quantize")(inner, self.so, self.zo)


def _np(m, pattern) -> np.ndarray:
    return m[pattern].value.numpy()


def _io(p: _P, m) -> tuple[float, int, float, int] | None:
    """(s_x, z_x, s_out, z_out) when both sides are per-tensor int8, else None (rule does not apply)."""
    sx, zx, so, zo = _np(m, p.sx), _np(m, p.zx), _np(m, p.so), _np(m, p.zo)
    if sx.size != 1 or so.size != 1 or zx.dtype != np.int8 or zo.dtype != np.int8:
        return None
    if m[p.x].ty.dtype != "int8":
        return None
    return float(sx.reshape(())), int(zx.reshape(())), float(so.reshape(())), int(zo.reshape(()))


def _bias(m, bias, acc_scale: np.ndarray, channels: int) -> np.ndarray:
    """The int32 bias in accumulator units (s_x·s_w per channel); zeros without a bias."""
    if bias is None:
        return np.zeros(channels, dtype=np.int64)
    b, s, z = (_np(m, t) for t in bias)
    real = (b.astype(np.float64) - z.astype(np.float64)) * s.astype(np.float64)
    return np.round(real / acc_scale).astype(np.int64).reshape(channels)
