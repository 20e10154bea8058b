/* One (image, head) of int8 attention for one kernel path, included at the end of _gemm_simd.h
 * (its SIMD, FN, INLINE, LANES, FOLD; the GEMM template undefines them after). The elementwise passes run on LANES queries at a time (queries are the
 * rows of both GEMMs, contiguous in the channel-major inputs), in attention.py's float32 order. */

/* LANES rows from p (count valid, the rest 0), as float32. */
INLINE SIMD(fv) SIMD(rows_at)(const float *p, int count) {
    SIMD(fv) v = {0};
    if (count == LANES) {
        memcpy(&v, p, sizeof v);
        return v;
    }
    float part[LANES] = {0};
    memcpy(part, p, sizeof(float) * (size_t)count);
    memcpy(&v, part, sizeof v);
    return v;
}

INLINE SIMD(fv) SIMD(clamp)(SIMD(fv) v, float lo, float hi) {
    return FOLD(min)((SIMD(fv)){0} + hi, FOLD(max)(v, (SIMD(fv)){0} + lo));
}

/* e^x for x <= 0, attention.exp. */
INLINE SIMD(fv) SIMD(exp_le0)(SIMD(fv) x) {
    static const float P[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                               4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};
    const SIMD(fv) low = (SIMD(fv)){0} - 87.0f;
    x = FOLD(max)(x, low);
    const SIMD(fv) k = FOLD(round_even)(x * 1.44269504088896341f);
    const SIMD(fv) r = (x - k * 0.693359375f) - k * -2.12194440e-4f;
    SIMD(fv) p = (SIMD(fv)){0} + P[0];
    for (int i = 1; i < 6; i++) p = p * r + P[i];
    const SIMD(fv) e = (p * (r * r) + r) + 1.0f;
    const SIMD(iv) bits = (__builtin_convertvector(k, SIMD(iv)) + 127) << 23;
    return e * (SIMD(fv))bits;
}

typedef int8_t SIMD(bv) __attribute__((vector_size(LANES)));

/* attention.quantize_rows's values: clamp(rint(x * inverse), -127, 127). */
INLINE SIMD(iv) SIMD(int8_values)(SIMD(fv) x, SIMD(fv) inverse) {
    return __builtin_convertvector(SIMD(clamp)(FOLD(round_even)(x * inverse), -127.0f, 127.0f), SIMD(iv));
}

/* Per-row 8-bit scales of a [len][stride] block over its `count` rows: scale = max |x| / 127. */
INLINE void SIMD(row_scales)(const float *x, int64_t count, int64_t len, int64_t stride,
                             float *scale, float *inverse) {
    for (int64_t i = 0; i < count; i += LANES) {
        const int n = count - i < LANES ? (int)(count - i) : LANES;
        SIMD(fv) top = {0};
        for (int64_t l = 0; l < len; l++) {
            const SIMD(fv) a = (SIMD(fv))((SIMD(iv))SIMD(rows_at)(x + l * stride + i, n) & 0x7fffffff);
            top = FOLD(max)(a, top);
        }
        const SIMD(fv) s = top / 127.0f;
        const SIMD(fv) inv = (SIMD(fv))((SIMD(iv))(1.0f / s) & (s > 0.0f)); /* 0 for all-zero */
        memcpy(scale + i, &s, sizeof(float) * (size_t)n);
        memcpy(inverse + i, &inv, sizeof(float) * (size_t)n);
    }
}

FN void SIMD(attention_pair)(const attn_t *t, const attn_work_t *w, int64_t b, int64_t h) {
    const int64_t seq = t->seq, dim = t->dim, m = t->m;
    const int64_t tiled = (seq + TILE_ROWS - 1) / TILE_ROWS * TILE_ROWS, c4 = dim / 4, j4 = (seq + 3) / 4;
    const float *q = t->q + h * dim * m + b * seq, *k = t->k + h * dim * m + b * seq;
    const float *v = t->v + h * dim * m + b * seq;
    /* Q per query: u8 planes (+128), the row gammas */
    memset(w->ga1, 0, sizeof(float) * (size_t)tiled);
    SIMD(row_scales)(q, seq, dim, m, w->ga1, w->inverse);
    for (int64_t d4 = 0; d4 < c4; d4++)
        for (int64_t i = 0; i < tiled; i += LANES) {
            const int n = seq - i < LANES ? (int)(seq - i > 0 ? seq - i : 0) : LANES;
            SIMD(iv) bytes = {0};
            if (n > 0) {
                const SIMD(fv) inv = SIMD(rows_at)(w->inverse + i, n);
                for (int l = 0; l < 4; l++) {
                    const SIMD(fv) x = SIMD(rows_at)(q + (4 * d4 + l) * m + i, n);
                    bytes |= ((SIMD(int8_values)(x, inv) + 128) & 0xff) << (8 * l);
                }
            }
            memcpy(w->qplanes + (d4 * tiled + i) * 4, &bytes, sizeof bytes);
        }
    /* K per key: dense weights [seq][c4] (4 head dimensions a word), their correction and
     * channel gammas; LANES keys a step, their words to the key rows through `words` */
    SIMD(row_scales)(k, seq, dim, m, w->gw1, w->inverse);
    for (int64_t j = 0; j < seq; j += LANES) {
        const int n = seq - j < LANES ? (int)(seq - j) : LANES;
        const SIMD(fv) inv = SIMD(rows_at)(w->inverse + j, n);
        SIMD(iv) total = {0};
        for (int64_t d4 = 0; d4 < c4; d4++) {
            SIMD(iv) word = {0};
            for (int l = 0; l < 4; l++) {
                const SIMD(iv) value = SIMD(int8_values)(SIMD(rows_at)(k + (4 * d4 + l) * m + j, n), inv);
                total = total + value;
                word |= (value & 0xff) << (8 * l);
            }
            memcpy(w->words + d4 * LANES, &word, sizeof word);
        }
        for (int l = 0; l < n; l++) {
            for (int64_t d4 = 0; d4 < c4; d4++) w->wk[(j + l) * c4 + d4] = w->words[d4 * LANES + l];
            w->corr[j + l] = 128 * total[l];
            w->gw1[j + l] = w->gw1[j + l] * t->scale;
            w->bias[j + l] = t->mask ? t->mask[b * seq + j + l] : 0.0f;
        }
    }
    gemm_t g1 = {0};
    g1.a = w->qplanes, g1.table = w->table1, g1.ga = w->ga1, g1.rows = seq, g1.m = seq, g1.ldo = seq;
    g1.n = seq, g1.k4 = c4, g1.wd = w->wk, g1.corr = w->corr, g1.gw = w->gw1;
    g1.bias = t->mask ? w->bias : NULL, g1.out = w->scores, g1.group = ATTN_GROUP, g1.path = t->path;
    for (int64_t r0 = 0; r0 < seq; r0 += TILE_ROWS) SIMD(dense_tile)(&g1, 0, seq, r0, w->acc, w->fbuf);
    /* softmax over the keys of each query: e = exp(s - max) as u8 planes against the max, and
     * the row scale 1 / (255 * sum e) */
    memset(w->pplanes, 0, (size_t)(j4 * tiled * 4));
    for (int64_t i = 0; i < tiled; i += LANES) {
        const int n = seq - i < LANES ? (int)(seq - i > 0 ? seq - i : 0) : LANES;
        if (n == 0) {
            memset(w->ga2 + i, 0, sizeof(float) * LANES);
            continue;
        }
        SIMD(fv) top = (SIMD(fv)){0} - __builtin_inff();
        for (int64_t j = 0; j < seq; j++) {
            const SIMD(fv) s = SIMD(rows_at)(w->scores + j * seq + i, n);
            top = FOLD(max)(s, top);
        }
        SIMD(fv) total = {0};
        for (int64_t j4i = 0; j4i < j4; j4i++) {
            SIMD(iv) bytes = {0};
            for (int l = 0; l < 4 && 4 * j4i + l < seq; l++) {
                const SIMD(fv) e = SIMD(exp_le0)(SIMD(rows_at)(w->scores + (4 * j4i + l) * seq + i, n) - top);
                total = total + e;
                const SIMD(fv) p = FOLD(round_even)(e * 255.0f);
                bytes |= __builtin_convertvector(p, SIMD(iv)) << (8 * l);
            }
            memcpy(w->pplanes + (j4i * tiled + i) * 4, &bytes, 4 * (size_t)n);
        }
        const SIMD(fv) scale = 1.0f / (255.0f * total);
        SIMD(fv) kept = {0};
        memcpy(&kept, &scale, sizeof(float) * (size_t)n);
        memcpy(w->ga2 + i, &kept, sizeof kept);
    }
    /* V per head dimension: dense weights [dim][j4], a byte per key, LANES keys a step */
    memset(w->wv, 0, sizeof(int32_t) * (size_t)(dim * j4));
    for (int64_t d = 0; d < dim; d++) {
        const float *x = v + d * m;
        SIMD(fv) top = {0};
        for (int64_t j = 0; j < seq; j += LANES) {
            const SIMD(fv) a = (SIMD(fv))((SIMD(iv))SIMD(rows_at)(x + j, seq - j < LANES ? (int)(seq - j) : LANES) & 0x7fffffff);
            top = FOLD(max)(a, top);
        }
        float most = 0.0f; /* NaN never wins a > comparison: any order gives the same max */
        for (int l = 0; l < LANES; l++) most = top[l] > most ? top[l] : most;
        w->gw2[d] = most / 127.0f;
        const SIMD(fv) inv = (SIMD(fv)){0} + (w->gw2[d] > 0.0f ? 1.0f / w->gw2[d] : 0.0f);
        int8_t *row = (int8_t *)(w->wv + d * j4);
        for (int64_t j = 0; j < seq; j += LANES) {
            const int n = seq - j < LANES ? (int)(seq - j) : LANES;
            const SIMD(bv) bytes = __builtin_convertvector(SIMD(int8_values)(SIMD(rows_at)(x + j, n), inv), SIMD(bv));
            memcpy(row + j, &bytes, (size_t)n);
        }
    }
    gemm_t g2 = {0};
    g2.a = w->pplanes, g2.table = w->table2, g2.ga = w->ga2, g2.rows = seq, g2.m = seq, g2.ldo = m;
    g2.n = dim, g2.k4 = j4, g2.wd = w->wv, g2.gw = w->gw2, g2.out = t->out + h * dim * m + b * seq;
    g2.group = ATTN_GROUP, g2.path = t->path;
    for (int64_t r0 = 0; r0 < seq; r0 += TILE_ROWS) SIMD(dense_tile)(&g2, 0, dim, r0, w->acc, w->fbuf);
}
