/* The GEMM tiles and their epilogue for one kernel path, included by _kernel.c once per path (this
 * file undefines its parameters at the end) with:
 *   SIMD(name)   the path's function names          FN, INLINE   function attributes (target)
 *   LANES        rows per row vector                ROWS         rows of a tile (TILE_ROWS)
 *   SPARSE_ROWS  rows the sparse loop keeps in registers   QUAD_ROWS  those of a quad's 4 channels
 *   DENSE_ROWS, DENSE_CHANNELS  rows and channels of a dense block (its accumulators)
 *   ACC          a row vector's accumulator type    WV           a broadcast 4-byte weight
 *   ACC_ZERO(), W_SET1(w), ACC_DP(acc, p, w)   acc += u8x4 at p (LANES rows) . s8x4 w, per row
 *   ACC_STORE(dst, acc)   the LANES int32 row sums of acc, in row order
 *   ACC_ADD(a, b)         the sum of two accumulators
 *   FOLD(name)   the quantize flavour of LANES rows whose _fold.h helpers the epilogue uses
 *   STREAM_F(p, v), STREAM_H(p, h)  store LANES floats / halves past the caches (aligned p)
 *   FLOAT_TO_HALF(v), HALF_TO_FLOAT(h)  LANES float32 <-> float16, to nearest even
 *
 * Activations are u8 planes of 4 channels: row r of the 4 K values of plane k4 sits at
 * a + table[k4] + 4 r, so one row vector is LANES * 4 consecutive bytes and a convolution's taps
 * are shifted planes (implicit GEMM).
 *
 * Tiles compute a group of channels (the output's vector, see gemm_t.group) over TILE_ROWS rows
 * into a float buffer, in the reference's order: (float)(acc - corr) * (ga * gw) + bias, GELU,
 * + residual, then max(., 0); emit then writes the group out as floats, as the next layer's
 * quantized planes, or both. */

typedef int32_t SIMD(iv) __attribute__((vector_size(4 * LANES)));
typedef float SIMD(fv) __attribute__((vector_size(4 * LANES)));
typedef _Float16 SIMD(hv) __attribute__((vector_size(2 * LANES)));

/* LANES values of a float32 or float16 (half) array from index i, as float32. */
INLINE SIMD(fv) SIMD(load_values)(const void *p, int half, int64_t i) {
    SIMD(fv) v;
    if (!half) {
        memcpy(&v, (const float *)p + i, sizeof v);
        return v;
    }
    SIMD(hv) h;
    memcpy(&h, (const _Float16 *)p + i, sizeof h);
    return HALF_TO_FLOAT(h);
}

/* erf on LANES values: vsquant.erf's rational approximation, one float32 operation a step. */
INLINE SIMD(fv) SIMD(erf)(SIMD(fv) x) {
    static const float P[7] = {-2.72614225801306e-10f, 2.77068142495902e-08f, -2.10102402082508e-06f,
                               -5.69250639462346e-05f, -7.34990630326855e-04f, -2.95459980854025e-03f,
                               -1.60960333262415e-02f};
    static const float Q[5] = {-1.45660718464996e-05f, -2.13374055278905e-04f, -1.68282697438203e-03f,
                               -7.37332916720468e-03f, -1.42647390514189e-02f};
    const SIMD(fv) high = (SIMD(fv)){0} + 4.0f, low = (SIMD(fv)){0} - 4.0f;
    SIMD(fv) t = (SIMD(fv))(((SIMD(iv))(x < low) & (SIMD(iv))low) | ((SIMD(iv))(x >= low) & (SIMD(iv))x));
    t = (SIMD(fv))(((SIMD(iv))(t > high) & (SIMD(iv))high) | ((SIMD(iv))(t <= high) & (SIMD(iv))t));
    const SIMD(fv) t2 = t * t;
    SIMD(fv) p = t2 * P[0] + P[1];
    for (int i = 2; i < 7; i++) p = p * t2 + P[i];
    p = t * p;
    SIMD(fv) q = t2 * Q[0] + Q[1];
    for (int i = 2; i < 5; i++) q = q * t2 + Q[i];
    return p / q;
}

/* LANES float32 values at `from` into a float32 or float16 array at index i (float16 rounds to
 * nearest even, as numpy's astype does). */
INLINE void SIMD(store_values)(void *p, int half, int64_t i, const float *from, int stream) {
    SIMD(fv) v;
    memcpy(&v, from, sizeof v);
    if (!half) {
        float *to = (float *)p + i;
        if (stream && (uintptr_t)to % sizeof v == 0)
            STREAM_F(to, v);
        else
            memcpy(to, &v, sizeof v);
        return;
    }
    const SIMD(hv) h = FLOAT_TO_HALF(v);
    _Float16 *to = (_Float16 *)p + i;
    if (stream && (uintptr_t)to % sizeof h == 0)
        STREAM_H(to, h);
    else
        memcpy(to, &h, sizeof h);
}

INLINE float SIMD(load_value)(const void *p, int half, int64_t i) {
    return half ? (float)((const _Float16 *)p)[i] : ((const float *)p)[i];
}

/* The first of LANES int64 row numbers from p (NULL: r0..r0+LANES-1) when the last is LANES - 1
 * after it, else -1: a run of rows when no row between them can be -1 (as in dense_of). */
INLINE int64_t SIMD(run_start)(const int64_t *p, int64_t r0) {
    if (!p) return r0;
    return p[0] >= 0 && p[LANES - 1] == p[0] + LANES - 1 ? p[0] : -1;
}

/* The rows of the tile at r0 that hold data: TILE_ROWS, or fewer in a short last tile (a small
 * batch), which then runs only the passes and row vectors it has. */
INLINE int64_t SIMD(live_rows)(const gemm_t *g, int64_t r0) {
    return g->rows - r0 < TILE_ROWS ? g->rows - r0 : TILE_ROWS;
}

/* acc [channels][ROWS] int32 of channels n0.. (the group starting at g0) over `rows` rows from r0
 * -> f [group][TILE_ROWS], float32. */
FN void SIMD(epilogue)(const gemm_t *g, const int32_t *acc, int64_t n0, int channels, int64_t g0,
                       int64_t r0, int r, int rows, float *f) {
    /* the call's settings as locals: stores through f cannot change them (no reloads) */
    const int32_t *const corrs = g->corr;
    const float *const gws = g->gw, *const biases = g->bias, *const ga_rows = g->ga + r0 + r;
    const int64_t *const dense_of = g->dense_of ? g->dense_of + r0 + r : NULL;
    const void *const res = g->residual;
    const int half = g->residual_half, gelu = g->gelu, relu = g->relu;
    const int64_t m = g->m, first_row = r0 + r;
    for (int c = 0; c < channels; c++) {
        const int64_t n = n0 + c;
        const int32_t corr = corrs ? corrs[n] : 0;
        const float gw = gws[n], bias = biases ? biases[n] : 0.0f;
        const int64_t base = n * m;
        float *const dst = f + (n - g0) * TILE_ROWS + r;
        for (int i = 0; i < rows; i += LANES) {
            SIMD(iv) a;
            SIMD(fv) ga, v;
            memcpy(&a, acc + c * ROWS + i, sizeof a);
            memcpy(&ga, ga_rows + i, sizeof ga);
            v = __builtin_convertvector(a - corr, SIMD(fv)) * (ga * gw);
            if (biases) v = v + bias;
            if (gelu) v = (v * (SIMD(erf)(v / 1.41421356237309505f) + 1.0f)) * 0.5f;
            if (res) { /* the residual at each lane's output row (0 for rows that are none) */
                const int64_t *of = dense_of ? dense_of + i : NULL;
                const int64_t first = SIMD(run_start)(of, first_row + i);
                SIMD(fv) add;
                /* the next tile's residual, while the tile's other channels run: read from
                 * memory a chunk per channel, too many streams for the hardware prefetcher */
                __builtin_prefetch((const char *)res + (base + first_row + i + TILE_ROWS) * (half ? 2 : 4), 0, 1);
                if (first >= 0 && first + LANES <= m)
                    add = SIMD(load_values)(res, half, base + first);
                else {
                    float part[LANES];
                    for (int l = 0; l < LANES; l++) {
                        const int64_t o = of ? of[l] : first_row + i + l;
                        part[l] = o >= 0 && o < m ? SIMD(load_value)(res, half, base + o) : 0.0f;
                    }
                    memcpy(&add, part, sizeof add);
                }
                v = v + add;
            }
            if (relu) v = FOLD(max)(v, (SIMD(fv)){0}); /* +0 unless positive (NaN too) */
            memcpy(dst + i, &v, sizeof v);
        }
    }
}

/* The group's floats f [group][TILE_ROWS] of rows r0.. -> the float output and/or the quantized
 * planes of the next layer (one vector of `group` channels per row: its max, sq, then the folded
 * bytes of every 4 channels). */
FN void SIMD(emit)(const gemm_t *g, float *f, int64_t g0, int channels, int64_t r0) {
    const int rows = (int)SIMD(live_rows)(g, r0);
    const int64_t *const dense_of = g->dense_of ? g->dense_of + r0 : NULL;
    void *const out = g->out;
    const int half = g->out_half, stream = g->stream;
    const int64_t ldo = g->ldo;
    if (out)
        for (int c = 0; c < channels; c++) {
            const int64_t base = (g0 + c) * ldo;
            for (int i = 0; i < rows; i += LANES) {
                const float *from = f + c * TILE_ROWS + i;
                const int64_t first = i + LANES <= rows ? SIMD(run_start)(dense_of ? dense_of + i : NULL, r0 + i) : -1;
                if (first >= 0) {
                    SIMD(store_values)(out, half, base + first, from, stream);
                    continue;
                }
                for (int l = 0; l < LANES && i + l < rows; l++) { /* partial: lane by lane */
                    const int64_t o = dense_of ? dense_of[i + l] : r0 + i + l;
                    if (o < 0) continue;
                    if (half)
                        ((_Float16 *)out)[base + o] = (_Float16)from[l];
                    else
                        ((float *)out)[base + o] = from[l];
                }
            }
        }
    if (!g->q) return;
    const quant_out_t q = *g->q;
    if (q.row_gamma) { /* per-row gammas: keep the floats and vector steps for row_fold */
        float *tile = f + g->group * TILE_ROWS, *steps = tile + (g->n + g->group) * TILE_ROWS;
        for (int i = 0; i < rows; i += LANES) {
            SIMD(fv) top = {0};
            for (int c = 0; c < channels; c++) {
                SIMD(fv) v;
                memcpy(&v, f + c * TILE_ROWS + i, sizeof v);
                memcpy(tile + (g0 + c) * TILE_ROWS + i, &v, sizeof v);
                const SIMD(fv) a = (SIMD(fv))((SIMD(iv))v & 0x7fffffff);
                top = FOLD(max)(a, top);
            }
            const SIMD(fv) step = top / (float)q.level;
            memcpy(steps + g0 / g->group * TILE_ROWS + i, &step, sizeof step);
        }
        return;
    }
    const SIMD(fv) gamma = (SIMD(fv)){0} + q.gamma;
    const SIMD(iv) live = gamma > 0.0f;
    const float level = (float)q.level, lowest = (float)q.lowest, sq_max = (float)q.sq_max;
    const int relu_live = g->relu && q.lowest == 0 && q.gamma > 0.0f; /* the lean fold applies */
    const int64_t *const row_of = q.row_of + r0;
    uint32_t *const planes = (uint32_t *)(void *)q.planes + (g0 / 4) * q.rows;
    for (int i = 0; i < rows; i += LANES) {
        SIMD(fv) top = {0};
        for (int c = 0; c < channels; c++) {
            SIMD(fv) v;
            memcpy(&v, f + c * TILE_ROWS + i, sizeof v);
            const SIMD(fv) a = (SIMD(fv))((SIMD(iv))v & 0x7fffffff); /* |x| */
            top = FOLD(max)(a, top);
        }
        const SIMD(fv) sq = FOLD(vector_sq)(top / level, gamma, live, sq_max);
        const SIMD(fv) inverse = 1.0f / (gamma * sq);
        /* One store when the lanes are LANES output rows in a row (no row between them that is
         * none) and land side by side in the planes. */
        const int whole = i + LANES <= rows && SIMD(run_start)(dense_of ? dense_of + i : NULL, r0 + i) >= 0;
        const int64_t first = whole ? SIMD(run_start)(row_of + i, 0) : -1;
        for (int c4 = 0; c4 < (channels + 3) / 4; c4++) {
            SIMD(iv) bytes = {0};
            for (int k = 0; k < 4; k++) {
                SIMD(iv) folded = (SIMD(iv)){0} + q.offset; /* channels past C: padding */
                if (4 * c4 + k < channels) {
                    SIMD(fv) v;
                    memcpy(&v, f + (4 * c4 + k) * TILE_ROWS + i, sizeof v);
                    folded = relu_live ? FOLD(fold_relu)(v, inverse, sq, level)
                                       : FOLD(fold_values)(v, inverse, sq, live, lowest, level, q.offset);
                }
                bytes |= folded << (8 * k);
            }
            uint32_t *plane = planes + c4 * q.rows;
            if (first >= 0) {
                if (q.stream && (uintptr_t)(plane + first) % sizeof bytes == 0)
                    STREAM_F((float *)(void *)(plane + first), (SIMD(fv))bytes);
                else
                    memcpy(plane + first, &bytes, sizeof bytes);
                continue;
            }
            for (int l = 0; l < LANES && i + l < rows; l++) {
                const int64_t o = row_of[i + l];
                if (o >= 0) plane[o] = (uint32_t)bytes[l];
            }
        }
    }
}

/* Per-row gammas, once every channel of the tile's rows is done: each row's gamma from its
 * vectors' steps, then every vector's sq and folded bytes into the planes (rows are tokens). */
FN void SIMD(row_fold)(const gemm_t *g, float *f, int64_t r0) {
    const quant_out_t q = *g->q;
    const int rows = (int)SIMD(live_rows)(g, r0);
    const float *tile = f + g->group * TILE_ROWS, *steps = tile + (g->n + g->group) * TILE_ROWS;
    const int64_t vectors = (g->n + g->group - 1) / g->group;
    const float level = (float)q.level, lowest = (float)q.lowest, sq_max = (float)q.sq_max;
    uint32_t *const planes = (uint32_t *)(void *)q.planes;
    for (int i = 0; i < rows; i += LANES) {
        const int n = rows - i < LANES ? rows - i : LANES;
        SIMD(fv) top = {0};
        for (int64_t v = 0; v < vectors; v++) {
            SIMD(fv) s;
            memcpy(&s, steps + v * TILE_ROWS + i, sizeof s);
            top = FOLD(max)(s, top);
        }
        const SIMD(fv) gamma = top / sq_max;
        memcpy(q.row_gamma + r0 + i, &gamma, sizeof(float) * (size_t)n);
        const SIMD(iv) live = gamma > 0.0f;
        const int64_t first = n == LANES ? SIMD(run_start)(q.row_of + r0 + i, 0) : -1;
        for (int64_t v = 0; v < vectors; v++) {
            SIMD(fv) s;
            memcpy(&s, steps + v * TILE_ROWS + i, sizeof s);
            const SIMD(fv) sq = FOLD(vector_sq)(s, gamma, live, sq_max);
            const SIMD(fv) inverse = 1.0f / (gamma * sq);
            const int64_t c_end = (v + 1) * g->group < g->n ? (v + 1) * g->group : g->n;
            for (int64_t c4 = v * g->group / 4; c4 < (c_end + 3) / 4; c4++) {
                SIMD(iv) bytes = {0};
                for (int k = 0; k < 4; k++) {
                    SIMD(iv) folded = (SIMD(iv)){0} + q.offset; /* channels past N: padding */
                    if (4 * c4 + k < c_end) {
                        SIMD(fv) x;
                        memcpy(&x, tile + (4 * c4 + k) * TILE_ROWS + i, sizeof x);
                        folded = FOLD(fold_values)(x, inverse, sq, live, lowest, level, q.offset);
                    }
                    bytes |= folded << (8 * k);
                }
                uint32_t *plane = planes + c4 * q.rows;
                if (first >= 0) {
                    memcpy(plane + first, &bytes, sizeof bytes);
                    continue;
                }
                for (int l = 0; l < n; l++) {
                    const int64_t o = q.row_of[r0 + i + l];
                    if (o >= 0) plane[o] = (uint32_t)bytes[l];
                }
            }
        }
    }
}

/* After a pruned tile's channels n..n+channels-1 of a part ending at n1: their epilogue over the
 * live rows' vectors, then their group's emit once its last channel (or the part's) is done.
 * Groups are powers of two: no division. */
INLINE void SIMD(close_channels)(const gemm_t *g, const int32_t *acc, int64_t n, int channels,
                                 int64_t n1, int64_t r0, int64_t live, float *f) {
    const int64_t g0 = n & -g->group, next = n + channels;
    SIMD(epilogue)(g, acc, n, channels, g0, r0, 0, (int)((live + LANES - 1) / LANES * LANES), f);
    if (next == n1 || (next & (g->group - 1)) == 0) SIMD(emit)(g, f, g0, (int)(next - g0), r0);
}

/* Pruned weights, channel by channel: each kept block broadcasts its 4 weights against the 4 K
 * values of its plane for SPARSE_ROWS rows at a time (the tile's rows in two or more passes), so
 * only kept blocks are multiplied and the accumulators stay in registers over all of K; the tile's
 * activations come from L2, SPARSE_ROWS * 4 bytes of a plane per kept block. */
FN void SIMD(sparse_tile)(const gemm_t *g, int64_t n0, int64_t n1, int64_t r0, int32_t *acc,
                          float *f) {
    const uint8_t *a = g->a + 4 * r0;
    const int64_t *table = g->table;
    const uint16_t *idx = g->idx;
    const int32_t *wv = g->wv;
    const int64_t live = SIMD(live_rows)(g, r0);
    const int passes = (int)((live + SPARSE_ROWS - 1) / SPARSE_ROWS);
    for (int64_t n = n0; n < n1; n++) {
        for (int h = 0; h < passes; h++) {
            const uint8_t *rows = a + 4 * SPARSE_ROWS * h;
            ACC s[SPARSE_ROWS / LANES], t[SPARSE_ROWS / LANES]; /* two chains of multiply-adds */
            for (int i = 0; i < SPARSE_ROWS / LANES; i++) s[i] = t[i] = ACC_ZERO();
            const int32_t end = g->ptr[n + 1];
            int32_t p = g->ptr[n];
            for (; p + 1 < end; p += 2) {
                const uint8_t *x = rows + table[idx[p]], *y = rows + table[idx[p + 1]];
                const WV w = W_SET1(wv[p]), v = W_SET1(wv[p + 1]);
                for (int i = 0; i < SPARSE_ROWS / LANES; i++) {
                    ACC_DP(s[i], x + 4 * LANES * i, w);
                    ACC_DP(t[i], y + 4 * LANES * i, v);
                }
            }
            if (p < end) {
                const uint8_t *x = rows + table[idx[p]];
                const WV w = W_SET1(wv[p]);
                for (int i = 0; i < SPARSE_ROWS / LANES; i++) ACC_DP(s[i], x + 4 * LANES * i, w);
            }
            for (int i = 0; i < SPARSE_ROWS / LANES; i++)
                ACC_STORE(acc + SPARSE_ROWS * h + LANES * i, ACC_ADD(s[i], t[i]));
        }
        SIMD(close_channels)(g, acc, n, 1, n1, r0, live, f);
    }
    if (g->q && g->q->row_gamma) SIMD(row_fold)(g, f, r0); /* parts own whole rows then */
}

/* Pruned weights whose channels keep their blocks by quads or by groups of 16 (g->owners channels
 * on the same planes): each kept block's row vectors are loaded once for a quad's 4 broadcast
 * weights, so a row vector feeds 4 multiply-adds where a channel's own blocks feed 1, and the
 * quad's 4 x QUAD_ROWS accumulators stay in registers over all of K. Quads hold each block's
 * weights as [4 channels]; groups of 16 hold runs of 16 blocks as [16 channels][run] (the AMX
 * tiles' rows), so a quad's channels are a run apart. Parts split channels at groups. */
FN void SIMD(quad_tile)(const gemm_t *g, int64_t n0, int64_t n1, int64_t r0, int32_t *acc,
                        float *f) {
    const uint8_t *a = g->a + 4 * r0;
    const int64_t *table = g->table;
    const uint16_t *idx = g->idx;
    const int32_t *wv = g->wv;
    const int64_t owners = g->owners, live = SIMD(live_rows)(g, r0);
    const int passes = (int)((live + QUAD_ROWS - 1) / QUAD_ROWS);
    for (int64_t n = n0; n < n1; n += 4) {
        const int channels = n1 - n < 4 ? (int)(n1 - n) : 4;
        const int32_t begin = g->ptr[n / owners], end = g->ptr[n / owners + 1];
        const int64_t quad = n % owners / 4; /* of the group */
        for (int h = 0; h < passes; h++) {
            const uint8_t *rows = a + 4 * QUAD_ROWS * h;
            ACC s[4][QUAD_ROWS / LANES];
            for (int c = 0; c < 4; c++)
                for (int i = 0; i < QUAD_ROWS / LANES; i++) s[c][i] = ACC_ZERO();
            for (int32_t r = begin, r1; r < end; r = r1) { /* runs: all of a quad's blocks, or 16 */
                r1 = owners == 4 || end - r < 16 ? end : r + 16;
                const int64_t apart = owners == 4 ? 1 : r1 - r, step = owners == 4 ? 4 : 1;
                const int32_t *w = owners == 4 ? wv + 4 * (int64_t)r : wv + 16 * (int64_t)r + 4 * quad * apart;
                for (int32_t p = r; p < r1; p++, w += step) {
                    const uint8_t *x = rows + table[idx[p]];
                    const WV w0 = W_SET1(w[0]), w1 = W_SET1(w[apart]), w2 = W_SET1(w[2 * apart]),
                             w3 = W_SET1(w[3 * apart]);
                    for (int i = 0; i < QUAD_ROWS / LANES; i++) { /* one load, four products */
                        ACC_DP(s[0][i], x + 4 * LANES * i, w0);
                        ACC_DP(s[1][i], x + 4 * LANES * i, w1);
                        ACC_DP(s[2][i], x + 4 * LANES * i, w2);
                        ACC_DP(s[3][i], x + 4 * LANES * i, w3);
                    }
                }
            }
            for (int c = 0; c < 4; c++)
                for (int i = 0; i < QUAD_ROWS / LANES; i++)
                    ACC_STORE(acc + c * ROWS + QUAD_ROWS * h + LANES * i, s[c][i]);
        }
        SIMD(close_channels)(g, acc, n, channels, n1, r0, live, f);
    }
    if (g->q && g->q->row_gamma) SIMD(row_fold)(g, f, r0);
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

/* Dense: each group of channels in blocks of DENSE_CHANNELS x DENSE_ROWS over the tile. */
FN void SIMD(dense_tile)(const gemm_t *g, int64_t n0, int64_t n1, int64_t r0, int32_t *acc,
                         float *f) {
    for (int64_t g0 = n0; g0 < n1; g0 += g->group) {
        const int64_t g1 = g0 + g->group < n1 ? g0 + g->group : n1;
        for (int r = 0; r < ROWS && r0 + r < g->rows; r += DENSE_ROWS) {
            const uint8_t *a = g->a + 4 * (r0 + r);
            const int rows = g->rows - r0 - r < DENSE_ROWS ? (int)(g->rows - r0 - r) : DENSE_ROWS;
            for (int64_t n = g0; n < g1;) {
                /* constant channel counts, so the accumulators stay in registers */
                const int channels = g1 - n < DENSE_CHANNELS ? 1 : DENSE_CHANNELS;
                if (channels == DENSE_CHANNELS)
                    SIMD(dense_block)(g, a, n, DENSE_CHANNELS, acc);
                else
                    SIMD(dense_block)(g, a, n, 1, acc);
                SIMD(epilogue)(g, acc, n, channels, g0, r0, r, (rows + LANES - 1) / LANES * LANES, f);
                n += channels;
            }
        }
        SIMD(emit)(g, f, g0, (int)(g1 - g0), r0);
    }
    if (g->q && g->q->row_gamma) SIMD(row_fold)(g, f, r0);
}

#include "_attention_simd.h"

#undef SIMD
#undef FN
#undef INLINE
#undef LANES
#undef ROWS
#undef SPARSE_ROWS
#undef QUAD_ROWS
#undef DENSE_ROWS
#undef DENSE_CHANNELS
#undef ACC
#undef WV
#undef ACC_ZERO
#undef W_SET1
#undef ACC_DP
#undef ACC_STORE
#undef ACC_ADD
#undef FOLD
#undef STREAM_F
#undef STREAM_H
#undef FLOAT_TO_HALF
#undef HALF_TO_FLOAT
