/* The sparse-int4 CPU kernel: VS-Quant activation quantization and the integer GEMM against
 * dense or pruned 4-bit weights, bit for bit the arithmetic of vsquant.reference_matmul.
 *
 * Folding: a 4-bit value times its 4-bit vector scale (q · sq) is a small integer (|.| <= 225), so
 * the per-vector sum  sum_v sq_a sq_w sum_{k in v} q_a q_w  equals the plain integer dot product
 * of the folded int16 values. The GEMM is then int16 x int16 -> int32, two K steps per
 * instruction (vpmaddwd on AVX2, vpdpwssd on AVX-512 VNNI), exact in any order.
 *
 * Layouts: activations are transposed into K pairs, a2[j][m] = (a[m][2j], a[m][2j+1]) as one
 * int32, so a vector load holds 8 (or 16) rows of one pair. Weights are dense pairs w[n][j], or per
 * output channel lists of the pairs that hold a kept weight (index j, the pair as int32); the
 * sparse loop broadcasts each kept pair against the activation rows, so its cost follows the kept
 * pairs, not K.
 *
 * Epilogue: out = (float)acc * (ga[m] * gw[n]) [+ bias[n]] in float32, each operation rounded,
 * built with -ffp-contract=off so no compiler fuses a multiply and an add.
 *
 * Paths: "portable" (plain C), "avx2" and "avx512vnni", compiled with target attributes and
 * chosen at run time by what the CPU reports; every path produces the same bits.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SP_X86 1
#include <immintrin.h>
#endif

#define MAX_THREADS 64
#define M_ALIGN 16  /* rows are padded to this in the pair layout */
#define TILE_N 64   /* output channels per tile */
#define TILE_M 64   /* rows per tile */
#define KBLOCK 64   /* K pairs per sparse block: TILE_M x KBLOCK pairs = 16 KiB, fits L1 */
#define SPARSE_GROUP 16 /* channels sharing a K block: their accumulators (4 KiB) fit beside it */

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

/* ---------------------------------------------------------------- quantization */

typedef struct {
    const float *x;     /* [m][k] */
    const float *clip;  /* [m][nv] clipping scalars, or NULL for max |x| */
    int16_t *out;       /* [m][kp] folded q * sq, zero beyond k */
    float *gamma;       /* [m] */
    int64_t m, k, kp;
    int vector, level, lowest, sq_max;
} quant_t;

#ifdef SP_X86
#define VECTORIZED __attribute__((target_clones("avx2", "default")))
#else
#define VECTORIZED
#endif

static inline float clamp_rint(float v, float lo, float hi) {
    v = rintf(v); /* half to even, as np.rint */
    if (!(v >= lo)) v = lo; /* also maps NaN to lo */
    if (v > hi) v = hi;
    return v;
}

/* One row, in the float32 order vsquant.quantize_activations documents; cloned for AVX2, whose
 * vdivps / vroundps give the same IEEE results as the scalar instructions. */
VECTORIZED static void quantize_row(const quant_t *t, int64_t r, float *s) {
    const float *x = t->x + r * t->k;
    int16_t *out = t->out + r * t->kp;
    const int64_t nv = (t->k + t->vector - 1) / t->vector;
    const float level = (float)t->level;
    float s_max = 0.0f;
    for (int64_t v = 0; v < nv; v++) {
        float c;
        if (t->clip) {
            c = t->clip[r * nv + v];
        } else {
            c = 0.0f;
            const int64_t end = (v + 1) * t->vector < t->k ? (v + 1) * t->vector : t->k;
            for (int64_t i = v * t->vector; i < end; i++) {
                const float a = fabsf(x[i]);
                if (a > c) c = a;
            }
        }
        s[v] = c / level;
        if (s[v] > s_max) s_max = s[v];
    }
    const float gamma = s_max / (float)t->sq_max;
    t->gamma[r] = gamma;
    memset(out, 0, (size_t)t->kp * sizeof(int16_t));
    if (gamma == 0.0f) return;
    for (int64_t v = 0; v < nv; v++) {
        const float sq = clamp_rint(s[v] / gamma, 1.0f, (float)t->sq_max);
        const float step = gamma * sq;
        const int64_t end = (v + 1) * t->vector < t->k ? (v + 1) * t->vector : t->k;
        for (int64_t i = v * t->vector; i < end; i++) {
            const float q = clamp_rint(x[i] / step, (float)t->lowest, level);
            out[i] = (int16_t)((int)q * (int)sq);
        }
    }
}

static void quantize_part(void *ctx, int part, int parts) {
    const quant_t *t = ctx;
    int64_t lo, hi;
    split(t->m, part, parts, &lo, &hi);
    float *s = malloc(sizeof(float) * (size_t)((t->k + t->vector - 1) / t->vector));
    if (!s) return; /* the caller pre-checks memory; see py_quantize */
    for (int64_t r = lo; r < hi; r++) quantize_row(t, r, s);
    free(s);
}

/* ---------------------------------------------------------------- im2col (NCHW -> rows) */

typedef struct {
    const float *x; /* [b][c][h][w] */
    float *out;     /* [b*oh*ow][kh*kw*c], K order (kh, kw, c) */
    int64_t b, c, h, w, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow;
} im2col_t;

static void im2col_part(void *ctx, int part, int parts) {
    const im2col_t *t = ctx;
    const int64_t k = t->kh * t->kw * t->c, hw = t->h * t->w;
    int64_t lo, hi;
    split(t->b * t->oh, part, parts, &lo, &hi);
    for (int64_t bo = lo; bo < hi; bo++) {
        const int64_t b = bo / t->oh, oy = bo % t->oh;
        const float *img = t->x + b * t->c * hw;
        for (int64_t ox = 0; ox < t->ow; ox++) {
            float *row = t->out + (bo * t->ow + ox) * k;
            for (int64_t ky = 0; ky < t->kh; ky++) {
                const int64_t iy = oy * t->sh - t->pt + ky * t->dh;
                for (int64_t kx = 0; kx < t->kw; kx++) {
                    const int64_t ix = ox * t->sw - t->pl + kx * t->dw;
                    float *dst = row + (ky * t->kw + kx) * t->c;
                    if (iy < 0 || iy >= t->h || ix < 0 || ix >= t->w) {
                        memset(dst, 0, (size_t)t->c * sizeof(float));
                        continue;
                    }
                    const float *src = img + iy * t->w + ix;
                    for (int64_t ch = 0; ch < t->c; ch++) dst[ch] = src[ch * hw];
                }
            }
        }
    }
}

/* ---------------------------------------------------------------- GEMM */

typedef struct {
    const int16_t *a;  /* [m][kp] folded activations */
    int32_t *a2;       /* [j][mp] pair layout, built by pairs_part */
    int32_t *acc;      /* one TILE_N x TILE_M accumulator tile per thread */
    const float *ga, *gw, *bias;
    const int32_t *dense;                 /* [n][j] or NULL */
    const int32_t *ptr, *idx, *val;       /* sparse: per channel [ptr[n], ptr[n+1]) */
    float *out;
    int64_t m, mp, kp, j, n, pixels;
    int64_t n_lo[MAX_THREADS], n_hi[MAX_THREADS]; /* each thread's channels */
    int64_t m_lo[MAX_THREADS], m_hi[MAX_THREADS]; /* and rows (multiples of TILE_M) */
    int path;
} gemm_t;

/* Activation pairs are stored tile by tile: the TILE_M rows of a row block are contiguous for each
 * pair index, so a K block of a row block is one contiguous 16 KiB run (no cache-set conflicts,
 * whatever M is). */
static inline const int32_t *pairs_at(const gemm_t *g, int64_t j, int64_t m) {
    return g->a2 + (m / TILE_M) * g->j * TILE_M + j * TILE_M + m % TILE_M;
}

static void pairs_part(void *ctx, int part, int parts) {
    const gemm_t *g = ctx;
    const int64_t tiles = (g->mp + TILE_M - 1) / TILE_M;
    int64_t lo, hi;
    split(tiles, part, parts, &lo, &hi);
    const int32_t *a = (const int32_t *)g->a; /* row m holds kp / 2 = j pairs */
    for (int64_t t = lo; t < hi; t++) {
        int32_t *tile = g->a2 + t * g->j * TILE_M;
        for (int r = 0; r < TILE_M; r++) {
            const int64_t m = t * TILE_M + r;
            if (m >= g->m) {
                for (int64_t j = 0; j < g->j; j++) tile[j * TILE_M + r] = 0;
                continue;
            }
            const int32_t *src = a + m * g->j;
            for (int64_t j = 0; j < g->j; j++) tile[j * TILE_M + r] = src[j];
        }
    }
}

/* acc [TILE_N][TILE_M] int32 for channels n0.., rows m0.. -> out, through the float epilogue,
 * converted in place a channel at a time (loops the compiler vectorizes), then copied out:
 * row-major output ([M, N]) a row of channels at a time, NCHW output ([B, N, P]) a channel's run
 * of pixels at a time, so stores stay contiguous either way. */
static void store_tile(const gemm_t *g, int32_t *acc, int64_t n0, int cn, int64_t m0) {
    const int64_t n = g->n, p = g->pixels;
    const int cm = (int)(g->m - m0 < TILE_M ? g->m - m0 : TILE_M);
    const float *ga = g->ga + m0;
    float *f = (float *)acc;
    for (int c = 0; c < cn; c++) {
        const float gw = g->gw[n0 + c];
        const int32_t *in = acc + c * TILE_M;
        float *o = f + c * TILE_M;
        for (int r = 0; r < cm; r++) o[r] = (float)in[r] * (ga[r] * gw);
        if (g->bias) {
            const float b = g->bias[n0 + c];
            for (int r = 0; r < cm; r++) o[r] = o[r] + b;
        }
    }
    if (p == 1) {
        for (int r = 0; r < cm; r++) {
            float *dst = g->out + (m0 + r) * n + n0;
            for (int c = 0; c < cn; c++) dst[c] = f[c * TILE_M + r];
        }
        return;
    }
    for (int r = 0; r < cm;) { /* runs of rows within one image */
        const int64_t m = m0 + r, image = m / p, pixel = m % p;
        const int run = (int)(p - pixel < cm - r ? p - pixel : cm - r);
        float *dst = g->out + image * n * p + n0 * p + pixel;
        for (int c = 0; c < cn; c++) memcpy(dst + c * p, f + c * TILE_M + r, sizeof(float) * (size_t)run);
        r += run;
    }
}

/* Portable path: the same loops in plain C. */
static void dense_portable(const gemm_t *g, int64_t n0, int cn, int64_t m0, int32_t *acc) {
    for (int c = 0; c < cn; c++) {
        const int32_t *w = g->dense + (n0 + c) * g->j;
        int32_t *dst = acc + c * TILE_M;
        for (int r = 0; r < TILE_M; r++) dst[r] = 0;
        for (int64_t j = 0; j < g->j; j++) {
            const int16_t w0 = (int16_t)(w[j] & 0xffff), w1 = (int16_t)((uint32_t)w[j] >> 16);
            const int32_t *row = pairs_at(g, j, m0);
            for (int r = 0; r < TILE_M && m0 + r < g->mp; r++) {
                const int16_t a0 = (int16_t)(row[r] & 0xffff);
                const int16_t a1 = (int16_t)((uint32_t)row[r] >> 16);
                dst[r] += (int32_t)a0 * w0 + (int32_t)a1 * w1;
            }
        }
    }
}

static void sparse_portable(const gemm_t *g, int64_t n0, int cn, int64_t m0, int32_t *acc) {
    for (int c = 0; c < cn; c++) {
        int32_t *dst = acc + c * TILE_M;
        for (int r = 0; r < TILE_M; r++) dst[r] = 0;
        for (int32_t p = g->ptr[n0 + c]; p < g->ptr[n0 + c + 1]; p++) {
            const int16_t w0 = (int16_t)(g->val[p] & 0xffff);
            const int16_t w1 = (int16_t)((uint32_t)g->val[p] >> 16);
            const int32_t *row = pairs_at(g, g->idx[p], m0);
            for (int r = 0; r < TILE_M && m0 + r < g->mp; r++) {
                const int16_t a0 = (int16_t)(row[r] & 0xffff);
                const int16_t a1 = (int16_t)((uint32_t)row[r] >> 16);
                dst[r] += (int32_t)a0 * w0 + (int32_t)a1 * w1;
            }
        }
    }
}

#ifdef SP_X86
/* AVX2: 8 rows per register. Dense: 4 channels x 3 registers (24 rows) share each activation
 * load; sparse: one channel x 8 registers (64 rows) share each broadcast weight pair. */
#define AVX2 __attribute__((target("avx2"), always_inline)) static inline
#define AVX2_FN __attribute__((target("avx2"))) static

AVX2 void dense_avx2_block(const gemm_t *g, int64_t n0, int64_t m0, int R, int32_t *acc) {
    __m256i s[4][3];
    for (int c = 0; c < 4; c++)
        for (int r = 0; r < 3; r++) s[c][r] = _mm256_setzero_si256();
    const int32_t *w = g->dense + n0 * g->j;
    for (int64_t j = 0; j < g->j; j++) {
        const int32_t *row = pairs_at(g, j, m0);
        __m256i a[3];
        for (int r = 0; r < R; r++) a[r] = _mm256_loadu_si256((const __m256i *)(row + 8 * r));
        for (int c = 0; c < 4; c++) {
            const __m256i b = _mm256_set1_epi32(w[c * g->j + j]);
            for (int r = 0; r < R; r++)
                s[c][r] = _mm256_add_epi32(s[c][r], _mm256_madd_epi16(a[r], b));
        }
    }
    for (int c = 0; c < 4; c++)
        for (int r = 0; r < R; r++)
            _mm256_storeu_si256((__m256i *)(acc + c * TILE_M + 8 * r), s[c][r]);
}

AVX2 void dense_avx2_column(const gemm_t *g, int64_t n, int64_t m0, int32_t *acc) {
    const int32_t *w = g->dense + n * g->j;
    __m256i s = _mm256_setzero_si256();
    for (int64_t j = 0; j < g->j; j++) {
        const __m256i a = _mm256_loadu_si256((const __m256i *)(pairs_at(g, j, m0)));
        s = _mm256_add_epi32(s, _mm256_madd_epi16(a, _mm256_set1_epi32(w[j])));
    }
    _mm256_storeu_si256((__m256i *)acc, s);
}

AVX2_FN void dense_avx2(const gemm_t *g, int64_t n0, int cn, int64_t m0, int32_t *acc) {
    int64_t m = m0;
    const int64_t m_end = m0 + TILE_M < g->mp ? m0 + TILE_M : g->mp;
    for (; m + 24 <= m_end; m += 24) {
        int c = 0;
        for (; c + 4 <= cn; c += 4) dense_avx2_block(g, n0 + c, m, 3, acc + c * TILE_M + (m - m0));
        for (; c < cn; c++)
            for (int r = 0; r < 3; r++)
                dense_avx2_column(g, n0 + c, m + 8 * r, acc + c * TILE_M + (m - m0) + 8 * r);
    }
    for (; m < m_end; m += 8) {
        int c = 0;
        for (; c + 4 <= cn; c += 4) dense_avx2_block(g, n0 + c, m, 1, acc + c * TILE_M + (m - m0));
        for (; c < cn; c++) dense_avx2_column(g, n0 + c, m, acc + c * TILE_M + (m - m0));
    }
}

/* Sparse: K blocks of KBLOCK pairs keep a TILE_M x KBLOCK block of activation pairs (16 KiB) in
 * L1 while every channel of the tile takes its kept pairs from it; cur[c] walks channel c's list
 * (sorted by pair index) from block to block. */
AVX2 void sparse_avx2_block(const gemm_t *g, int32_t *cur, int64_t n, int64_t j_end, int64_t m0,
                            int R, int32_t *acc) {
    __m256i s[8];
    for (int r = 0; r < R; r++) s[r] = _mm256_loadu_si256((const __m256i *)(acc + 8 * r));
    const int32_t *a2 = pairs_at(g, 0, m0);
    const int32_t end = g->ptr[n + 1];
    int32_t p = *cur;
    for (; p < end && g->idx[p] < j_end; p++) {
        const __m256i b = _mm256_set1_epi32(g->val[p]);
        const int32_t *row = a2 + (int64_t)g->idx[p] * TILE_M;
        for (int r = 0; r < R; r++)
            s[r] = _mm256_add_epi32(
                s[r], _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(row + 8 * r)), b));
    }
    *cur = p;
    for (int r = 0; r < R; r++) _mm256_storeu_si256((__m256i *)(acc + 8 * r), s[r]);
}

AVX2_FN void sparse_avx2(const gemm_t *g, int64_t n0, int cn, int64_t m0, int32_t *acc) {
    const int64_t rows = (m0 + TILE_M < g->mp ? m0 + TILE_M : g->mp) - m0;
    int32_t cur[TILE_N];
    for (int c = 0; c < cn; c++) cur[c] = g->ptr[n0 + c];
    memset(acc, 0, sizeof(int32_t) * TILE_N * TILE_M);
    for (int c0 = 0; c0 < cn; c0 += SPARSE_GROUP)
        for (int64_t j0 = 0; j0 < g->j; j0 += KBLOCK)
            for (int c = c0; c < cn && c < c0 + SPARSE_GROUP; c++) {
                if (rows == TILE_M) {
                    sparse_avx2_block(g, &cur[c], n0 + c, j0 + KBLOCK, m0, 8, acc + c * TILE_M);
                    continue;
                }
                const int32_t start = cur[c];
                for (int64_t r = 0; r < rows; r += 8) {
                    cur[c] = start;
                    sparse_avx2_block(g, &cur[c], n0 + c, j0 + KBLOCK, m0 + r, 1,
                                       acc + c * TILE_M + r);
                }
            }
}

/* AVX-512 VNNI: 16 rows per register, vpdpwssd fuses the multiply-add and the accumulate. */
#define VNNI __attribute__((target("avx512f,avx512bw,avx512vnni"), always_inline)) static inline
#define VNNI_FN __attribute__((target("avx512f,avx512bw,avx512vnni"))) static

VNNI void dense_vnni_block(const gemm_t *g, int64_t n0, int64_t m0, int R, int32_t *acc) {
    __m512i s[4][2];
    for (int c = 0; c < 4; c++)
        for (int r = 0; r < 2; r++) s[c][r] = _mm512_setzero_si512();
    const int32_t *w = g->dense + n0 * g->j;
    for (int64_t j = 0; j < g->j; j++) {
        const int32_t *row = pairs_at(g, j, m0);
        __m512i a[2];
        for (int r = 0; r < R; r++) a[r] = _mm512_loadu_si512((const void *)(row + 16 * r));
        for (int c = 0; c < 4; c++) {
            const __m512i b = _mm512_set1_epi32(w[c * g->j + j]);
            for (int r = 0; r < R; r++) s[c][r] = _mm512_dpwssd_epi32(s[c][r], a[r], b);
        }
    }
    for (int c = 0; c < 4; c++)
        for (int r = 0; r < R; r++) _mm512_storeu_si512((void *)(acc + c * TILE_M + 16 * r), s[c][r]);
}

VNNI void dense_vnni_column(const gemm_t *g, int64_t n, int64_t m0, int32_t *acc) {
    const int32_t *w = g->dense + n * g->j;
    __m512i s = _mm512_setzero_si512();
    for (int64_t j = 0; j < g->j; j++) {
        const __m512i a = _mm512_loadu_si512((const void *)(pairs_at(g, j, m0)));
        s = _mm512_dpwssd_epi32(s, a, _mm512_set1_epi32(w[j]));
    }
    _mm512_storeu_si512((void *)acc, s);
}

VNNI_FN void dense_vnni(const gemm_t *g, int64_t n0, int cn, int64_t m0, int32_t *acc) {
    int64_t m = m0;
    const int64_t m_end = m0 + TILE_M < g->mp ? m0 + TILE_M : g->mp;
    for (; m + 32 <= m_end; m += 32) {
        int c = 0;
        for (; c + 4 <= cn; c += 4) dense_vnni_block(g, n0 + c, m, 2, acc + c * TILE_M + (m - m0));
        for (; c < cn; c++)
            for (int r = 0; r < 2; r++)
                dense_vnni_column(g, n0 + c, m + 16 * r, acc + c * TILE_M + (m - m0) + 16 * r);
    }
    for (; m < m_end; m += 16) {
        int c = 0;
        for (; c + 4 <= cn; c += 4) dense_vnni_block(g, n0 + c, m, 1, acc + c * TILE_M + (m - m0));
        for (; c < cn; c++) dense_vnni_column(g, n0 + c, m, acc + c * TILE_M + (m - m0));
    }
}

VNNI void sparse_vnni_block(const gemm_t *g, int32_t *cur, int64_t n, int64_t j_end, int64_t m0,
                            int R, int32_t *acc) {
    __m512i s[4];
    for (int r = 0; r < R; r++) s[r] = _mm512_loadu_si512((const void *)(acc + 16 * r));
    const int32_t *a2 = pairs_at(g, 0, m0);
    const int32_t end = g->ptr[n + 1];
    int32_t p = *cur;
    for (; p < end && g->idx[p] < j_end; p++) {
        const __m512i b = _mm512_set1_epi32(g->val[p]);
        const int32_t *row = a2 + (int64_t)g->idx[p] * TILE_M;
        for (int r = 0; r < R; r++)
            s[r] = _mm512_dpwssd_epi32(s[r], _mm512_loadu_si512((const void *)(row + 16 * r)), b);
    }
    *cur = p;
    for (int r = 0; r < R; r++) _mm512_storeu_si512((void *)(acc + 16 * r), s[r]);
}

VNNI_FN void sparse_vnni(const gemm_t *g, int64_t n0, int cn, int64_t m0, int32_t *acc) {
    const int64_t rows = (m0 + TILE_M < g->mp ? m0 + TILE_M : g->mp) - m0;
    int32_t cur[TILE_N];
    for (int c = 0; c < cn; c++) cur[c] = g->ptr[n0 + c];
    memset(acc, 0, sizeof(int32_t) * TILE_N * TILE_M);
    for (int c0 = 0; c0 < cn; c0 += SPARSE_GROUP)
        for (int64_t j0 = 0; j0 < g->j; j0 += KBLOCK)
            for (int c = c0; c < cn && c < c0 + SPARSE_GROUP; c++) {
                if (rows == TILE_M) {
                    sparse_vnni_block(g, &cur[c], n0 + c, j0 + KBLOCK, m0, 4, acc + c * TILE_M);
                    continue;
                }
                const int32_t start = cur[c];
                for (int64_t r = 0; r < rows; r += 16) {
                    cur[c] = start;
                    sparse_vnni_block(g, &cur[c], n0 + c, j0 + KBLOCK, m0 + r, 1,
                                       acc + c * TILE_M + r);
                }
            }
}
#endif

typedef void (*tile_fn)(const gemm_t *, int64_t, int, int64_t, int32_t *);

static tile_fn tile_kernel(int path, int sparse) {
#ifdef SP_X86
    if (path == PATH_AVX2) return sparse ? sparse_avx2 : dense_avx2;
    if (path == PATH_AVX512VNNI) return sparse ? sparse_vnni : dense_vnni;
#endif
    return sparse ? sparse_portable : dense_portable;
}

/* Each thread owns a range of rows or of output channels (see balance). Row blocks are the outer
 * loop: a block of activation pairs (TILE_M rows x K) stays in cache while the weights stream
 * past it, which moves far fewer bytes than streaming all activations past each channel block. */
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

/* Threads split the row blocks when there are enough to share evenly, else the channels, in
 * ranges of equal work (kept pairs when sparse). */
static void balance(gemm_t *g, int parts) {
    const int64_t tiles = (g->mp + TILE_M - 1) / TILE_M;
    const int64_t total = g->dense ? g->n : g->ptr[g->n];
    const int by_rows = tiles % parts == 0 || tiles >= 4 * parts;
    int64_t n = 0;
    for (int i = 0; i < parts; i++) {
        if (by_rows) {
            g->m_lo[i] = tiles * i / parts * TILE_M;
            g->m_hi[i] = i + 1 == parts ? g->mp : tiles * (i + 1) / parts * TILE_M;
            g->n_lo[i] = 0;
            g->n_hi[i] = g->n;
            continue;
        }
        g->m_lo[i] = 0;
        g->m_hi[i] = g->mp;
        g->n_lo[i] = n;
        const int64_t target = total * (i + 1) / parts;
        while (n < g->n && (g->dense ? n : g->ptr[n]) < target) n += 8;
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

/* quantize(x, clip_or_None, out, gamma, m, k, kp, vector, level, lowest, sq_max, threads) */
static PyObject *py_quantize(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer x, out, gamma;
    PyObject *clip_obj;
    quant_t t;
    int threads;
    long long m, k, kp;
    if (!PyArg_ParseTuple(args, "y*Ow*w*LLLiiiii", &x, &clip_obj, &out, &gamma, &m, &k, &kp,
                          &t.vector, &t.level, &t.lowest, &t.sq_max, &threads))
        return NULL;
    Py_buffer clip = {0};
    int ok = clip_obj == Py_None || PyObject_GetBuffer(clip_obj, &clip, PyBUF_SIMPLE) == 0;
    const int64_t nv = t.vector > 0 ? (k + t.vector - 1) / t.vector : 0;
    ok = ok && t.vector > 0 && kp >= k && threads_ok(threads) && check_len(&x, m * k, 4, "x") &&
         check_len(&out, m * kp, 2, "out") && check_len(&gamma, m, 4, "gamma") &&
         (clip_obj == Py_None || check_len(&clip, m * nv, 4, "clip"));
    if (ok) {
        t.x = x.buf;
        t.clip = clip_obj == Py_None ? NULL : clip.buf;
        t.out = out.buf;
        t.gamma = gamma.buf;
        t.m = m;
        t.k = k;
        t.kp = kp;
        Py_BEGIN_ALLOW_THREADS run_parts(quantize_part, &t, threads);
        Py_END_ALLOW_THREADS
    } else if (!PyErr_Occurred()) {
        PyErr_SetString(PyExc_ValueError, "quantize: inconsistent sizes");
    }
    if (clip_obj != Py_None && clip.obj) PyBuffer_Release(&clip);
    PyBuffer_Release(&x);
    PyBuffer_Release(&out);
    PyBuffer_Release(&gamma);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

/* im2col(x, out, (b, c, h, w, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow), threads) */
static PyObject *py_im2col(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer x, out;
    im2col_t t;
    int threads;
    long long v[14];
    if (!PyArg_ParseTuple(args, "y*w*(LLLLLLLLLLLLLL)i", &x, &out, &v[0], &v[1], &v[2], &v[3],
                          &v[4], &v[5], &v[6], &v[7], &v[8], &v[9], &v[10], &v[11], &v[12], &v[13],
                          &threads))
        return NULL;
    t.b = v[0], t.c = v[1], t.h = v[2], t.w = v[3], t.kh = v[4], t.kw = v[5], t.sh = v[6];
    t.sw = v[7], t.pt = v[8], t.pl = v[9], t.dh = v[10], t.dw = v[11], t.oh = v[12], t.ow = v[13];
    int ok = threads_ok(threads) && check_len(&x, t.b * t.c * t.h * t.w, 4, "x") &&
             check_len(&out, t.b * t.oh * t.ow * t.kh * t.kw * t.c, 4, "out");
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

/* gemm(a, ga, dense_or_None, ptr, idx, val, gw, bias_or_None, out, m, kp, n, pixels, path,
 *      threads) -- dense: int32 [n][kp/2]; sparse: ptr int32 [n+1], idx/val int32 [ptr[n]]. */
static PyObject *py_gemm(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer a, ga, ptr, idx, val, gw, out, dense = {0}, bias = {0};
    PyObject *dense_obj, *bias_obj;
    long long m, kp, n, pixels;
    const char *path_name;
    int threads;
    if (!PyArg_ParseTuple(args, "y*y*Oy*y*y*y*Ow*LLLLsi", &a, &ga, &dense_obj, &ptr, &idx, &val,
                          &gw, &bias_obj, &out, &m, &kp, &n, &pixels, &path_name, &threads))
        return NULL;
    gemm_t *g = calloc(1, sizeof(gemm_t));
    int ok = g != NULL;
    if (!ok) PyErr_NoMemory();
    int have_dense = 0, have_bias = 0;
    if (ok && dense_obj != Py_None) ok = have_dense = PyObject_GetBuffer(dense_obj, &dense, PyBUF_SIMPLE) == 0;
    if (ok && bias_obj != Py_None) ok = have_bias = PyObject_GetBuffer(bias_obj, &bias, PyBUF_SIMPLE) == 0;
    int path = ok ? parse_path(path_name) : -1;
    ok = ok && path >= 0 && threads_ok(threads);
    if (ok && (kp % 2 || m < 1 || n < 1 || pixels < 1 || m % pixels)) {
        PyErr_SetString(PyExc_ValueError, "gemm: kp must be even, m a multiple of pixels");
        ok = 0;
    }
    const int64_t j = kp / 2;
    ok = ok && check_len(&a, m * kp, 2, "a") && check_len(&ga, m, 4, "ga") &&
         check_len(&gw, n, 4, "gw") && check_len(&out, m * n, 4, "out") &&
         (!have_bias || check_len(&bias, n, 4, "bias")) &&
         (have_dense ? check_len(&dense, n * j, 4, "dense") : check_len(&ptr, n + 1, 4, "ptr"));
    if (ok && !have_dense) {
        const int32_t *p = ptr.buf, *ix = idx.buf;
        ok = p[0] == 0 && check_len(&idx, p[n], 4, "idx") && check_len(&val, p[n], 4, "val");
        for (int64_t i = 0; ok && i < n; i++) ok = p[i] <= p[i + 1];
        for (int64_t i = 0; ok && i < p[n]; i++) ok = ix[i] >= 0 && ix[i] < j;
        if (!ok && !PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "gemm: sparse weight indices out of range");
    }
    if (ok) {
        g->mp = (m + M_ALIGN - 1) / M_ALIGN * M_ALIGN;
        g->a2 = malloc(sizeof(int32_t) * (size_t)(j * ((g->mp + TILE_M - 1) / TILE_M * TILE_M)));
        g->acc = malloc(sizeof(int32_t) * TILE_N * TILE_M * (size_t)threads);
        if (!g->a2 || !g->acc) {
            PyErr_NoMemory();
            ok = 0;
        }
    }
    if (ok) {
        g->a = a.buf;
        g->ga = ga.buf;
        g->gw = gw.buf;
        g->bias = have_bias ? bias.buf : NULL;
        g->dense = have_dense ? dense.buf : NULL;
        g->ptr = ptr.buf;
        g->idx = idx.buf;
        g->val = val.buf;
        g->out = out.buf;
        g->m = m;
        g->kp = kp;
        g->j = j;
        g->n = n;
        g->pixels = pixels;
        g->path = path;
        const int parts = threads < n ? threads : (int)n;
        balance(g, parts);
        Py_BEGIN_ALLOW_THREADS run_parts(pairs_part, g, threads);
        run_parts(gemm_part, g, parts);
        Py_END_ALLOW_THREADS
    }
    if (g) {
        free(g->a2);
        free(g->acc);
    }
    free(g);
    if (have_dense) PyBuffer_Release(&dense);
    if (have_bias) PyBuffer_Release(&bias);
    PyBuffer_Release(&a);
    PyBuffer_Release(&ga);
    PyBuffer_Release(&ptr);
    PyBuffer_Release(&idx);
    PyBuffer_Release(&val);
    PyBuffer_Release(&gw);
    PyBuffer_Release(&out);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

#ifdef SP_X86
/* The machine's multiply-accumulate peak for the benchmark: independent vpmaddwd (int16 pairs,
 * what the kernel uses) or vpmaddubsw (u8 x s8 with 16-bit saturation, the int8 instruction ORT
 * builds on) chains on registers only; the sums land in sink so nothing is optimised away. */
typedef struct {
    int64_t iterations;
    int bytes; /* 2: vpmaddwd, 1: vpmaddubsw */
    int32_t sink[MAX_THREADS];
} peak_t;

AVX2_FN void peak_part(void *ctx, int part, int parts) {
    (void)parts;
    peak_t *t = ctx;
    __m256i s[8], a[8];
    for (int i = 0; i < 8; i++) {
        s[i] = _mm256_set1_epi32(i);
        a[i] = _mm256_set1_epi32(i + part + 1);
    }
    const __m256i b = _mm256_set1_epi32(0x01010101);
    for (int64_t n = 0; n < t->iterations; n++) {
        __asm__ volatile("" : "+x"(a[0]), "+x"(a[1]), "+x"(a[2]), "+x"(a[3]), "+x"(a[4]),
                         "+x"(a[5]), "+x"(a[6]), "+x"(a[7]));
        for (int r = 0; r < 8; r++)
            s[r] = t->bytes == 2 ? _mm256_add_epi32(s[r], _mm256_madd_epi16(a[r], b))
                                 : _mm256_add_epi16(s[r], _mm256_maddubs_epi16(a[r], b));
    }
    int32_t sum = 0;
    for (int r = 0; r < 8; r++) sum += _mm256_extract_epi32(s[r], 0);
    t->sink[part] = sum;
}
#endif

/* peak(instruction_bytes, iterations, threads) -> multiply-accumulates done */
static PyObject *py_peak(PyObject *self, PyObject *args) {
    (void)self;
    int bytes, threads;
    long long iterations;
    if (!PyArg_ParseTuple(args, "iLi", &bytes, &iterations, &threads)) return NULL;
    if (!threads_ok(threads)) return NULL;
#ifdef SP_X86
    if (path_supported(PATH_AVX2) && (bytes == 1 || bytes == 2)) {
        peak_t t = {iterations, bytes, {0}};
        Py_BEGIN_ALLOW_THREADS run_parts(peak_part, &t, threads);
        Py_END_ALLOW_THREADS
        /* 8 registers x 8 lanes x (2 int16 or 4 int8 products) per iteration and thread */
        return PyLong_FromLongLong(iterations * 8 * 32 / bytes * threads);
    }
#endif
    PyErr_SetString(PyExc_ValueError, "peak needs AVX2 and instruction bytes 1 or 2");
    return NULL;
}

static PyMethodDef METHODS[] = {
    {"peak", py_peak, METH_VARARGS, "Register-only multiply-accumulate peak probe (AVX2)."},
    {"paths", py_paths, METH_NOARGS, "Kernel paths this CPU runs, best first."},
    {"quantize", py_quantize, METH_VARARGS, "VS-Quant activation rows to folded int16."},
    {"im2col", py_im2col, METH_VARARGS, "NCHW float32 to conv rows, K order (kh, kw, c)."},
    {"gemm", py_gemm, METH_VARARGS, "Folded int16 activations x packed weights -> float32."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {PyModuleDef_HEAD_INIT, "_kernel", NULL, -1, METHODS};

PyMODINIT_FUNC PyInit__kernel(void) { return PyModule_Create(&MODULE); }
