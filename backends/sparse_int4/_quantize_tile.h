/* Quantizing one row tile straight from the conv input, included by _kernel.c once per flavour
 * (this file undefines its parameters at the end) with:
 *   SIMD(name)  the flavour's function name        FN  function attributes (target)
 * The arithmetic is written once on GCC vector types of 8 lanes (8 rows of one K column), which
 * the compiler turns into AVX2 or into its portable baseline (the helpers they call are inlined
 * into each); every operation is one IEEE float32 operation, so both flavours round exactly as
 * quantize_activations does. Columns are the outer loop and the tile's row groups the inner one,
 * so each input plane is read in runs of TILE_M rows and each tile column written whole. */

/* Largest |x| of each row in each vector, into smax [nv][TILE_M] (zeroed by the caller). */
FN void SIMD(tile_max)(const quant_t *t, const tile_rows_t *rows, float *smax) {
    const conv_t *g = &t->g;
    const int64_t hw = g->h * g->w;
    const int groups = rows->count / 8;
    for (int64_t tap = 0; tap < g->kh * g->kw; tap++) {
        window8 win[TILE_M / 8];
        for (int i = 0; i < groups; i++) window_of(g, rows, 8 * i, tap, &win[i]);
        for (int64_t c0 = 0; c0 < g->c;) { /* runs of channels within one vector */
            const int64_t v = (tap * g->c + c0) / t->vector, c1 = vector_end(t, tap, c0);
            f8 m[TILE_M / 8];
            memcpy(m, smax + v * TILE_M, sizeof m);
            for (int64_t c = c0; c < c1; c += 8) {
                const int width = c1 - c < 8 ? (int)(c1 - c) : 8;
                for (int i = 0; i < groups; i++) {
                    f8 columns[8];
                    load_columns(t->x, &win[i], c, hw, width, columns);
                    for (int j = 0; j < width; j++) {
                        const f8 a = (f8)((i8)columns[j] & 0x7fffffff); /* |x| */
                        m[i] = select8(a > m[i], a, m[i]); /* NaN never wins, as the scalar max */
                    }
                }
            }
            memcpy(smax + v * TILE_M, m, sizeof m);
            c0 = c1;
        }
    }
}

/* Each row's gamma and, per vector, its step and sq ([nv][TILE_M]; rows without data: step 1,
 * sq 0, so they fold to zeros); smax holds max |x| or is unused when clipping scalars are given. */
FN void SIMD(tile_scales)(const quant_t *t, int64_t m0, const tile_rows_t *rows,
                          const float *smax, float *step, float *sq) {
    const f8 zero = {0}, one = zero + 1.0f, level = zero + (float)t->level;
    const f8 sq_max = zero + (float)t->sq_max;
    for (int r0 = 0; r0 < TILE_M; r0 += 8) {
        f8 s_max = zero;
        for (int64_t v = 0; r0 < rows->count && v < t->nv; v++) {
            f8 c;
            if (t->clip)
                for (int i = 0; i < 8; i++)
                    c[i] = rows->live[r0 + i] ? t->clip[(m0 + r0 + i) * t->nv + v] : 0.0f;
            else
                memcpy(&c, smax + v * TILE_M + r0, sizeof c);
            const f8 s = c / level;
            memcpy(step + v * TILE_M + r0, &s, sizeof s); /* s, until gamma is known */
            s_max = select8(s > s_max, s, s_max);
        }
        const f8 gamma = s_max / sq_max;
        for (int i = 0; i < 8; i++)
            if (rows->live[r0 + i]) t->gamma[m0 + r0 + i] = gamma[i];
        const i8 live = gamma != zero; /* rows past m have s_max 0 */
        for (int64_t v = 0; v < t->nv; v++) {
            f8 s;
            memcpy(&s, step + v * TILE_M + r0, sizeof s);
            f8 q = s / gamma; /* 0..sq_max where live */
            q = (q + ROUNDER) - ROUNDER;
            q = select8(q >= one, q, one);
            q = select8(q > sq_max, sq_max, q);
            const f8 sqv = select8(live, q, zero), stepv = select8(live, gamma * q, one);
            memcpy(sq + v * TILE_M + r0, &sqv, sizeof sqv);
            memcpy(step + v * TILE_M + r0, &stepv, sizeof stepv);
        }
    }
}

/* Folded q * sq of every row and K column into the tile, rows at their positions. */
FN void SIMD(tile_fold)(const quant_t *t, const tile_rows_t *rows, const float *step,
                        const float *sq, int16_t *tile) {
    const conv_t *g = &t->g;
    const int64_t hw = g->h * g->w;
    const int groups = rows->count / 8;
    const f8 lowest = (f8){0} + (float)t->lowest, level = (f8){0} + (float)t->level;
    for (int64_t tap = 0; tap < g->kh * g->kw; tap++) {
        window8 win[TILE_M / 8];
        for (int i = 0; i < groups; i++) window_of(g, rows, 8 * i, tap, &win[i]);
        for (int64_t c0 = 0; c0 < g->c;) {
            const int64_t v = (tap * g->c + c0) / t->vector, c1 = vector_end(t, tap, c0);
            const float *st = step + v * TILE_M, *s = sq + v * TILE_M;
            for (int64_t c = c0; c < c1; c += 8) {
                const int width = c1 - c < 8 ? (int)(c1 - c) : 8;
                int16_t *column = tile + (tap * g->c + c) * TILE_M;
                for (int i = 0; i < groups; i++) {
                    f8 stv, sv, columns[8];
                    memcpy(&stv, st + 8 * i, sizeof stv);
                    memcpy(&sv, s + 8 * i, sizeof sv);
                    load_columns(t->x, &win[i], c, hw, width, columns);
                    for (int j = 0; j < width; j++) {
                        f8 q = columns[j] / stv;
                        q = (q + ROUNDER) - ROUNDER; /* rint, half to even, for |q| < 2^22 */
                        q = select8(q >= lowest, q, lowest); /* NaN -> lowest */
                        q = select8(q > level, level, q);
                        store_rows(column + j * TILE_M, t->position + 8 * i,
                                   __builtin_convertvector(q * sv, i8)); /* |q sq| <= 225 */
                    }
                }
            }
            c0 = c1;
        }
    }
}

#undef SIMD
#undef FN
