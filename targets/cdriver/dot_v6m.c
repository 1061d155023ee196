/* Armv6-M inner loop of the int8 conv tile (targets/mcu_kernels.py, _conv2d_plain): one output channel's
 * weights against the byte column of two pixels. LLVM keeps only one accumulator chain in registers and
 * spills the widened weights between the two (about 5.4 instructions per MAC on the kws pointwise
 * layers); here each widened weight serves both pixels from a register: 31 instructions per weight word
 * and 3 per pair of words, 4.06 per MAC.
 *
 *   acc[p] += sum_i sum_t sxtb(byte t of w[i]) * col[8i + 2t + p],  p = 0, 1;  i < words (>= 1)
 *
 * w: int8 weights, four to a little-endian word; col: x + 128 as bytes, interleaved [k, pixel] (LDRB
 * takes an immediate offset, so one pointer serves the whole word). Returns acc. */
#include <stdint.h>

__attribute__((naked, used)) int32_t* eecc_dot2_v6m(int32_t* acc, const int32_t* w, const uint8_t* col,
                                                    int32_t words) {
  (void)acc; (void)w; (void)col; (void)words;
  __asm__ volatile(
      ".syntax unified\n"
      "  push {r4-r7, lr}\n"
      "  mov r12, r0\n"
      "  ldr r4, [r0, #0]\n"
      "  ldr r5, [r0, #4]\n"
      "  lsls r6, r3, #2\n"
      "  adds r3, r6, r1\n" /* end of the weight row */
      "  lsls r6, r6, #29\n" /* Z: an even number of words */
      "  beq 1f\n"
      "  subs r2, r2, #8\n" /* odd: enter at the second word of the pair */
      "  b 2f\n"
      "1:\n"
      "  ldm r1!, {r6}\n"
      "  sxtb r7, r6\n"
      "  ldrb r0, [r2, #0]\n  muls r0, r7, r0\n  adds r4, r4, r0\n"
      "  ldrb r0, [r2, #1]\n  muls r0, r7, r0\n  adds r5, r5, r0\n"
      "  lsls r7, r6, #16\n  asrs r7, r7, #24\n"
      "  ldrb r0, [r2, #2]\n  muls r0, r7, r0\n  adds r4, r4, r0\n"
      "  ldrb r0, [r2, #3]\n  muls r0, r7, r0\n  adds r5, r5, r0\n"
      "  lsls r7, r6, #8\n  asrs r7, r7, #24\n"
      "  ldrb r0, [r2, #4]\n  muls r0, r7, r0\n  adds r4, r4, r0\n"
      "  ldrb r0, [r2, #5]\n  muls r0, r7, r0\n  adds r5, r5, r0\n"
      "  asrs r7, r6, #24\n"
      "  ldrb r0, [r2, #6]\n  muls r0, r7, r0\n  adds r4, r4, r0\n"
      "  ldrb r0, [r2, #7]\n  muls r0, r7, r0\n  adds r5, r5, r0\n"
      "2:\n"
      "  ldm r1!, {r6}\n"
      "  sxtb r7, r6\n"
      "  ldrb r0, [r2, #8]\n  muls r0, r7, r0\n  adds r4, r4, r0\n"
      "  ldrb r0, [r2, #9]\n  muls r0, r7, r0\n  adds r5, r5, r0\n"
      "  lsls r7, r6, #16\n  asrs r7, r7, #24\n"
      "  ldrb r0, [r2, #10]\n  muls r0, r7, r0\n  adds r4, r4, r0\n"
      "  ldrb r0, [r2, #11]\n  muls r0, r7, r0\n  adds r5, r5, r0\n"
      "  lsls r7, r6, #8\n  asrs r7, r7, #24\n"
      "  ldrb r0, [r2, #12]\n  muls r0, r7, r0\n  adds r4, r4, r0\n"
      "  ldrb r0, [r2, #13]\n  muls r0, r7, r0\n  adds r5, r5, r0\n"
      "  asrs r7, r6, #24\n"
      "  ldrb r0, [r2, #14]\n  muls r0, r7, r0\n  adds r4, r4, r0\n"
      "  ldrb r0, [r2, #15]\n  muls r0, r7, r0\n  adds r5, r5, r0\n"
      "  adds r2, r2, #16\n"
      "  cmp r1, r3\n"
      "  bne 1b\n"
      "  mov r0, r12\n"
      "  str r4, [r0, #0]\n"
      "  str r5, [r0, #4]\n"
      "  pop {r4-r7, pc}\n");
}

/* The four-pixel tile (mcu_kernels._conv2d_plain: pointwise convs with >= 4 output pixels): four accumulators,
 * acc[3] in r8 (ADD reaches the high registers; MULS and LDRB do not), so each widened weight serves four pixels:
 * 58 instructions per weight word (1 LDM, 6 to widen the four bytes, 16 x LDRB, MULS, ADD; 3 for the loop),
 * 3.63 per MAC (dot2: 4.06), + 30 per call (r8, r9 saved). One word per iteration: 150 B of code (two: 280 B
 * for 3.56 per MAC; stages with another conv link dot2 too).
 *
 *   acc[p] += sum_i sum_t sxtb(byte t of w[i]) * col[16i + 4t + p],  p = 0..3;  i < words (>= 1)
 *
 * col: x + 128 as bytes, interleaved [k, pixel]. Returns acc. */
__attribute__((naked, used)) int32_t* eecc_dot4_v6m(int32_t* acc, const int32_t* w, const uint8_t* col,
                                                    int32_t words) {
  (void)acc; (void)w; (void)col; (void)words;
  __asm__ volatile(
      ".syntax unified\n"
      "  push {r4-r7, lr}\n"
      "  mov r4, r8\n"
      "  mov r5, r9\n"
      "  push {r4, r5}\n"
      "  mov r12, r0\n"
      "  ldr r4, [r0, #12]\n"
      "  mov r8, r4\n"
      "  ldr r5, [r0, #0]\n"
      "  ldr r6, [r0, #4]\n"
      "  ldr r7, [r0, #8]\n"
      "  lsls r4, r3, #2\n"
      "  adds r0, r4, r1\n" /* end of the weight row */
      "  mov r9, r0\n"
      "1:\n"
      "  ldm r1!, {r3}\n"
      "  sxtb r4, r3\n"
      "  ldrb r0, [r2, #0]\n  muls r0, r4, r0\n  adds r5, r5, r0\n"
      "  ldrb r0, [r2, #1]\n  muls r0, r4, r0\n  adds r6, r6, r0\n"
      "  ldrb r0, [r2, #2]\n  muls r0, r4, r0\n  adds r7, r7, r0\n"
      "  ldrb r0, [r2, #3]\n  muls r0, r4, r0\n  add r8, r0\n"
      "  lsls r4, r3, #16\n  asrs r4, r4, #24\n"
      "  ldrb r0, [r2, #4]\n  muls r0, r4, r0\n  adds r5, r5, r0\n"
      "  ldrb r0, [r2, #5]\n  muls r0, r4, r0\n  adds r6, r6, r0\n"
      "  ldrb r0, [r2, #6]\n  muls r0, r4, r0\n  adds r7, r7, r0\n"
      "  ldrb r0, [r2, #7]\n  muls r0, r4, r0\n  add r8, r0\n"
      "  lsls r4, r3, #8\n  asrs r4, r4, #24\n"
      "  ldrb r0, [r2, #8]\n  muls r0, r4, r0\n  adds r5, r5, r0\n"
      "  ldrb r0, [r2, #9]\n  muls r0, r4, r0\n  adds r6, r6, r0\n"
      "  ldrb r0, [r2, #10]\n  muls r0, r4, r0\n  adds r7, r7, r0\n"
      "  ldrb r0, [r2, #11]\n  muls r0, r4, r0\n  add r8, r0\n"
      "  asrs r4, r3, #24\n"
      "  ldrb r0, [r2, #12]\n  muls r0, r4, r0\n  adds r5, r5, r0\n"
      "  ldrb r0, [r2, #13]\n  muls r0, r4, r0\n  adds r6, r6, r0\n"
      "  ldrb r0, [r2, #14]\n  muls r0, r4, r0\n  adds r7, r7, r0\n"
      "  ldrb r0, [r2, #15]\n  muls r0, r4, r0\n  add r8, r0\n"
      "  adds r2, r2, #16\n"
      "  cmp r1, r9\n"
      "  bne 1b\n"
      "  mov r0, r12\n"
      "  str r5, [r0, #0]\n"
      "  str r6, [r0, #4]\n"
      "  str r7, [r0, #8]\n"
      "  mov r4, r8\n"
      "  str r4, [r0, #12]\n"
      "  pop {r4, r5}\n"
      "  mov r8, r4\n"
      "  mov r9, r5\n"
      "  pop {r4-r7, pc}\n");
}

/* The quad tile's column of a pointwise conv (mcu_kernels.pointwise): pixels p0 .. p0 + 3 of every input channel
 * as x + 128 bytes, interleaved [channel, pixel]; pixels past the last (npix - 1) repeat it (their outputs are not
 * stored). A rolled loop, 17 instructions per channel: the same copy in TIR, unrolled by LLVM, cost ResNet's
 * 16-channel shortcut conv 410 B of code. x: [c, npix] int8; col: 4c bytes. */
void eecc_col4_pw_v6m(uint8_t* col, const int8_t* x, int32_t npix, int32_t c, int32_t p0) {
  int32_t room = npix - 1 - p0; /* >= 0: p0 = 4q < npix */
  int32_t d1 = room < 1 ? room : 1, d2 = room < 2 ? room : 2, d3 = room < 3 ? room : 3;
  const int8_t* end = x + npix * c;
  for (x += p0; x < end; x += npix, col += 4) {
    col[0] = (uint8_t)(x[0] + 128);
    col[1] = (uint8_t)(x[d1] + 128);
    col[2] = (uint8_t)(x[d2] + 128);
    col[3] = (uint8_t)(x[d3] + 128);
  }
}

/* The quad tile's column of any other conv (mcu_kernels.plain_column: a window, strides or padding; >= 4 output
 * pixels): output pixels p0 .. p0 + 3 (past the last, npix - 1, it repeats) as x + 128 bytes interleaved [k, pixel],
 *   col[4((ci·kh + ky)·kw + kx) + p] = x[ci, top_p + ky, left_p + kx] + 128, or zx + 128 outside the h x w image.
 * Per pixel and input channel the window's rows split into those above the image (ra), in it (rm) and below (rb),
 * its columns into nl padding columns, nm in the image and nr (the same in every row): the padding is written
 * as runs of bytes 4 (rows) or 4·kw (columns) apart, the in-image rm x nm block is a byte copy (3 instructions
 * per tap + 4 per row for 3- and 4-wide runs). A rolled loop: the TIR fill, 4 times over and unrolled by LLVM,
 * grew kws's 40-tap front conv by 1.7 KB. One unsigned division per call (p0 / ow).
 * x: channel 0 of the input; g: mcu_kernels.col_geometry {c, h, w, kh, kw, sh, sw, pt, pl, ow, npix, kp, zx}. */
__attribute__((noinline)) static void pads(uint8_t* out, int32_t n, int32_t step, uint32_t pad) {
  for (; n > 0; --n, out += step) *out = (uint8_t)pad;
}

/* rows x n bytes: out[4j] = s[j] + 128, rows w bytes apart in x and `step` in col. */
__attribute__((noinline)) static void copy_rows(uint8_t* out, const int8_t* s, int32_t rows, int32_t n, int32_t w,
                                                int32_t step) {
  if (n == 4) {
    for (; rows > 0; --rows, s += w, out += step) {
      out[0] = (uint8_t)(s[0] + 128);
      out[4] = (uint8_t)(s[1] + 128);
      out[8] = (uint8_t)(s[2] + 128);
      out[12] = (uint8_t)(s[3] + 128);
    }
  } else if (n == 3) {
    for (; rows > 0; --rows, s += w, out += step) {
      out[0] = (uint8_t)(s[0] + 128);
      out[4] = (uint8_t)(s[1] + 128);
      out[8] = (uint8_t)(s[2] + 128);
    }
  } else {
    for (w -= n, step -= 4 * n; rows > 0; --rows, s += w, out += step)
      for (int32_t j = n; j > 0; --j, out += 4) *out = (uint8_t)(*s++ + 128);
  }
}

__attribute__((noinline, optimize("Os"))) static void col4_pixel(uint8_t* out, const int8_t* x, const int16_t* g,
                                                                   int32_t top, int32_t left) {
  const int32_t h = g[1], w = g[2], kh = g[3], kw = g[4];
  const uint32_t pad = (uint32_t)(g[12] + 128);
  int32_t nl = left < 0 ? -left : 0, nr = left + kw - w, ra = top < 0 ? -top : 0, rb = top + kh - h;
  nl = nl < kw ? nl : kw;
  nr = nr < 0 ? 0 : nr < kw - nl ? nr : kw - nl;
  ra = ra < kh ? ra : kh;
  rb = rb < 0 ? 0 : rb < kh - ra ? rb : kh - ra;
  const int32_t nm = kw - nl - nr, rm = kh - ra - rb, step = 4 * kw;
  x += (top + ra) * w + left + nl;
  for (int32_t ci = g[0]; ci > 0; --ci, x += h * w, out += kh * step) {
    uint8_t* in = out + ra * step; /* the first in-image row */
    if (ra) pads(out, ra * kw, 4, pad);
    if (rb) pads(in + rm * step, rb * kw, 4, pad);
    for (int32_t j = 0; j < nl; ++j) pads(in + 4 * j, rm, step, pad);
    for (int32_t j = kw - nr; j < kw; ++j) pads(in + 4 * j, rm, step, pad);
    if (nm) copy_rows(in + 4 * nl, x, rm, nm, w, step);
  }
}

void eecc_col4_win_v6m(uint8_t* col, const int8_t* x, const int16_t* g, int32_t p0) {
  const int32_t ow = g[9];
  int32_t oy = (int32_t)((uint32_t)p0 / (uint32_t)ow), ox = p0 - oy * ow, more = g[10] - 1 - p0;
  for (int32_t p = 0; p < 4; ++p) {
    col4_pixel(col + p, x, g, oy * g[5] - g[7], ox * g[6] - g[8]);
    if (more-- > 0 && ++ox == ow) { /* the next pixel (else this one again) */
      ox = 0;
      ++oy;
    }
  }
}
