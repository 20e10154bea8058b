/* The GEMM tiles of the "amx" path, included by _kernel.c after the avx512vnni path, whose
 * epilogue, emit and row_fold they share: AMX's tile multiplier (TDPBSUD: s8 weights x u8
 * activations, exact in int32) computes 16 channels x 16 rows over 16 planes in one instruction.
 *
 * A: the weights of 16 channels on a run of up to 16 planes, a channel per tile row (dense:
 * straight from [n][k4]; groups of 16: the runs pack() lays out as [16 channels][run]). B: 16
 * planes' row vectors of 16 rows (64 bytes each): loaded in place when the run's planes are
 * evenly spaced (one tap of a dense convolution), else gathered side by side (a pruned group's
 * planes). C: four 16 x 16 int32 tiles, AMX_ROWS rows of the 16 channels, stored into acc in the
 * layout the epilogue reads. A short run's weights are zero past its end, so whatever the
 * gather buffer holds there adds nothing. */

#define AMX_FN __attribute__((target("avx512f,avx512bw,avx512vnni,f16c,popcnt,amx-tile,amx-int8"))) static
#define AMX_ROWS 64 /* rows of a pass: four C tiles */
#define AMX_RUN 16  /* planes of a run: a tile's 64 bytes of K */

/* Palette 1, eight tiles of 16 rows x 64 bytes (C 0-3, A 4, B 5-7). Constant data: the
 * compiler cannot drop stores to it, as it may for a buffer only LDTILECFG reads. */
static const uint8_t AMX_CONFIG[64] __attribute__((aligned(64))) = {
    [0] = 1,
    [16] = 64, [18] = 64, [20] = 64, [22] = 64, [24] = 64, [26] = 64, [28] = 64, [30] = 64,
    [48] = 16, [49] = 16, [50] = 16, [51] = 16, [52] = 16, [53] = 16, [54] = 16, [55] = 16,
};

typedef struct {
    uint8_t b[2][AMX_RUN][4 * AMX_ROWS] __attribute__((aligned(64))); /* gathered planes' rows */
    int32_t a[16][AMX_RUN] __attribute__((aligned(64)));              /* a short run's weights */
} amx_scratch_t;

/* Where a run's B tiles come from: its planes in place when evenly spaced, else gathered side by
 * side into b (its rows past a short run keep finite bytes: its weights there are 0). */
typedef struct {
    const uint8_t *b;
    int64_t stride;
} amx_b_t;

AMX_FN amx_b_t amx_gather(const uint8_t *rows, const int64_t *offset, int width, uint8_t *into) {
    const int64_t spacing = offset[1] - offset[0];
    int even = width == AMX_RUN;
    for (int j = 2; even && j < AMX_RUN; j++) even = offset[j] - offset[j - 1] == spacing;
    if (even) return (amx_b_t){rows + offset[0], spacing};
    for (int j = 0; j < width; j++) {
        const uint8_t *from = rows + offset[j];
        for (int i = 0; i < 4; i++)
            _mm512_store_si512(into + 4 * AMX_ROWS * j + 64 * i, _mm512_loadu_si512(from + 64 * i));
    }
    return (amx_b_t){into, 4 * AMX_ROWS};
}

/* C0..C3 += a run's weights (16 channels x width planes, `apart` int32 from channel to channel)
 * times its planes' AMX_ROWS rows. */
AMX_FN void amx_multiply(amx_b_t b, int width, const int32_t *w, int64_t apart, amx_scratch_t *s) {
    if (width < AMX_RUN) {
        const __mmask16 kept = (__mmask16)((1u << width) - 1);
        for (int c = 0; c < 16; c++)
            _mm512_store_si512(s->a[c], _mm512_maskz_loadu_epi32(kept, w + c * apart));
        w = &s->a[0][0];
        apart = AMX_RUN;
    }
    _tile_loadd(4, w, 4 * apart);
    _tile_loadd(5, b.b, b.stride);
    _tile_dpbsud(0, 4, 5);
    _tile_loadd(6, b.b + 64, b.stride);
    _tile_dpbsud(1, 4, 6);
    _tile_loadd(7, b.b + 128, b.stride);
    _tile_dpbsud(2, 4, 7);
    _tile_loadd(5, b.b + 192, b.stride);
    _tile_dpbsud(3, 4, 5);
}

/* The four C tiles into acc (channel c's rows h.. at acc + c * ROWS + h), then zeroed. */
AMX_FN void amx_store(int32_t *acc, int64_t h) {
    _tile_stored(0, acc + h, 4 * TILE_ROWS);
    _tile_stored(1, acc + h + 16, 4 * TILE_ROWS);
    _tile_stored(2, acc + h + 32, 4 * TILE_ROWS);
    _tile_stored(3, acc + h + 48, 4 * TILE_ROWS);
}

AMX_FN void amx_zero(void) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
}

/* Channels n0..n1 (whole groups of 16) of a dense weight or of a weight pruned by groups of 16,
 * over the tile at r0: 16 channels at a time, AMX_ROWS rows a pass, runs of 16 planes. */
AMX_FN void amx_tile(const gemm_t *g, int64_t n0, int64_t n1, int64_t r0, int32_t *acc, float *f) {
    _tile_loadconfig(AMX_CONFIG);
    amx_scratch_t s;
    memset(s.b, 0, sizeof s.b); /* finite bytes past a short run (its weights there are 0) */
    const int64_t *table = g->table;
    const int64_t live = live_rows_vnni(g, r0);
    for (int64_t n = n0; n < n1; n += 16) {
        const int64_t begin = g->wd ? 0 : g->ptr[n / 16], end = g->wd ? g->k4 : g->ptr[n / 16 + 1];
        for (int64_t h = 0; h < live; h += AMX_ROWS) {
            const uint8_t *rows = g->a + 4 * (r0 + h);
            amx_zero();
            /* each run gathered while the previous one multiplies: a tile load waits for the
             * stores it reads to leave the store buffer */
            amx_b_t next = {0};
            int next_width = 0;
            for (int64_t r = begin, i = 0; r < end + AMX_RUN; r += AMX_RUN, i++) {
                const amx_b_t b = next;
                const int width = next_width;
                if (r < end) {
                    next_width = end - r < AMX_RUN ? (int)(end - r) : AMX_RUN;
                    int64_t offset[AMX_RUN];
                    for (int j = 0; j < next_width; j++) offset[j] = table[g->wd ? r + j : g->idx[r + j]];
                    for (int j = next_width; j < AMX_RUN; j++) offset[j] = offset[0];
                    next = amx_gather(rows, offset, next_width, &s.b[i & 1][0][0]);
                }
                if (r == begin) continue;
                const int64_t run = r - AMX_RUN;
                if (g->wd)
                    amx_multiply(b, width, g->wd + n * g->k4 + run, g->k4, &s);
                else
                    amx_multiply(b, width, g->wv + 16 * run, width, &s);
            }
            amx_store(acc, h);
        }
        close_channels_vnni(g, acc, n, 16, n1, r0, live, f);
    }
    if (g->q && g->q->row_gamma) row_fold_vnni(g, f, r0);
    _tile_release();
}

#undef AMX_FN
