#include <stdint.h>

/* The int8 conv tile on Armv7E-M (targets/mcu_kernels.py, _conv2d_dsp): for one pixel pair, `pairs` pairs of output
 * channels, each 2 channels x 2 pixels of SMLAD then requantised and stored:
 *
 *   acc[t][p] = bias[2j + t] + sum_i SMLAD(W[2i + t], col_p[2i .. 2i + 1]),  t = channel of the pair, p = pixel
 *   y[(2j + t)·cstr + p·d] = sat8(rne(fl32(acc[t][p])·S[2j + t]) + zo)   (onnxruntime's MlasRequantizeOutput)
 *
 * In the MAC loop the 4 accumulators, the 4 widened weights and the 2 column words of one pixel stay in registers:
 * per 16 MACs one LDRD of weights, two LDRD of columns, 4 SXTB16, 8 SMLAD and the loop's SUBS and BNE (17
 * instructions); LLVM's schedule of the same tile spilled the column words (about 1.36 per MAC on the kws layers).
 * The requantisation is here too (VCVT, VMUL, VCVTR two S registers per VMOV; QADD, SSAT), 49 instructions per
 * channel pair besides the MACs where the tile called from TIR cost ~60 (bias stored to and accumulators reloaded
 * from memory, the spare lanes' compares).
 * w: the channel pairs' weight words, alternating channels (mcu_kernels.pack_weights: bytes (a0, a2, a1, a3), so
 * SXTB16 and SXTB16 ROR 8 give the int16 pairs (a0, a1), (a2, a3)); col: int16 inputs of pixel 0, then those of
 * pixel 1 2·quads words later; quads = kp / 4 >= 1; cq: (bias, bits of S) per channel; y: channel 2j's pixel 0 output.
 * Stores go channel 2j+1 before 2j, pixel 1 before 0: d = 0 (an odd last pixel) or cstr = 0 (a spare channel) puts
 * the spare lane's value where the real one then overwrites it. */
__attribute__((naked, used)) void eecc_conv2x2_dsp(int8_t* y, const int32_t* w, const int32_t* col,
                                                   const int32_t* cq, int32_t quads, int32_t pairs, int32_t cstr,
                                                   int32_t d, int32_t zo) {
  (void)y; (void)w; (void)col; (void)cq; (void)quads; (void)pairs; (void)cstr; (void)d; (void)zo;
  __asm__ volatile(
      ".syntax unified\n"
      "  push {r4-r11, lr}\n"
      "  sub sp, #16\n" /* [0] y [4] cq [8] col [12] cq's end */
      "  strd r0, r3, [sp]\n"
      "  ldr r4, [sp, #56]\n" /* pairs */
      "  add r4, r3, r4, lsl #4\n"
      "  strd r2, r4, [sp, #8]\n"
      "1:\n"
      "  ldr r3, [sp, #4]\n"
      "  ldrd r4, r8, [r3]\n" /* bias and S of channel 2j, then of 2j + 1 */
      "  ldrd r6, r9, [r3, #8]\n"
      "  vmov s4, s5, r8, r9\n"
      "  mov r5, r4\n"
      "  mov r7, r6\n"
      "  ldr r2, [sp, #8]\n"
      "  ldr r3, [sp, #52]\n" /* quads */
      "  add.w ip, r2, r3, lsl #3\n" /* pixel 1's column */
      "2:\n"
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
      "  bne 2b\n"
      "  vmov s0, s1, r4, r5\n"
      "  vmov s2, s3, r6, r7\n"
      "  vcvt.f32.s32 s0, s0\n"
      "  vcvt.f32.s32 s1, s1\n"
      "  vcvt.f32.s32 s2, s2\n"
      "  vcvt.f32.s32 s3, s3\n"
      "  vmul.f32 s0, s0, s4\n"
      "  vmul.f32 s1, s1, s4\n"
      "  vmul.f32 s2, s2, s5\n"
      "  vmul.f32 s3, s3, s5\n"
      "  vcvtr.s32.f32 s0, s0\n"
      "  vcvtr.s32.f32 s1, s1\n"
      "  vcvtr.s32.f32 s2, s2\n"
      "  vcvtr.s32.f32 s3, s3\n"
      "  vmov r4, r5, s0, s1\n"
      "  vmov r6, r7, s2, s3\n"
      "  ldr r8, [sp, #68]\n" /* zo */
      "  qadd r4, r4, r8\n"
      "  qadd r5, r5, r8\n"
      "  qadd r6, r6, r8\n"
      "  qadd r7, r7, r8\n"
      "  ssat r4, #8, r4\n"
      "  ssat r5, #8, r5\n"
      "  ssat r6, #8, r6\n"
      "  ssat r7, #8, r7\n"
      "  ldrd r9, r10, [sp, #60]\n" /* cstr, d */
      "  ldrd r0, r3, [sp]\n"
      "  add r11, r0, r9\n" /* channel 2j + 1 */
      "  strb r7, [r11, r10]\n"
      "  strb r6, [r11]\n"
      "  strb r5, [r0, r10]\n"
      "  strb r4, [r0]\n"
      "  add r0, r11, r9\n"
      "  adds r3, r3, #16\n"
      "  strd r0, r3, [sp]\n"
      "  ldr r4, [sp, #12]\n"
      "  cmp r3, r4\n"
      "  bne 1b\n"
      "  add sp, #16\n"
      "  pop {r4-r11, pc}\n");
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

/* One channel of a 3x3 stride-(sh, 1) depthwise conv on Armv7E-M (mcu_depthwise._depthwise_dsp3), from the
 * zx-padded int16 plane whose rows are `pitch` bytes apart (an even number of columns, so every even column starts
 * an aligned int32 pair). With A = (x0, x1), B = (x2, x3) of one filter row and a = (w0, w1), b = (w1, w2):
 *
 *   outputs j, j+1:  y_j += SMLAD(a, A) + SMLATB(b, B),  y_j+1 += SMLABT(a, A) + SMLAD(b, B)
 *
 * then y = sat8(rne(fl32(acc)·S) + zo), onnxruntime's requantisation (VCVT, VMUL, VCVTR; QADD, SSAT). LLVM's
 * schedule of the same TIR spilled the 6 weight pairs and the row's columns (kws: 113 instructions per output
 * row of 5); here weights, accumulators and the three row pointers stay in registers, the bias (twice), zo and the
 * row's end are one LDRD each from the frame: 33 instructions per output pair, 20 for an odd row's last output and
 * 10 per row (its end, one LDR PC to the odd output or past it, the pointers' step).
 * y: the channel's [oh, ow] outputs; x: its plane's first row (the top padding row); w: its 9 int8 taps;
 * cq: (bias, bits of S); ow >= 2; rstep = sh·pitch. */
__attribute__((naked, used, aligned(4))) void eecc_dw3_dsp(int8_t* y, const int32_t* x, const int8_t* w,
                                                          const int32_t* cq, int32_t oh, int32_t ow, int32_t pitch,
                                                          int32_t rstep, int32_t zo) {
  (void)y; (void)x; (void)w; (void)cq; (void)oh; (void)ow; (void)pitch; (void)rstep; (void)zo;
  __asm__ volatile(
      ".syntax unified\n"
      "  push {r4-r11, lr}\n"
      "  sub sp, #32\n" /* [0] bias [4] bias [8] zo [12] row's pairs end [16] ow & ~1 [20] d [24] y end [28] 4f/3f */
      "  ldrd r4, r5, [r3]\n"
      "  vmov s2, r5\n" /* S */
      "  strd r4, r4, [sp]\n"
      "  ldrsb r4, [r2, #0]\n" /* a0 = (w0, w1), b0 = (w1, w2), ... in r4 .. r9 */
      "  ldrsb r5, [r2, #1]\n"
      "  ldrsb r10, [r2, #2]\n"
      "  pkhbt r5, r5, r10, lsl #16\n"
      "  pkhbt r4, r4, r5, lsl #16\n"
      "  ldrsb r6, [r2, #3]\n"
      "  ldrsb r7, [r2, #4]\n"
      "  ldrsb r10, [r2, #5]\n"
      "  pkhbt r7, r7, r10, lsl #16\n"
      "  pkhbt r6, r6, r7, lsl #16\n"
      "  ldrsb r8, [r2, #6]\n"
      "  ldrsb r9, [r2, #7]\n"
      "  ldrsb r10, [r2, #8]\n"
      "  pkhbt r9, r9, r10, lsl #16\n"
      "  pkhbt r8, r8, r9, lsl #16\n"
      "  ldr r10, [sp, #84]\n"
      "  str r10, [sp, #8]\n"
      "  ldr r10, [sp, #72]\n" /* ow */
      "  bic r11, r10, #1\n"
      "  str r11, [sp, #16]\n"
      "  lsls r11, r10, #31\n" /* where a row's pairs go on: its odd last output, or the next row (LDR PC) */
      "  ite ne\n"
      "  adrne r11, 4f\n"
      "  adreq r11, 3f\n"
      "  orr r11, r11, #1\n" /* Thumb; ADR is right as the function is word-aligned */
      "  str r11, [sp, #28]\n"
      "  adds r11, r10, #1\n"
      "  bic r11, r11, #1\n"
      "  lsls r11, r11, #1\n" /* the bytes a row's pointers advance: 4·ceil(ow / 2) */
      "  ldr r12, [sp, #80]\n"
      "  sub r12, r12, r11\n"
      "  str r12, [sp, #20]\n"
      "  ldr r11, [sp, #68]\n"
      "  mul r11, r11, r10\n"
      "  add r11, r11, r0\n"
      "  str r11, [sp, #24]\n"
      "  ldr r12, [sp, #76]\n"
      "  add r2, r1, r12\n" /* rows 1 and 2 of the filter */
      "  add r3, r2, r12\n"
      "1:\n"
      "  ldr r12, [sp, #16]\n"
      "  add r12, r12, r0\n"
      "  str r12, [sp, #12]\n"
      "2:\n"
      "  ldrd r10, r11, [sp]\n"
      "  ldrd r12, lr, [r1], #4\n"
      "  smlad r10, r4, r12, r10\n"
      "  smlabt r11, r4, r12, r11\n"
      "  smlatb r10, r5, lr, r10\n"
      "  smlad r11, r5, lr, r11\n"
      "  ldrd r12, lr, [r2], #4\n"
      "  smlad r10, r6, r12, r10\n"
      "  smlabt r11, r6, r12, r11\n"
      "  smlatb r10, r7, lr, r10\n"
      "  smlad r11, r7, lr, r11\n"
      "  ldrd r12, lr, [r3], #4\n"
      "  smlad r10, r8, r12, r10\n"
      "  smlabt r11, r8, r12, r11\n"
      "  smlatb r10, r9, lr, r10\n"
      "  smlad r11, r9, lr, r11\n"
      "  vmov s0, s1, r10, r11\n"
      "  vcvt.f32.s32 s0, s0\n"
      "  vcvt.f32.s32 s1, s1\n"
      "  vmul.f32 s0, s0, s2\n"
      "  vmul.f32 s1, s1, s2\n"
      "  vcvtr.s32.f32 s0, s0\n"
      "  vcvtr.s32.f32 s1, s1\n"
      "  vmov r10, r11, s0, s1\n"
      "  ldrd r12, lr, [sp, #8]\n" /* zo, the row's pairs end */
      "  qadd r10, r10, r12\n"
      "  qadd r11, r11, r12\n"
      "  ssat r10, #8, r10\n"
      "  ssat r11, #8, r11\n"
      "  strb r11, [r0, #1]\n"
      "  strb r10, [r0], #2\n"
      "  cmp r0, lr\n"
      "  bne 2b\n"
      "  ldr pc, [sp, #28]\n"
      "4:\n" /* an odd row: its last output alone */
      "  ldr r10, [sp]\n"
      "  ldrd r12, lr, [r1], #4\n"
      "  smlad r10, r4, r12, r10\n"
      "  smlatb r10, r5, lr, r10\n"
      "  ldrd r12, lr, [r2], #4\n"
      "  smlad r10, r6, r12, r10\n"
      "  smlatb r10, r7, lr, r10\n"
      "  ldrd r12, lr, [r3], #4\n"
      "  smlad r10, r8, r12, r10\n"
      "  smlatb r10, r9, lr, r10\n"
      "  vmov s0, r10\n"
      "  vcvt.f32.s32 s0, s0\n"
      "  vmul.f32 s0, s0, s2\n"
      "  vcvtr.s32.f32 s0, s0\n"
      "  vmov r10, s0\n"
      "  ldr r12, [sp, #8]\n"
      "  qadd r10, r10, r12\n"
      "  ssat r10, #8, r10\n"
      "  strb r10, [r0], #1\n"
      "3:\n"
      "  ldrd r12, lr, [sp, #20]\n" /* d, the end of y */
      "  add r1, r1, r12\n"
      "  add r2, r2, r12\n"
      "  add r3, r3, r12\n"
      "  cmp r0, lr\n"
      "  bne 1b\n"
      "  add sp, #32\n"
      "  pop {r4-r11, pc}\n");
}
