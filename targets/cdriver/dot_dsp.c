/* Armv7E-M inner loop of the int8 conv tile (targets/mcu_kernels.py, _conv2d_dsp): 2 output channels x
 * 2 pixels of SMLAD. LLVM keeps the tile's column words in stack slots and reloads one per SMLAD (about
 * 1.36 instructions per MAC on the kws layers); here the 4 accumulators, the 4 widened weights and the 2
 * column words of one pixel stay in registers: per 16 MACs one LDRD of weights, two LDRD of columns,
 * 4 SXTB16, 8 SMLAD and the loop's SUBS and BNE (17 instructions).
 *
 *   acc[2t + p] += sum_i SMLAD(W[2i + t], col_p[2i .. 2i + 1]),  t = channel of the pair, p = pixel
 *
 * w: the pair's weight words, alternating channels (mcu_kernels.pack_weights: bytes (a0, a2, a1, a3), so
 * SXTB16 and SXTB16 ROR 8 give the int16 pairs (a0, a1), (a2, a3)); col: int16 inputs of pixel 0, then
 * those of pixel 1 2·quads words later; quads = kp / 4 >= 1. Returns acc. */
#include <stdint.h>

__attribute__((naked, used)) int32_t* eecc_dot2x2_dsp(int32_t* acc, const int32_t* w, const int32_t* col,
                                                      int32_t quads) {
  (void)acc; (void)w; (void)col; (void)quads;
  __asm__ volatile(
      ".syntax unified\n"
      "  push {r0, r4-r11, lr}\n"
      "  add.w ip, r2, r3, lsl #3\n" /* pixel 1's column */
      "  ldm r0, {r4-r7}\n"
      "1:\n"
      "  ldrd r8, r10, [r1], #8\n" /* channel 2j, channel 2j + 1 */
      "  sxtb16 r9, r8, ror #8\n"
      "  sxtb16 r8, r8\n"
      "  sxtb16 r11, r10, ror #8\n"
      "  sxtb16 r10, r10\n"
      "  ldrd lr, r0, [r2], #8\n" /* pixel 0 */
      "  smlad r4, r8, lr, r4\n"
      "  smlad r4, r9, r0, r4\n"
      "  smlad r6, r10, lr, r6\n"
      "  smlad r6, r11, r0, r6\n"
      "  ldrd lr, r0, [ip], #8\n" /* pixel 1 */
      "  smlad r5, r8, lr, r5\n"
      "  smlad r5, r9, r0, r5\n"
      "  smlad r7, r10, lr, r7\n"
      "  smlad r7, r11, r0, r7\n"
      "  subs r3, r3, #1\n"
      "  bne 1b\n"
      "  ldr r0, [sp]\n"
      "  stm r0, {r4-r7}\n"
      "  pop {r0, r4-r11, pc}\n");
}

/* The int16 columns of output pixels pix and min(pix + 1, npix - 1) for the same conv (mcu_kernels._conv2d_dsp):
 *   col[(ci·kh + ky)·kw + kx] = x[ci, top + ky, left + kx], or zx outside the h x w image (padding),
 * pixel 1's column kp entries later. A loop here rather than in the TIR: LLVM unrolls the constant-trip tap
 * loops of every conv geometry into straight code (the kws front conv's 40 taps 1.5 KB, a 48-channel
 * pointwise conv's 0.8 KB), while this one function serves every conv of the stage for a few instructions
 * per tap more. x: channel 0 of the input; g: the geometry (mcu_kernels.col_geometry)
 * {c, h, w, kh, kw, sh, sw, pt, pl, ow, npix, kp, zx}, int16. */
static void col_one(int16_t* col, const int8_t* x, const int16_t* g, int32_t pix) {
  const int32_t h = g[1], w = g[2], kh = g[3], kw = g[4];  /* locals: the int16 stores to col may alias g */
  const int16_t zx = g[12];
  const int32_t top = pix / g[9] * g[5] - g[7], left = pix % g[9] * g[6] - g[8];
  for (int32_t ci = g[0]; ci > 0; --ci, x += h * w)
    for (int32_t y = top; y < top + kh; ++y) {
      const int8_t* row = x + y * w;
      const uint32_t span = (uint32_t)y < (uint32_t)h ? (uint32_t)w : 0u; /* a padding row: no column inside */
      for (int32_t xx = left; xx < left + kw; ++xx) *col++ = (uint32_t)xx < span ? row[xx] : zx;
    }
}

void eecc_col2_s16(int16_t* col, const int8_t* x, const int16_t* g, int32_t pix) {
  col_one(col, x, g, pix);
  col_one(col + g[11], x, g, pix + 1 < g[10] ? pix + 1 : pix);
}

/* The column of output pixel pix for a conv of one input channel and a 4-wide window (eecc_col2_r4_s16): per
 * window row one word of 4 input bytes v = (x0, x1, x2, x3) widened by SXTB16 and SXTB16 ROR 8 to the int16
 * pairs (x0, x2), (x1, x3), i.e. the column in the order (kx 0, 2, 1, 3) per row, to which mcu_kernels.conv2d
 * permutes the weights. A window that overlaps the image's left or right edge loads the row's
 * first or last 4 bytes and shifts them into place (LSR, then LSL: one of the two by 0), the lanes outside
 * taking zx (ORR with `fill`); rows outside the image are (zx, zx) pairs. Per in-image row LDR, ADD, LSR,
 * LSL, ORR, 2 SXTB16, STRD and the loop's SUBS and BNE: 10 instructions per 4 taps (col_one: ~14 per tap;
 * kws cut 1 stage 0 on the M4: 2.177 -> 1.97 instructions per MAC with the ops_fpu.c changes of the same
 * commit). The setup is built for size (once per pixel; 256 B, col_one 208). w >= 4. */
__attribute__((optimize("Os"))) static void col_r4(uint32_t* col, const int8_t* x, const int16_t* g, int32_t pix) {
  const int32_t h = g[1], w = g[2], kh = g[3];
  const uint32_t zx4 = (uint8_t)g[12] * 0x01010101u, zpair = (uint16_t)g[12] * 0x10001u;
  const int32_t top = pix / g[9] * g[5] - g[7], left = pix % g[9] * g[6] - g[8];
  const int32_t at = left < 0 ? 0 : (left > w - 4 ? w - 4 : left);  /* the loaded word's first column */
  const int32_t d = 8 * (left - at);                                  /* > 0: right edge, < 0: left edge */
  const uint32_t r = d > 0 ? (uint32_t)d : 0u, l = d < 0 ? (uint32_t)-d : 0u;
  uint32_t keep = 0xFFFFFFFFu;  /* the lanes inside the image: the loop's shifts of all ones (in asm as there: a
                                 * word wholly outside, padding >= 4, shifts by >= 32, which give 0) */
  __asm__("lsr %[k], %[k], %[r]\n  lsl %[k], %[k], %[l]" : [k] "+r"(keep) : [r] "r"(r), [l] "r"(l));
  const uint32_t fill = zx4 & ~keep;  /* zx in the lanes outside the image */
  const int32_t ylo = top < 0 ? 0 : top, yhi = top + kh < h ? top + kh : h;
  int32_t n = yhi - ylo;
  const int8_t* p = x + ylo * w + at;
  for (int32_t y = top; y < ylo; ++y) *col++ = zpair, *col++ = zpair;
  if (n > 0) {
    uint32_t v, t;
    __asm__ volatile(
        "1:\n"
        "  ldr %[v], [%[p]]\n" /* unaligned: allowed on Armv7-M */
        "  add %[p], %[p], %[w]\n"
        "  lsr %[v], %[v], %[r]\n"
        "  lsl %[v], %[v], %[l]\n"
        "  orr %[v], %[v], %[fill]\n"
        "  sxtb16 %[t], %[v], ror #8\n"
        "  sxtb16 %[v], %[v]\n"
        "  strd %[v], %[t], [%[col]], #8\n"
        "  subs %[n], %[n], #1\n"
        "  bne 1b\n"
        : [v] "=&r"(v), [t] "=&r"(t), [p] "+r"(p), [col] "+r"(col), [n] "+r"(n)
        : [w] "r"(w), [r] "r"(r), [l] "r"(l), [fill] "r"(fill)
        : "cc", "memory");
  }
  for (int32_t y = yhi > ylo ? yhi : ylo; y < top + kh; ++y) *col++ = zpair, *col++ = zpair;
}

void eecc_col2_r4_s16(int16_t* col, const int8_t* x, const int16_t* g, int32_t pix) {
  col_r4((uint32_t*)col, x, g, pix);
  col_r4((uint32_t*)(col + g[11]), x, g, pix + 1 < g[10] ? pix + 1 : pix);
}

/* The same for a 1x1, stride 1, unpadded conv, whose pixel index is its input offset: a strided copy (its own
 * function, so a stage of pointwise convs links no col_one). One channel a step: two a step (unrolled) were 140 B
 * more code for ~0.25 instructions per tap less (0.005 per MAC of a 48-channel pointwise conv). */
void eecc_col2_pw_s16(int16_t* col, const int8_t* x, const int16_t* g, int32_t pix) {
  const int32_t plane = g[1] * g[2], d = pix + 1 < g[10] ? 1 : 0;
  const int8_t* p = x + pix;
  int16_t* col1 = col + g[11];
  for (int32_t ci = g[0]; ci > 0; --ci, p += plane) *col++ = p[0], *col1++ = p[d];
}

/* n entries of v: the depthwise kernel's zx-padded plane (mcu_depthwise._depthwise_dsp) before its channels are
 * copied in. LLVM unrolled the same TIR loop (~400 B per depthwise geometry). */
void eecc_fill_s16(int16_t* dst, int32_t n, int32_t v) {
  for (; n > 0; --n) *dst++ = (int16_t)v;
}
