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

/* Where a row vector's LANES rows (n of them live) land in an output laid out by rows, given
 * each virtual row's output row in p (-1: none; rows in order) or NULL (r0 onwards): every lane
 * in `mask` goes to first, first + 1, ... in lane order (one store, or the lanes compressed), or
 * where p says when first is -1 (rows with a gap between them). `spans`: the rows p gives are
 * consecutive wherever they are not -1 (dense_of's), so a span of LANES - 1 from the first lane
 * to the last is a run; a target's rows skip its padding, which can make up for rows that are
 * none, so their lanes are looked at one by one. */
typedef struct {
    int64_t first;
    uint32_t mask;
} SIMD(lanes_t);

#define ALL_LANES ((uint32_t)((1ull << LANES) - 1))

INLINE SIMD(lanes_t) SIMD(lanes)(const int64_t *p, int64_t r0, int n, int spans) {
    const uint32_t live = n == LANES ? ALL_LANES : (1u << n) - 1;
    if (!p) return (SIMD(lanes_t)){r0, live};
    if (spans && n == LANES && p[0] >= 0 && p[LANES - 1] == p[0] + LANES - 1)
        return (SIMD(lanes_t)){p[0], live};
    SIMD(lanes_t) at = {-1, 0};
    int64_t next = -1, run = 1;
    for (int l = 0; l < n; l++) {
        if (p[l] < 0) continue;
        if (next >= 0 && p[l] != next) run = 0;
        if (at.mask == 0) at.first = p[l];
        next = p[l] + 1;
        at.mask |= 1u << l;
    }
    if (!run) at.first = -1;
    return at;
}

/* LANES 32-bit values v into `to` at the rows `at` gives. */
INLINE void SIMD(store_lanes)(uint32_t *to, SIMD(lanes_t) at, const int64_t *p, SIMD(iv) v, int stream) {
    if (at.first >= 0 && at.mask == ALL_LANES) {
        if (stream && (uintptr_t)(to + at.first) % sizeof v == 0)
            STREAM_F((float *)(void *)(to + at.first), (SIMD(fv))v);
        else
            memcpy(to + at.first, &v, sizeof v);
        return;
    }
#ifdef COMPRESS_STORE
    if (at.first >= 0) {
        COMPRESS_STORE(to + at.first, at.mask, v);
        return;
    }
#endif
    for (int l = 0, k = 0; l < LANES; l++)
        if (at.mask >> l & 1) to[at.first >= 0 ? at.first + k++ : p[l]] = (uint32_t)v[l];
}

/* LANES float32 values v into a float32 or float16 array (float16 rounds to nearest even, as
 * numpy's astype does) at base + the rows `at` gives. */
INLINE void SIMD(store_values)(void *out, int half, int64_t base, SIMD(lanes_t) at, const int64_t *p,
                               SIMD(fv) v, int stream) {
    if (!half) {
        SIMD(store_lanes)((uint32_t *)out + base, at, p, (SIMD(iv))v, stream);
        return;
    }
    _Float16 *to = (_Float16 *)out + base;
    if (at.first >= 0 && at.mask == ALL_LANES) {
        const SIMD(hv) h = FLOAT_TO_HALF(v);
        if (stream && (uintptr_t)(to + at.first) % sizeof h == 0)
            STREAM_H(to + at.first, h);
        else
            memcpy(to + at.first, &h, sizeof h);
        return;
    }
#ifdef COMPRESS_STORE_HALF
    if (at.first >= 0) {
        COMPRESS_STORE_HALF(to + at.first, at.mask, v);
        return;
    }
#endif
    for (int l = 0, k = 0; l < LANES; l++)
        if (at.mask >> l & 1) to[at.first >= 0 ? at.first + k++ : p[l]] = (_Float16)v[l];
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

/* The settings every output value of a call needs, as locals: stores through the outputs cannot
 * change them (no reloads). */
typedef struct {
    const int32_t *corrs;
    const float *gws, *biases, *ga;
    const int64_t *dense_of;
    const void *res;
    int64_t m, ahead;
    int half, gelu, relu;
} SIMD(values_t);

INLINE SIMD(values_t) SIMD(values_of)(const gemm_t *g) {
    return (SIMD(values_t)){g->corr, g->gw, g->bias, g->ga, g->dense_of, g->residual,
                            g->m, g->ahead, g->residual_half, g->gelu, g->relu};
}

/* Channel n's float values at LANES virtual rows from `row`, from their int32 sums a, in the
 * reference's order: (float)(a - corr) * (ga * gw) + bias, GELU, + residual, then max(., 0). */
INLINE SIMD(fv) SIMD(value)(const SIMD(values_t) *e, SIMD(iv) a, int64_t n, int64_t row) {
    const int32_t corr = e->corrs ? e->corrs[n] : 0;
    SIMD(fv) ga, v;
    memcpy(&ga, e->ga + row, sizeof ga);
    v = __builtin_convertvector(a - corr, SIMD(fv)) * (ga * e->gws[n]);
    if (e->biases) v = v + e->biases[n];
    if (e->gelu) v = (v * (SIMD(erf)(v / 1.41421356237309505f) + 1.0f)) * 0.5f;
    if (e->res) { /* the residual at each lane's output row (0 for rows that are none) */
        const int64_t base = n * e->m;
        const int64_t *of = e->dense_of ? e->dense_of + row : NULL;
        const int64_t first = SIMD(run_start)(of, row);
        SIMD(fv) add;
        /* the next group's residual at these rows, while this group finishes: read from
         * memory a chunk per channel, too many streams for the hardware prefetcher */
        __builtin_prefetch((const char *)e->res + (base + row + e->ahead) * (e->half ? 2 : 4), 0, 3);
        if (first >= 0 && first + LANES <= e->m)
            add = SIMD(load_values)(e->res, e->half, base + first);
        else {
            float part[LANES];
            for (int l = 0; l < LANES; l++) {
                const int64_t o = of ? of[l] : row + l;
                part[l] = o >= 0 && o < e->m ? SIMD(load_value)(e->res, e->half, base + o) : 0.0f;
            }
            memcpy(&add, part, sizeof add);
        }
        v = v + add;
    }
    if (e->relu) v = FOLD(max)(v, (SIMD(fv)){0}); /* +0 unless positive (NaN too) */
    return v;
}

/* Runs `call`, which reads the settings e, with those of a ResNet's layers made constants
 * where they hold, so that the compiler drops their branches per value (measured 1.3x on a 1x1
 * convolution of 256 channels): unsigned inputs, a bias, a ReLU, no GELU, and no residual or
 * one in float16 at the rows themselves. */
#define WITH_SETTINGS_KNOWN(e, call)                                                              \
    do {                                                                                          \
        if (!(e).corrs && (e).biases && !(e).gelu && (e).relu) {                                  \
            (e).corrs = NULL, (e).gelu = 0, (e).relu = 1;                                         \
            if (!(e).res) {                                                                       \
                (e).res = NULL;                                                                   \
                call;                                                                             \
                break;                                                                            \
            }                                                                                     \
            if ((e).half && !(e).dense_of) {                                                      \
                (e).half = 1, (e).dense_of = NULL;                                                \
                call;                                                                             \
                break;                                                                            \
            }                                                                                     \
        }                                                                                         \
        call;                                                                                     \
    } while (0)

/* acc [channels][ROWS] int32 of channels n0.. (the group starting at g0) over `rows` rows from r0
 * + r -> f [group][TILE_ROWS], float32, with the settings e. */
INLINE void SIMD(epilogue_rows)(const SIMD(values_t) e, const int32_t *acc, int64_t n0, int channels,
                                int64_t g0, int64_t r0, int r, int rows, float *f) {
    for (int c = 0; c < channels; c++) {
        float *const dst = f + (n0 + c - g0) * TILE_ROWS + r;
        for (int i = 0; i < rows; i += LANES) {
            SIMD(iv) a;
            memcpy(&a, acc + c * ROWS + i, sizeof a);
            const SIMD(fv) v = SIMD(value)(&e, a, n0 + c, r0 + r + i);
            memcpy(dst + i, &v, sizeof v);
        }
    }
}

FN void SIMD(epilogue)(const gemm_t *g, const int32_t *acc, int64_t n0, int channels, int64_t g0,
                       int64_t r0, int r, int rows, float *f) {
    SIMD(values_t) e = SIMD(values_of)(g);
    WITH_SETTINGS_KNOWN(e, SIMD(epilogue_rows)(e, acc, n0, channels, g0, r0, r, rows, f));
}

/* The group's floats f [group][TILE_ROWS] of rows r0.. into the float output, channel by
 * channel: a channel's rows of the tile are whole cache lines side by side, which stores past
 * the caches combine (row vector by row vector, a group's channels would be too many streams). */
INLINE void SIMD(store_floats)(const gemm_t *g, const float *f, int64_t g0, int channels, int64_t r0) {
    const int rows = (int)SIMD(live_rows)(g, r0);
    const int64_t *const dense_of = g->dense_of ? g->dense_of + r0 : NULL;
    void *const out = g->out;
    const int half = g->out_half, stream = g->stream;
    const int64_t ldo = g->ldo;
    SIMD(lanes_t) at[TILE_ROWS / LANES]; /* the same for every channel */
    for (int i = 0; i < rows; i += LANES)
        at[i / LANES] = SIMD(lanes)(dense_of ? dense_of + i : NULL, r0 + i, rows - i < LANES ? rows - i : LANES, 1);
    for (int c = 0; c < channels; c++) {
        int i = 0;
        /* float16 past the caches: two row vectors' halves make one whole-line store, not two
         * half-line ones (measured 1.00-1.05x end to end on ResNet-50) */
        for (; half && stream && !dense_of && i + 2 * LANES <= rows; i += 2 * LANES) {
            _Float16 *const to = (_Float16 *)out + (g0 + c) * ldo + r0 + i;
            if ((uintptr_t)to % sizeof(SIMD(fv))) break;
            SIMD(fv) v0, v1, line;
            memcpy(&v0, f + c * TILE_ROWS + i, sizeof v0);
            memcpy(&v1, f + c * TILE_ROWS + i + LANES, sizeof v1);
            const SIMD(hv) h0 = FLOAT_TO_HALF(v0), h1 = FLOAT_TO_HALF(v1);
            memcpy(&line, &h0, sizeof h0);
            memcpy((char *)&line + sizeof h0, &h1, sizeof h1);
            STREAM_F((float *)(void *)to, line);
        }
        for (; i < rows; i += LANES) {
            SIMD(fv) v;
            memcpy(&v, f + c * TILE_ROWS + i, sizeof v);
            SIMD(store_values)(out, half, (g0 + c) * ldo, at[i / LANES], dense_of ? dense_of + i : NULL, v, stream);
        }
    }
}

/* A row vector of a group's values v[c] (channel g0 + c) at LANES rows from r0 + i, n of them
 * live -> the next layer's quantized planes: the vector's max and sq, then the folded bytes of
 * every 4 channels (with per-row gammas, the floats and the vector's step wait in f for
 * row_fold). */
INLINE void SIMD(quantize_rows)(const gemm_t *g, const SIMD(fv) *v, int channels, int64_t g0,
                                int64_t r0, int i, int n, float *f) {
    const quant_out_t q = *g->q;
    SIMD(fv) top = {0};
    for (int c = 0; c < channels; c++) top = FOLD(max)((SIMD(fv))((SIMD(iv))v[c] & 0x7fffffff), top);
    if (q.row_gamma) { /* per-row gammas: keep the floats and vector steps for row_fold */
        float *tile = f + g->group * TILE_ROWS, *steps = tile + (g->n + g->group) * TILE_ROWS;
        for (int c = 0; c < channels; c++) memcpy(tile + (g0 + c) * TILE_ROWS + i, &v[c], sizeof v[c]);
        const SIMD(fv) step = top / (float)q.level;
        memcpy(steps + g0 / g->group * TILE_ROWS + i, &step, sizeof step);
        return;
    }
    const SIMD(fv) gamma = (SIMD(fv)){0} + q.gamma;
    const SIMD(iv) live = gamma > 0.0f;
    const float level = (float)q.level, lowest = (float)q.lowest, sq_max = (float)q.sq_max;
    const int relu_live = g->relu && q.lowest == 0 && q.gamma > 0.0f; /* the lean fold applies */
    const int64_t *const row_of = q.row_of + r0 + i;
    uint32_t *const planes = (uint32_t *)(void *)q.planes + (g0 / 4) * q.rows;
    const SIMD(fv) sq = FOLD(vector_sq)(top / level, gamma, live, sq_max);
    const SIMD(fv) inverse = 1.0f / (gamma * sq);
    /* every lane a row: the target's rows span LANES - 1 only as a run */
    const int whole = SIMD(lanes)(g->dense_of ? g->dense_of + r0 + i : NULL, r0 + i, n, 1).mask == ALL_LANES;
    const SIMD(lanes_t) at = SIMD(lanes)(row_of, 0, n, whole);
    for (int c4 = 0; c4 < (channels + 3) / 4; c4++) {
        SIMD(iv) bytes = {0};
        for (int k = 0; k < 4; k++) {
            SIMD(iv) folded = (SIMD(iv)){0} + q.offset; /* channels past C: padding */
            if (4 * c4 + k < channels)
                folded = relu_live ? FOLD(fold_relu)(v[4 * c4 + k], inverse, sq, level)
                                   : FOLD(fold_values)(v[4 * c4 + k], inverse, sq, live, lowest, level, q.offset);
            bytes |= folded << (8 * k);
        }
        SIMD(store_lanes)(planes + c4 * q.rows, at, row_of, bytes, q.stream);
    }
}

#define MAX_GROUP 64 /* the largest vector (vsquant.VECTOR_SIZES) */

/* The group's floats f [group][TILE_ROWS] of rows r0.. -> the float output and/or the next
 * layer's quantized planes. */
FN void SIMD(emit)(const gemm_t *g, float *f, int64_t g0, int channels, int64_t r0) {
    if (g->out) SIMD(store_floats)(g, f, g0, channels, r0);
    if (!g->q) return;
    const int rows = (int)SIMD(live_rows)(g, r0);
    for (int i = 0; i < rows; i += LANES) {
        SIMD(fv) v[MAX_GROUP];
        for (int c = 0; c < channels; c++) memcpy(&v[c], f + c * TILE_ROWS + i, sizeof v[c]);
        SIMD(quantize_rows)(g, v, channels, g0, r0, i, rows - i < LANES ? rows - i : LANES, f);
    }
}

/* A whole group of at most MAX_CHANNELS channels from its sums acc [channel of the group][ROWS]
 * to the next layer's planes (whole_groups), row vector by row vector in one pass (the float
 * output, if any, through f), with the settings e. */
INLINE void SIMD(finish_rows)(const gemm_t *g, const SIMD(values_t) e, const int32_t *acc, int64_t g0,
                              int channels, int64_t r0, int64_t live, float *f) {
    const int floats = g->out != NULL;
    for (int i = 0; i < live; i += LANES) {
        SIMD(fv) v[MAX_CHANNELS];
        /* unrolled: measured 1.5x faster on a 1x1 convolution of 256 channels than the loop */
#pragma GCC unroll 16
        for (int c = 0; c < MAX_CHANNELS; c++) {
            if (c >= channels) break;
            SIMD(iv) a;
            memcpy(&a, acc + c * ROWS + i, sizeof a);
            v[c] = SIMD(value)(&e, a, g0 + c, r0 + i);
            if (floats) memcpy(f + c * TILE_ROWS + i, &v[c], sizeof v[c]);
        }
        SIMD(quantize_rows)(g, v, channels, g0, r0, i, live - i < LANES ? (int)(live - i) : LANES, f);
    }
    if (floats) SIMD(store_floats)(g, f, g0, channels, r0);
}

INLINE void SIMD(finish_group)(const gemm_t *g, const int32_t *acc, int64_t g0, int channels,
                               int64_t r0, int64_t live, float *f) {
    SIMD(values_t) e = SIMD(values_of)(g);
    WITH_SETTINGS_KNOWN(e, SIMD(finish_rows)(g, e, acc, g0, channels, r0, live, f));
}

/* Whether the tiles keep a whole group's sums (a group of at most MAX_CHANNELS, quantized with a
 * static gamma) for finish_group, each channel at its place in the group, rather than
 * finishing each call's channels through the float buffer (which floats alone, channel by
 * channel, reach faster: measured 10% on a 1x1 convolution of 256 channels). */
INLINE int SIMD(whole_groups)(const gemm_t *g) {
    return g->group <= MAX_CHANNELS && g->q && !g->q->row_gamma;
}

/* Where a tile puts channel n's sums: its place in the group for finish_group, else the
 * call's first. */
INLINE int32_t *SIMD(sums_of)(const gemm_t *g, int32_t *acc, int64_t n) {
    return SIMD(whole_groups)(g) ? acc + (n & (g->group - 1)) * ROWS : acc;
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

/* After a pruned tile's channels n..n+channels-1 of a part ending at n1: once its group's last
 * channel (or the part's) is done, finish_group; or, where the tiles do not keep whole groups,
 * the channels' epilogue over the live rows' vectors, then their group's emit. Groups are
 * powers of two: no division. */
INLINE void SIMD(close_channels)(const gemm_t *g, const int32_t *acc, int64_t n, int channels,
                                 int64_t n1, int64_t r0, int64_t live, float *f) {
    const int64_t g0 = n & -g->group, next = n + channels;
    const int closes = next == n1 || (next & (g->group - 1)) == 0;
    if (SIMD(whole_groups)(g)) {
        if (closes) SIMD(finish_group)(g, acc, g0, (int)(next - g0), r0, live, f);
        return;
    }
    SIMD(epilogue)(g, acc, n, channels, g0, r0, 0, (int)((live + LANES - 1) / LANES * LANES), f);
    if (closes) SIMD(emit)(g, f, g0, (int)(next - g0), r0);
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
        int32_t *const sums = SIMD(sums_of)(g, acc, n);
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
                ACC_STORE(sums + SPARSE_ROWS * h + LANES * i, ACC_ADD(s[i], t[i]));
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
        int32_t *const sums = SIMD(sums_of)(g, acc, n);
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
                    ACC_STORE(sums + c * ROWS + QUAD_ROWS * h + LANES * i, s[c][i]);
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
#undef ALL_LANES
#undef MAX_GROUP
#undef WITH_SETTINGS_KNOWN
#undef COMPRESS_STORE
#undef COMPRESS_STORE_HALF
