/* Cold int8 element-wise kernels of Armv7E-M stages with an FPU (targets/mcu_quantize.py, mcu_pool.py),
 * one shared copy per stage: the TIR PrimFuncs that call them pass the shape and constants as arguments.
 * LLVM fully or 4x unrolled the same loops written in TIR (kws search stage 0: max pool 1,264 B, input
 * quantize 400 B, hand-off dequantize 476 B); gcc keeps them rolled. The max pool and the dequantise work on
 * 4 int8 lanes per word with the M4's DSP instructions (kws search stage 0: the rolled scalar max pool took
 * ~10 instructions per pooled tap, 0.09 per MAC of the stage, now ~4; the dequantise 8 per value, then 6.75, now
 * 4.5; the quantise 18 per value, now 9).
 *
 * eecc_quantize_s8:   y = clamp(max(bits(x / s + 1.5·2^23), 0) - offset, -128, 127)  (mcu_quantize docstring)
 * eecc_dequantize_s8: y = float32(x - z) · s  (one rounding, as onnxruntime)
 * eecc_maxpool_s8:    NCHW max pool, dilation 1; window taps outside the image are skipped (TVM's topi pads
 *                     with -128, which never wins either); every window holds at least one tap.
 * Scales arrive as their float32 bits (int32 arguments, so no calling-convention question for floats). */
#include <stdint.h>
#if defined(__ARM_FEATURE_SIMD32)
#include <arm_acle.h>
#endif
#include <string.h>

static float f32(uint32_t bits) {
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

static inline uint32_t load4(const int8_t* p) {  /* unaligned LDR: allowed on Armv7-M */
  uint32_t v;
  memcpy(&v, p, sizeof v);
  return v;
}

void eecc_quantize_s8(const float* x, int8_t* y, int32_t n, uint32_t scale_bits, int32_t offset) {
  const float s = f32(scale_bits);
  for (int32_t i = 0; i < n; ++i) {
    float t = x[i] / s + 12582912.0f;
    int32_t b;
    memcpy(&b, &t, sizeof b);
#if defined(__ARM_FEATURE_SIMD32)
    /* QSUB saturates a negative t's b - offset (offset > 0) at -2^31 where max(b, 0) - offset is below -128
     * too; SSAT clamps to int8: 2 instructions for the max and the clamp's compares (9 per value, was 18) */
    y[i] = (int8_t)__ssat(__qsub(b, offset), 8);
#else
    b = (b > 0 ? b : 0) - offset;
    y[i] = (int8_t)(b > 127 ? 127 : (b < -128 ? -128 : b));
#endif
  }
}

void eecc_dequantize_s8(const int8_t* x, float* y, int32_t n, int32_t zero, uint32_t scale_bits) {
  const float s = f32(scale_bits);
  int32_t i = 0;
#if defined(__ARM_FEATURE_SIMD32)
  /* 4 values per word: SXTAB16 widens bytes 0, 2 (1, 3 with its ROR 8) and adds -z to each int16 half, exact as
   * x - z is in [-255, 255]; one VMOV moves the two low halves' words to s0, s1, where VCVT.F32.S16 (fixed
   * point, 0 fraction bits) converts the low halfword alone; ASR #16 gives the high halves (s2, s3). Then 4
   * VMUL and one VSTM: 18 instructions per 4 values (gcc's loop of the same C: 27, with SXTH and 4 VSTR). */
  const uint32_t nz = (uint32_t)(uint16_t)(-zero) * 0x10001u;
  int32_t quads = n >> 2;
  if (quads > 0) {
    uint32_t v, e;
    __asm__ volatile(
        "1:\n"
        "  ldr %[v], [%[x]], #4\n" /* unaligned: allowed on Armv7-M */
        "  sxtab16 %[e], %[nz], %[v]\n"
        "  sxtab16 %[v], %[nz], %[v], ror #8\n"
        "  vmov s0, s1, %[e], %[v]\n"
        "  asr %[e], %[e], #16\n"
        "  asr %[v], %[v], #16\n"
        "  vmov s2, s3, %[e], %[v]\n"
        "  vcvt.f32.s16 s0, s0, #0\n"
        "  vcvt.f32.s16 s1, s1, #0\n"
        "  vcvt.f32.s32 s2, s2\n"
        "  vcvt.f32.s32 s3, s3\n"
        "  vmul.f32 s0, s0, %[s]\n"
        "  vmul.f32 s1, s1, %[s]\n"
        "  vmul.f32 s2, s2, %[s]\n"
        "  vmul.f32 s3, s3, %[s]\n"
        "  vstmia %[y]!, {s0-s3}\n"
        "  subs %[q], %[q], #1\n"
        "  bne 1b\n"
        : [v] "=&r"(v), [e] "=&r"(e), [x] "+r"(x), [y] "+r"(y), [q] "+r"(quads)
        : [nz] "r"(nz), [s] "t"(s)
        : "s0", "s1", "s2", "s3", "cc", "memory");
    i = n & ~3;
  }
#endif
  for (; i < n; ++i) *y++ = (float)((int32_t)*x++ - zero) * s;
}

/* Signed int8 max of 4 lanes: SSUB8 sets a GE flag per lane where a >= b, SEL takes a there, b elsewhere
 * (Armv7E-M DSP; 2 instructions). The portable form is for the host tests (test_mcu_ops_fpu). */
static inline uint32_t max4_s8(uint32_t a, uint32_t b) {
#if defined(__ARM_FEATURE_SIMD32)
  uint32_t t;
  __asm__("ssub8 %1, %0, %2\n\tsel %0, %0, %2" : "+r"(a), "=&r"(t) : "r"(b));
  return a;
#else
  uint32_t r = 0;
  for (int k = 0; k < 32; k += 8) {
    const int8_t p = (int8_t)(a >> k), q = (int8_t)(b >> k);
    r |= (uint32_t)(uint8_t)(p > q ? p : q) << k;
  }
  return r;
#endif
}

/* col[j] = max over rows [0, rows) of x[r·w + j], j < w: 4 columns per word, two words per row pass; the
 * last word of a row starts at w - 4 (it overlaps the previous one: max is idempotent). w >= 4. */
static void column_max4(const int8_t* x, int32_t w, int32_t rows, int8_t* col) {
  for (int32_t c0 = 0; c0 < w; c0 += 8) {
    const int32_t a = c0 > w - 4 ? w - 4 : c0, b = c0 + 4 > w - 4 ? w - 4 : c0 + 4;
    const int8_t* p = x;
    uint32_t ma = load4(p + a), mb = load4(p + b);
    for (int32_t r = 1; r < rows; ++r) {
      p += w;
      ma = max4_s8(ma, load4(p + a));
      mb = max4_s8(mb, load4(p + b));
    }
    memcpy(col + a, &ma, 4);
    memcpy(col + b, &mb, 4);
  }
}

/* x [c, h, w] -> y [c, oh, ow]; window kh x kw, strides sh, sw, top / left padding pt, pl. Max is separable:
 * per output row, the window rows' column maxima first (column_max4, 4 lanes per SSUB8 + SEL), then each
 * output's max over its window columns of that row: ~4 instructions per pooled tap on kws's 13 x 3 pool
 * (25 x 5 map), where the direct window loop took ~10 (3-tap rows). Only column_max4 is hot: the rest is
 * built for size (-Os: 90 B less, 0.07 % more instructions on that stage). */
__attribute__((optimize("Os"))) void eecc_maxpool_s8(const int8_t* x, int8_t* y, int32_t c, int32_t h, int32_t w,
                                                     int32_t oh, int32_t ow, int32_t kh, int32_t kw, int32_t sh,
                                                     int32_t sw, int32_t pt, int32_t pl) {
  int8_t col[w + 4];
  for (int32_t ch = 0; ch < c; ++ch, x += h * w) {
    for (int32_t oy = 0; oy < oh; ++oy) {
      const int32_t y0 = oy * sh - pt;
      const int32_t ylo = y0 < 0 ? 0 : y0, yhi = y0 + kh > h ? h : y0 + kh;
      if (w >= 4) {
        column_max4(x + ylo * w, w, yhi - ylo, col);
      } else {
        for (int32_t j = 0; j < w; ++j) {
          int32_t m = -128;
          for (int32_t yy = ylo; yy < yhi; ++yy) m = x[yy * w + j] > m ? x[yy * w + j] : m;
          col[j] = (int8_t)m;
        }
      }
      for (int32_t ox = 0; ox < ow; ++ox) {
        const int32_t x0 = ox * sw - pl;
        const int32_t xlo = x0 < 0 ? 0 : x0, xhi = x0 + kw > w ? w : x0 + kw;
        int32_t m = col[xlo];
        for (int32_t xx = xlo + 1; xx < xhi; ++xx) m = col[xx] > m ? col[xx] : m;
        *y++ = (int8_t)m;
      }
    }
  }
}

/* TFLite's single rounding of int8_lowering._requantize: clamp(zo + ((acc·M0 + 2^(n-1)) >> n), -128, 127),
 * n = 32 + s in [1, 62] (fixed_point.fixed_point; for s ≥ 1 the same as its int32 high-word form). */
__attribute__((noinline, optimize("Os"))) static int8_t rq_fixed(int32_t acc, int32_t m0, int32_t n, int32_t zo) {
  const int64_t v = (((int64_t)acc * m0 + ((int64_t)1 << (n - 1))) >> n) + zo;
  return (int8_t)(v > 127 ? 127 : (v < -128 ? -128 : v));
}

/* int8 mean over the last axes (targets/mcu_dense.py): y[j] = RQ(bias + Σ_i x[j·count + i]), bias = -count·zx.
 * LLVM unrolled TVM's sum fully (kws: 125 taps, 774 B). */
void eecc_mean_s8(const int8_t* x, int8_t* y, int32_t c, int32_t count, int32_t bias, int32_t m0, int32_t n,
                  int32_t zo) {
  for (int32_t j = 0; j < c; ++j) {
    int32_t acc = bias, i = count;
    for (; i >= 4; i -= 4, x += 4) acc += x[0] + x[1] + x[2] + x[3];
    for (; i > 0; --i) acc += *x++;
    y[j] = rq_fixed(acc, m0, n, zo);
  }
}

/* acc[r] += Σ_i x[i]·rows[r][i], i < 4·quads, r < 4, and rows[r] += 4·quads: the fully connected layer's tile.
 * Per 4 inputs one LDR of x widened once (SXTB16, SXTB16 ROR 8: bytes 0, 2 and 1, 3), then per row one LDR,
 * two SXTB16 and two SMLAD: 25 instructions per 16 MACs (one row at a time re-widened x per row, ~2.75 per
 * MAC). Hand-written for the same reason as dot_dsp.c: gcc spilled two of the row pointers in the loop. */
#if defined(__ARM_FEATURE_SIMD32)
__attribute__((naked, used)) static void dot4(int32_t* acc, const int8_t** rows, const int8_t* x, int32_t quads) {
  (void)acc; (void)rows; (void)x; (void)quads;
  __asm__ volatile(
      ".syntax unified\n"
      "  push {r0, r1, r4-r11, lr}\n"
      "  ldm r0, {r4-r7}\n"
      "  ldm r1, {r8-r11}\n"
      "  cbz r3, 2f\n"
      "1:\n"
      "  ldr r0, [r2], #4\n"
      "  sxtb16 r1, r0, ror #8\n"
      "  sxtb16 r0, r0\n"
      "  ldr ip, [r8], #4\n"
      "  sxtb16 lr, ip, ror #8\n"
      "  sxtb16 ip, ip\n"
      "  smlad r4, ip, r0, r4\n"
      "  smlad r4, lr, r1, r4\n"
      "  ldr ip, [r9], #4\n"
      "  sxtb16 lr, ip, ror #8\n"
      "  sxtb16 ip, ip\n"
      "  smlad r5, ip, r0, r5\n"
      "  smlad r5, lr, r1, r5\n"
      "  ldr ip, [r10], #4\n"
      "  sxtb16 lr, ip, ror #8\n"
      "  sxtb16 ip, ip\n"
      "  smlad r6, ip, r0, r6\n"
      "  smlad r6, lr, r1, r6\n"
      "  ldr ip, [r11], #4\n"
      "  sxtb16 lr, ip, ror #8\n"
      "  sxtb16 ip, ip\n"
      "  smlad r7, ip, r0, r7\n"
      "  smlad r7, lr, r1, r7\n"
      "  subs r3, r3, #1\n"
      "  bne 1b\n"
      "2:\n"
      "  pop {r0, r1}\n"
      "  stm r0, {r4-r7}\n"
      "  stm r1, {r8-r11}\n"
      "  pop {r4-r11, pc}\n");
}
#else
static void dot4(int32_t* acc, const int8_t** rows, const int8_t* x, int32_t quads) {
  for (int32_t r = 0; r < 4; ++r, rows++)
    for (int32_t i = 0; i < 4 * quads; ++i) acc[r] += x[i] * *(*rows)++;
}
#endif

/* int8 fully connected layer (targets/mcu_dense.py): q_j = RQ_j(t[3j] + Σ_i x[i]·w[j·k + i]) with
 * (bias, M0) = t[2j], t[2j + 1] and n = the byte j after the 2·nout words, 4 rows at a time (dot4); a last block of fewer rows repeats the last row
 * (computed, not stored). The k % 4 tail is one more dot4 step on a word of the last x bytes and zeros: it reads
 * each row's word on, so w ends with 4 - k % 4 spare bytes when k % 4 (mcu_dense.fc_call), times x's zeros.
 * y: int8 q, or with scale_bits (a float32's bits, not 0) the float32 (q - zero)·scale of a DequantizeLinear
 * after it. */
__attribute__((optimize("Os"))) void eecc_fc_s8(const int8_t* x, const int8_t* w, const int32_t* t, void* y,
                                                int32_t k, int32_t nout, int32_t zo, uint32_t scale_bits,
                                                int32_t zero) {
  const int8_t* shift = (const int8_t*)(t + 2 * nout);
  uint32_t tail = 0;
  for (int32_t i = k - 1; i >= (k & ~3); --i) tail = tail << 8 | (uint8_t)x[i];
  for (int32_t j = 0; j < nout; j += 4) {
    const int8_t* rows[4];
    int32_t acc[4];
    for (int32_t r = 0; r < 4; ++r) {
      const int32_t row = j + r < nout ? j + r : nout - 1;
      rows[r] = w + row * k;
      acc[r] = t[2 * row];
    }
    dot4(acc, rows, x, k >> 2);
    if (k & 3) dot4(acc, rows, (const int8_t*)&tail, 1);
    for (int32_t r = 0; r < 4 && j + r < nout; ++r) {
      const int8_t q = rq_fixed(acc[r], t[2 * (j + r) + 1], shift[j + r], zo);
      if (scale_bits)
        ((float*)y)[j + r] = (float)((int32_t)q - zero) * f32(scale_bits);
      else
        ((int8_t*)y)[j + r] = q;
    }
  }
}

/* e^x for x <= 0 (targets/mcu_gate.py): x = k·ln 2 + r, |r| <= ln 2 / 2 (Cody-Waite: ln 2 in two parts, k·LN2_HI
 * exact for |k| < 2^11), e^r by its degree-6 Taylor polynomial (remainder < r^7/7! < 6e-8 relative), times 2^k
 * through the exponent field; 0 below -86 (e^-86 = 4e-38: the result stays a normal float). */
__attribute__((optimize("Os"))) static float exp_neg(float x) {
  if (x < -86.0f) return 0.0f;
  const int32_t k = (int32_t)(x * 1.44269504f - 0.5f);  /* toward zero: round to nearest for x <= 0 */
  const float r = (x - (float)k * 0.693145752f) - (float)k * 1.42860677e-6f;
  const float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720))))));
  uint32_t b;
  memcpy(&b, &p, sizeof b);
  b += (uint32_t)k << 23;
  return f32(b);
}

/* y[0] = max_i softmax(z)_i = 1 / Σ_i e^(z_i - max z) (targets/mcu_gate.py), n >= 1. */
__attribute__((optimize("Os"))) void eecc_softmax_max(const float* z, float* y, int32_t n) {
  float m = z[0], s = 0.0f;
  for (int32_t i = 1; i < n; ++i) m = z[i] > m ? z[i] : m;
  for (int32_t i = 0; i < n; ++i) s += exp_neg(z[i] - m);
  y[0] = 1.0f / s;
}
