"""Per-vector scaled 4-bit weights and activations with two-level scales: VS-Quant (Dai et al.,
MLSys 2021).

One scale per tensor or per channel lets a single outlier coarsen the 4-bit grid of thousands of
values; VS-Quant gives every short vector (16, 32 or 64 values along the reduction dimension K) its
own scale. To keep the dot product in integers the per-vector scale is itself a small unsigned
integer ``sq`` times one float ``gamma`` per weight output channel or per activation row:

    value ≈ gamma · sq · q,   q in -7..7 (or 0..15 for unsigned activations),  sq in 1..15

so a dot product of two vectors is (integer dot product of the q) · (sq_a · sq_w), summed over the
vectors in integers, times gamma_a · gamma_w once per output. ``reference_matmul`` is that
arithmetic, bit for bit what the backend's kernel must produce.

Decisions:
- Values are symmetric -7..7, not -8..7: the clipping scalar maps to ±7 on both sides, zero and
  negation stay exact, and |q_a · q_w| <= 49 leaves more headroom in the integer accumulator.
- The largest vector scale of a channel (or row) maps to sq = 15 (2^scale_bits - 1); the others
  round to the nearest sq, at least 1 (an all-zero vector gets 1; its values are 0 anyway).
- Ragged K: the last vector is short (K mod V values) and its clipping scalar is computed from
  those values only. Arrays are not padded: q is [K, N]; sq has ceil(K / V) vectors. A kernel may
  zero-pad the short vector, since zeros add nothing to an integer dot product.
- Rounding is half to even everywhere (np.rint; C's nearbyintf / the AVX-512 default).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backends.sparse_int4.octav import octav_clip_rows
from harness.errors import UserError

VECTOR_SIZES = (16, 32, 64)
CLIPS = ("max", "octav")
SIGNED_LEVEL = 7  # signed 4-bit values -7..7
UNSIGNED_LEVEL = 15  # unsigned 4-bit values 0..15, for non-negative (post-ReLU) activations
VALUE_BITS = 4
SCALE_BITS = 4  # sq in 1..15
SCALE_BITS_RANGE = (2, 8)  # sq is stored as uint8
GAMMA_BITS = 32  # gamma is float32
OCTAV_WEIGHT_ITERATIONS = 30  # offline: run to convergence
OCTAV_RUNTIME_ITERATIONS = 8  # activations: 16-value vectors converge in about 5
INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class QuantizedWeight:
    """A weight W [K, N] as gamma[n] · sq[v, n] · q[k, n], v = k // vector_size."""

    q: np.ndarray  # int8 [K, N], values -7..7
    sq: np.ndarray  # uint8 [ceil(K / V), N], per-vector integer scales 1..2^scale_bits - 1
    gamma: np.ndarray  # float32 [N], per-output-channel float scales
    vector_size: int
    k: int
    scale_bits: int = SCALE_BITS

    @property
    def n(self) -> int:
        return self.q.shape[1]

    def dequantize(self) -> np.ndarray:
        """float32 [K, N]: (gamma · sq) · q, each product rounded to float32."""
        step = self.gamma[None, :] * self.sq.astype(np.float32)
        return _per_vector(step, self.vector_size, self.k, axis=0) * self.q.astype(np.float32)

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per weight: 4-bit values, one scale_bits-wide sq per vector and one
        float32 gamma per output channel, over K · N weights (shape fields not counted).
        V = 16, 4-bit sq: 4 + 4/16 + 32/K = 4.25 + 32/K when V divides K."""
        bits = self.q.size * VALUE_BITS + self.sq.size * self.scale_bits + self.n * GAMMA_BITS
        return bits / self.q.size


@dataclass(frozen=True)
class QuantizedActivation:
    """Activations X [M, K] as gamma[m] · sq[m, v] · q[m, k], v = k // vector_size."""

    q: np.ndarray  # int8 [M, K], values -7..7 (signed) or 0..15 (unsigned)
    sq: np.ndarray  # uint8 [M, ceil(K / V)]
    gamma: np.ndarray  # float32 [M], per-row float scales
    vector_size: int
    signed: bool = True
    scale_bits: int = SCALE_BITS

    @property
    def k(self) -> int:
        return self.q.shape[1]

    def dequantize(self) -> np.ndarray:
        """float32 [M, K]: (gamma · sq) · q, each product rounded to float32."""
        step = self.gamma[:, None] * self.sq.astype(np.float32)
        return _per_vector(step, self.vector_size, self.k, axis=1) * self.q.astype(np.float32)


def quantize_weight(
    w: np.ndarray, vector_size: int = 16, clip: str = "max", *, scale_bits: int = SCALE_BITS
) -> QuantizedWeight:
    """Quantize a MatMul weight W [K, N] (y = x @ W, read as float32) offline: vectors along
    K, gamma per output channel, the same float32 steps as ``quantize_activations``.

    ``clip`` picks each vector's clipping scalar: "max" (max |w|, nothing clipped) or "octav"
    (the MSE-optimal scalar for the -7..7 grid, which clips the rare large weights)."""
    data = _checked_matrix(w, "weight")
    _check_options(vector_size, clip, scale_bits)
    q, sq, gamma = _quantize_rows(
        data.T, vector_size, clip, SIGNED_LEVEL, scale_bits, OCTAV_WEIGHT_ITERATIONS
    )
    return QuantizedWeight(
        np.ascontiguousarray(q.T),
        np.ascontiguousarray(sq.T),
        gamma,
        vector_size,
        data.shape[0],
        scale_bits,
    )


def quantize_activations(
    x: np.ndarray,
    vector_size: int = 16,
    clip: str = "max",
    signed: bool = True,
    *,
    scale_bits: int = SCALE_BITS,
) -> QuantizedActivation:
    """Quantize activations X [M, K] at run time: vectors along K, gamma per row.

    ``signed=False`` uses 0..15 for non-negative inputs (post-ReLU), one more bit of resolution.
    With clip="max" every step is a float32 operation in this order, so a kernel can repeat it
    exactly: c = max |x| per vector; s = c / L (L = 7, or 15 unsigned); gamma = max_v s / sqmax;
    sq = clip(rint(s / gamma), 1, sqmax); step = gamma · sq; q = clip(rint(x / step), -L, L)
    (0..L unsigned). An all-zero row has gamma = 0, sq = 1, q = 0. clip="octav" computes c in
    float64 by the fixed point (at most 8 steps) before that chain."""
    data = _checked_matrix(x, "activation")
    _check_options(vector_size, clip, scale_bits)
    if not signed and (data < 0).any():
        raise UserError("unsigned activations must be non-negative (post-ReLU); use signed=True")
    level = SIGNED_LEVEL if signed else UNSIGNED_LEVEL
    q, sq, gamma = _quantize_rows(
        data, vector_size, clip, level, scale_bits, OCTAV_RUNTIME_ITERATIONS, signed
    )
    return QuantizedActivation(q, sq, gamma, vector_size, signed, scale_bits)


def activation_clip_scalars(
    x: np.ndarray, vector_size: int = 16, signed: bool = True
) -> np.ndarray:
    """float32 [M, ceil(K / V)]: the run-time Octav clipping scalar of every activation vector,
    the ones ``quantize_activations(clip="octav")`` uses (a kernel takes them from here)."""
    data = _checked_matrix(x, "activation")
    level = SIGNED_LEVEL if signed else UNSIGNED_LEVEL
    return _clip_scalars(data, vector_size, "octav", level, OCTAV_RUNTIME_ITERATIONS, signed)


def integer_accumulators(a: QuantizedActivation, w: QuantizedWeight) -> np.ndarray:
    """int32 [M, N]: for each output, the sum over vectors v of
    (sum of q_a · q_w over the vector) · sq_a[m, v] · sq_w[v, n], as exact integers.

    No overflow: every term q_a · q_w · sq_a · sq_w is at most L_a · 7 · sqmax_a · sqmax_w in
    magnitude (15 · 7 · 15 · 15 = 23,625 at the defaults with unsigned activations, 11,025
    signed), so |acc| <= K · 23,625, which is 96.8 M (4.5% of the int32 range) for K = 4096 and
    stays in int32 up to K = 90,899; longer K (or wider scales) is refused.

    Computed as one float64 GEMM of q_a · sq_a and q_w · sq_w: every product and partial sum is
    an integer below 2^31 < 2^53, hence exact in float64 in any summation order, so this equals
    the int32 per-vector accumulation of the kernel, at BLAS speed.
    """
    _check_pair(a, w)
    a_scaled = a.q * _per_vector(a.sq.astype(np.float64), a.vector_size, a.k, axis=1)
    w_scaled = w.q * _per_vector(w.sq.astype(np.float64), w.vector_size, w.k, axis=0)
    return (a_scaled @ w_scaled).astype(np.int32)


def reference_matmul(a: QuantizedActivation, w: QuantizedWeight) -> np.ndarray:
    """float32 [M, N]: the reference result the kernel must match bit for bit.

    out[m, n] = float32(acc[m, n]) * (gamma_a[m] * gamma_w[n]), all in IEEE float32 with
    round-to-nearest-even: the int32 accumulator converted to float32 (one rounding), the two
    gammas multiplied in float32 (one rounding), then one float32 multiply. No FMA, no other
    order (in C: ``(float)acc * (ga[m] * gw[n])`` without -ffast-math).
    """
    acc = integer_accumulators(a, w)
    scale = a.gamma[:, None] * w.gamma[None, :]  # float32 * float32 -> float32
    return acc.astype(np.float32) * scale


def _quantize_rows(
    t: np.ndarray,
    vector_size: int,
    clip: str,
    level: int,
    scale_bits: int,
    iterations: int,
    signed: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two-level quantization of float32 [R, K] with vectors along K and gamma per row:
    (q int8 [R, K], sq uint8 [R, ceil(K / V)], gamma float32 [R])."""
    sq_max = 2**scale_bits - 1
    c = _clip_scalars(t, vector_size, clip, level, iterations, signed)
    s = c / np.float32(level)  # the float per-vector step
    gamma = s.max(axis=1) / np.float32(sq_max)
    zero_row = gamma == 0  # an all-zero row: gamma 0, sq 1, q 0
    ratio = np.divide(s, gamma[:, None], out=np.ones_like(s), where=~zero_row[:, None])
    sq = np.clip(np.rint(ratio), 1, sq_max)
    step = _per_vector(gamma[:, None] * sq, vector_size, t.shape[1], axis=1)
    scaled = np.divide(t, step, out=np.zeros_like(t), where=step > 0)
    q = np.clip(np.rint(scaled), -level if signed else 0, level)
    return q.astype(np.int8), sq.astype(np.uint8), gamma


def _clip_scalars(
    t: np.ndarray, vector_size: int, clip: str, level: int, iterations: int, signed: bool
) -> np.ndarray:
    """float32 [R, ceil(K / V)]: each vector's clipping scalar; a short last vector uses only
    its own values (zero padding would pull Octav's statistics towards 0)."""
    rows, k = t.shape
    full = k // vector_size
    if clip == "max":
        padded = np.zeros((rows, -(-k // vector_size) * vector_size), np.float32)
        padded[:, :k] = np.abs(t)
        return padded.reshape(rows, -1, vector_size).max(axis=2)
    parts = []
    if full:
        vectors = t[:, : full * vector_size].reshape(rows * full, vector_size)
        parts.append(_octav(vectors, level, iterations, signed).reshape(rows, full))
    if k % vector_size:
        parts.append(_octav(t[:, full * vector_size :], level, iterations, signed)[:, None])
    return np.concatenate(parts, axis=1)


def _octav(rows: np.ndarray, level: int, iterations: int, signed: bool) -> np.ndarray:
    """float32 Octav scalar per row for the integer grid -level..level (or 0..level)."""
    s = octav_clip_rows(rows, VALUE_BITS, signed, iterations, max_level=level)
    return s.astype(np.float32)


def _per_vector(values: np.ndarray, vector_size: int, k: int, axis: int) -> np.ndarray:
    """Per-vector values repeated over each vector's elements along ``axis``, cut to K."""
    repeated = np.repeat(values, vector_size, axis=axis)
    return repeated[:k] if axis == 0 else repeated[:, :k]


def _check_options(vector_size: int, clip: str, scale_bits: int) -> None:
    if vector_size not in VECTOR_SIZES:
        raise UserError(
            f"vector size {vector_size} is not supported; choose one of "
            + ", ".join(map(str, VECTOR_SIZES))
        )
    if clip not in CLIPS:
        raise UserError(f"unknown clipping {clip!r}; choose one of " + ", ".join(CLIPS))
    low, high = SCALE_BITS_RANGE
    if not low <= scale_bits <= high:
        raise UserError(f"per-vector scales take {low} to {high} bits, not {scale_bits}")


def _checked_matrix(x: np.ndarray, what: str) -> np.ndarray:
    data = np.asarray(x, np.float32)
    if data.ndim != 2 or data.size == 0:
        raise UserError(f"the {what} must be a non-empty 2-D array, not shape {data.shape}")
    if not np.isfinite(data).all():
        raise UserError(f"the {what} holds NaN or infinite values; clean it before quantizing")
    return data


def _check_pair(a: QuantizedActivation, w: QuantizedWeight) -> None:
    if a.k != w.k:
        raise UserError(f"activations have K = {a.k} but the weight has K = {w.k}")
    if a.vector_size != w.vector_size:
        raise UserError(
            f"activation vectors of {a.vector_size} do not line up with weight vectors of "
            f"{w.vector_size}; quantize both with the same vector size"
        )
    largest_term = (
        (SIGNED_LEVEL if a.signed else UNSIGNED_LEVEL)
        * SIGNED_LEVEL
        * (2**a.scale_bits - 1)
        * (2**w.scale_bits - 1)
    )
    if w.k * largest_term > INT32_MAX:
        raise UserError(
            f"K = {w.k} could overflow the int32 accumulator with {a.scale_bits}- and "
            f"{w.scale_bits}-bit scales; use K <= {INT32_MAX // largest_term} or narrower scales"
        )
