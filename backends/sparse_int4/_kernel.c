/* The sparse-int4 CPU kernel: VS-Quant activation quantization and the integer GEMM against
 * dense or pruned 4-bit weights, bit for bit the arithmetic of vsquant.reference_matmul and
 * vsquant.reference_conv.
 *
 * Folding: a 4-bit value times its 4-bit vector scale (q * sq) fits a byte: 0..225 for unsigned
 * (post-ReLU) activations, -105..105 for weights and signed activations, which are stored
 * shifted by +128. The per-vector sum  sum_v sq_a sq_w sum_{k in v} q_a q_w  is then the plain
 * u8 x s8 dot product of the folded values, less 128 * (sum of the channel's folded weights) for
 * signed activations: exact in int32 in any order, four K values per 32-bit lane
 * (vpdpbusd on AVX-512 VNNI and AVX-VNNI; zero-extended int16 pairs, vpmaddwd, on AVX2).
 *
 * Layouts: an activation tensor is quantized once into u8 planes of 4 channels ([c4][rows][4]),
 * rows being its pixels (or tokens) in order, with the zero padding of the convolution that reads
 * it laid out around each image. Row vectors of LANES rows are then LANES * 4 consecutive bytes,
 * and a stride-1 convolution's taps are the same planes shifted by whole rows (implicit GEMM: no
 * im2col copy); the GEMM computes every padded position and keeps the ones that are outputs.
 * Strided convolutions copy their windows once into planes of their own (pack_windows). Weights
 * are 4 folded s8 per plane: dense [n][k4], or pruned into kept blocks of 4 (channel by channel,
 * each block's plane index and its 4 weights), and the kernel's work follows the kept blocks.
 *
 * Epilogue: out = (float)(acc - corr) * (ga[r] * gw[n]) [+ bias[n]] [+ residual] [max 0] in
 * float32, each operation rounded, built with -ffp-contract=off so no compiler fuses a multiply
 * and an add. Output is channel-major ([n][m]), the layout the next quantization reads.
 *
 * Paths: "portable" (plain C), "avx2", "avxvnni", "avx512vnni" and "amx" (avx512vnni with its
 * GEMM tiles on AMX's tile multiplier), compiled with target attributes and chosen at run time by
 * what the CPU and the operating system allow; every path produces the same bits.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h> /* sysconf: the L2 size */
#ifdef __linux__
#include <sys/syscall.h> /* arch_prctl: the AMX tile state is granted per process */
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SP_X86 1
#include <cpuid.h>
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
/* Plain loops the compiler vectorizes, built for each SIMD width and picked at load. */
#define CLONED __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CPU_RELAX() ((void)0)
#define CLONED
#endif

#define MAX_THREADS 64
#define TILE_ROWS 128   /* rows of a GEMM tile; activation buffers hold whole tiles */
#define SPIN_ROUNDS 4000 /* pauses a waiting thread spins before it sleeps (some 50 us) */
#define ROUNDER 12582912.0f /* 1.5 * 2^23: (q + R) - R rounds q to an integer, half to even */
#define LANES_MAX 16 /* the widest row vector: parts split rows at multiples of it */

enum { PATH_PORTABLE, PATH_AVX2, PATH_AVXVNNI, PATH_AVX512VNNI, PATH_AMX, PATH_COUNT };
static const char *const PATH_NAMES[PATH_COUNT] = {"portable", "avx2", "avxvnni", "avx512vnni", "amx"};

#if defined(SP_X86) && defined(__linux__)
/* AMX-INT8 in CPUID, and Linux's grant of the tile data state to this process (asked once; the
 * kernel refuses it where the CPU, the hypervisor or the signal stack cannot hold it). */
static int amx_granted(void) {
    static int granted = -1;
    if (granted < 0) {
        unsigned int a, b, c, d;
        const int cpu = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d >> 24 & 1) && (d >> 25 & 1);
        enum { ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 };
        granted = cpu && syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
    }
    return granted;
}
#else
static int amx_granted(void) { return 0; }
#endif

static int path_supported(int path) {
    if (path == PATH_PORTABLE) return 1;
#ifdef SP_X86
    __builtin_cpu_init();
    if (path == PATH_AVX2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
    if (path == PATH_AVXVNNI)
        return path_supported(PATH_AVX2) && __builtin_cpu_supports("avxvnni");
    if (path == PATH_AVX512VNNI)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("popcnt");
    if (path == PATH_AMX) return path_supported(PATH_AVX512VNNI) && amx_granted();
#endif
    return 0;
}

/* ---------------------------------------------------------------- threads */

/* A persistent pool: workers spin briefly after a job, then sleep, so a layer's parts start in
 * microseconds and idle workers leave the cores to others (ONNX Runtime, Python). One job at a
 * time; a caller that finds the pool busy (several Python threads predicting at once) runs its
 * parts on threads of its own. */
typedef void (*part_fn)(void *ctx, int part, int parts);

static struct {
    pthread_mutex_t busy, mu;
    pthread_cond_t wake, done;
    int workers, sleepers, waiting;
    uint64_t generation, started_at[MAX_THREADS]; /* the generation each worker starts after */
    int pending;
    part_fn fn;
    void *ctx;
    int parts;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
          PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, {0}, 0, NULL, NULL, 0};

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_SEQ_CST)

static void *worker_main(void *arg) {
    const int id = (int)(intptr_t)arg;
    uint64_t seen = pool.started_at[id];
    for (;;) {
        uint64_t now = LOAD(pool.generation);
        for (int spin = 0; now == seen && spin < SPIN_ROUNDS; spin++) {
            CPU_RELAX();
            now = LOAD(pool.generation);
        }
        if (now == seen) {
            pthread_mutex_lock(&pool.mu);
            __atomic_add_fetch(&pool.sleepers, 1, __ATOMIC_SEQ_CST);
            while ((now = LOAD(pool.generation)) == seen) pthread_cond_wait(&pool.wake, &pool.mu);
            __atomic_sub_fetch(&pool.sleepers, 1, __ATOMIC_SEQ_CST);
            pthread_mutex_unlock(&pool.mu);
        }
        seen = now;
        if (id < pool.parts) pool.fn(pool.ctx, id, pool.parts);
        if (__atomic_sub_fetch(&pool.pending, 1, __ATOMIC_SEQ_CST) == 0 && LOAD(pool.waiting)) {
            pthread_mutex_lock(&pool.mu);
            pthread_cond_signal(&pool.done);
            pthread_mutex_unlock(&pool.mu);
        }
    }
    return NULL;
}

static void pool_reset_after_fork(void) { /* the child has none of the parent's workers */
    pthread_mutex_init(&pool.busy, NULL);
    pthread_mutex_init(&pool.mu, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pthread_cond_init(&pool.done, NULL);
    pool.workers = pool.sleepers = pool.waiting = pool.pending = 0;
}

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

/* Parts on threads started for this call only; a thread that cannot be started has its part
 * run inline, so the result never depends on how many threads started. */
static void run_parts_fresh(part_fn fn, void *ctx, int parts) {
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

/* Runs fn on parts 0..parts-1, part 0 on the calling thread. */
static void run_parts(part_fn fn, void *ctx, int parts) {
    if (parts <= 1) {
        fn(ctx, 0, 1);
        return;
    }
    if (pthread_mutex_trylock(&pool.busy) != 0) {
        run_parts_fresh(fn, ctx, parts);
        return;
    }
    while (pool.workers < parts - 1) {
        pthread_t tid;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pool.started_at[pool.workers + 1] = pool.generation;
        const int ok = pthread_create(&tid, &attr, worker_main, (void *)(intptr_t)(pool.workers + 1)) == 0;
        pthread_attr_destroy(&attr);
        if (!ok) break;
        pool.workers++;
    }
    pool.fn = fn;
    pool.ctx = ctx;
    pool.parts = parts;
    __atomic_store_n(&pool.pending, pool.workers, __ATOMIC_SEQ_CST);
    __atomic_add_fetch(&pool.generation, 1, __ATOMIC_SEQ_CST);
    if (LOAD(pool.sleepers)) {
        pthread_mutex_lock(&pool.mu);
        pthread_cond_broadcast(&pool.wake);
        pthread_mutex_unlock(&pool.mu);
    }
    fn(ctx, 0, parts);
    for (int spin = 0; LOAD(pool.pending) && spin < SPIN_ROUNDS; spin++) CPU_RELAX();
    if (LOAD(pool.pending)) {
        pthread_mutex_lock(&pool.mu);
        __atomic_store_n(&pool.waiting, 1, __ATOMIC_SEQ_CST);
        while (LOAD(pool.pending)) pthread_cond_wait(&pool.done, &pool.mu);
        __atomic_store_n(&pool.waiting, 0, __ATOMIC_SEQ_CST);
        pthread_mutex_unlock(&pool.mu);
    }
    for (int i = pool.workers + 1; i < parts; i++) fn(ctx, i, parts); /* workers not started */
    pthread_mutex_unlock(&pool.busy);
}

static void split(int64_t total, int part, int parts, int64_t *lo, int64_t *hi) {
    *lo = total * part / parts;
    *hi = total * (part + 1) / parts;
}

/* ---------------------------------------------------------------- quantization */

/* VS-Quant of a channel-major tensor x [c][m] (m = b * h * w rows, (image, y, x)), in the float32
 * order of vsquant.quantize_activations: per vector of `vector` channels at one row c = max |x|
 * (or a given clipping scalar), s = c / level; per group of group_rows rows gamma = max s /
 * sq_max; sq = clamp(rint(s / gamma), 1, sq_max), step = gamma * sq; q = clamp(rint(x / step),
 * lowest, level), stored folded as q * sq + offset in planes [c4][rows][4] laid out with the
 * padding (pt, pl, pb, pr) around each image, padding and rows past the images at `offset`. */
typedef struct {
    const float *x;    /* [c][m] */
    const float *clip; /* [nv][m] clipping scalars, or NULL for max |x| */
    uint8_t *out;      /* [c4][rows][4] */
    float *gamma;      /* [groups] */
    float *s;          /* work [nv][m]: each vector's step before gamma */
    float *rg;         /* work [m]: each row's gamma */
    int64_t c, c4, m, b, h, w, pt, pl, pb, pr, rows, group_rows, nv;
    int vector, level, lowest, sq_max, offset, path, padded;
    float fixed_gamma; /* a static (calibrated) gamma for every group, or < 0: each group's own */
} quant_t;

#pragma GCC diagnostic ignored "-Wpsabi" /* vectors pass only between always-inline helpers */

/* The plane row of input row m: its place among the padded images. */
static inline int64_t row_of(const quant_t *t, int64_t m) {
    const int64_t hw = t->h * t->w, b = m / hw, y = m % hw / t->w, x = m % t->w;
    return (b * (t->h + t->pt + t->pb) + y + t->pt) * (t->w + t->pl + t->pr) + x + t->pl;
}

#define SIMD(name) name##_portable
#define FN static
#define INLINE __attribute__((always_inline)) static inline
#define LANES 8
#include "_quantize_simd.h"
#ifdef SP_X86
#define SIMD(name) name##_avx2
#define FN __attribute__((target("avx2"))) static
#define INLINE __attribute__((target("avx2"), always_inline)) static inline
#define LANES 8
#define MAX_PS(a, b) _mm256_max_ps((__m256)(a), (__m256)(b))
#define MIN_PS(a, b) _mm256_min_ps((__m256)(a), (__m256)(b))
#define ROUND_PS(q) _mm256_round_ps((__m256)(q), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#include "_quantize_simd.h"
#define SIMD(name) name##_avx512
#define FN __attribute__((target("avx512f,avx512bw"))) static
#define INLINE __attribute__((target("avx512f,avx512bw"), always_inline)) static inline
#define LANES 16
#define MAX_PS(a, b) _mm512_max_ps((__m512)(a), (__m512)(b))
#define MIN_PS(a, b) _mm512_min_ps((__m512)(a), (__m512)(b))
#define ROUND_PS(q) _mm512_roundscale_ps((__m512)(q), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#include "_quantize_simd.h"
#endif

static void vector_steps(const quant_t *t, int64_t lo, int64_t hi) {
#ifdef SP_X86
    if (t->path >= PATH_AVX512VNNI) return vector_steps_avx512(t, lo, hi);
    if (t->path != PATH_PORTABLE) return vector_steps_avx2(t, lo, hi);
#endif
    vector_steps_portable(t, lo, hi);
}

static void fold(const quant_t *t, int64_t lo, int64_t hi) {
#ifdef SP_X86
    if (t->path >= PATH_AVX512VNNI) return fold_avx512(t, lo, hi);
    if (t->path != PATH_PORTABLE) return fold_avx2(t, lo, hi);
#endif
    fold_portable(t, lo, hi);
}

/* Rows [lo, hi) of the part: whole row vectors, the last part takes the tail. */
static void part_rows(const quant_t *t, int part, int parts, int64_t *lo, int64_t *hi) {
    split(t->m / LANES_MAX, part, parts, lo, hi);
    *lo *= LANES_MAX;
    *hi = part + 1 == parts ? t->m : *hi * LANES_MAX;
}

static void steps_part(void *ctx, int part, int parts) {
    int64_t lo, hi;
    part_rows(ctx, part, parts, &lo, &hi);
    vector_steps(ctx, lo, hi);
}

static void gammas_part(void *ctx, int part, int parts) {
    const quant_t *t = ctx;
    int64_t lo, hi;
    split(t->m / t->group_rows, part, parts, &lo, &hi);
    for (int64_t g = lo; g < hi; g++) {
        if (t->fixed_gamma >= 0.0f) {
            t->gamma[g] = t->fixed_gamma;
            for (int64_t r = 0; r < t->group_rows; r++) t->rg[g * t->group_rows + r] = t->fixed_gamma;
            continue;
        }
        float top = 0.0f;
        for (int64_t j = 0; j < t->nv; j++) {
            const float *s = t->s + j * t->m + g * t->group_rows;
            for (int64_t r = 0; r < t->group_rows; r++) top = s[r] > top ? s[r] : top;
        }
        t->gamma[g] = top / (float)t->sq_max;
        for (int64_t r = 0; r < t->group_rows; r++) t->rg[g * t->group_rows + r] = t->gamma[g];
    }
}

/* Every byte of the planes the data does not cover (padding around the images, rows past them)
 * holds the offset; padded layouts are filled whole before the data is written. */
static void fill_part(void *ctx, int part, int parts) {
    const quant_t *t = ctx;
    int64_t lo, hi;
    split(t->c4, part, parts, &lo, &hi);
    const int64_t from = t->padded ? 0 : t->m;
    for (int64_t c4 = lo; c4 < hi; c4++)
        memset(t->out + (c4 * t->rows + from) * 4, t->offset, 4 * (size_t)(t->rows - from));
}

static void fold_part(void *ctx, int part, int parts) {
    int64_t lo, hi;
    part_rows(ctx, part, parts, &lo, &hi);
    fold(ctx, lo, hi);
}

/* ---------------------------------------------------------------- strided windows */

/* The windows of a strided convolution, copied once from a quantized (padded) input into planes
 * of their own: out[tap * c4 + c][r] = in[c][image + (oy * sh + ky * dh) * ws + ox * sw + kx * dw]
 * for output rows r = (b, oy, ox); rows past the outputs read `offset`. */
typedef struct {
    const uint32_t *in;
    uint32_t *out;
    int64_t c4, rows_in, rows_out, b, hs, ws, kh, kw, sh, sw, dh, dw, oh, ow;
    uint32_t fill;
} windows_t;

CLONED static void windows_part(void *ctx, int part, int parts) {
    const windows_t *t = ctx;
    /* locals: stores through dst cannot change them, so the copies vectorize (stride 2, as
     * ResNet's, with its stride known) */
    const int64_t oh = t->oh, ow = t->ow, sw = t->sw, ws = t->ws, rows_out = t->rows_out;
    const int64_t planes = t->kh * t->kw * t->c4, outputs = t->b * oh * ow;
    int64_t lo, hi;
    split(planes, part, parts, &lo, &hi);
    for (int64_t p = lo; p < hi; p++) {
        const int64_t tap = p / t->c4, c = p % t->c4, ky = tap / t->kw, kx = tap % t->kw;
        const uint32_t *const plane = t->in + c * t->rows_in + ky * t->dh * ws + kx * t->dw;
        uint32_t *restrict dst = t->out + p * rows_out;
        for (int64_t b = 0; b < t->b; b++)
            for (int64_t oy = 0; oy < oh; oy++, dst += ow) {
                const uint32_t *restrict const src = plane + (b * t->hs + oy * t->sh) * ws;
                if (sw == 2)
                    for (int64_t ox = 0; ox < ow; ox++) dst[ox] = src[2 * ox];
                else
                    for (int64_t ox = 0; ox < ow; ox++) dst[ox] = src[ox * sw];
            }
        for (int64_t r = outputs; r < rows_out; r++) *dst++ = t->fill;
    }
}

/* ---------------------------------------------------------------- max pooling */

/* Max pooling of a channel-major tensor [c][b*h*w] -> [c][b*oh*ow]; windows ignore the padding
 * (ONNX pads with -inf), so every output takes the max of its window's pixels in the image. */
typedef struct {
    const float *x;
    float *out;
    float *lines; /* per part: w floats */
    int64_t planes, h, w, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow;
} pool_t;

/* Columns ox in [lo, hi) of a window's tap at column offset `at`: the output columns whose tap
 * falls inside a line of w pixels (at + ox * sw in [0, w)). */
static void tap_columns(int64_t at, int64_t sw, int64_t w, int64_t ow, int64_t *lo, int64_t *hi) {
    *lo = at >= 0 ? 0 : (-at + sw - 1) / sw;
    *hi = at >= w ? 0 : (w - 1 - at) / sw + 1;
    if (*hi > ow) *hi = ow;
}

/* Separable: the window rows' max into a line, then each tap of a window row over the output
 * line, tap by tap in the window's order (both loops vectorized by the compiler; stride 2, as
 * ResNet's, with its stride known). */
CLONED static void pool_part(void *ctx, int part, int parts) {
    const pool_t *t = ctx;
    /* locals: stores through the lines cannot change them, so the loops vectorize */
    const int64_t h = t->h, w = t->w, oh = t->oh, ow = t->ow, sw = t->sw;
    float *restrict const line = t->lines + part * w;
    int64_t lo, hi;
    split(t->planes, part, parts, &lo, &hi);
    for (int64_t p = lo; p < hi; p++) {
        const float *const x = t->x + p * h * w;
        float *restrict out = t->out + p * oh * ow;
        for (int64_t oy = 0; oy < oh; oy++, out += ow) {
            for (int64_t ix = 0; ix < w; ix++) line[ix] = -__builtin_inff();
            for (int64_t ky = 0; ky < t->kh; ky++) {
                const int64_t iy = oy * t->sh - t->pt + ky * t->dh;
                if (iy < 0 || iy >= h) continue;
                const float *restrict const row = x + iy * w;
                for (int64_t ix = 0; ix < w; ix++) line[ix] = row[ix] > line[ix] ? row[ix] : line[ix];
            }
            for (int64_t ox = 0; ox < ow; ox++) out[ox] = -__builtin_inff();
            for (int64_t kx = 0; kx < t->kw; kx++) {
                const int64_t at = kx * t->dw - t->pl;
                int64_t c0, c1;
                tap_columns(at, sw, w, ow, &c0, &c1);
                if (sw == 2)
                    for (int64_t ox = c0; ox < c1; ox++) {
                        const float v = line[at + 2 * ox];
                        out[ox] = v > out[ox] ? v : out[ox];
                    }
                else
                    for (int64_t ox = c0; ox < c1; ox++) {
                        const float v = line[at + ox * sw];
                        out[ox] = v > out[ox] ? v : out[ox];
                    }
            }
        }
    }
}

/* ---------------------------------------------------------------- layer normalization */

/* LayerNormalization over the channels of a channel-major tensor [c][m], in vsquant.layer_norm's
 * float32 order; rows are independent, so the compiler vectorizes along them. */
typedef struct {
    const float *x, *scale, *bias;
    float *out;
    float *work; /* per part: 3 x ROWS_PER_PASS floats */
    int64_t c, m;
    float epsilon;
} norm_t;

#define NORM_ROWS 256 /* rows normalized together: their sums stay in L1 */

CLONED static void norm_part(void *ctx, int part, int parts) {
    const norm_t *t = ctx;
    float *total = t->work + (size_t)part * 3 * NORM_ROWS, *squares = total + NORM_ROWS;
    float *inverse = squares + NORM_ROWS;
    int64_t lo, hi;
    split((t->m + NORM_ROWS - 1) / NORM_ROWS, part, parts, &lo, &hi);
    for (int64_t m0 = lo * NORM_ROWS; m0 < hi * NORM_ROWS && m0 < t->m; m0 += NORM_ROWS) {
        const int64_t n = t->m - m0 < NORM_ROWS ? t->m - m0 : NORM_ROWS;
        for (int64_t r = 0; r < n; r++) total[r] = squares[r] = 0.0f;
        for (int64_t c = 0; c < t->c; c++) {
            const float *x = t->x + c * t->m + m0;
            for (int64_t r = 0; r < n; r++) total[r] = total[r] + x[r];
        }
        for (int64_t r = 0; r < n; r++) total[r] = total[r] / (float)t->c; /* the mean */
        for (int64_t c = 0; c < t->c; c++) {
            const float *x = t->x + c * t->m + m0;
            for (int64_t r = 0; r < n; r++) {
                const float d = x[r] - total[r];
                squares[r] = squares[r] + d * d;
            }
        }
        for (int64_t r = 0; r < n; r++)
            inverse[r] = 1.0f / __builtin_sqrtf(squares[r] / (float)t->c + t->epsilon);
        for (int64_t c = 0; c < t->c; c++) {
            const float *x = t->x + c * t->m + m0;
            float *y = t->out + c * t->m + m0;
            const float scale = t->scale[c], bias = t->bias[c];
            for (int64_t r = 0; r < n; r++) y[r] = ((x[r] - total[r]) * inverse[r]) * scale + bias;
        }
    }
}

/* ---------------------------------------------------------------- GEMM */

/* The next layer's quantized planes, written by the epilogue: one static gamma, vectors of the
 * tile's channel group, every 4 channels a plane's 4 bytes at row_of[virtual row] (-1: none). */
typedef struct {
    uint8_t *planes;
    const int64_t *row_of; /* [rows rounded up to TILE_ROWS] */
    int64_t rows;          /* rows per plane */
    float gamma;
    int level, lowest, sq_max, offset;
    int stream; /* the planes are larger than the caches: store past them */
    /* One gamma per row (tokens) instead: the tile's floats and vector steps wait in per-part
     * buffers until every channel of its rows is done (parts then own whole rows). */
    float *row_gamma;      /* [rows]: each row's gamma, written; NULL: the static gamma above */
} quant_out_t;

typedef struct {
    const uint8_t *a;        /* activation planes: row r of plane k4 at a + table[k4] + 4 r */
    const int64_t *table;    /* [k4] byte offset of each plane (a convolution tap's shift included) */
    const float *ga;         /* [rows rounded up to TILE_ROWS] gamma of each virtual row */
    const int64_t *dense_of; /* [rows rounded up to TILE_ROWS] output row of each virtual row
                              * (-1: none), or NULL: itself */
    int64_t rows, m, n, k4;  /* virtual rows computed, output rows, channels, planes */
    int64_t ldo;             /* the output's row stride (channel n's rows start at n * ldo) */
    const int32_t *wd;       /* dense: [n][k4] 4 s8 per plane, or NULL */
    const int32_t *ptr;      /* sparse: kept blocks of channel n: [ptr[n], ptr[n + 1]) (owners 4
                              * or 16: of channels u * owners.., [ptr[u], ptr[u + 1])) */
    const uint16_t *idx;     /* sparse: each kept block's plane */
    const int32_t *wv;       /* sparse: each kept block's 4 s8 per owner (see quad_tile) */
    int64_t owners;          /* sparse: channels that keep the same blocks (1, 4 or 16) */
    const int32_t *corr;     /* [n] 128 * the folded weights' sum (signed activations), or NULL */
    const float *gw, *bias;  /* [n]; bias may be NULL */
    const void *residual;    /* [n][m] float32 or float16 (residual_half), added before the ReLU,
                              * or NULL */
    void *out;               /* [n][m] float32 or float16 (out_half), or NULL: planes only */
    int residual_half, out_half;
    const quant_out_t *q;    /* the next layer's planes, or NULL */
    int64_t group;           /* channels emitted together: the output's vector size */
    int relu, gelu, path;
    int stream;              /* the float output is larger than the caches: store past them */
    float *fbuf;             /* per part: fbuf_floats: the group's floats [group][TILE_ROWS], then
                              * with per-row gammas the tile's floats [n + group][TILE_ROWS] and
                              * its vector steps [n / group + 1][TILE_ROWS] */
    size_t fbuf_floats;
    int32_t *acc;            /* per part: TILE_ROWS * MAX_CHANNELS int32 */
    int amx;                 /* the AMX tiles run it (see amx_fits) */
    int shared_tiles;        /* parts split the row tiles: each takes the next one left */
    int64_t next_tile;       /* (atomic) the next row tile to take */
    int64_t ahead;           /* residual values from a channel's to the next group's (prefetched) */
    int64_t n_lo[MAX_THREADS], n_hi[MAX_THREADS]; /* channels split: each part's, over every row */
} gemm_t;

#define MAX_CHANNELS 16 /* channels a tile accumulates at once, at most (an AMX tile's) */
/* Outputs larger than a core's L2 cannot stay in it for the layer that reads them next: they are
 * stored past the caches (non-temporal), which keeps the weights and the tile's activations in
 * L2 (measured on a 2 MB-L2 Xeon: BERT-Large 1.3x, its projections 1.25x, against 8 MB). */
static size_t stream_above(void) {
    static size_t bytes;
    if (!bytes) {
        const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
        bytes = l2 > 0 ? (size_t)l2 : 2u << 20;
    }
    return bytes;
}

/* int8 attention's shared pieces (the per-path passes are in _attention_simd.h). */
typedef struct {
    const float *q, *k, *v, *mask; /* mask [batch][seq] added to each key's scores, or NULL */
    float *out;
    int64_t batch, seq, heads, dim, m;
    float scale;
    int path;
    uint8_t *work; /* per part: work_bytes */
    size_t work_bytes;
} attn_t;

#define ATTN_GROUP 16 /* channels emitted together by the tiles (floats only) */

/* The work of one part, carved into 64-byte aligned pieces. */
typedef struct {
    uint8_t *qplanes, *pplanes;
    int32_t *wk, *wv, *words, *corr, *acc;
    float *ga1, *ga2, *gw1, *gw2, *bias, *scores, *inverse, *fbuf;
    int64_t *table1, *table2;
} attn_work_t;

static size_t attn_carve(const attn_t *t, uint8_t *base, attn_work_t *w) {
    const int64_t seq = t->seq, tiled = (seq + TILE_ROWS - 1) / TILE_ROWS * TILE_ROWS;
    const int64_t c4 = t->dim / 4, j4 = (seq + 3) / 4;
    size_t at = 0;
#define CARVE(field, bytes) (w->field = (void *)(base ? base + at : NULL), at += ((size_t)(bytes) + 63) / 64 * 64)
    CARVE(qplanes, c4 * tiled * 4);
    CARVE(pplanes, j4 * tiled * 4);
    CARVE(wk, 4 * seq * c4);
    CARVE(wv, 4 * t->dim * j4);
    CARVE(words, 4 * c4 * LANES_MAX);
    CARVE(corr, 4 * seq);
    CARVE(acc, 4 * TILE_ROWS * MAX_CHANNELS);
    CARVE(ga1, 4 * tiled);
    CARVE(ga2, 4 * tiled);
    CARVE(gw1, 4 * seq);
    CARVE(gw2, 4 * t->dim);
    CARVE(bias, 4 * seq);
    CARVE(scores, 4 * seq * seq);
    CARVE(inverse, 4 * (seq > t->dim ? seq : t->dim));
    CARVE(fbuf, 4 * ATTN_GROUP * TILE_ROWS);
    CARVE(table1, 8 * c4);
    CARVE(table2, 8 * j4);
#undef CARVE
    return at;
}

/* Portable: plain C, one row at a time. */
#define SIMD(name) name##_portable
#define FN static
#define INLINE __attribute__((always_inline)) static inline
#define LANES 8
#define ROWS TILE_ROWS
#define DENSE_ROWS 32
#define DENSE_CHANNELS 4
#define SPARSE_ROWS 32
#define QUAD_ROWS 8
typedef struct {
    int32_t v[8];
} acc_portable;
#define ACC acc_portable
#define WV int32_t
#define ACC_ZERO() ((acc_portable){{0}})
#define W_SET1(w) (w)
#define ACC_DP(s, p, w)                                                                         \
    do {                                                                                        \
        const uint8_t *p_ = (p);                                                                \
        const int32_t w0_ = (int8_t)((w) & 0xff), w1_ = (int8_t)(((w) >> 8) & 0xff);            \
        const int32_t w2_ = (int8_t)(((w) >> 16) & 0xff), w3_ = (int8_t)((uint32_t)(w) >> 24);  \
        for (int l_ = 0; l_ < 8; l_++)                                                          \
            (s).v[l_] += p_[4 * l_] * w0_ + p_[4 * l_ + 1] * w1_ + p_[4 * l_ + 2] * w2_ +       \
                         p_[4 * l_ + 3] * w3_;                                                  \
    } while (0)
#define ACC_STORE(dst, s) memcpy((dst), (s).v, sizeof(int32_t) * 8)
INLINE acc_portable acc_add_portable(acc_portable a, acc_portable b) {
    for (int i = 0; i < 8; i++) a.v[i] += b.v[i];
    return a;
}
#define ACC_ADD(a, b) acc_add_portable(a, b)
#define FOLD(name) name##_portable
#define STREAM_F(p, v) do { const __typeof__(v) v_ = (v); memcpy(p, &v_, sizeof v_); } while (0)
#define STREAM_H(p, h) do { const __typeof__(h) h_ = (h); memcpy(p, &h_, sizeof h_); } while (0)
#define FLOAT_TO_HALF(v) __builtin_convertvector(v, hv_portable)
#define HALF_TO_FLOAT(h) __builtin_convertvector(h, fv_portable)
#include "_gemm_simd.h"

#ifdef SP_X86
/* AVX2: no exact 4-product instruction (vpmaddubsw saturates int16), so each 4 bytes of a row
 * are zero-extended to int16 and multiplied as two pairs (vpmaddwd): a row vector of 8 rows is
 * two registers of (row, pair) sums, added pairwise when stored. */
#define SIMD(name) name##_avx2
#define FN __attribute__((target("avx2,f16c"))) static
#define INLINE __attribute__((target("avx2,f16c"), always_inline)) static inline
#define LANES 8
#define ROWS TILE_ROWS
#define DENSE_ROWS 16
#define DENSE_CHANNELS 3
#define SPARSE_ROWS 32
#define QUAD_ROWS 8 /* 4 channels x 8 rows: 8 registers */
typedef struct {
    __m256i lo, hi;
} acc_avx2;
#define ACC acc_avx2
#define WV __m256i
#define ACC_ZERO() ((acc_avx2){_mm256_setzero_si256(), _mm256_setzero_si256()})
#define W_SET1(w) _mm256_cvtepi8_epi16(_mm_set1_epi32(w))
#define ACC_DP(s, p, w)                                                                           \
    do {                                                                                          \
        const __m128i *p_ = (const __m128i *)(const void *)(p);                                   \
        (s).lo = _mm256_add_epi32((s).lo, _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128(p_)), w)); \
        (s).hi = _mm256_add_epi32((s).hi, _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128(p_ + 1)), w)); \
    } while (0)
#define ACC_STORE(dst, s) /* hadd: rows 0,1 | 4,5 | 2,3 | 6,7 per 128-bit lane, then in order */ \
    _mm256_storeu_si256((__m256i *)(void *)(dst),                                               \
                        _mm256_permute4x64_epi64(_mm256_hadd_epi32((s).lo, (s).hi), 0xD8))
#define ACC_ADD(a, b) ((acc_avx2){_mm256_add_epi32((a).lo, (b).lo), _mm256_add_epi32((a).hi, (b).hi)})
#define FOLD(name) name##_avx2
#define STREAM_F(p, v) _mm256_stream_ps(p, (__m256)(v))
#define STREAM_H(p, h) _mm_stream_si128((__m128i *)(void *)(p), (__m128i)(h))
#define FLOAT_TO_HALF(v) ((SIMD(hv))_mm256_cvtps_ph((__m256)(v), _MM_FROUND_TO_NEAREST_INT))
#define HALF_TO_FLOAT(h) ((SIMD(fv))_mm256_cvtph_ps((__m128i)(h)))
#include "_gemm_simd.h"

/* AVX-VNNI: vpdpbusd on 8 rows (VEX encoding). */
#define SIMD(name) name##_avxvnni
#define FN __attribute__((target("avx2,f16c,avxvnni"))) static
#define INLINE __attribute__((target("avx2,f16c,avxvnni"), always_inline)) static inline
#define LANES 8
#define ROWS TILE_ROWS
#define DENSE_ROWS 16
#define DENSE_CHANNELS 4 /* 8 accumulators of 16 registers; 6 spilled (1.7x slower) */
#define SPARSE_ROWS 64
#define QUAD_ROWS 16 /* 4 channels x 16 rows: 8 accumulators */
#define ACC __m256i
#define WV __m256i
#define ACC_ZERO() _mm256_setzero_si256()
#define W_SET1(w) _mm256_set1_epi32(w)
#define ACC_DP(s, p, w) ((s) = _mm256_dpbusd_avx_epi32((s), _mm256_loadu_si256((const __m256i *)(const void *)(p)), (w)))
#define ACC_STORE(dst, s) _mm256_storeu_si256((__m256i *)(void *)(dst), (s))
#define ACC_ADD(a, b) _mm256_add_epi32(a, b)
#define FOLD(name) name##_avx2
#define STREAM_F(p, v) _mm256_stream_ps(p, (__m256)(v))
#define STREAM_H(p, h) _mm_stream_si128((__m128i *)(void *)(p), (__m128i)(h))
#define FLOAT_TO_HALF(v) ((SIMD(hv))_mm256_cvtps_ph((__m256)(v), _MM_FROUND_TO_NEAREST_INT))
#define HALF_TO_FLOAT(h) ((SIMD(fv))_mm256_cvtph_ps((__m128i)(h)))
#include "_gemm_simd.h"

/* AVX-512 VNNI: vpdpbusd on 16 rows. */
#define SIMD(name) name##_vnni
#define FN __attribute__((target("avx512f,avx512bw,avx512vnni,f16c,popcnt"))) static
#define INLINE __attribute__((target("avx512f,avx512bw,avx512vnni,f16c,popcnt"), always_inline)) static inline
#define LANES 16
#define ROWS TILE_ROWS
#define DENSE_ROWS 32
#define DENSE_CHANNELS 8 /* divides the groups of 16 (64 x 6 left 4 blocks of one channel) */
#define SPARSE_ROWS 64
#define QUAD_ROWS 64 /* 4 channels x 64 rows: 16 accumulators */
#define ACC __m512i
#define WV __m512i
#define ACC_ZERO() _mm512_setzero_si512()
#define W_SET1(w) _mm512_set1_epi32(w)
#define ACC_DP(s, p, w) ((s) = _mm512_dpbusd_epi32((s), _mm512_loadu_si512((const void *)(p)), (w)))
#define ACC_STORE(dst, s) _mm512_storeu_si512((void *)(dst), (s))
#define ACC_ADD(a, b) _mm512_add_epi32(a, b)
#define FOLD(name) name##_avx512
#define STREAM_F(p, v) _mm512_stream_ps(p, (__m512)(v))
#define STREAM_H(p, h) _mm256_stream_si256((__m256i *)(void *)(p), (__m256i)(h))
#define FLOAT_TO_HALF(v) ((SIMD(hv))_mm512_cvtps_ph((__m512)(v), _MM_FROUND_TO_NEAREST_INT))
#define HALF_TO_FLOAT(h) ((SIMD(fv))_mm512_cvtph_ps((__m256i)(h)))
/* The lanes in mask, in order, stored side by side from p (compressed in a register: the
 * compressing store to memory is microcoded on some cores). */
#define COMPRESS_KEPT(mask) ((1u << _mm_popcnt_u32(mask)) - 1)
#define COMPRESS_STORE(p, mask, v)                                                                \
    _mm512_mask_storeu_epi32((void *)(p), (__mmask16)COMPRESS_KEPT(mask),                         \
                             _mm512_maskz_compress_epi32((__mmask16)(mask), (__m512i)(v)))
#define COMPRESS_STORE_HALF(p, mask, v)                                                           \
    _mm512_mask_storeu_epi16((void *)(p), (__mmask32)COMPRESS_KEPT(mask),                         \
                             _mm512_castsi256_si512(_mm512_cvtps_ph(                              \
                                 _mm512_maskz_compress_ps((__mmask16)(mask), (__m512)(v)),        \
                                 _MM_FROUND_TO_NEAREST_INT)))
#include "_gemm_simd.h"
#undef COMPRESS_KEPT
#include "_gemm_amx.h"
#endif

typedef void (*tile_fn)(const gemm_t *, int64_t, int64_t, int64_t, int32_t *, float *);

/* The AMX tiles take 16 channels at a time: dense weights, or blocks kept by groups of 16 with
 * at least a run of 16 each on average (a short run's tile multiply costs a whole one, and its
 * weights a copy: slower than the avx512vnni path's quad loop, measured on 1x1 convolutions of
 * 128 channels at 1/8). Other layouts, and small vectors, run the avx512vnni path's tiles. */
static int amx_fits(const gemm_t *g) {
    const int64_t groups = g->n / 16;
    return g->path == PATH_AMX && g->n % 16 == 0 && g->group % 16 == 0 &&
           (g->wd || (g->owners == 16 && g->ptr[groups] >= 16 * groups));
}

static tile_fn tile_kernel(const gemm_t *g) {
    const int kind = g->wd ? 0 : g->owners == 1 ? 1 : 2;
#define PICK(suffix) return kind == 0 ? dense_tile_##suffix : kind == 1 ? sparse_tile_##suffix : quad_tile_##suffix
#ifdef SP_X86
    if (g->amx) return amx_tile;
    if (g->path == PATH_AVX2) PICK(avx2);
    if (g->path == PATH_AVXVNNI) PICK(avxvnni);
    if (g->path >= PATH_AVX512VNNI) PICK(vnni);
#endif
    PICK(portable);
#undef PICK
}

/* Each part owns a range of row tiles or of channels (see balance). Row tiles are the outer loop:
 * a tile's activations stay in cache while the weights stream past. */
static void gemm_part(void *ctx, int part, int parts) {
    (void)parts;
    gemm_t *g = ctx;
    const tile_fn kernel = tile_kernel(g);
    int32_t *acc = g->acc + (int64_t)part * TILE_ROWS * MAX_CHANNELS;
    float *f = g->fbuf + (size_t)part * g->fbuf_floats;
    const int64_t tiles = (g->rows + TILE_ROWS - 1) / TILE_ROWS;
    if (g->shared_tiles)
        for (int64_t t; (t = __atomic_fetch_add(&g->next_tile, 1, __ATOMIC_RELAXED)) < tiles;)
            kernel(g, 0, g->n, t * TILE_ROWS, acc, f);
    else
        for (int64_t t = 0; t < tiles; t++) kernel(g, g->n_lo[part], g->n_hi[part], t * TILE_ROWS, acc, f);
#ifdef SP_X86
    if (g->stream || (g->q && g->q->stream)) _mm_sfence(); /* streamed stores are seen first */
#endif
}

/* A channel's work: its kept blocks when sparse (and a little for its epilogue), else 1. */
static int64_t work_of(const gemm_t *g, int64_t n) {
    if (g->wd) return 1;
    const int64_t u = n / g->owners;
    return g->ptr[u + 1] - g->ptr[u] + 1;
}

/* Parts share the row tiles when there are enough to share evenly, each taking the next tile
 * left as it finishes one (a core the machine slows, or tiles of padding rows, then cost no
 * wait at the end); else they split the channels, in ranges of equal work (kept blocks when
 * sparse), at groups (of the output's vectors and of the channels that keep the same blocks).
 * A tile's values never depend on the part that computes it. */
static int balance(gemm_t *g, int parts) {
    const int64_t tiles = (g->rows + TILE_ROWS - 1) / TILE_ROWS;
    if (g->q && g->q->row_gamma && parts > tiles) parts = (int)tiles; /* whole rows each */
    if (tiles % parts == 0 || tiles >= 4 * parts || (g->q && g->q->row_gamma)) {
        g->shared_tiles = 1;
        g->next_tile = 0;
        return parts;
    }
    const int64_t step = g->group > g->owners ? g->group : g->owners; /* both powers of two */
    const int64_t groups = (g->n + step - 1) / step;
    if (parts > groups) parts = (int)groups;
    int64_t total = 0, n = 0, done = 0;
    for (int64_t c = 0; c < g->n; c++) total += work_of(g, c);
    for (int i = 0; i < parts; i++) {
        g->n_lo[i] = n;
        const int64_t target = total * (i + 1) / parts;
        while (n < g->n && (done < target || n % step)) done += work_of(g, n++);
        g->n_hi[i] = i + 1 == parts ? g->n : n;
        n = g->n_hi[i];
    }
    return parts;
}

/* ---------------------------------------------------------------- attention */

/* int8 attention of (image, head) pairs split between the parts (see _attention_simd.h). */
typedef void (*pair_fn)(const attn_t *, const attn_work_t *, int64_t, int64_t);

static pair_fn attention_kernel(int path) {
#ifdef SP_X86
    if (path == PATH_AVX2) return attention_pair_avx2;
    if (path == PATH_AVXVNNI) return attention_pair_avxvnni;
    if (path >= PATH_AVX512VNNI) return attention_pair_vnni;
#endif
    return attention_pair_portable;
}

static void attention_part(void *ctx, int part, int parts) {
    const attn_t *t = ctx;
    attn_work_t w;
    attn_carve(t, t->work + (size_t)part * t->work_bytes, &w);
    const int64_t tiled = (t->seq + TILE_ROWS - 1) / TILE_ROWS * TILE_ROWS;
    for (int64_t k = 0; k < t->dim / 4; k++) w.table1[k] = k * tiled * 4;
    for (int64_t k = 0; k < (t->seq + 3) / 4; k++) w.table2[k] = k * tiled * 4;
    const pair_fn pair = attention_kernel(t->path);
    int64_t lo, hi;
    split(t->batch * t->heads, part, parts, &lo, &hi);
    for (int64_t p = lo; p < hi; p++) pair(t, &w, p / t->heads, p % t->heads);
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
    if (count < 0 || b->len < (Py_ssize_t)(count * (int64_t)item)) {
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

static int parts_for(int threads, int64_t work) {
    return work < threads ? (work < 1 ? 1 : (int)work) : threads;
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

/* quantize(x, clip_or_None, out, gamma, s_work, rg_work, (c, b, h, w, pt, pl, pb, pr, rows,
 *          group_rows), vector, level, lowest, sq_max, offset, fixed_gamma, path, threads)
 *   x float32 [c][b*h*w]; out uint8 [ceil(c/4)][rows][4]; gamma float32 [b*h*w / group_rows];
 *   clip float32 [ceil(c/vector)][m]; s_work float32 [ceil(c/vector)][m]; rg_work float32 [m]. */
static PyObject *py_quantize(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer x, out, gamma, s, rg, clip = {0};
    PyObject *clip_obj;
    quant_t t = {0};
    long long v[10];
    const char *path_name;
    int threads;
    if (!PyArg_ParseTuple(args, "y*Ow*w*w*w*(LLLLLLLLLL)iiiiifsi", &x, &clip_obj, &out, &gamma, &s,
                          &rg, &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9],
                          &t.vector, &t.level, &t.lowest, &t.sq_max, &t.offset, &t.fixed_gamma,
                          &path_name, &threads))
        return NULL;
    t.path = parse_path(path_name);
    int ok = t.path >= 0 && threads_ok(threads);
    ok = ok && (clip_obj == Py_None || PyObject_GetBuffer(clip_obj, &clip, PyBUF_SIMPLE) == 0);
    t.c = v[0], t.b = v[1], t.h = v[2], t.w = v[3], t.pt = v[4], t.pl = v[5], t.pb = v[6], t.pr = v[7];
    t.rows = v[8], t.group_rows = v[9];
    t.m = t.b * t.h * t.w;
    if (ok && (t.c < 1 || t.b < 1 || t.h < 1 || t.w < 1 || t.pt < 0 || t.pl < 0 || t.pb < 0 ||
               t.pr < 0 || t.vector < 4 || t.vector % 4 || t.group_rows < 1 || t.m % t.group_rows)) {
        PyErr_SetString(PyExc_ValueError, "quantize: sizes must be positive, pads >= 0, vectors "
                                          "of 4k channels, rows whole groups");
        ok = 0;
    }
    t.padded = t.pt || t.pl || t.pb || t.pr;
    const int64_t used = t.padded ? t.b * (t.h + t.pt + t.pb) * (t.w + t.pl + t.pr) : t.m;
    t.c4 = (t.c + 3) / 4;
    t.nv = (t.c + t.vector - 1) / t.vector;
    if (ok && t.rows < used) {
        PyErr_SetString(PyExc_ValueError, "quantize: rows do not hold the padded images");
        ok = 0;
    }
    ok = ok && check_len(&x, t.c * t.m, 4, "x") && check_len(&out, t.c4 * t.rows * 4, 1, "out") &&
         check_len(&gamma, t.m / t.group_rows, 4, "gamma") && check_len(&s, t.nv * t.m, 4, "s") &&
         check_len(&rg, t.m, 4, "rg") && (clip_obj == Py_None || check_len(&clip, t.nv * t.m, 4, "clip"));
    if (ok) {
        t.x = x.buf;
        t.clip = clip_obj == Py_None ? NULL : clip.buf;
        t.out = out.buf;
        t.gamma = gamma.buf;
        t.s = s.buf;
        t.rg = rg.buf;
        const int parts = parts_for(threads, t.m / LANES_MAX + 1);
        Py_BEGIN_ALLOW_THREADS run_parts(steps_part, &t, parts);
        run_parts(gammas_part, &t, parts_for(threads, t.m / t.group_rows));
        run_parts(fill_part, &t, parts_for(threads, t.c4));
        run_parts(fold_part, &t, parts);
        Py_END_ALLOW_THREADS
    }
    if (clip.obj) PyBuffer_Release(&clip);
    PyBuffer_Release(&x);
    PyBuffer_Release(&out);
    PyBuffer_Release(&gamma);
    PyBuffer_Release(&s);
    PyBuffer_Release(&rg);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

/* pack_windows(in, out, (c4, rows_in, rows_out, b, hs, ws, kh, kw, sh, sw, dh, dw, oh, ow), fill,
 *              threads) -- in uint8 [c4][rows_in][4]; out uint8 [kh*kw*c4][rows_out][4]. */
static PyObject *py_pack_windows(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer in, out;
    windows_t t;
    long long v[14];
    unsigned int fill;
    int threads;
    if (!PyArg_ParseTuple(args, "y*w*(LLLLLLLLLLLLLL)Ii", &in, &out, &v[0], &v[1], &v[2], &v[3],
                          &v[4], &v[5], &v[6], &v[7], &v[8], &v[9], &v[10], &v[11], &v[12], &v[13],
                          &fill, &threads))
        return NULL;
    t.c4 = v[0], t.rows_in = v[1], t.rows_out = v[2], t.b = v[3], t.hs = v[4], t.ws = v[5];
    t.kh = v[6], t.kw = v[7], t.sh = v[8], t.sw = v[9], t.dh = v[10], t.dw = v[11], t.oh = v[12],
    t.ow = v[13];
    t.fill = fill;
    int ok = threads_ok(threads);
    for (int i = 0; ok && i < 14; i++)
        if (v[i] < 1) {
            PyErr_SetString(PyExc_ValueError, "pack_windows: sizes must be positive");
            ok = 0;
        }
    if (ok && ((t.oh - 1) * t.sh + (t.kh - 1) * t.dh >= t.hs || (t.ow - 1) * t.sw + (t.kw - 1) * t.dw >= t.ws ||
               t.b * t.hs * t.ws > t.rows_in || t.b * t.oh * t.ow > t.rows_out)) {
        PyErr_SetString(PyExc_ValueError, "pack_windows: windows leave the padded input");
        ok = 0;
    }
    ok = ok && check_len(&in, t.c4 * t.rows_in, 4, "in") &&
         check_len(&out, t.kh * t.kw * t.c4 * t.rows_out, 4, "out");
    if (ok) {
        t.in = in.buf;
        t.out = out.buf;
        Py_BEGIN_ALLOW_THREADS run_parts(windows_part, &t, parts_for(threads, t.kh * t.kw * t.c4));
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&in);
    PyBuffer_Release(&out);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

/* attention(q, k, v, mask_or_None, out, (batch, seq, heads, dim), scale, path, threads) -- q, k,
 * v, out float32 [heads * dim][batch * seq]; mask float32 [batch][seq]. */
static PyObject *py_attention(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer q, k, v, out, mask = {0};
    PyObject *mask_obj;
    attn_t t = {0};
    long long batch, seq, heads, dim;
    const char *path_name;
    int threads;
    if (!PyArg_ParseTuple(args, "y*y*y*Ow*(LLLL)fsi", &q, &k, &v, &mask_obj, &out, &batch, &seq, &heads,
                          &dim, &t.scale, &path_name, &threads))
        return NULL;
    t.path = parse_path(path_name);
    int ok = t.path >= 0 && threads_ok(threads);
    ok = ok && (mask_obj == Py_None || PyObject_GetBuffer(mask_obj, &mask, PyBUF_SIMPLE) == 0);
    t.batch = batch, t.seq = seq, t.heads = heads, t.dim = dim, t.m = batch * seq;
    if (ok && (batch < 1 || seq < 1 || heads < 1 || dim < 4 || dim % 4)) {
        PyErr_SetString(PyExc_ValueError, "attention: sizes must be positive, dim a multiple of 4");
        ok = 0;
    }
    const int64_t size = heads * dim * t.m;
    ok = ok && check_len(&q, size, 4, "q") && check_len(&k, size, 4, "k") && check_len(&v, size, 4, "v") &&
         check_len(&out, size, 4, "out") && (!mask.obj || check_len(&mask, t.m, 4, "mask"));
    const int parts = ok ? parts_for(threads, batch * heads) : 0;
    if (ok) {
        t.work_bytes = attn_carve(&t, NULL, &(attn_work_t){0});
        void *work = NULL;
        t.work = posix_memalign(&work, 64, t.work_bytes * (size_t)parts) ? NULL : work;
        if (!t.work) {
            PyErr_NoMemory();
            ok = 0;
        }
    }
    if (ok) {
        t.q = q.buf, t.k = k.buf, t.v = v.buf, t.out = out.buf;
        t.mask = mask.obj ? mask.buf : NULL;
        Py_BEGIN_ALLOW_THREADS run_parts(attention_part, &t, parts);
        Py_END_ALLOW_THREADS
    }
    free(t.work);
    if (mask.obj) PyBuffer_Release(&mask);
    PyBuffer_Release(&q);
    PyBuffer_Release(&k);
    PyBuffer_Release(&v);
    PyBuffer_Release(&out);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

/* layer_norm(x, scale, bias, epsilon, out, threads) -- x, out float32 [c][m]; scale, bias [c]. */
static PyObject *py_layer_norm(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer x, scale, bias, out;
    norm_t t = {0};
    int threads;
    if (!PyArg_ParseTuple(args, "y*y*y*fw*i", &x, &scale, &bias, &t.epsilon, &out, &threads))
        return NULL;
    t.c = scale.len / 4;
    t.m = t.c ? x.len / 4 / t.c : 0;
    int ok = threads_ok(threads);
    if (ok && (t.c < 1 || t.m < 1 || x.len != 4 * t.c * t.m || bias.len != scale.len || out.len != x.len)) {
        PyErr_SetString(PyExc_ValueError, "layer_norm: x and out [c][m], scale and bias [c]");
        ok = 0;
    }
    const int parts = ok ? parts_for(threads, (t.m + NORM_ROWS - 1) / NORM_ROWS) : 0;
    t.work = ok ? malloc(sizeof(float) * 3 * NORM_ROWS * (size_t)parts) : NULL;
    if (ok && !t.work) {
        PyErr_NoMemory();
        ok = 0;
    }
    if (ok) {
        t.x = x.buf;
        t.scale = scale.buf;
        t.bias = bias.buf;
        t.out = out.buf;
        Py_BEGIN_ALLOW_THREADS run_parts(norm_part, &t, parts);
        Py_END_ALLOW_THREADS
    }
    free(t.work);
    PyBuffer_Release(&x);
    PyBuffer_Release(&scale);
    PyBuffer_Release(&bias);
    PyBuffer_Release(&out);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

/* check_rows(map, limit): every entry of an int64 row map is -1 or a row below limit. */
static PyObject *py_check_rows(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer map;
    long long limit;
    if (!PyArg_ParseTuple(args, "y*L", &map, &limit)) return NULL;
    const int64_t *d = map.buf, count = map.len / 8;
    int ok = 1;
    for (int64_t r = 0; ok && r < count; r++) ok = d[r] >= -1 && d[r] < limit;
    PyBuffer_Release(&map);
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "row map out of range");
        return NULL;
    }
    Py_RETURN_NONE;
}

/* check_blocks(ptr, idx, k4, n): kept blocks' ranges ordered and every block's plane below k4
 * (ptr int32 [n + 1], idx uint16). */
static PyObject *py_check_blocks(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer ptr, idx;
    long long k4, n;
    if (!PyArg_ParseTuple(args, "y*y*LL", &ptr, &idx, &k4, &n)) return NULL;
    const int32_t *p = ptr.buf;
    const uint16_t *ix = idx.buf;
    int ok = n >= 1 && k4 >= 1 && ptr.len >= (Py_ssize_t)(4 * (n + 1)) && p[0] == 0 &&
             idx.len >= (Py_ssize_t)(2 * (int64_t)p[n]);
    for (int64_t c = 0; ok && c < n; c++) {
        ok = p[c] <= p[c + 1];
        for (int64_t i = p[c]; ok && i < p[c + 1]; i++) ok = ix[i] < k4;
    }
    PyBuffer_Release(&ptr);
    PyBuffer_Release(&idx);
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "kept blocks out of range");
        return NULL;
    }
    Py_RETURN_NONE;
}

/* max_pool(x, out, (planes, h, w, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow), threads) -- x float32
 * [planes][h*w], out [planes][oh*ow] (planes: channels x images of a channel-major tensor). */
static PyObject *py_max_pool(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer x, out;
    pool_t t;
    long long v[13];
    int threads;
    if (!PyArg_ParseTuple(args, "y*w*(LLLLLLLLLLLLL)i", &x, &out, &v[0], &v[1], &v[2], &v[3],
                          &v[4], &v[5], &v[6], &v[7], &v[8], &v[9], &v[10], &v[11], &v[12], &threads))
        return NULL;
    t.planes = v[0], t.h = v[1], t.w = v[2], t.kh = v[3], t.kw = v[4], t.sh = v[5], t.sw = v[6];
    t.pt = v[7], t.pl = v[8], t.dh = v[9], t.dw = v[10], t.oh = v[11], t.ow = v[12];
    int ok = threads_ok(threads);
    for (int i = 0; ok && i < 13; i++)
        if (v[i] < (i == 7 || i == 8 ? 0 : 1)) {
            PyErr_SetString(PyExc_ValueError, "max_pool: sizes must be positive, pads >= 0");
            ok = 0;
        }
    ok = ok && check_len(&x, t.planes * t.h * t.w, 4, "x") && check_len(&out, t.planes * t.oh * t.ow, 4, "out");
    const int parts = ok ? parts_for(threads, t.planes) : 0;
    t.lines = ok ? malloc(sizeof(float) * (size_t)t.w * (size_t)parts) : NULL;
    if (ok && !t.lines) {
        PyErr_NoMemory();
        ok = 0;
    }
    if (ok) {
        t.x = x.buf;
        t.out = out.buf;
        Py_BEGIN_ALLOW_THREADS run_parts(pool_part, &t, parts);
        Py_END_ALLOW_THREADS
    }
    free(t.lines);
    PyBuffer_Release(&x);
    PyBuffer_Release(&out);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

/* gemm(a, table, ga, dense_of_or_None, (rows, m, n, k4), dense_or_None, ptr, idx, wv, owners,
 *      corr_or_None,
 *      gw, bias_or_None, residual_or_None, (relu, gelu), out_or_None, planes_or_None, row_of_or_None,
 *      (gamma, level, lowest, sq_max, offset, plane_rows), row_gamma_or_None, group,
 *      (residual_half, out_half), path, threads)
 *   a uint8 planes (every plane a tile reads in bounds); table int64 [k4]; ga float32 [rows
 *   rounded up to TILE_ROWS]; dense_of int64 [same] (-1: no output row); dense int32 [n][k4];
 *   sparse: ptr int32 [n / owners + 1], idx uint16, wv int32 [blocks][owners] (owners: the
 *   channels that keep the same blocks, 1, 4 or 16; see quad_tile); corr int32 [n]; gw, bias
 *   float32 [n]; residual, out float32 [n][m]; planes uint8 [ceil(n/4)][plane_rows][4] with
 *   row_of int64 [rows rounded up] (-1: none); row_gamma float32 [m]: a gamma per row (the
 *   planes' rows are the GEMM's rows) instead of the static gamma; group: channels per
 *   quantized vector. */
static PyObject *py_gemm(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer a, table, ga, ptr, idx, wv, gw;
    Py_buffer opt[9] = {{0}}; /* dense_of, dense, corr, bias, residual, out, planes, row_of, row_gamma */
    PyObject *obj[9];
    long long rows, m, n, k4, group, plane_rows;
    quant_out_t q = {0};
    const char *path_name;
    int relu, threads;
    int residual_half, out_half, gelu, owners;
    if (!PyArg_ParseTuple(args, "y*y*y*O(LLLL)Oy*y*y*iOy*OO(pp)OOO(fiiiiL)OL(pp)si", &a, &table, &ga,
                          &obj[0], &rows, &m, &n, &k4, &obj[1], &ptr, &idx, &wv, &owners, &obj[2], &gw, &obj[3],
                          &obj[4], &relu, &gelu, &obj[5], &obj[6], &obj[7], &q.gamma, &q.level,
                          &q.lowest, &q.sq_max, &q.offset, &plane_rows, &obj[8], &group,
                          &residual_half, &out_half, &path_name, &threads))
        return NULL;
    enum { DENSE_OF, WD, CORR, BIAS, RESIDUAL, OUT, PLANES, ROW_OF, ROW_GAMMA, OPTIONS };
    gemm_t *g = calloc(1, sizeof(gemm_t));
    int ok = g != NULL;
    if (!ok) PyErr_NoMemory();
    for (int i = 0; ok && i < OPTIONS; i++)
        if (obj[i] != Py_None)
            ok = PyObject_GetBuffer(obj[i], &opt[i],
                                    i == OUT || i == PLANES || i == ROW_GAMMA ? PyBUF_WRITABLE : PyBUF_SIMPLE) == 0;
    const int path = ok ? parse_path(path_name) : -1;
    ok = ok && path >= 0 && threads_ok(threads);
    if (opt[WD].obj) owners = 1;
    if (ok && (rows < 1 || m < 1 || n < 1 || k4 < 1 || k4 > 65536 || group < 4 || group > 64 ||
               (group & (group - 1)) || (!opt[OUT].obj && !opt[PLANES].obj) ||
               !opt[PLANES].obj != !opt[ROW_OF].obj || (owners != 1 && owners != 4 && owners != 16) ||
               (owners == 16 && n % 16))) {
        PyErr_SetString(PyExc_ValueError, "gemm: sizes must be positive, at most 65536 planes, "
                                          "groups of 4 to 64 channels (a power of two), an output, "
                                          "blocks owned by 1, 4 or 16 channels (16: whole groups)");
        ok = 0;
    }
    const int64_t tiled = (rows + TILE_ROWS - 1) / TILE_ROWS * TILE_ROWS;
    const int64_t units = (n + owners - 1) / owners; /* what ptr counts kept blocks of */
    ok = ok && check_len(&table, k4, 8, "table") && check_len(&ga, tiled, 4, "ga") &&
         check_len(&gw, n, 4, "gw") &&
         (!opt[OUT].obj || check_len(&opt[OUT], n * m, out_half ? 2 : 4, "out")) &&
         (!opt[DENSE_OF].obj || check_len(&opt[DENSE_OF], tiled, 8, "dense_of")) &&
         (!opt[CORR].obj || check_len(&opt[CORR], n, 4, "corr")) &&
         (!opt[BIAS].obj || check_len(&opt[BIAS], n, 4, "bias")) &&
         (!opt[RESIDUAL].obj || check_len(&opt[RESIDUAL], n * m, residual_half ? 2 : 4, "residual")) &&
         (!opt[PLANES].obj || check_len(&opt[PLANES], (n + 3) / 4 * plane_rows * 4, 1, "planes")) &&
         (!opt[ROW_OF].obj || check_len(&opt[ROW_OF], tiled, 8, "row_of")) &&
         (!opt[ROW_GAMMA].obj || (opt[PLANES].obj && !opt[DENSE_OF].obj && check_len(&opt[ROW_GAMMA], m, 4, "row_gamma"))) &&
         (opt[WD].obj ? check_len(&opt[WD], n * k4, 4, "dense") : check_len(&ptr, units + 1, 4, "ptr"));
    if (ok) { /* every plane a tile reads lies in the buffer (row maps and kept blocks are
               * checked once, when made: see check_rows and check_blocks) */
        const int64_t *t = table.buf;
        for (int64_t k = 0; ok && k < k4; k++) ok = t[k] >= 0 && t[k] + 4 * tiled <= (int64_t)a.len;
        ok = ok && (opt[DENSE_OF].obj || rows <= m);
        if (!ok) PyErr_SetString(PyExc_ValueError, "gemm: planes or rows out of range");
    }
    if (ok && !opt[WD].obj) {
        const int32_t *p = ptr.buf;
        ok = check_len(&idx, p[units], 2, "idx") && check_len(&wv, p[units], 4 * (size_t)owners, "wv");
    }
    if (ok) {
        g->group = group;
        g->acc = malloc(sizeof(int32_t) * TILE_ROWS * MAX_CHANNELS * (size_t)threads);
        g->fbuf_floats = TILE_ROWS * ((size_t)group + (opt[ROW_GAMMA].obj ? 2 * (size_t)(n + group) : 0));
        g->fbuf = malloc(sizeof(float) * g->fbuf_floats * (size_t)threads);
        if (!g->acc || !g->fbuf) {
            PyErr_NoMemory();
            ok = 0;
        }
    }
    if (ok) {
        g->a = a.buf;
        g->table = table.buf;
        g->ga = ga.buf;
        g->dense_of = opt[DENSE_OF].buf;
        g->rows = rows, g->m = m, g->n = n, g->k4 = k4, g->ldo = m;
        g->ahead = g->group * m;
        g->wd = opt[WD].buf;
        g->ptr = ptr.buf;
        g->idx = idx.buf;
        g->wv = wv.buf;
        g->owners = owners;
        g->corr = opt[CORR].buf;
        g->gw = gw.buf;
        g->bias = opt[BIAS].buf;
        g->residual = opt[RESIDUAL].buf;
        g->out = opt[OUT].buf;
        g->residual_half = residual_half;
        g->out_half = out_half;
        g->stream = g->out && (size_t)(n * m) * (out_half ? 2 : 4) > stream_above();
        g->relu = relu;
        g->gelu = gelu;
        g->path = path;
        g->amx = amx_fits(g);
        if (opt[PLANES].obj) {
            q.planes = opt[PLANES].buf;
            q.row_of = opt[ROW_OF].buf;
            q.rows = plane_rows;
            q.stream = (size_t)((n + 3) / 4 * plane_rows * 4) > stream_above();
            q.row_gamma = opt[ROW_GAMMA].buf;
            g->q = &q;
        }
        const int parts = balance(g, threads);
        Py_BEGIN_ALLOW_THREADS run_parts(gemm_part, g, parts);
        Py_END_ALLOW_THREADS
    }
    if (g) {
        free(g->acc);
        free(g->fbuf);
    }
    free(g);
    for (int i = 0; i < OPTIONS; i++)
        if (opt[i].obj) PyBuffer_Release(&opt[i]);
    Py_buffer *always[7] = {&a, &table, &ga, &ptr, &idx, &wv, &gw};
    for (int i = 0; i < 7; i++) PyBuffer_Release(always[i]);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

#ifdef SP_X86
/* The machine's multiply-accumulate peak for the benchmark, on registers only (written in
 * assembly so no compiler can hoist or spill anything), 12 independent accumulators:
 *   kind 0: vpmaddwd + vpaddd on ymm, the AVX2 path's instructions, 16 MACs;
 *   kind 1: vpdpbusd on ymm (AVX-VNNI, VEX), 32 MACs;
 *   kind 2: vpdpbusd on zmm (AVX-512 VNNI), 64 MACs;
 *   kind 3: tdpbsud (AMX-INT8) on four independent 16 x 16 tiles, 16 x 16 x 64 MACs each. */
static const int PEAK_MACS[4] = {12 * 16, 12 * 32, 12 * 64, 4 * 16 * 16 * 64};
static const int PEAK_PATH[4] = {PATH_AVX2, PATH_AVXVNNI, PATH_AVX512VNNI, PATH_AMX};

#define PAIR(t, s) "vpmaddwd %%ymm0, %%ymm1, %%ymm" #t "\n\tvpaddd %%ymm" #t ", %%ymm" #s ", %%ymm" #s "\n\t"
#define DP_Y(s) "%{vex%} vpdpbusd %%ymm0, %%ymm1, %%ymm" #s "\n\t"
#define DP_Z(s) "vpdpbusd %%zmm0, %%zmm1, %%zmm" #s "\n\t"
#define CLOBBER_Y "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", \
    "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15"

typedef struct {
    int64_t iterations;
    int kind;
} peak_t;

__attribute__((target("avx2"))) static void peak_pair(int64_t iterations) {
    __asm__ volatile("vpcmpeqd %%ymm0, %%ymm0, %%ymm0\n\tvpabsw %%ymm0, %%ymm1" ::: CLOBBER_Y);
    for (int64_t i = 0; i < iterations; i++) /* 6 pairs twice: 12 accumulators, ymm2..7 */
        __asm__ volatile(PAIR(8, 2) PAIR(9, 3) PAIR(10, 4) PAIR(11, 5) PAIR(12, 6) PAIR(13, 7)
                         PAIR(8, 2) PAIR(9, 3) PAIR(10, 4) PAIR(11, 5) PAIR(12, 6) PAIR(13, 7)::: CLOBBER_Y);
    __asm__ volatile("vzeroupper" ::: CLOBBER_Y);
}

__attribute__((target("avx2,avxvnni"))) static void peak_vnni_ymm(int64_t iterations) {
    __asm__ volatile("vpcmpeqd %%ymm0, %%ymm0, %%ymm0\n\tvpabsb %%ymm0, %%ymm1" ::: CLOBBER_Y);
    for (int64_t i = 0; i < iterations; i++)
        __asm__ volatile(DP_Y(2) DP_Y(3) DP_Y(4) DP_Y(5) DP_Y(6) DP_Y(7) DP_Y(8) DP_Y(9) DP_Y(10)
                         DP_Y(11) DP_Y(12) DP_Y(13)::: CLOBBER_Y);
    __asm__ volatile("vzeroupper" ::: CLOBBER_Y);
}

__attribute__((target("avx512f,avx512vnni"))) static void peak_vnni_zmm(int64_t iterations) {
    __asm__ volatile("vpternlogd $0xff, %%zmm0, %%zmm0, %%zmm0\n\tvpabsb %%zmm0, %%zmm1" ::: CLOBBER_Y);
    for (int64_t i = 0; i < iterations; i++)
        __asm__ volatile(DP_Z(2) DP_Z(3) DP_Z(4) DP_Z(5) DP_Z(6) DP_Z(7) DP_Z(8) DP_Z(9) DP_Z(10)
                         DP_Z(11) DP_Z(12) DP_Z(13)::: CLOBBER_Y);
    __asm__ volatile("vzeroupper" ::: CLOBBER_Y);
}

__attribute__((target("amx-tile,amx-int8"))) static void peak_amx(int64_t iterations) {
    _tile_loadconfig(AMX_CONFIG);
    _tile_zero(4); /* A and B hold zeros: the multiplier's time does not depend on the values */
    _tile_zero(5);
    for (int64_t i = 0; i < iterations; i++) {
        _tile_dpbsud(0, 4, 5);
        _tile_dpbsud(1, 4, 5);
        _tile_dpbsud(2, 4, 5);
        _tile_dpbsud(3, 4, 5);
    }
    _tile_release();
}

static void peak_part(void *ctx, int part, int parts) {
    (void)part;
    (void)parts;
    const peak_t *t = ctx;
    if (t->kind == 0) peak_pair(t->iterations);
    if (t->kind == 1) peak_vnni_ymm(t->iterations);
    if (t->kind == 2) peak_vnni_zmm(t->iterations);
    if (t->kind == 3) peak_amx(t->iterations);
}
#endif

/* peak(kind, iterations, threads) -> multiply-accumulates done (kinds above) */
static PyObject *py_peak(PyObject *self, PyObject *args) {
    (void)self;
    int kind, threads;
    long long iterations;
    if (!PyArg_ParseTuple(args, "iLi", &kind, &iterations, &threads)) return NULL;
    if (!threads_ok(threads)) return NULL;
#ifdef SP_X86
    if (kind >= 0 && kind < 4 && path_supported(PEAK_PATH[kind])) {
        peak_t t = {iterations, kind};
        Py_BEGIN_ALLOW_THREADS run_parts_fresh(peak_part, &t, threads);
        Py_END_ALLOW_THREADS
        return PyLong_FromLongLong(iterations * PEAK_MACS[kind] * threads);
    }
#endif
    PyErr_Format(PyExc_ValueError, "peak kind %d does not run on this CPU", kind);
    return NULL;
}

static PyMethodDef METHODS[] = {
    {"peak", py_peak, METH_VARARGS, "Register-only multiply-accumulate peak probe."},
    {"paths", py_paths, METH_NOARGS, "Kernel paths this CPU runs, best first."},
    {"quantize", py_quantize, METH_VARARGS, "VS-Quant a channel-major tensor into u8 planes."},
    {"pack_windows", py_pack_windows, METH_VARARGS, "A strided convolution's windows as planes."},
    {"gemm", py_gemm, METH_VARARGS, "u8 planes x packed 4-bit weights -> float32 [n][m]."},
    {"max_pool", py_max_pool, METH_VARARGS, "Max pooling of a channel-major tensor."},
    {"check_rows", py_check_rows, METH_VARARGS, "Check a row map's range."},
    {"layer_norm", py_layer_norm, METH_VARARGS, "LayerNormalization of a channel-major tensor."},
    {"attention", py_attention, METH_VARARGS, "int8 scaled dot-product attention."},
    {"check_blocks", py_check_blocks, METH_VARARGS, "Check a pruned weight's kept blocks."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {PyModuleDef_HEAD_INIT, "_kernel", NULL, -1, METHODS, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__kernel(void) {
    static int forked_handler;
    if (!forked_handler) forked_handler = pthread_atfork(NULL, NULL, pool_reset_after_fork) == 0;
    PyObject *module = PyModule_Create(&MODULE);
    if (module && (PyModule_AddIntConstant(module, "TILE_ROWS", TILE_ROWS) < 0 ||
                   PyModule_AddIntConstant(module, "MAX_PLANES", 65536) < 0))
        Py_CLEAR(module);
    return module;
}
