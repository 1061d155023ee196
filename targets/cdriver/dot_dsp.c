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
