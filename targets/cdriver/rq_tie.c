/* Armv6-M C helpers (linked with every Armv6-M stage; plain C, so the tests also build them for the host).
 *
 * onnxruntime's int8 requantisation next to a .5 tie, for the Armv6-M kernels (mcu_kernels._rq calls it only
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

/* Stage-input QuantizeLinear on Armv6-M (no FPU): y = clamp(round_half_even(x / s) + z, -128, 127) for float32 x
 * (targets/mcu_quantize.py: the exact answer is the largest j with t[j] <= key(x), minus 128, where t = thresholds(s,
 * z) and key(x) = bits(x) ^ ((bits(x) >> 31) & 0x7FFFFFFF) orders float32 as int32).
 *
 * The TIR bisection over t costs 8 steps of ~7 instructions (57 per element on the M0+: kws cut 6 stage 1, 6,000
 * elements, 341,292 instructions). Here an integer estimate of round(|x| / s) picks j0 and the table only confirms
 * it: |x| = m10 * 2^(e - 136) within 2^-9 (m10: the hidden bit and the top 9 mantissa bits, e: the biased exponent),
 * so 2|x|/s ~ (m10 * r) >> (c - e) with r = round(2^P / s) in [2^20, 2^21) and c = 135 + P (quantize_v6m_constants),
 * m10 * r < 2^31. j0 = zb +- ((that + 1) >> 1), zb = z + 128, clamped to [0, 255]; then one step up while
 * t[j + 1] <= key (t[256] = INT32_MAX stops it, and j < 255 for the one NaN whose key is INT32_MAX) and down while
 * key < t[j] (t[0] = INT32_MIN stops it). The answer is the table's whatever the estimate, so it equals the
 * bisection's for every x; the estimate only sets the steps: none unless |x|/s lies within ~1/4 of a rounding
 * boundary or beyond 2^29 (there e > c saturates it). 34.6 instructions per element measured (kws cut 6 stage 1:
 * 207,490 for 6,000; gcc -O2 keeps r and c in memory and high registers).
 *
 * x: n float32 as int32 bits; t: int32[257]; y: n int8. */
void eecc_quantize_v6m(const int32_t* x, const int32_t* t, int8_t* y, int32_t n, int32_t r, int32_t c, int32_t zb) {
    const uint32_t r512 = (uint32_t)r << 9; /* the hidden bit's share of m10 * r */
    const int32_t* mid = t + 128; /* y = j - 128 = p - mid */
    for (const int32_t* end = x + n; x != end; ++x, ++y) {
        int32_t b = *x;
        int32_t s = b >> 31;
        int32_t key = b ^ (int32_t)((uint32_t)s >> 1);
        int32_t sh = c - (int32_t)(((uint32_t)b << 1) >> 24);
        uint32_t prod = (((uint32_t)b << 9) >> 23) * (uint32_t)r + r512;
        int32_t u;
        if ((uint32_t)sh < 32)
            u = (int32_t)(((prod >> sh) + 1) >> 1);
        else
            u = sh < 0 ? (int32_t)r512 : 0; /* |x|/s beyond 2^29 (r512 >= 2^29), or below 2^-2 */
        int32_t j = ((u ^ s) - s) + zb;
        if ((uint32_t)j > 255)
            j = j < 0 ? 0 : 255;
        const int32_t* p = t + j;
        if (p[1] <= key) {
            do
                ++p;
            while (p < mid + 127 && p[1] <= key);
        } else {
            while (key < p[0])
                --p;
        }
        *y = (int8_t)(p - mid);
    }
}
