/* The activation quantization passes for one flavour, included by _kernel.c once per path (this
 * file undefines its parameters at the end) with:
 *   SIMD(name)  the flavour's function names     FN  function attributes (target)     LANES
 * The arithmetic is written once on GCC vector types of LANES rows (of one channel), which the
 * compiler turns into AVX-512, AVX2 or its portable baseline; every operation is one IEEE
 * float32 operation, so every flavour rounds exactly as quantize_activations does. Input rows
 * are channel-major ([c][m]): a vector's channels are LANES-row loads a plane apart, and the
 * per-vector max is a vertical max, with no horizontal reduction. */

typedef float SIMD(qf) __attribute__((vector_size(4 * LANES)));
typedef int32_t SIMD(qi) __attribute__((vector_size(4 * LANES)));

/* LANES floats from p (count valid; the rest read as 0), without a partial-vector stall. */
INLINE SIMD(qf) SIMD(load)(const float *p, int count) {
    SIMD(qf) v;
    if (count == LANES) {
        memcpy(&v, p, sizeof v);
        return v;
    }
    float part[LANES] = {0};
    memcpy(part, p, sizeof(float) * (size_t)count);
    memcpy(&v, part, sizeof v);
    return v;
}

#define VF SIMD(qf)
#define VI SIMD(qi)
#include "_fold.h"
#undef VF
#undef VI

/* Pass 1, rows [lo, hi): each vector's float step s = c / level, c = max |x| or the given clip.
 * Vectors outer, rows inner: each pass over rows streams the vector's channel planes. */
FN void SIMD(vector_steps)(const quant_t *t, int64_t lo, int64_t hi) {
    const float level = (float)t->level;
    for (int64_t j = 0; j < t->nv; j++) {
        const int64_t c0 = j * t->vector, c1 = c0 + t->vector < t->c ? c0 + t->vector : t->c;
        float *s = t->s + j * t->m;
        for (int64_t m = lo; m < hi; m += LANES) {
            const int count = hi - m < LANES ? (int)(hi - m) : LANES;
            SIMD(qf) top = {0};
            if (t->clip)
                top = SIMD(load)(t->clip + j * t->m + m, count);
            else
                for (int64_t c = c0; c < c1; c++) {
                    const SIMD(qi) bits = (SIMD(qi))SIMD(load)(t->x + c * t->m + m, count);
                    const SIMD(qf) a = (SIMD(qf))(bits & 0x7fffffff); /* |x| */
                    top = SIMD(max)(a, top); /* NaN never wins, as the scalar max */
                }
            const SIMD(qf) step = top / level;
            memcpy(s + m, &step, sizeof(float) * (size_t)count);
        }
    }
}

/* Pass 3, rows [lo, hi): fold q * sq (+ the signed offset) of every channel, 4 channels to a
 * plane's 4 bytes (a group of 4 never straddles two vectors, as vectors are multiples of 4
 * channels), stored at each row's place among the padded images (see row_of). */
FN void SIMD(fold)(const quant_t *t, int64_t lo, int64_t hi) {
    const SIMD(qf) zero = {0};
    for (int64_t j = 0; j < t->nv; j++) {
        const int64_t c4_end = (j + 1) * t->vector / 4 < t->c4 ? (j + 1) * t->vector / 4 : t->c4;
        for (int64_t m = lo; m < hi; m += LANES) {
            const int n = hi - m < LANES ? (int)(hi - m) : LANES;
            const SIMD(qf) gamma = SIMD(load)(t->rg + m, n);
            const SIMD(qi) live = gamma > zero; /* an all-zero group: sq 1, q 0 */
            const SIMD(qf) sq = SIMD(vector_sq)(SIMD(load)(t->s + j * t->m + m, n), gamma, live,
                                                (float)t->sq_max);
            const SIMD(qf) inverse = 1.0f / (gamma * sq);
            for (int64_t c4 = j * t->vector / 4; c4 < c4_end; c4++) {
                SIMD(qi) bytes = {0};
                for (int i = 0; i < 4; i++) {
                    const int64_t c = 4 * c4 + i;
                    SIMD(qi) folded = (SIMD(qi)){0} + t->offset; /* channels past C: padding */
                    if (c < t->c)
                        folded = SIMD(fold_values)(SIMD(load)(t->x + c * t->m + m, n), inverse, sq, live,
                                                   (float)t->lowest, (float)t->level, t->offset);
                    bytes |= folded << (8 * i);
                }
                uint8_t *plane = t->out + c4 * t->rows * 4;
                if (!t->padded) {
                    memcpy(plane + m * 4, &bytes, 4 * (size_t)n);
                    continue;
                }
                const uint8_t *from = (const uint8_t *)&bytes;
                for (int l = 0; l < n;) { /* runs of rows within one image line */
                    const int64_t x = (m + l) % t->w, run = t->w - x < n - l ? t->w - x : n - l;
                    memcpy(plane + row_of(t, m + l) * 4, from + 4 * l, 4 * (size_t)run);
                    l += (int)run;
                }
            }
        }
    }
}

#undef SIMD
#undef FN
#undef INLINE
#undef LANES
#undef MAX_PS
#undef MIN_PS
#undef ROUND_PS
