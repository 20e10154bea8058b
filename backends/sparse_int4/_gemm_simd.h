/* The GEMM tiles and the epilogue for one kernel path, included by _kernel.c once per path (this
 * file undefines its parameters at the end) with:
 *   SIMD(name)   the path's function names          FN, INLINE   function attributes (target)
 *   LANES        rows per row vector                ROWS         rows of a sparse tile
 *   DENSE_ROWS, DENSE_CHANNELS  rows and channels of a dense tile (its accumulators)
 *   ACC          a row vector's accumulator type    WV           a broadcast 4-byte weight
 *   ACC_ZERO(), W_SET1(w), ACC_DP(acc, p, w)   acc += u8x4 at p (LANES rows) . s8x4 w, per row
 *   ACC_STORE(dst, acc)   the LANES int32 row sums of acc, in row order
 *
 * Activations are u8 planes of 4 channels: row r of the 4 K values of plane k4 sits at
 * a + table[k4] + 4 r, so one row vector is LANES * 4 consecutive bytes and a convolution's taps
 * are shifted planes (implicit GEMM). */

typedef int32_t SIMD(iv) __attribute__((vector_size(4 * LANES)));
typedef float SIMD(fv) __attribute__((vector_size(4 * LANES)));

/* acc [channels][ROWS] int32 of channels n0.. and rows r0.. -> out, in the reference's float32
 * order: (float)(acc - corr) * (ga * gw) + bias + residual, then max(., 0). Virtual rows map to
 * output rows through dense_of (-1: a row that is no output, e.g. beyond an image's width). */
FN void SIMD(epilogue)(const gemm_t *g, const int32_t *acc, int64_t n0, int channels, int64_t r0,
                       int rows) {
    if (rows > (int)(g->rows - r0)) rows = (int)(g->rows - r0);
    for (int c = 0; c < channels; c++) {
        const int64_t n = n0 + c;
        const int32_t corr = g->corr ? g->corr[n] : 0;
        const float gw = g->gw[n], bias = g->bias ? g->bias[n] : 0.0f;
        float *out = g->out + n * g->m;
        const float *res = g->residual ? g->residual + n * g->m : NULL;
        for (int r = 0; r < rows; r += LANES) {
            SIMD(iv) a;
            SIMD(fv) ga, f;
            memcpy(&a, acc + c * ROWS + r, sizeof a);
            memcpy(&ga, g->ga + r0 + r, sizeof ga);
            f = __builtin_convertvector(a - corr, SIMD(fv)) * (ga * gw);
            if (g->bias) f = f + bias;
            const int64_t first = g->dense_of ? g->dense_of[r0 + r] : r0 + r;
            const int whole = r + LANES <= rows &&
                              (!g->dense_of || (first >= 0 && g->dense_of[r0 + r + LANES - 1] == first + LANES - 1));
            if (whole) {
                if (res) {
                    SIMD(fv) add;
                    memcpy(&add, res + first, sizeof add);
                    f = f + add;
                }
                if (g->relu) f = (SIMD(fv))((SIMD(iv))f & (f > 0.0f)); /* +0 unless positive */
                memcpy(out + first, &f, sizeof f);
                continue;
            }
            for (int i = 0; i < LANES && r + i < rows; i++) { /* partial: lane by lane */
                const int64_t o = g->dense_of ? g->dense_of[r0 + r + i] : r0 + r + i;
                if (o < 0) continue;
                float v = f[i];
                if (res) v = v + res[o];
                if (g->relu) v = v > 0.0f ? v : 0.0f;
                out[o] = v;
            }
        }
    }
}

/* One channel of a pruned weight over ROWS rows: each kept block broadcasts its 4 weights
 * against the 4 K values of its plane, so only kept blocks are multiplied. */
INLINE void SIMD(sparse_channel)(const gemm_t *g, const uint8_t *a, int64_t n, int32_t *acc) {
    ACC s[ROWS / LANES];
    for (int i = 0; i < ROWS / LANES; i++) s[i] = ACC_ZERO();
    for (int32_t p = g->ptr[n]; p < g->ptr[n + 1]; p++) {
        const uint8_t *x = a + g->table[g->idx[p]];
        const WV w = W_SET1(g->wv[p]);
        for (int i = 0; i < ROWS / LANES; i++) ACC_DP(s[i], x + 4 * LANES * i, w);
    }
    for (int i = 0; i < ROWS / LANES; i++) ACC_STORE(acc + LANES * i, s[i]);
}

FN void SIMD(sparse_tile)(const gemm_t *g, int64_t n0, int64_t n1, int64_t r0, int32_t *acc) {
    const uint8_t *a = g->a + 4 * r0;
    for (int64_t n = n0; n < n1; n++) {
        SIMD(sparse_channel)(g, a, n, acc);
        SIMD(epilogue)(g, acc, n, 1, r0, ROWS);
    }
}

/* DENSE_CHANNELS channels of a dense weight over DENSE_ROWS rows, every plane of K. */
INLINE void SIMD(dense_block)(const gemm_t *g, const uint8_t *a, int64_t n, int channels,
                              int32_t *acc) {
    ACC s[DENSE_CHANNELS][DENSE_ROWS / LANES];
    for (int c = 0; c < DENSE_CHANNELS; c++)
        for (int i = 0; i < DENSE_ROWS / LANES; i++) s[c][i] = ACC_ZERO();
    const int32_t *w = g->wd + n * g->k4;
    for (int64_t k = 0; k < g->k4; k++) {
        const uint8_t *x = a + g->table[k];
        for (int c = 0; c < channels; c++) {
            const WV b = W_SET1(w[c * g->k4 + k]);
            for (int i = 0; i < DENSE_ROWS / LANES; i++) ACC_DP(s[c][i], x + 4 * LANES * i, b);
        }
    }
    for (int c = 0; c < channels; c++)
        for (int i = 0; i < DENSE_ROWS / LANES; i++) ACC_STORE(acc + c * ROWS + LANES * i, s[c][i]);
}

FN void SIMD(dense_tile)(const gemm_t *g, int64_t n0, int64_t n1, int64_t r0, int32_t *acc) {
    for (int64_t r = r0; r < r0 + ROWS && r < g->rows; r += DENSE_ROWS) {
        const uint8_t *a = g->a + 4 * r;
        int64_t n = n0;
        for (; n + DENSE_CHANNELS <= n1; n += DENSE_CHANNELS) {
            SIMD(dense_block)(g, a, n, DENSE_CHANNELS, acc);
            SIMD(epilogue)(g, acc, n, DENSE_CHANNELS, r, DENSE_ROWS);
        }
        for (; n < n1; n++) {
            SIMD(dense_block)(g, a, n, 1, acc);
            SIMD(epilogue)(g, acc, n, 1, r, DENSE_ROWS);
        }
    }
}

#undef SIMD
#undef FN
#undef INLINE
#undef LANES
#undef ROWS
#undef DENSE_ROWS
#undef DENSE_CHANNELS
#undef ACC
#undef WV
#undef ACC_ZERO
#undef W_SET1
#undef ACC_DP
#undef ACC_STORE
