/* The GEMM tile kernels for one SIMD width, included by _kernel.c once per path (this file
 * undefines its parameters at the end) with:
 *   SIMD(name)  the path's function name        FN, INLINE  function attributes (target)
 *   VEC, LANES  register type, int32 lanes       V_LOAD, V_STORE, V_SET1
 *   V_UNPACKLO/HI(a, b)  interleave the int16 of two registers within each 128-bit lane
 *   V_MADD(s, a, b)      s + (a0 * b0 + a1 * b1) per int32 lane, from int16 pairs
 *
 * A register pair covers GROUP = 2 * LANES rows: two K columns of GROUP int16 rows unpack into
 * (lo, hi) registers of (x[k1], x[k2]) pairs; place_rows puts the rows in the columns so that lo
 * holds the group's first LANES rows and hi the rest, in order. */

#define GROUP (2 * LANES)
#define GROUPS (TILE_M / GROUP)

/* ch channels x one group of rows over pairs j0..j1 of a dense weight; ch is a constant after
 * inlining, so the accumulators stay in registers. */
INLINE void SIMD(dense_block)(const gemm_t *g, const int16_t *at, int64_t n, int ch, int64_t j0,
                              int64_t j1, int32_t *acc) {
    VEC lo[DENSE_CHANNELS], hi[DENSE_CHANNELS];
    for (int c = 0; c < ch; c++) {
        lo[c] = V_LOAD(acc + c * TILE_M);
        hi[c] = V_LOAD(acc + c * TILE_M + LANES);
    }
    const int32_t *w = g->dense + n * g->j;
    for (int64_t j = j0; j < j1; j++) {
        const VEC x1 = V_LOAD(at + 2 * j * TILE_M), x2 = V_LOAD(at + (2 * j + 1) * TILE_M);
        const VEC pl = V_UNPACKLO(x1, x2), ph = V_UNPACKHI(x1, x2);
        for (int c = 0; c < ch; c++) {
            const VEC b = V_SET1(w[c * g->j + j]);
            lo[c] = V_MADD(lo[c], pl, b);
            hi[c] = V_MADD(hi[c], ph, b);
        }
    }
    for (int c = 0; c < ch; c++) {
        V_STORE(acc + c * TILE_M, lo[c]);
        V_STORE(acc + c * TILE_M + LANES, hi[c]);
    }
}

/* Dense: K blocks outer, so a block of the tile's activations stays in L1 while every channel
 * of the tile passes over it. */
FN void SIMD(dense_tile)(const gemm_t *g, int64_t n0, int cn, int64_t m0, int32_t *acc) {
    const int16_t *at = act_tile(g, m0);
    const int rows = tile_rows(g, m0, GROUP);
    memset(acc, 0, sizeof(int32_t) * TILE_N * TILE_M);
    for (int64_t j0 = 0; j0 < g->j; j0 += KBLOCK / 2) {
        const int64_t j1 = j0 + KBLOCK / 2 < g->j ? j0 + KBLOCK / 2 : g->j;
        int c = 0;
        for (; c + DENSE_CHANNELS <= cn; c += DENSE_CHANNELS)
            for (int r = 0; r < rows; r += GROUP)
                SIMD(dense_block)(g, at + r, n0 + c, DENSE_CHANNELS, j0, j1, acc + c * TILE_M + r);
        for (; c < cn; c++)
            for (int r = 0; r < rows; r += GROUP)
                SIMD(dense_block)(g, at + r, n0 + c, 1, j0, j1, acc + c * TILE_M + r);
    }
}

/* One channel's entries [p, end) in one K block over ng groups of rows: each entry broadcasts
 * its two weights against the two K columns it names, so only kept weights are multiplied. */
INLINE void SIMD(sparse_block)(const gemm_t *g, const int16_t *at, int32_t p, int32_t end, int ng,
                               int32_t *acc) {
    VEC s[2 * GROUPS];
    for (int i = 0; i < 2 * ng; i++) s[i] = V_LOAD(acc + LANES * i);
    for (; p < end; p++) {
        const uint32_t cols = g->ent[2 * p];
        const int16_t *x1 = at + (int64_t)(cols & 0xffff) * TILE_M;
        const int16_t *x2 = at + (int64_t)(cols >> 16) * TILE_M;
        const VEC b = V_SET1((int32_t)g->ent[2 * p + 1]);
        for (int i = 0; i < ng; i++) {
            const VEC a1 = V_LOAD(x1 + GROUP * i), a2 = V_LOAD(x2 + GROUP * i);
            s[2 * i] = V_MADD(s[2 * i], V_UNPACKLO(a1, a2), b);
            s[2 * i + 1] = V_MADD(s[2 * i + 1], V_UNPACKHI(a1, a2), b);
        }
    }
    for (int i = 0; i < 2 * ng; i++) V_STORE(acc + LANES * i, s[i]);
}

/* Sparse: SPARSE_GROUP channels take turns on each K block, so the block and their accumulators
 * stay in L1; a full tile runs all its row groups per entry, a short one group at a time. */
FN void SIMD(sparse_tile)(const gemm_t *g, int64_t n0, int cn, int64_t m0, int32_t *acc) {
    const int16_t *at = act_tile(g, m0);
    const int rows = tile_rows(g, m0, GROUP);
    memset(acc, 0, sizeof(int32_t) * TILE_N * TILE_M);
    for (int c0 = 0; c0 < cn; c0 += SPARSE_GROUP)
        for (int64_t b = 0; b < g->nb; b++)
            for (int c = c0; c < cn && c < c0 + SPARSE_GROUP; c++) {
                const int32_t *p = g->ptr + run_of(g, n0 + c, b);
                if (rows == TILE_M) {
                    SIMD(sparse_block)(g, at, p[0], p[1], GROUPS, acc + c * TILE_M);
                    continue;
                }
                for (int r = 0; r < rows; r += GROUP)
                    SIMD(sparse_block)(g, at + r, p[0], p[1], 1, acc + c * TILE_M + r);
            }
}

#undef GROUP
#undef GROUPS
#undef SIMD
#undef FN
#undef INLINE
#undef VEC
#undef LANES
#undef V_LOAD
#undef V_STORE
#undef V_SET1
#undef V_UNPACKLO
#undef V_UNPACKHI
#undef V_MADD
