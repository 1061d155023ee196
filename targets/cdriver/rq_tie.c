/* onnxruntime's int8 requantisation next to a .5 tie, for the Armv6-M kernels (mcu_kernels._rq calls it only
 * where the fixed-point product lies within the near-tie window, fixed_point.TIE_WINDOW): MLAS computes
 * rne(fl32(fl32(acc) * S)), so the answer is k, k + 1, or the even one of them when the float lands on k + 1/2
 * (k = floor of the product). Out of line so that the kernels' loops keep their registers. */
#include <stdint.h>
#include <string.h>

int32_t eecc_rq_tie(int32_t acc, int32_t scale_bits, int32_t k) {
    float s, f, t;
    memcpy(&s, &scale_bits, sizeof s);
    f = (float)acc * s;
    t = (float)k + 0.5f; /* exact: |k| < 2^22 wherever the result is not saturated */
    if (f > t)
        return k + 1;
    if (f < t)
        return k;
    return k + (k & 1);
}
