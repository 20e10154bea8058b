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

/* LANES rows of channel c from row m (count valid; the rest read as 0). */
INLINE SIMD(qf) SIMD(load_rows)(const quant_t *t, int64_t c, int64_t m, int count) {
    SIMD(qf) v = {0};
    const float *p = t->x + c * t->m + m;
    if (count == LANES)
        memcpy(&v, p, sizeof v);
    else
        for (int i = 0; i < count; i++) v[i] = p[i];
    return v;
}

INLINE SIMD(qf) SIMD(select)(SIMD(qi) mask, SIMD(qf) a, SIMD(qf) b) {
    return (SIMD(qf))((mask & (SIMD(qi))a) | (~mask & (SIMD(qi))b));
}

INLINE SIMD(qf) SIMD(round_even)(SIMD(qf) q) {
    return (q + ROUNDER) - ROUNDER; /* rint, half to even, for |q| < 2^22; clamps cover the rest */
}

/* Pass 1, rows [lo, hi): each vector's float step s = c / level, c = max |x| or the given clip. */
FN void SIMD(vector_steps)(const quant_t *t, int64_t lo, int64_t hi) {
    const float level = (float)t->level;
    for (int64_t j = 0; j < t->nv; j++) {
        const int64_t c0 = j * t->vector, c1 = c0 + t->vector < t->c ? c0 + t->vector : t->c;
        float *s = t->s + j * t->m;
        for (int64_t m = lo; m < hi; m += LANES) {
            const int count = hi - m < LANES ? (int)(hi - m) : LANES;
            SIMD(qf) top = {0};
            if (t->clip) {
                const float *p = t->clip + j * t->m + m;
                for (int i = 0; i < count; i++) top[i] = p[i];
            } else
                for (int64_t c = c0; c < c1; c++) {
                    const SIMD(qf) a = (SIMD(qf))((SIMD(qi))SIMD(load_rows)(t, c, m, count) & 0x7fffffff);
                    top = SIMD(select)(a > top, a, top); /* NaN never wins, as the scalar max */
                }
            const SIMD(qf) step = top / level;
            if (count == LANES)
                memcpy(s + m, &step, sizeof step);
            else
                for (int i = 0; i < count; i++) s[m + i] = step[i];
        }
    }
}

/* Pass 3, one line of count pixels from input row m0 to output row `row`: fold q * sq (+ the
 * signed offset) of every channel, 4 channels to a plane's 4 bytes (a channel group never
 * straddles two vectors, as vectors are multiples of 4 channels). */
FN void SIMD(fold_line)(const quant_t *t, int64_t m0, int64_t count, int64_t row) {
    const SIMD(qf) zero = {0}, one = zero + 1.0f, sq_max = zero + (float)t->sq_max;
    const SIMD(qf) lowest = zero + (float)t->lowest, level = zero + (float)t->level;
    for (int64_t x = 0; x < count; x += LANES) {
        const int64_t m = m0 + x;
        const int n = count - x < LANES ? (int)(count - x) : LANES;
        SIMD(qf) gamma = zero;
        for (int i = 0; i < n; i++) gamma[i] = t->rg[m + i];
        const SIMD(qi) live = gamma > zero; /* an all-zero group: sq 1, q 0 */
        for (int64_t j = 0; j < t->nv; j++) {
            SIMD(qf) s = zero;
            for (int i = 0; i < n; i++) s[i] = t->s[j * t->m + m + i];
            SIMD(qf) sq = SIMD(round_even)(s / gamma);
            sq = SIMD(select)(sq >= one, sq, one);
            sq = SIMD(select)(sq > sq_max, sq_max, sq);
            sq = SIMD(select)(live, sq, one);
            const SIMD(qf) step = gamma * sq;
            const int64_t c4_end = (j + 1) * t->vector / 4 < t->c4 ? (j + 1) * t->vector / 4 : t->c4;
            for (int64_t c4 = j * t->vector / 4; c4 < c4_end; c4++) {
                SIMD(qi) bytes = {0};
                for (int i = 0; i < 4; i++) {
                    const int64_t c = 4 * c4 + i;
                    SIMD(qi) folded = (SIMD(qi)){0} + t->offset; /* channels past C: padding */
                    if (c < t->c) {
                        SIMD(qf) q = SIMD(round_even)(SIMD(load_rows)(t, c, m, n) / step);
                        q = SIMD(select)(q >= lowest, q, lowest); /* NaN -> lowest */
                        q = SIMD(select)(q > level, level, q);
                        q = SIMD(select)(live, q, zero);
                        folded = __builtin_convertvector(q * sq, SIMD(qi)) + t->offset;
                    }
                    bytes |= (folded & 0xff) << (8 * i);
                }
                memcpy(t->out + (c4 * t->rows + row + x) * 4, &bytes, 4 * (size_t)n);
            }
        }
    }
}

#undef SIMD
#undef FN
#undef INLINE
#undef LANES
