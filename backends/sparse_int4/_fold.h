/* VS-Quant's per-vector arithmetic on LANES rows, shared by the quantize pass and the GEMM
 * epilogue (included by _quantize_simd.h and _gemm_simd.h with their SIMD, INLINE, LANES, and
 * VF / VI: float and int32 vectors of LANES). Every operation is one IEEE float32 operation in
 * the order of vsquant.quantize_activations, so every path rounds alike. */

INLINE VF SIMD(select)(VI mask, VF a, VF b) {
    return (VF)((mask & (VI)a) | (~mask & (VI)b));
}

/* The x86 max and min instructions, lane by lane: max(a, b) = a > b ? a : b, min(a, b) =
 * a < b ? a : b (b where either is NaN); one instruction where the flavour names it in MAX_PS and
 * MIN_PS. A clamp's select(v >= lo, v, lo) is max(v, lo) and select(v > hi, hi, v) min(hi, v). */
INLINE VF SIMD(max)(VF a, VF b) {
#ifdef MAX_PS
    return (VF)MAX_PS(a, b);
#else
    return SIMD(select)(a > b, a, b);
#endif
}

INLINE VF SIMD(min)(VF a, VF b) {
#ifdef MIN_PS
    return (VF)MIN_PS(a, b);
#else
    return SIMD(select)(a < b, a, b);
#endif
}

/* rint, half to even: one instruction where the flavour names it in ROUND_PS, else the same for
 * |q| < 2^22 by adding and taking away 1.5 * 2^23; every caller clamps what lies beyond to a
 * bound far below that (a 4-bit level, a scale, 127, or exp's domain), so both give its bits. */
INLINE VF SIMD(round_even)(VF q) {
#ifdef ROUND_PS
    return (VF)ROUND_PS(q);
#else
    return (q + ROUNDER) - ROUNDER;
#endif
}

/* A vector's integer scale: clamp(rint(s / gamma), 1, sq_max), 1 where gamma is 0 (not live). */
INLINE VF SIMD(vector_sq)(VF s, VF gamma, VI live, float sq_max) {
    const VF one = (VF){0} + 1.0f, top = (VF){0} + sq_max;
    VF sq = SIMD(round_even)(s / gamma);
    sq = SIMD(min)(top, SIMD(max)(sq, one));
    return SIMD(select)(live, sq, one);
}

/* One channel's folded bytes q * sq + offset, q = clamp(rint(x * inverse), lowest, level) with
 * inverse = 1 / step (0 where not live), in the low byte of each lane. */
INLINE VI SIMD(fold_values)(VF x, VF inverse, VF sq, VI live, float lowest, float level, int offset) {
    const VF low = (VF){0} + lowest, high = (VF){0} + level;
    VF q = SIMD(round_even)(x * inverse);
    q = SIMD(min)(high, SIMD(max)(q, low)); /* NaN -> lowest */
    q = SIMD(select)(live, q, (VF){0}); /* a zero group's inverse is inf or NaN: q 0 */
    return (__builtin_convertvector(q * sq, VI) + offset) & 0xff;
}

/* fold_values for x >= 0 (a ReLU's output: no NaN, nothing below 0) and a gamma above 0 (every
 * lane live): the same bytes with the clamps that cannot bite left out. */
INLINE VI SIMD(fold_relu)(VF x, VF inverse, VF sq, float level) {
    const VF high = (VF){0} + level;
    VF q = SIMD(round_even)(x * inverse);
    q = SIMD(min)(high, q);
    return __builtin_convertvector(q * sq, VI);
}
