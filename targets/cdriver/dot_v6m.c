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
