/* The sparse-int4 CPU kernel: VS-Quant activation quantization and the integer GEMM against
 * dense or pruned 4-bit weights, bit for bit the arithmetic of vsquant.reference_matmul.
 *
 * Folding: a 4-bit value times its 4-bit vector scale (q · sq) is a small integer (|.| <= 225), so
 * the per-vector sum  sum_v sq_a sq_w sum_{k in v} q_a q_w  equals the plain integer dot product
 * of the folded int16 values. The GEMM is then int16 x int16 -> int32, two K steps per
 * instruction (vpmaddwd on AVX2, vpdpwssd on AVX-512 VNNI), exact in any order.
 *
 * Layouts: activations are quantized straight into row tiles of TILE_M rows, one K column after
 * another (at[k][r], int16), so one vector load holds 16 (or 32) rows of one column; a
 * convolution's rows come straight from its NCHW input, with no float im2col matrix (the
 * input's rows as 1 x 1 "images" when there is no convolution). Unpacking two columns
 * k1, k2 interleaves them into (x[k1], x[k2]) pairs for vpmaddwd. Dense weights are pairs
 * (w[2j], w[2j+1]) per channel. Pruned weights are entries per channel and K block: each pairs two
 * kept weights of the block (k1, k2 and their values), so the two int16 halves of a multiply-add
 * both do useful work and the sparse loop's cost follows the kept weights, not K.
 *
 * Epilogue: out = (float)acc * (ga[m] * gw[n]) [+ bias[n]] in float32, each operation rounded,
 * built with -ffp-contract=off so no compiler fuses a multiply and an add.
 *
 * Paths: "portable" (plain C), "avx2" and "avx512vnni", compiled with target attributes and
 * chosen at run time by what the CPU reports; every path produces the same bits.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SP_X86 1
#include <immintrin.h>
#define VECTORIZED __attribute__((target_clones("avx2", "default")))
#else
#define VECTORIZED
#endif

#define MAX_THREADS 64
#define TILE_N 64   /* output channels per tile */
#define TILE_M 64   /* rows per tile */
#define KBLOCK 128  /* K columns per block: a tile's block of activations (16 KiB) stays in L1 */
#define SPARSE_GROUP 32 /* channels sharing a K block: their accumulators (8 KiB) fit beside it */

enum { PATH_PORTABLE, PATH_AVX2, PATH_AVX512VNNI, PATH_COUNT };
static const char *const PATH_NAMES[PATH_COUNT] = {"portable", "avx2", "avx512vnni"};

static int path_supported(int path) {
    if (path == PATH_PORTABLE) return 1;
#ifdef SP_X86
    __builtin_cpu_init();
    if (path == PATH_AVX2) return __builtin_cpu_supports("avx2");
    if (path == PATH_AVX512VNNI)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vnni");
#endif
    return 0;
}

/* ---------------------------------------------------------------- threads */

typedef void (*part_fn)(void *ctx, int part, int parts);
typedef struct {
    part_fn fn;
    void *ctx;
    int part, parts;
} part_arg;

static void *part_main(void *p) {
    part_arg *a = p;
    a->fn(a->ctx, a->part, a->parts);
    return NULL;
}

/* Runs fn on parts 0..parts-1, part 0 on the calling thread; a thread that cannot be started
 * has its part run inline, so the result never depends on how many threads started. */
static void run_parts(part_fn fn, void *ctx, int parts) {
    pthread_t tid[MAX_THREADS];
    part_arg args[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int i = 1; i < parts; i++) {
        args[i] = (part_arg){fn, ctx, i, parts};
        started[i] = pthread_create(&tid[i], NULL, part_main, &args[i]) == 0;
    }
    fn(ctx, 0, parts);
    for (int i = 1; i < parts; i++) {
        if (started[i])
            pthread_join(tid[i], NULL);
        else
            fn(ctx, i, parts);
    }
}

static void split(int64_t total, int part, int parts, int64_t *lo, int64_t *hi) {
    *lo = total * part / parts;
    *hi = total * (part + 1) / parts;
}

/* ---------------------------------------------------------------- conv geometry */

/* A convolution's input and windows; rows [M][K] are the 1 x 1 convolution of M images of
 * K channels and one pixel. */
typedef struct {
    int64_t b, c, h, w, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow;
} conv_t;

static int parse_conv(PyObject *geometry, conv_t *g) {
    long long v[14];
    if (!PyArg_ParseTuple(geometry, "LLLLLLLLLLLLLL", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                          &v[6], &v[7], &v[8], &v[9], &v[10], &v[11], &v[12], &v[13]))
        return 0;
    *g = (conv_t){v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13]};
    for (int i = 0; i < 14; i++)
        if (v[i] < (i == 8 || i == 9 ? 0 : 1)) { /* pads may be 0, the rest at least 1 */
            PyErr_SetString(PyExc_ValueError, "conv geometry: sizes must be positive, pads >= 0");
            return 0;
        }
    return 1;
}

typedef struct {
    const float *x; /* [b][c][h][w] */
    float *out;     /* [b*oh*ow][kh*kw*c], K order (kh, kw, c) */
    conv_t g;
} im2col_t;

static void im2col_part(void *ctx, int part, int parts) {
    const im2col_t *t = ctx;
    const conv_t *g = &t->g;
    const int64_t k = g->kh * g->kw * g->c, hw = g->h * g->w;
    int64_t lo, hi;
    split(g->b * g->oh, part, parts, &lo, &hi);
    for (int64_t bo = lo; bo < hi; bo++) {
        const int64_t b = bo / g->oh, oy = bo % g->oh;
        const float *img = t->x + b * g->c * hw;
        for (int64_t ox = 0; ox < g->ow; ox++) {
            float *row = t->out + (bo * g->ow + ox) * k;
            for (int64_t ky = 0; ky < g->kh; ky++) {
                const int64_t iy = oy * g->sh - g->pt + ky * g->dh;
                for (int64_t kx = 0; kx < g->kw; kx++) {
                    const int64_t ix = ox * g->sw - g->pl + kx * g->dw;
                    float *dst = row + (ky * g->kw + kx) * g->c;
                    if (iy < 0 || iy >= g->h || ix < 0 || ix >= g->w) {
                        memset(dst, 0, (size_t)g->c * sizeof(float));
                        continue;
                    }
                    const float *src = img + iy * g->w + ix;
                    for (int64_t ch = 0; ch < g->c; ch++) dst[ch] = src[ch * hw];
                }
            }
        }
    }
}

/* ---------------------------------------------------------------- row tiles */

/* The kernels read activations in row tiles of TILE_M rows, one K column after another
 * (at[k][position[r]], int16), so one vector load holds 16 (or 32) rows of one column.
 * Unpacking two columns puts int16 positions 8c..8c+3 of each 128-bit lane c in the low register
 * and 8c+4..8c+7 in the high one; rows are placed in the columns so that the accumulators come
 * out in row order: row r of a group of 2 * lanes sits at 8c + 4h + i, with h = r >= lanes,
 * c = (r mod lanes) / 4, i = r mod 4 (lanes 0: the portable path, rows in order). Every path
 * keeps runs of 4 rows together. */
static void place_rows(uint8_t position[TILE_M], int lanes) {
    for (int r = 0; r < TILE_M; r++) {
        const int group = lanes ? 2 * lanes : TILE_M, i = r % group, q = lanes ? i % lanes : i;
        position[r] = (uint8_t)(lanes ? r - i + 8 * (q / 4) + 4 * (i >= lanes) + q % 4 : r);
    }
}

static int path_lanes(int path) {
    return path == PATH_AVX512VNNI ? 16 : path == PATH_AVX2 ? 8 : 0;
}

/* ---------------------------------------------------------------- quantization */

/* VS-Quant of conv rows straight from the NCHW input into row tiles, in the float32 order of
 * vsquant.quantize_activations: per vector c = max |x| (or a given clipping scalar), s = c / level;
 * per row gamma = max s / sq_max; sq = clamp(rint(s / gamma), 1, sq_max), step = gamma * sq;
 * q = clamp(rint(x / step), lowest, level), stored folded as q * sq. */
typedef struct {
    const float *x;    /* conv input [b][c][h][w] */
    const float *clip; /* [m][nv] clipping scalars, or NULL for max |x| */
    int16_t *tiles;    /* [tiles][kp][TILE_M], zero beyond k and past the last row */
    float *gamma;      /* [m] */
    float *work;       /* per part: smax, step, sq, each [nv][TILE_M] */
    conv_t g;
    int64_t m, k, kp, nv;
    int vector, level, lowest, sq_max, simd;
    uint8_t position[TILE_M];
} quant_t;

/* 8-lane vectors pass only between always-inline helpers, never across a call, so the ABI note
 * GCC gives for them without AVX does not apply. */
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float f8 __attribute__((vector_size(32)));
typedef int32_t i8 __attribute__((vector_size(32)));
typedef int16_t h8 __attribute__((vector_size(16)));
#define ROUNDER 12582912.0f /* 1.5 * 2^23: (q + R) - R rounds q to an integer, half to even */

/* The rows of one tile: where each row's window starts in the input. */
typedef struct {
    int count;                  /* rows holding data, rounded up to 8 (the rest are zeros) */
    uint8_t live[TILE_M];       /* row < m */
    int64_t image[TILE_M];      /* offset of the row's image */
    int64_t iy[TILE_M], ix[TILE_M]; /* window origin, negative inside the top/left padding */
    uint8_t line[TILE_M / 8];   /* the 8 rows from 8 * i: live, one image, one output line */
} tile_rows_t;

/* 8 rows' input offsets for one kernel tap (ky, kx), before the channel's offset. */
typedef struct {
    int64_t off[8];
    int valid[8];
    int step;       /* all valid, 1 or 2 apart: loaded in whole vectors; else 0 */
} window8;

static void rows_of(const quant_t *t, int64_t m0, tile_rows_t *rows) {
    const conv_t *g = &t->g;
    const int64_t pixels = g->oh * g->ow, live = t->m - m0 < TILE_M ? t->m - m0 : TILE_M;
    rows->count = (int)((live + 7) / 8 * 8);
    for (int r = 0; r < TILE_M; r++) {
        const int64_t m = m0 + r, pixel = m % pixels;
        rows->live[r] = r < live;
        rows->image[r] = m / pixels * g->c * g->h * g->w;
        rows->iy[r] = pixel / g->ow * g->sh - g->pt;
        rows->ix[r] = pixel % g->ow * g->sw - g->pl;
    }
    for (int i = 0; i < TILE_M / 8; i++) {
        const int64_t pixel = (m0 + 8 * i) % pixels;
        rows->line[i] = 8 * i + 8 <= live && pixel % g->ow + 8 <= g->ow;
    }
}

__attribute__((always_inline)) static inline void window_of(const conv_t *g, const tile_rows_t *rows,
                                                            int r0, int64_t tap, window8 *win) {
    const int64_t dy = tap / g->kw * g->dh, dx = tap % g->kw * g->dw;
    if (rows->line[r0 / 8] && g->sw <= 2) { /* one output line, all 8 windows inside: no lane checks */
        const int64_t iy = rows->iy[r0] + dy, ix = rows->ix[r0] + dx;
        if (iy >= 0 && iy < g->h && ix >= 0 && ix + 7 * g->sw < g->w) {
            for (int i = 0; i < 8; i++) {
                win->valid[i] = 1;
                win->off[i] = rows->image[r0] + iy * g->w + ix + i * g->sw;
            }
            win->step = (int)g->sw;
            return;
        }
    }
    int step1 = 1, step2 = 1;
    for (int i = 0; i < 8; i++) {
        const int64_t iy = rows->iy[r0 + i] + dy, ix = rows->ix[r0 + i] + dx;
        win->valid[i] = rows->live[r0 + i] && iy >= 0 && iy < g->h && ix >= 0 && ix < g->w;
        win->off[i] = win->valid[i] ? rows->image[r0 + i] + iy * g->w + ix : 0;
        step1 &= win->valid[i] && win->off[i] == win->off[0] + i;
        step2 &= win->valid[i] && win->off[i] == win->off[0] + 2 * i;
    }
    win->step = step1 ? 1 : step2 ? 2 : 0;
}

/* 8 rows of one K column: consecutive rows load as one vector, rows 2 apart (stride 2) as two
 * (elements 0..7 and 7..14, so nothing past the last row is read), others (padding, row ends)
 * lane by lane, with zeros where the window leaves the image. */
__attribute__((always_inline)) static inline f8 load8(const float *x, const window8 *win,
                                                      int64_t offset) {
    f8 v, w;
    if (win->step) {
        memcpy(&v, x + win->off[0] + offset, sizeof v);
        if (win->step == 1) return v;
        memcpy(&w, x + win->off[0] + offset + 7, sizeof w);
        return __builtin_shufflevector(v, w, 0, 2, 4, 6, 9, 11, 13, 15);
    }
    for (int i = 0; i < 8; i++) v[i] = win->valid[i] ? x[win->off[i] + offset] : 0.0f;
    return v;
}

/* Columns c..c+width-1 of 8 rows. When channels lie side by side (one-pixel images: plain rows
 * [M][K]) a full block is 8 row loads transposed, so no load strides across rows. */
__attribute__((always_inline)) static inline void load_columns(const float *x, const window8 *win,
                                                               int64_t c, int64_t hw, int width,
                                                               f8 columns[8]) {
    if (hw > 1 || width < 8) {
        for (int j = 0; j < width; j++) columns[j] = load8(x, win, (c + j) * hw);
        return;
    }
    f8 r[8], u[8];
    for (int i = 0; i < 8; i++) {
        r[i] = (f8){0};
        if (win->valid[i]) memcpy(&r[i], x + win->off[i] + c, sizeof r[i]);
    }
    for (int i = 0; i < 8; i += 2) { /* rows i, i+1 interleaved, per 128-bit half */
        u[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
        u[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
    }
    for (int h = 0; h < 8; h += 4) /* r[h + j]: columns j and j + 4 of rows h..h+3 */
        for (int i = 0; i < 2; i++) {
            r[h + 2 * i] = __builtin_shufflevector(u[h + i], u[h + i + 2], 0, 1, 8, 9, 4, 5, 12, 13);
            r[h + 2 * i + 1] = __builtin_shufflevector(u[h + i], u[h + i + 2], 2, 3, 10, 11, 6, 7, 14, 15);
        }
    for (int j = 0; j < 4; j++) {
        columns[j] = __builtin_shufflevector(r[j], r[j + 4], 0, 1, 2, 3, 8, 9, 10, 11);
        columns[j + 4] = __builtin_shufflevector(r[j], r[j + 4], 4, 5, 6, 7, 12, 13, 14, 15);
    }
}

__attribute__((always_inline)) static inline f8 select8(i8 mask, f8 a, f8 b) {
    return (f8)((mask & (i8)a) | (~mask & (i8)b));
}

/* 8 rows' folded values of one column to their positions, in runs of 4 (see place_rows). */
__attribute__((always_inline)) static inline void store_rows(int16_t *column, const uint8_t *position,
                                                             i8 folded) {
    const h8 v = __builtin_convertvector(folded, h8);
    memcpy(column + position[0], &v, 4 * sizeof(int16_t));
    memcpy(column + position[4], (const int16_t *)&v + 4, 4 * sizeof(int16_t));
}

/* The end of the run of channels from c0 that stays within one vector along K. */
static inline int64_t vector_end(const quant_t *t, int64_t tap, int64_t c0) {
    const int64_t k = tap * t->g.c + c0, end = c0 + t->vector - k % t->vector;
    return end < t->g.c ? end : t->g.c;
}

#define SIMD(name) name##_portable
#define FN static
#include "_quantize_tile.h" /* undefines the parameters above */
#ifdef SP_X86
#define SIMD(name) name##_avx2
#define FN __attribute__((target("avx2"))) static
#include "_quantize_tile.h"
#endif

static void quantize_part(void *ctx, int part, int parts) {
    const quant_t *t = ctx;
    int64_t lo, hi;
    split((t->m + TILE_M - 1) / TILE_M, part, parts, &lo, &hi);
    float *smax = t->work + (size_t)part * 3 * TILE_M * (size_t)t->nv;
    float *step = smax + TILE_M * t->nv, *sq = step + TILE_M * t->nv;
    tile_rows_t rows;
    for (int64_t tile = lo; tile < hi; tile++) {
        int16_t *at = t->tiles + tile * t->kp * TILE_M;
        rows_of(t, tile * TILE_M, &rows);
        memset(smax, 0, sizeof(float) * TILE_M * (size_t)t->nv);
#ifdef SP_X86
        if (t->simd) {
            if (!t->clip) tile_max_avx2(t, &rows, smax);
            tile_scales_avx2(t, tile * TILE_M, &rows, smax, step, sq);
            tile_fold_avx2(t, &rows, step, sq, at);
        } else
#endif
        {
            if (!t->clip) tile_max_portable(t, &rows, smax);
            tile_scales_portable(t, tile * TILE_M, &rows, smax, step, sq);
            tile_fold_portable(t, &rows, step, sq, at);
        }
        /* rows without data and the padding column are zeros */
        for (int64_t k = 0; k < t->k; k++)
            for (int r = rows.count; r < TILE_M; r += 4) memset(at + k * TILE_M + t->position[r], 0, 8);
        if (t->kp > t->k) memset(at + t->k * TILE_M, 0, sizeof(int16_t) * TILE_M);
    }
}

/* ---------------------------------------------------------------- GEMM */

typedef struct {
    const int16_t *at; /* row tiles of folded activations, each [kp][TILE_M] (see place_rows) */
    int32_t *acc;      /* one TILE_N x TILE_M accumulator tile per thread */
    const float *ga, *gw, *bias;
    const int32_t *dense;  /* [n][j] (w[2j], w[2j+1]) pairs, or NULL */
    const int32_t *ptr;    /* sparse: entries of channel n in K block b: [ptr[q], ptr[q+1]), q = run_of(n, b) */
    const uint32_t *ent;   /* entries: K columns k1 | k2 << 16 (both in the block), then weights
                            * w[k1] | w[k2] << 16 as int16 (w[k2] = 0 when unpaired) */
    float *out;
    int64_t m, kp, j, n, nb, pixels;
    int64_t n_lo[MAX_THREADS], n_hi[MAX_THREADS]; /* each thread's channels */
    int64_t m_lo[MAX_THREADS], m_hi[MAX_THREADS]; /* and rows (multiples of TILE_M) */
    int path;
} gemm_t;

static inline const int16_t *act_tile(const gemm_t *g, int64_t m0) {
    return g->at + m0 / TILE_M * g->kp * TILE_M;
}

/* Sparse entries are stored in the order the tiles read them: channel groups of SPARSE_GROUP,
 * then K blocks, then the group's channels, so a tile streams them front to back. */
static inline int64_t run_of(const gemm_t *g, int64_t n, int64_t b) {
    const int64_t first = n / SPARSE_GROUP * SPARSE_GROUP;
    const int64_t size = g->n - first < SPARSE_GROUP ? g->n - first : SPARSE_GROUP;
    return first * g->nb + b * size + n - first;
}

/* Rows of the tile at m0 that hold data, rounded up to whole groups (the rest are zeros). */
static inline int tile_rows(const gemm_t *g, int64_t m0, int group) {
    const int64_t rows = g->m - m0 < TILE_M ? g->m - m0 : TILE_M;
    return (int)((rows + group - 1) / group * group);
}

/* acc [TILE_N][TILE_M] int32 for channels n0.., rows m0.. -> out, through the float epilogue,
 * converted in place a channel at a time (vectorized), then copied out: a row of channels at a
 * time for row-major output ([M, N], through 8 x 8 transposes where AVX2 runs), a channel's run
 * of pixels at a time for NCHW ([B, N, P]). */
VECTORIZED static void scale_tile(const gemm_t *g, int32_t *acc, int64_t n0, int cn, int64_t m0) {
    float ga[TILE_M];
    for (int r = 0; r < TILE_M; r++) ga[r] = m0 + r < g->m ? g->ga[m0 + r] : 0.0f;
    float *f = (float *)acc;
    for (int c = 0; c < cn; c++) {
        const float gw = g->gw[n0 + c], b = g->bias ? g->bias[n0 + c] : 0.0f;
        const int32_t *in = acc + c * TILE_M;
        float *o = f + c * TILE_M;
        for (int r = 0; r < TILE_M; r++) o[r] = (float)in[r] * (ga[r] * gw);
        if (g->bias)
            for (int r = 0; r < TILE_M; r++) o[r] = o[r] + b;
    }
}

#ifdef SP_X86
/* Rows r0..r0+7 x channels c0..c0+7 of the float tile into the row-major output. */
__attribute__((target("avx2"))) static void transpose8(const gemm_t *g, const float *f, int64_t n0,
                                                        int c0, int64_t m0, int r0) {
    __m256 v[8], t[8], s[8];
    for (int i = 0; i < 8; i++) v[i] = _mm256_loadu_ps(f + (c0 + i) * TILE_M + r0);
    for (int i = 0; i < 8; i += 2) { /* t[i]: rows 0,1 | 4,5 of channels i, i+1; t[i+1]: 2,3 | 6,7 */
        t[i] = _mm256_unpacklo_ps(v[i], v[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(v[i], v[i + 1]);
    }
    for (int h = 0; h < 8; h += 4) /* s[h + r]: rows r | r + 4 of channels h..h+3 */
        for (int i = 0; i < 2; i++) {
            s[h + 2 * i] = _mm256_shuffle_ps(t[h + i], t[h + i + 2], 0x44);
            s[h + 2 * i + 1] = _mm256_shuffle_ps(t[h + i], t[h + i + 2], 0xEE);
        }
    for (int r = 0; r < 4; r++) {
        float *dst = g->out + (m0 + r0 + r) * g->n + n0 + c0;
        _mm256_storeu_ps(dst, _mm256_permute2f128_ps(s[r], s[r + 4], 0x20));
        _mm256_storeu_ps(dst + 4 * g->n, _mm256_permute2f128_ps(s[r], s[r + 4], 0x31));
    }
}
#endif

static void store_tile(const gemm_t *g, int32_t *acc, int64_t n0, int cn, int64_t m0) {
    scale_tile(g, acc, n0, cn, m0);
    const float *f = (const float *)acc;
    const int64_t n = g->n, p = g->pixels;
    const int rows = (int)(g->m - m0 < TILE_M ? g->m - m0 : TILE_M);
    if (p == 1) {
        int r0 = 0;
#ifdef SP_X86
        if (g->path != PATH_PORTABLE) /* the SIMD paths; portable keeps to plain C */
            for (; r0 + 8 <= rows; r0 += 8)
                for (int c0 = 0; c0 + 8 <= cn; c0 += 8) transpose8(g, f, n0, c0, m0, r0);
#endif
        for (int r = 0; r < rows; r++) {
            float *dst = g->out + (m0 + r) * n + n0;
            for (int c = r < r0 ? cn / 8 * 8 : 0; c < cn; c++) dst[c] = f[c * TILE_M + r];
        }
        return;
    }
    for (int r = 0; r < rows;) { /* runs of rows within one image */
        const int64_t m = m0 + r, image = m / p, pixel = m % p;
        const int run = (int)(p - pixel < rows - r ? p - pixel : rows - r);
        float *dst = g->out + image * n * p + n0 * p + pixel;
        for (int c = 0; c < cn; c++) memcpy(dst + c * p, f + c * TILE_M + r, sizeof(float) * (size_t)run);
        r += run;
    }
}

/* Portable path: the same tiles in plain C, rows in order. */
static void dense_portable(const gemm_t *g, int64_t n0, int cn, int64_t m0, int32_t *acc) {
    const int16_t *at = act_tile(g, m0);
    const int rows = tile_rows(g, m0, 1);
    for (int c = 0; c < cn; c++) {
        const int32_t *w = g->dense + (n0 + c) * g->j;
        int32_t *dst = acc + c * TILE_M;
        for (int r = 0; r < TILE_M; r++) dst[r] = 0;
        for (int64_t j = 0; j < g->j; j++) {
            const int32_t w0 = (int16_t)(w[j] & 0xffff), w1 = (int16_t)((uint32_t)w[j] >> 16);
            const int16_t *x1 = at + 2 * j * TILE_M, *x2 = x1 + TILE_M;
            for (int r = 0; r < rows; r++) dst[r] += x1[r] * w0 + x2[r] * w1;
        }
    }
}

static void sparse_portable(const gemm_t *g, int64_t n0, int cn, int64_t m0, int32_t *acc) {
    const int16_t *at = act_tile(g, m0);
    const int rows = tile_rows(g, m0, 1);
    for (int c = 0; c < cn; c++) {
        int32_t *dst = acc + c * TILE_M;
        for (int r = 0; r < TILE_M; r++) dst[r] = 0;
        for (int64_t b = 0; b < g->nb; b++) {
            const int64_t q = run_of(g, n0 + c, b);
            for (int32_t p = g->ptr[q]; p < g->ptr[q + 1]; p++) {
                const uint32_t cols = g->ent[2 * p], w = g->ent[2 * p + 1];
                const int32_t w0 = (int16_t)(w & 0xffff), w1 = (int16_t)(w >> 16);
                const int16_t *x1 = at + (int64_t)(cols & 0xffff) * TILE_M;
                const int16_t *x2 = at + (int64_t)(cols >> 16) * TILE_M;
                for (int r = 0; r < rows; r++) dst[r] += x1[r] * w0 + x2[r] * w1;
            }
        }
    }
}

#ifdef SP_X86
#define DENSE_CHANNELS 4 /* channels sharing each unpacked activation pair */

#define SIMD(name) name##_avx2
#define FN __attribute__((target("avx2"))) static
#define INLINE __attribute__((target("avx2"), always_inline)) static inline
#define VEC __m256i
#define LANES 8
#define V_LOAD(p) _mm256_loadu_si256((const __m256i *)(const void *)(p))
#define V_STORE(p, v) _mm256_storeu_si256((__m256i *)(void *)(p), v)
#define V_SET1(x) _mm256_set1_epi32(x)
#define V_UNPACKLO(a, b) _mm256_unpacklo_epi16(a, b)
#define V_UNPACKHI(a, b) _mm256_unpackhi_epi16(a, b)
#define V_MADD(s, a, b) _mm256_add_epi32(s, _mm256_madd_epi16(a, b))
#include "_gemm_simd.h" /* undefines the parameters above */

/* AVX-512 VNNI: 16 lanes, and vpdpwssd fuses the multiply-add with the accumulate. */
#define SIMD(name) name##_vnni
#define FN __attribute__((target("avx512f,avx512bw,avx512vnni"))) static
#define INLINE __attribute__((target("avx512f,avx512bw,avx512vnni"), always_inline)) static inline
#define VEC __m512i
#define LANES 16
#define V_LOAD(p) _mm512_loadu_si512((const void *)(p))
#define V_STORE(p, v) _mm512_storeu_si512((void *)(p), v)
#define V_SET1(x) _mm512_set1_epi32(x)
#define V_UNPACKLO(a, b) _mm512_unpacklo_epi16(a, b)
#define V_UNPACKHI(a, b) _mm512_unpackhi_epi16(a, b)
#define V_MADD(s, a, b) _mm512_dpwssd_epi32(s, a, b)
#include "_gemm_simd.h" /* undefines the parameters above */
#endif

typedef void (*tile_fn)(const gemm_t *, int64_t, int, int64_t, int32_t *);

/* The path's tile kernel. */
static tile_fn tile_kernel(int path, int sparse) {
#ifdef SP_X86
    if (path == PATH_AVX2) return sparse ? sparse_tile_avx2 : dense_tile_avx2;
    if (path == PATH_AVX512VNNI) return sparse ? sparse_tile_vnni : dense_tile_vnni;
#endif
    return sparse ? sparse_portable : dense_portable;
}

/* Each thread owns a range of rows or of output channels (see balance). Row tiles are the outer
 * loop: a tile's activations (TILE_M rows x K) stay in cache while the weights stream past. */
static void gemm_part(void *ctx, int part, int parts) {
    (void)parts;
    const gemm_t *g = ctx;
    const tile_fn kernel = tile_kernel(g->path, g->dense == NULL);
    int32_t *acc = g->acc + (int64_t)part * TILE_N * TILE_M;
    const int64_t lo = g->n_lo[part], hi = g->n_hi[part];
    for (int64_t m0 = g->m_lo[part]; m0 < g->m_hi[part]; m0 += TILE_M)
        for (int64_t n0 = lo; n0 < hi; n0 += TILE_N) {
            const int cn = (int)(hi - n0 < TILE_N ? hi - n0 : TILE_N);
            kernel(g, n0, cn, m0, acc);
            store_tile(g, acc, n0, cn, m0);
        }
}

/* Threads split the row tiles when there are enough to share evenly, else the channels, in
 * ranges of equal work (entries when sparse) made of whole channel groups. */
static void balance(gemm_t *g, int parts) {
    const int64_t tiles = (g->m + TILE_M - 1) / TILE_M;
    const int64_t total = g->dense ? g->n : g->ptr[g->n * g->nb], step = SPARSE_GROUP;
    const int by_rows = tiles % parts == 0 || tiles >= 4 * parts;
    int64_t n = 0;
    for (int i = 0; i < parts; i++) {
        if (by_rows) {
            g->m_lo[i] = tiles * i / parts * TILE_M;
            g->m_hi[i] = tiles * (i + 1) / parts * TILE_M;
            g->n_lo[i] = 0;
            g->n_hi[i] = g->n;
            continue;
        }
        g->m_lo[i] = 0;
        g->m_hi[i] = tiles * TILE_M;
        g->n_lo[i] = n;
        const int64_t target = total * (i + 1) / parts;
        while (n < g->n && (g->dense ? n : g->ptr[n * g->nb]) < target) n += step;
        g->n_hi[i] = i + 1 == parts || n > g->n ? g->n : n;
        n = g->n_hi[i];
    }
}

/* ---------------------------------------------------------------- Python bindings */

static int parse_path(const char *name) {
    for (int p = 0; p < PATH_COUNT; p++)
        if (strcmp(name, PATH_NAMES[p]) == 0) {
            if (!path_supported(p)) {
                PyErr_Format(PyExc_ValueError, "kernel path %s is not supported by this CPU", name);
                return -1;
            }
            return p;
        }
    PyErr_Format(PyExc_ValueError, "unknown kernel path %s", name);
    return -1;
}

static int check_len(const Py_buffer *b, int64_t count, size_t item, const char *what) {
    if (b->len < (Py_ssize_t)(count * (int64_t)item)) {
        PyErr_Format(PyExc_ValueError, "%s buffer holds %zd bytes, needs %lld", what, b->len,
                     (long long)(count * (int64_t)item));
        return 0;
    }
    return 1;
}

static int threads_ok(int threads) {
    if (threads < 1 || threads > MAX_THREADS) {
        PyErr_Format(PyExc_ValueError, "threads must be 1..%d, not %d", MAX_THREADS, threads);
        return 0;
    }
    return 1;
}

static PyObject *py_paths(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    for (int p = PATH_COUNT - 1; p >= 0; p--) /* best first */
        if (path_supported(p)) {
            PyObject *name = PyUnicode_FromString(PATH_NAMES[p]);
            if (!name || PyList_Append(out, name) < 0) {
                Py_XDECREF(name);
                Py_DECREF(out);
                return NULL;
            }
            Py_DECREF(name);
        }
    return out;
}

/* quantize(x, geometry, clip_or_None, tiles, gamma, vector, level, lowest, sq_max, path,
 *          threads) -- x: NCHW input; geometry (b, c, h, w, kh, kw, sh, sw, pt, pl, dh, dw, oh,
 *          ow); rows m = b*oh*ow of k = kh*kw*c, kp = k rounded up to even; tiles int16
 *          [ceil(m / 64)][kp][64] laid out for the path; clip float32 [m][ceil(k / vector)]. */
static PyObject *py_quantize(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer x, tiles, gamma, clip = {0};
    PyObject *geometry, *clip_obj;
    quant_t t = {0};
    const char *path_name;
    int threads;
    if (!PyArg_ParseTuple(args, "y*OOw*w*iiiisi", &x, &geometry, &clip_obj, &tiles, &gamma,
                          &t.vector, &t.level, &t.lowest, &t.sq_max, &path_name, &threads))
        return NULL;
    const int path = parse_path(path_name);
    int ok = path >= 0 && threads_ok(threads) && parse_conv(geometry, &t.g);
    ok = ok && (clip_obj == Py_None || PyObject_GetBuffer(clip_obj, &clip, PyBUF_SIMPLE) == 0);
    if (ok && t.vector < 1) {
        PyErr_SetString(PyExc_ValueError, "quantize: the vector size must be positive");
        ok = 0;
    }
    if (ok) {
        t.m = t.g.b * t.g.oh * t.g.ow;
        t.k = t.g.kh * t.g.kw * t.g.c;
        t.kp = t.k + t.k % 2;
        t.nv = (t.k + t.vector - 1) / t.vector;
    }
    const int64_t count = (t.m + TILE_M - 1) / TILE_M;
    ok = ok && check_len(&x, t.g.b * t.g.c * t.g.h * t.g.w, 4, "x") &&
         check_len(&tiles, count * t.kp * TILE_M, 2, "tiles") && check_len(&gamma, t.m, 4, "gamma") &&
         (clip_obj == Py_None || check_len(&clip, t.m * t.nv, 4, "clip"));
    const int parts = ok ? (threads < count ? threads : (int)count) : 0; /* sizes >= 1 */
    t.work = ok ? malloc(sizeof(float) * 3 * TILE_M * (size_t)t.nv * (size_t)parts) : NULL;
    if (ok && !t.work) {
        PyErr_NoMemory();
        ok = 0;
    }
    if (ok) {
        t.x = x.buf;
        t.clip = clip_obj == Py_None ? NULL : clip.buf;
        t.tiles = tiles.buf;
        t.gamma = gamma.buf;
        t.simd = path != PATH_PORTABLE;
        place_rows(t.position, path_lanes(path));
        Py_BEGIN_ALLOW_THREADS run_parts(quantize_part, &t, parts);
        Py_END_ALLOW_THREADS
    }
    free(t.work);
    if (clip.obj) PyBuffer_Release(&clip);
    PyBuffer_Release(&x);
    PyBuffer_Release(&tiles);
    PyBuffer_Release(&gamma);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

/* positions(path) -> bytes: where each of a tile's TILE_M rows sits in its columns. */
static PyObject *py_positions(PyObject *self, PyObject *args) {
    (void)self;
    const char *path_name;
    if (!PyArg_ParseTuple(args, "s", &path_name)) return NULL;
    const int path = parse_path(path_name);
    if (path < 0) return NULL;
    uint8_t position[TILE_M];
    place_rows(position, path_lanes(path));
    return PyBytes_FromStringAndSize((const char *)position, TILE_M);
}

/* im2col(x, out, geometry, threads) */
static PyObject *py_im2col(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer x, out;
    PyObject *geometry;
    im2col_t t;
    int threads;
    if (!PyArg_ParseTuple(args, "y*w*Oi", &x, &out, &geometry, &threads)) return NULL;
    const conv_t *g = &t.g;
    int ok = threads_ok(threads) && parse_conv(geometry, &t.g) &&
             check_len(&x, g->b * g->c * g->h * g->w, 4, "x") &&
             check_len(&out, g->b * g->oh * g->ow * g->kh * g->kw * g->c, 4, "out");
    if (ok) {
        t.x = x.buf;
        t.out = out.buf;
        Py_BEGIN_ALLOW_THREADS run_parts(im2col_part, &t, threads);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&x);
    PyBuffer_Release(&out);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

/* gemm(tiles, ga, dense_or_None, ptr, entries, gw, bias_or_None, out, m, kp, n, blocks, pixels,
 *      path, threads) -- tiles as quantize lays them out for the path; dense: int32 [n][kp/2];
 *      sparse: ptr int32 [n*blocks+1] into entries (uint32 [count][2]: columns, weights), runs
 *      in the order of run_of(). */
static PyObject *py_gemm(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer a, ga, ptr, ent, gw, out, dense = {0}, bias = {0};
    PyObject *dense_obj, *bias_obj;
    long long m, kp, n, blocks, pixels;
    const char *path_name;
    int threads;
    if (!PyArg_ParseTuple(args, "y*y*Oy*y*y*Ow*LLLLLsi", &a, &ga, &dense_obj, &ptr, &ent, &gw,
                          &bias_obj, &out, &m, &kp, &n, &blocks, &pixels, &path_name, &threads))
        return NULL;
    gemm_t *g = calloc(1, sizeof(gemm_t));
    int ok = g != NULL;
    if (!ok) PyErr_NoMemory();
    int have_dense = 0, have_bias = 0;
    if (ok && dense_obj != Py_None) ok = have_dense = PyObject_GetBuffer(dense_obj, &dense, PyBUF_SIMPLE) == 0;
    if (ok && bias_obj != Py_None) ok = have_bias = PyObject_GetBuffer(bias_obj, &bias, PyBUF_SIMPLE) == 0;
    int path = ok ? parse_path(path_name) : -1;
    ok = ok && path >= 0 && threads_ok(threads);
    if (ok && (kp % 2 || kp > 65536 || m < 1 || n < 1 || pixels < 1 || m % pixels ||
               blocks != (kp + KBLOCK - 1) / KBLOCK)) {
        PyErr_SetString(PyExc_ValueError,
                        "gemm: kp must be even and at most 65536, m a multiple of pixels, "
                        "blocks ceil(kp / KBLOCK)");
        ok = 0;
    }
    const int64_t j = kp / 2;
    const int64_t tiles = (m + TILE_M - 1) / TILE_M;
    ok = ok && check_len(&a, tiles * kp * TILE_M, 2, "tiles") && check_len(&ga, m, 4, "ga") &&
         check_len(&gw, n, 4, "gw") && check_len(&out, m * n, 4, "out") &&
         (!have_bias || check_len(&bias, n, 4, "bias")) &&
         (have_dense ? check_len(&dense, n * j, 4, "dense")
                     : check_len(&ptr, n * blocks + 1, 4, "ptr"));
    if (ok) { /* run_of reads them while the entries are checked */
        g->n = n;
        g->nb = blocks;
    }
    if (ok && !have_dense) { /* every entry's columns must lie in its own block */
        const int32_t *p = ptr.buf;
        const uint32_t *e = ent.buf;
        ok = p[0] == 0 && check_len(&ent, p[n * blocks], 8, "entries");
        for (int64_t i = 0; ok && i < n * blocks; i++) ok = p[i] <= p[i + 1];
        for (int64_t c = 0; ok && c < n; c++)
            for (int64_t b = 0; ok && b < blocks; b++) {
                const int64_t q = run_of(g, c, b), lo = b * KBLOCK;
                const int64_t hi = lo + KBLOCK < kp ? lo + KBLOCK : kp;
                for (int32_t i = p[q]; ok && i < p[q + 1]; i++) {
                    const int64_t k1 = e[2 * i] & 0xffff, k2 = e[2 * i] >> 16;
                    ok = k1 >= lo && k1 < hi && k2 >= lo && k2 < hi;
                }
            }
        if (!ok && !PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "gemm: sparse weight indices out of range");
    }
    if (ok) {
        g->acc = malloc(sizeof(int32_t) * TILE_N * TILE_M * (size_t)threads);
        if (!g->acc) {
            PyErr_NoMemory();
            ok = 0;
        }
    }
    if (ok) {
        g->at = a.buf;
        g->ga = ga.buf;
        g->gw = gw.buf;
        g->bias = have_bias ? bias.buf : NULL;
        g->dense = have_dense ? dense.buf : NULL;
        g->ptr = ptr.buf;
        g->ent = ent.buf;
        g->out = out.buf;
        g->m = m;
        g->kp = kp;
        g->j = j;
        g->pixels = pixels;
        g->path = path;
        const int parts = threads < n ? threads : (int)n;
        balance(g, parts);
        Py_BEGIN_ALLOW_THREADS run_parts(gemm_part, g, parts);
        Py_END_ALLOW_THREADS
    }
    if (g) free(g->acc);
    free(g);
    if (have_dense) PyBuffer_Release(&dense);
    if (have_bias) PyBuffer_Release(&bias);
    PyBuffer_Release(&a);
    PyBuffer_Release(&ga);
    PyBuffer_Release(&ptr);
    PyBuffer_Release(&ent);
    PyBuffer_Release(&gw);
    PyBuffer_Release(&out);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

#ifdef SP_X86
/* The machine's multiply-accumulate peak for the benchmark, on registers only (written in
 * assembly so no compiler can hoist or spill anything):
 *   kind 0, int16: vpmaddwd + vpaddd, the kernel's instruction pair, 16 MACs;
 *   kind 1, int8: vpmaddubsw + vpmaddwd (by ones) + vpaddd, 32 exact u8 x s8 MACs accumulated in
 *   int32, what one AVX-512 VNNI / AVX-VNNI vpdpbusd does and the int8 rate a GEMM can sustain. */
#define PEAK_CHAINS 6 /* accumulators ymm2..7, products ymm8..13 */
static const int PEAK_MACS[2] = {PEAK_CHAINS * 16, PEAK_CHAINS * 32};

#define INT16_STEP(t, s) "vpmaddwd %%ymm0, %%ymm1, %%ymm" #t "\n\tvpaddd %%ymm" #t ", %%ymm" #s ", %%ymm" #s "\n\t"
#define INT8_STEP(t, s) "vpmaddubsw %%ymm0, %%ymm1, %%ymm" #t "\n\tvpmaddwd %%ymm15, %%ymm" #t ", %%ymm" #t "\n\tvpaddd %%ymm" #t ", %%ymm" #s ", %%ymm" #s "\n\t"
#define PEAK_CLOBBERS "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", \
    "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm15"

typedef struct {
    int64_t iterations;
    int kind;
} peak_t;

static void peak_part(void *ctx, int part, int parts) {
    (void)part;
    (void)parts;
    const peak_t *t = ctx;
    __asm__ volatile("vpcmpeqd %%ymm0, %%ymm0, %%ymm0\n\tvpabsb %%ymm0, %%ymm1\n\t"
                     "vpabsw %%ymm0, %%ymm15" ::: PEAK_CLOBBERS);
    for (int64_t n = 0; n < t->iterations; n++) {
        if (t->kind == 0)
            __asm__ volatile(INT16_STEP(8, 2) INT16_STEP(9, 3) INT16_STEP(10, 4)
                             INT16_STEP(11, 5) INT16_STEP(12, 6) INT16_STEP(13, 7)::: PEAK_CLOBBERS);
        else
            __asm__ volatile(INT8_STEP(8, 2) INT8_STEP(9, 3) INT8_STEP(10, 4)
                             INT8_STEP(11, 5) INT8_STEP(12, 6) INT8_STEP(13, 7)::: PEAK_CLOBBERS);
    }
    __asm__ volatile("vzeroupper" ::: PEAK_CLOBBERS);
}
#endif

/* peak(kind, iterations, threads) -> multiply-accumulates done (kind 0: int16, 1: int8) */
static PyObject *py_peak(PyObject *self, PyObject *args) {
    (void)self;
    int kind, threads;
    long long iterations;
    if (!PyArg_ParseTuple(args, "iLi", &kind, &iterations, &threads)) return NULL;
    if (!threads_ok(threads)) return NULL;
#ifdef SP_X86
    if (path_supported(PATH_AVX2) && (kind == 0 || kind == 1)) {
        peak_t t = {iterations, kind};
        Py_BEGIN_ALLOW_THREADS run_parts(peak_part, &t, threads);
        Py_END_ALLOW_THREADS
        return PyLong_FromLongLong(iterations * PEAK_MACS[kind] * threads);
    }
#endif
    PyErr_SetString(PyExc_ValueError, "peak needs AVX2 and kind 0 (int16) or 1 (int8)");
    return NULL;
}

static PyMethodDef METHODS[] = {
    {"peak", py_peak, METH_VARARGS, "Register-only multiply-accumulate peak probe (AVX2)."},
    {"paths", py_paths, METH_NOARGS, "Kernel paths this CPU runs, best first."},
    {"quantize", py_quantize, METH_VARARGS, "VS-Quant conv rows to folded int16 row tiles."},
    {"positions", py_positions, METH_VARARGS, "Where a tile's rows sit in its columns, per path."},
    {"im2col", py_im2col, METH_VARARGS, "NCHW float32 to conv rows, K order (kh, kw, c)."},
    {"gemm", py_gemm, METH_VARARGS, "Folded int16 activations x packed weights -> float32."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {PyModuleDef_HEAD_INIT, "_kernel", NULL, -1, METHODS};

PyMODINIT_FUNC PyInit__kernel(void) {
    PyObject *module = PyModule_Create(&MODULE);
    if (module && (PyModule_AddIntConstant(module, "KBLOCK", KBLOCK) < 0 ||
                   PyModule_AddIntConstant(module, "SPARSE_GROUP", SPARSE_GROUP) < 0 ||
                   PyModule_AddIntConstant(module, "TILE_M", TILE_M) < 0))
        Py_CLEAR(module);
    return module;
}
