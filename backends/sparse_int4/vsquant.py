"""Per-vector scaled 4-bit weights and activations with two-level scales: VS-Quant (Dai et al.,
MLSys 2021).

One scale per tensor or per channel lets a single outlier coarsen the 4-bit grid of thousands of
values; VS-Quant gives every short vector (16, 32 or 64 values along the reduction dimension) its
own scale. To keep the dot product in integers the per-vector scale is itself a small unsigned
integer ``sq`` times one float ``gamma`` shared by a whole group of vectors:

    value ≈ gamma · sq · q,   q in -7..7 (or 0..15 for unsigned activations),  sq in 1..15

so a dot product of two vectors is (integer dot product of the q) · (sq_a · sq_w), summed over the
vectors in integers, times gamma_a · gamma_w once per output. ``reference.py`` is that
arithmetic, bit for bit what the backend's kernel must produce.

Where the vectors and gammas lie:
- Weights W [K, N]: vectors along K in each output channel, gamma per output channel. A
  convolution's K is (kh, kw, c): its vectors run along the input channels c of one kernel tap
  (``channels`` = C), so they line up with the activation vectors below.
- Activations: vectors along the channels of one pixel (or one token), gamma per group of rows:
  per sample (image) for a convolution's input, per row (token) for a MatMul's. An im2col row of a
  3x3 convolution is then made of already-quantized vectors that share one gamma, so every input
  value is quantized once, not once per window, and the layer that produces an activation can
  quantize it as it writes it.

Decisions:
- Values are symmetric -7..7, not -8..7: the clipping scalar maps to ±7 on both sides, zero and
  negation stay exact, and |q_a · q_w| <= 49 leaves more headroom in the integer accumulator.
- Folded values q · sq fit a byte: 0..225 for unsigned activations, -105..105 for weights and
  signed activations, so a kernel multiplies u8 x s8 (signed activations shifted by +128, with a
  per-channel weight-sum correction), exactly, in int32.
- The largest vector scale of a group maps to sq = 15 (2^scale_bits - 1); the others round to
  the nearest sq, at least 1 (an all-zero vector gets 1; its values are 0 anyway).
- Ragged vectors: the last vector of a run of channels is short (C mod V values) and its clipping
  scalar is computed from those values only; a kernel may zero-pad it.
- Rounding is half to even everywhere (np.rint; the kernel's (q + 1.5 · 2^23) - 1.5 · 2^23).
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


@dataclass(frozen=True)
class QuantizedWeight:
    """A weight W [K, N] as gamma[n] · sq[v, n] · q[k, n], K = taps · channels, v the vector
    of k (vectors of ``vector_size`` along the channels of each tap)."""

    q: np.ndarray  # int8 [K, N], values -7..7
    sq: np.ndarray  # uint8 [taps · ceil(channels / V), N], integer scales 1..2^scale_bits - 1
    gamma: np.ndarray  # float32 [N], per-output-channel float scales
    vector_size: int
    k: int
    scale_bits: int = SCALE_BITS
    channels: int = 0  # channels per tap; 0: one tap of K channels (a MatMul weight)

    @property
    def n(self) -> int:
        return self.q.shape[1]

    @property
    def vector_of(self) -> np.ndarray:
        """int [K]: the vector each k belongs to."""
        return vector_index(self.k, self.channels or self.k, self.vector_size)

    def dequantize(self) -> np.ndarray:
        """float32 [K, N]: (gamma · sq) · q, each product rounded to float32."""
        step = self.gamma[None, :] * self.sq.astype(np.float32)
        return step[self.vector_of] * self.q.astype(np.float32)

    def folded(self) -> np.ndarray:
        """int16 [K, N]: q · sq per weight, the integers a kernel multiplies."""
        return self.q.astype(np.int16) * self.sq.astype(np.int16)[self.vector_of]

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per weight: 4-bit values, one scale_bits-wide sq per vector and one
        float32 gamma per output channel, over K · N weights (shape fields not counted).
        V = 16, 4-bit sq: 4 + 4/16 + 32/K = 4.25 + 32/K when V divides the channels."""
        bits = self.q.size * VALUE_BITS + self.sq.size * self.scale_bits + self.n * GAMMA_BITS
        return bits / self.q.size


@dataclass(frozen=True)
class QuantizedActivation:
    """Activations X [R, C] (rows are pixels or tokens) as gamma[r // group_rows] · sq[r, v] ·
    q[r, c], v = c // vector_size: one gamma per group of ``group_rows`` rows."""

    q: np.ndarray  # int8 [R, C], values -7..7 (signed) or 0..15 (unsigned)
    sq: np.ndarray  # uint8 [R, ceil(C / V)]
    gamma: np.ndarray  # float32 [R / group_rows]
    vector_size: int
    signed: bool = True
    scale_bits: int = SCALE_BITS
    group_rows: int = 1

    @property
    def k(self) -> int:
        return self.q.shape[1]

    @property
    def row_gamma(self) -> np.ndarray:
        """float32 [R]: each row's gamma."""
        return np.repeat(self.gamma, self.group_rows)

    def folded(self) -> np.ndarray:
        """int16 [R, C]: q · sq per value, the integers a kernel multiplies."""
        return self.q.astype(np.int16) * self.sq.astype(np.int16)[:, self._vector_of]

    def dequantize(self) -> np.ndarray:
        """float32 [R, C]: (gamma · sq) · q, each product rounded to float32."""
        step = self.row_gamma[:, None] * self.sq.astype(np.float32)
        return step[:, self._vector_of] * self.q.astype(np.float32)

    @property
    def _vector_of(self) -> np.ndarray:
        return vector_index(self.k, self.k, self.vector_size)


def vector_index(k: int, channels: int, vector_size: int) -> np.ndarray:
    """int [K]: the vector of each k when K is taps of ``channels`` and vectors of
    ``vector_size`` run along the channels of one tap (the last of a tap may be short)."""
    if channels < 1 or k % channels:
        raise UserError(f"K = {k} is not a whole number of taps of {channels} channels")
    per_tap = -(-channels // vector_size)
    position = np.arange(k)
    return position // channels * per_tap + position % channels // vector_size


def quantize_weight(
    w: np.ndarray,
    vector_size: int = 16,
    clip: str = "max",
    *,
    scale_bits: int = SCALE_BITS,
    channels: int | None = None,
) -> QuantizedWeight:
    """Quantize a weight W [K, N] (y = x @ W, read as float32) offline: vectors along the
    ``channels`` of each tap of K (default: all of K, one tap), gamma per output channel.

    ``clip`` picks each vector's clipping scalar: "max" (max |w|, nothing clipped) or "octav"
    (the MSE-optimal scalar for the -7..7 grid, which clips the rare large weights)."""
    data = _checked_matrix(w, "weight")
    _check_options(vector_size, clip, scale_bits)
    k, n = data.shape
    c = channels or k
    vector_index(k, c, vector_size)  # checks that K is whole taps
    groups = data.T.reshape(n, k // c, c)  # [N, taps, channels]: one group per channel
    q, sq, gamma = _quantize_groups(
        groups, vector_size, clip, SIGNED_LEVEL, scale_bits, OCTAV_WEIGHT_ITERATIONS
    )
    return QuantizedWeight(
        np.ascontiguousarray(q.reshape(n, k).T),
        np.ascontiguousarray(sq.reshape(n, -1).T),
        gamma,
        vector_size,
        k,
        scale_bits,
        0 if c == k else c,
    )


def quantize_activations(
    x: np.ndarray,
    vector_size: int = 16,
    clip: str = "max",
    signed: bool = True,
    *,
    scale_bits: int = SCALE_BITS,
    group_rows: int = 1,
    gamma: float | None = None,
) -> QuantizedActivation:
    """Quantize activations X [R, C] at run time: vectors along C, one gamma per group of
    ``group_rows`` consecutive rows (1: per row, as for a MatMul's tokens; the pixels of an
    image for a convolution's input, rows ordered (image, y, x)), or one static ``gamma`` for
    all (calibrated offline: what a producer writing its output quantized uses; vectors beyond
    its range clip at sq = sqmax).

    ``signed=False`` uses 0..15 for non-negative inputs (post-ReLU), one more bit of resolution.
    With clip="max" every step is a float32 operation in this order, so a kernel can repeat it
    exactly: c = max |x| per vector; s = c / L (L = 7, or 15 unsigned); gamma = max s over the
    group / sqmax; sq = clip(rint(s / gamma), 1, sqmax); step = gamma · sq; q = clip(rint(x ·
    (1 / step)), -L, L) (0..L unsigned). An all-zero group has gamma = 0, sq = 1, q = 0.
    clip="octav" computes c in float64 by the fixed point (at most 8 steps) before that chain."""
    data = _checked_matrix(x, "activation")
    _check_options(vector_size, clip, scale_bits)
    if group_rows < 1 or len(data) % group_rows:
        raise UserError(f"{len(data)} rows are not whole groups of {group_rows}")
    if not signed and (data < 0).any():
        raise UserError("unsigned activations must be non-negative (post-ReLU); use signed=True")
    level = SIGNED_LEVEL if signed else UNSIGNED_LEVEL
    groups = data.reshape(-1, group_rows, data.shape[1])
    fixed = None if gamma is None else np.float32(gamma)
    q, sq, gammas = _quantize_groups(
        groups, vector_size, clip, level, scale_bits, OCTAV_RUNTIME_ITERATIONS, signed, fixed
    )
    rows = len(data)
    return QuantizedActivation(
        q.reshape(rows, -1), sq.reshape(rows, -1), gammas, vector_size, signed, scale_bits,
        group_rows,
    )  # fmt: skip


def activation_clip_scalars(
    x: np.ndarray, vector_size: int = 16, signed: bool = True
) -> np.ndarray:
    """float32 [R, ceil(C / V)]: the run-time Octav clipping scalar of every activation vector,
    the ones ``quantize_activations(clip="octav")`` uses (a kernel takes them from here)."""
    data = _checked_matrix(x, "activation")
    level = SIGNED_LEVEL if signed else UNSIGNED_LEVEL
    scalars = _clip_scalars(
        data[None], vector_size, "octav", level, OCTAV_RUNTIME_ITERATIONS, signed
    )
    return scalars[0]


def _quantize_groups(
    t: np.ndarray,
    vector_size: int,
    clip: str,
    level: int,
    scale_bits: int,
    iterations: int,
    signed: bool = True,
    fixed: np.float32 | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two-level quantization of float32 [G, P, C] with vectors along C and one gamma per group
    (its own, or ``fixed`` for all): (q int8 [G, P, C], sq uint8 [G, P, ceil(C / V)], gamma
    float32 [G])."""
    sq_max = 2**scale_bits - 1
    c = _clip_scalars(t, vector_size, clip, level, iterations, signed)
    s = c / np.float32(level)  # the float per-vector step
    if fixed is None:
        gamma = s.reshape(len(s), -1).max(axis=1) / np.float32(sq_max)
    else:
        gamma = np.full(len(s), fixed, np.float32)
    zero = gamma == 0  # an all-zero group: gamma 0, sq 1, q 0
    ratio = np.divide(s, gamma[:, None, None], out=np.ones_like(s), where=~zero[:, None, None])
    sq = np.clip(np.rint(ratio), 1, sq_max)
    step = gamma[:, None, None] * sq
    # One reciprocal per vector and a product per value: what a kernel does, one division a vector.
    inverse = np.divide(np.float32(1), step, out=np.zeros_like(step), where=step > 0)
    scaled = t * inverse[:, :, vector_index(t.shape[2], t.shape[2], vector_size)]
    lowest = -level if signed else 0
    q = np.clip(np.rint(scaled), lowest, level)
    q[np.isnan(q)] = lowest  # 0 · inf, from a step too small to invert: as the kernel clamps it
    return q.astype(np.int8), sq.astype(np.uint8), gamma


def _clip_scalars(
    t: np.ndarray, vector_size: int, clip: str, level: int, iterations: int, signed: bool
) -> np.ndarray:
    """float32 [G, P, ceil(C / V)]: each vector's clipping scalar; a short last vector uses only
    its own values (zero padding would pull Octav's statistics towards 0)."""
    g, p, c = t.shape
    full = c // vector_size
    if clip == "max":
        padded = np.zeros((g, p, -(-c // vector_size) * vector_size), np.float32)
        padded[..., :c] = np.abs(t)
        return padded.reshape(g, p, -1, vector_size).max(axis=3)
    rows = t.reshape(g * p, c)
    parts = []
    if full:
        vectors = rows[:, : full * vector_size].reshape(g * p * full, vector_size)
        parts.append(_octav(vectors, level, iterations, signed).reshape(g * p, full))
    if c % vector_size:
        parts.append(_octav(rows[:, full * vector_size :], level, iterations, signed)[:, None])
    return np.concatenate(parts, axis=1).reshape(g, p, -1)


def _octav(rows: np.ndarray, level: int, iterations: int, signed: bool) -> np.ndarray:
    """float32 Octav scalar per row for the integer grid -level..level (or 0..level)."""
    s = octav_clip_rows(rows, VALUE_BITS, signed, iterations, max_level=level)
    return s.astype(np.float32)


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
