/* Cold int8 element-wise kernels of Armv7E-M stages with an FPU (targets/mcu_quantize.py, mcu_pool.py),
 * one shared copy per stage: the TIR PrimFuncs that call them pass the shape and constants as arguments.
 * LLVM fully or 4x unrolled the same loops written in TIR (kws search stage 0: max pool 1,264 B, input
 * quantize 400 B, hand-off dequantize 476 B); gcc -O2 keeps them rolled (~1 more instruction per element,
 * under 0.05 instructions per MAC of a stage: none of them is a MAC loop).
 *
 * eecc_quantize_s8:   y = clamp(max(bits(x / s + 1.5·2^23), 0) - offset, -128, 127)  (mcu_quantize docstring)
 * eecc_dequantize_s8: y = float32(x - z) · s  (one rounding, as onnxruntime)
 * eecc_maxpool_s8:    NCHW max pool, dilation 1; window taps outside the image are skipped (TVM's topi pads
 *                     with -128, which never wins either); every window holds at least one tap.
 * Scales arrive as their float32 bits (int32 arguments, so no calling-convention question for floats). */
#include <stdint.h>
#include <string.h>

static float f32(uint32_t bits) {
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

void eecc_quantize_s8(const float* x, int8_t* y, int32_t n, uint32_t scale_bits, int32_t offset) {
  const float s = f32(scale_bits);
  for (int32_t i = 0; i < n; ++i) {
    float t = x[i] / s + 12582912.0f;
    int32_t b;
    memcpy(&b, &t, sizeof b);
    b = (b > 0 ? b : 0) - offset;
    y[i] = (int8_t)(b > 127 ? 127 : (b < -128 ? -128 : b));
  }
}

void eecc_dequantize_s8(const int8_t* x, float* y, int32_t n, int32_t zero, uint32_t scale_bits) {
  const float s = f32(scale_bits);
  for (int32_t i = 0; i < n; ++i) y[i] = (float)((int32_t)x[i] - zero) * s;
}

/* x [c, h, w] -> y [c, oh, ow]; window kh x kw, strides sh, sw, top / left padding pt, pl. */
void eecc_maxpool_s8(const int8_t* x, int8_t* y, int32_t c, int32_t h, int32_t w, int32_t oh, int32_t ow,
                     int32_t kh, int32_t kw, int32_t sh, int32_t sw, int32_t pt, int32_t pl) {
  for (int32_t ch = 0; ch < c; ++ch, x += h * w) {
    for (int32_t oy = 0; oy < oh; ++oy) {
      const int32_t y0 = oy * sh - pt;
      const int32_t ylo = y0 < 0 ? 0 : y0, yhi = y0 + kh > h ? h : y0 + kh;
      for (int32_t ox = 0; ox < ow; ++ox) {
        const int32_t x0 = ox * sw - pl;
        const int32_t xlo = x0 < 0 ? 0 : x0, xhi = x0 + kw > w ? w : x0 + kw;
        int32_t m = -128;
        for (int32_t yy = ylo; yy < yhi; ++yy) {
          const int8_t* row = x + yy * w;
          for (int32_t xx = xlo; xx < xhi; ++xx) m = row[xx] > m ? row[xx] : m;
        }
        *y++ = (int8_t)m;
      }
    }
  }
}
