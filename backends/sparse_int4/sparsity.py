"""Magnitude pruning of MatMul weights and a compressed store for pruned 4-bit weights.

The sparse-int4 backend only gains when pruned weights are neither stored nor multiplied, so a
pruned weight is kept as its surviving 4-bit values plus where they sit. Weights are W [K, N]
(y = x @ W): K is the reduction dimension, N the output channels.

Decisions:
- "unstructured" keeps round(density · K) weights in every output channel (at least one), not a
  count over the whole tensor: each channel then holds the same work, which a kernel splits
  evenly across threads, and no channel can be pruned away entirely.
- "N:M" (2:4, 1:8, ...) keeps the N largest of every M consecutive weights along K. The pattern
  fixes the density, so ``density`` must equal N / M: a contradiction is an error, not a guess.
- "1x4" (the fast pattern) keeps whole blocks of 1 output channel x 4 consecutive input channels
  of one kernel tap, the largest by their sum of squares, round(density · blocks) per channel:
  the 4 weights one u8 x s8 dot-product lane multiplies (``vpdpbusd``), so the kernel's work is
  one instruction per kept block and 16 rows. A tap's last block is short when its channels are
  not a multiple of 4.
- "4x4" keeps such blocks by quads of output channels (4 consecutive channels keep the same
  blocks, by the quad's sum of squares): the kernel loads a kept block's activations once for
  the quad's 4 channels, where 1x4 loads them once per channel. Coarser, so it costs more
  accuracy than 1x4 at the same density.
- "16x4" keeps them by groups of 16 output channels: a kept block is then a column of AMX
  tile rows, so 16 channels x 16 blocks are one tile multiply (``TDPBSUD``); elsewhere it runs
  as 4x4. Coarser again.
- Ties in |w| keep the weight with the lower K index, so a mask never depends on sort internals.
- A model that is already pruned brings its own zeros: ``existing_mask`` uses them as the mask.
- ``compress`` stores positions in the smallest of three forms: a bitmask (1 bit per dense
  weight); the index of each kept weight within a group of G = 2..64 along K (log2 G bits) plus
  each group's count, left out when every group keeps the same number, as under N:M; or the gaps
  between kept weights, Golomb-Rice coded (a gap is q · G + r: r in log2 G bits, q in unary),
  which comes within 2% of the positions' entropy for unstructured masks. Scales are stored only
  for vectors that keep a weight (a vector pruned away has sq 1, as quantizing it gives).
  For a 1024 x 4096 weight at density 1/8: 1:8 stores 3-bit indices and no counts, 1.16 bits
  per weight all told, 0.145 of the int8 bytes; unstructured stores gaps with G = 4, 1.30 bits,
  0.163 of the int8 bytes (its positions alone carry 0.54 bits of entropy per weight).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from backends.sparse_int4.vsquant import VALUE_BITS, QuantizedWeight, vector_index
from harness.errors import UserError

UNSTRUCTURED = "unstructured"
BLOCKS = "1x4"  # blocks of 4 consecutive input channels in one output channel
QUAD_BLOCKS = "4x4"  # the same blocks, kept by quads of 4 consecutive output channels
TILE_BLOCKS = "16x4"  # the same blocks, kept by groups of 16 consecutive output channels
BLOCK = 4
OWNERS = {BLOCKS: 1, QUAD_BLOCKS: 4, TILE_BLOCKS: 16}  # output channels that keep a block together
FREE_DENSITY = (UNSTRUCTURED, *OWNERS)  # the patterns that take any density
NM_PATTERN = re.compile(r"(\d+):(\d+)")
DENSITY_TOLERANCE = 1e-9  # how close density must be to N / M
INDEX_GROUPS = (2, 4, 8, 16, 32, 64)  # group lengths along K that position indices may count in
BITMASK = "bitmask"
INDICES = "indices"
GAPS = "gaps"
NO_COUNTS = np.zeros(0, np.uint8)  # the counts stream when every group keeps the same number


def prune(
    w: np.ndarray, density: float, pattern: str = UNSTRUCTURED, channels: int | None = None
) -> np.ndarray:
    """bool [K, N] mask of the weights to keep: the largest |w| by ``pattern`` at ``density``.
    ``channels``: input channels per kernel tap (K is taps x channels; default one tap)."""
    data = _checked_weight(w)
    if not 0 < density <= 1:
        raise UserError(f"density must be in (0, 1], not {density}")
    magnitude = np.abs(data)
    k, n = data.shape
    if pattern == UNSTRUCTURED:
        return _keep_largest(magnitude, _kept(density, k), axis=0)
    if pattern in OWNERS:
        block_of = vector_index(k, channels or k, BLOCK)
        owners = OWNERS[pattern]
        units = -(-n // owners)
        square = np.zeros((k, units * owners))
        square[:, :n] = np.square(data)
        energy = np.zeros((block_of[-1] + 1, units))
        np.add.at(energy, block_of, square.reshape(k, units, owners).sum(axis=2))
        kept = _keep_largest(energy, _kept(density, len(energy)), axis=0)
        return np.repeat(kept, owners, axis=1)[block_of, :n]
    kept, group = parse_pattern(pattern)
    if abs(density - kept / group) > DENSITY_TOLERANCE:
        raise UserError(
            f"pattern {pattern} fixes the density at {kept / group:g}, not {density:g}; "
            f"pass density={kept / group:g} or another pattern"
        )
    if k % group:
        raise UserError(
            f"pattern {pattern} needs K divisible by M, but K = {k} and M = {group}; "
            "choose an M that divides K or the unstructured pattern"
        )
    groups = magnitude.reshape(k // group, group, n)
    return _keep_largest(groups, kept, axis=1).reshape(k, n)


def _kept(density: float, count: int) -> int:
    """How many of ``count`` weights (or blocks) a channel keeps: round(density · count), >= 1."""
    return max(1, int(np.floor(density * count + 0.5)))


def check_pattern(pattern: str) -> None:
    """Refuse a pattern name that is not unstructured, 1x4, 4x4, 16x4 or N:M."""
    if pattern not in FREE_DENSITY:
        parse_pattern(pattern)


def parse_pattern(pattern: str) -> tuple[int, int]:
    """(N, M) of an "N:M" pattern, 1 <= N <= M."""
    match = NM_PATTERN.fullmatch(pattern.strip()) if isinstance(pattern, str) else None
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise UserError(
            f"sparsity pattern {pattern!r} is not understood; use {UNSTRUCTURED!r}, "
            f"{BLOCKS!r}, {QUAD_BLOCKS!r}, {TILE_BLOCKS!r} or N:M with 1 <= N <= M, such as 2:4 "
            "or 1:8"
        )
    return int(match[1]), int(match[2])


def existing_mask(w: np.ndarray) -> np.ndarray:
    """bool mask of the nonzero weights: the sparsity of a model that is already pruned."""
    return np.asarray(w) != 0


def existing_density(w: np.ndarray) -> float:
    """Fraction of nonzero weights (1.0 for a dense weight)."""
    data = np.asarray(w)
    return np.count_nonzero(data) / data.size if data.size else 1.0


@dataclass(frozen=True)
class CompressedWeight:
    """A pruned QuantizedWeight as stored: every stream is column by column (output channel
    n outer, K inner, the order a kernel computing one output reads it), bit-packed with the
    first item in the low bits of the first byte, and padded to a whole byte at its end."""

    k: int
    n: int
    vector_size: int
    scale_bits: int
    channels: int  # input channels per tap, as in QuantizedWeight (0: one tap)
    blocks: bool  # positions are of whole 1x4 blocks (the mask is made of them), not weights
    nnz: int  # kept units: weights, or 1x4 blocks when ``blocks``
    values: np.ndarray  # uint8: kept values as 4-bit two's complement, two per byte
    positions: str  # BITMASK (1 bit per dense weight), INDICES (in groups along K) or GAPS
    group: int  # INDICES: group length G along K; GAPS: the Rice divisor G; BITMASK: 1
    index_data: np.ndarray  # uint8: the bitmask, or per kept value its index or gap mod G
    counts: np.ndarray  # uint8: INDICES: kept values per group at log2 G + 1 bits, empty when
    # uniform; GAPS: each gap // G in unary (that many 1 bits, then a 0)
    uniform_count: int  # kept values in every group when all groups hold the same; else -1
    scales: np.ndarray  # uint8: sq at scale_bits each of the vectors that keep a weight
    gamma: np.ndarray  # float32 [N]

    @property
    def nbytes(self) -> int:
        """Exact stored bytes: values, positions (bitmask or indices and counts), scales and
        gammas. The shape and format fields (a few integers per weight) are not counted."""
        streams = (self.values, self.index_data, self.counts, self.scales, self.gamma)
        return sum(stream.nbytes for stream in streams)

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per dense weight (K · N), pruned ones included."""
        return 8 * self.nbytes / (self.k * self.n)

    @property
    def layout(self) -> str:
        """How positions are stored, for logs and reports."""
        unit = "blocks" if self.blocks else "weights"
        if self.positions == BITMASK:
            return BITMASK + (" of 1x4 blocks" if self.blocks else "")
        if self.positions == GAPS:
            return f"{GAPS} between kept {unit}, Golomb-Rice coded with divisor {self.group}"
        counts = f"{self.uniform_count} per group" if self.uniform_count >= 0 else "counted"
        return f"{INDICES} of {unit} in groups of {self.group} along K ({counts})"

    def decompress(self) -> QuantizedWeight:
        """The QuantizedWeight again: kept values in place, zeros where pruned."""
        shape = QuantizedWeight(
            np.zeros((self.k, 0), np.int8), np.zeros(0), self.gamma, self.vector_size, self.k,
            self.scale_bits, self.channels,
        )  # fmt: skip
        units = _block_of(self.k, self.channels) if self.blocks else np.arange(self.k)
        mask_t = self._unit_mask_t(int(units[-1]) + 1)[:, units]
        values = _from_nibbles(_unpack(self.values, VALUE_BITS, int(mask_t.sum())))
        q_t = np.zeros((self.n, self.k), np.int8)
        q_t[mask_t] = values
        kept_vectors = _kept_vectors(mask_t, shape.vector_of)
        sq_t = np.ones(kept_vectors.shape, np.uint8)  # a vector pruned away quantizes to sq 1
        sq_t[kept_vectors] = _unpack(self.scales, self.scale_bits, int(kept_vectors.sum()))
        return QuantizedWeight(
            np.ascontiguousarray(q_t.T),
            np.ascontiguousarray(sq_t.T),
            self.gamma.copy(),
            self.vector_size,
            self.k,
            self.scale_bits,
            self.channels,
        )

    def _unit_mask_t(self, k: int) -> np.ndarray:
        """bool [N, units]: the kept positions (weights, or 1x4 blocks), transposed."""
        if self.positions == BITMASK:
            bits = np.unpackbits(self.index_data, count=self.n * k, bitorder="little")
            return bits.reshape(self.n, k).astype(bool)
        remainders = _unpack(self.index_data, _index_bits(self.group), self.nnz)
        if self.positions == GAPS:
            unary = np.unpackbits(self.counts, bitorder="little")
            ends = np.flatnonzero(unary == 0)[: self.nnz]  # the 0 closing each quotient
            quotients = np.diff(ends, prepend=-1) - 1
            flat = np.cumsum(quotients * self.group + remainders + 1) - 1
            mask_t = np.zeros(self.n * k, bool)
            mask_t[flat] = True
            return mask_t.reshape(self.n, k)
        groups = -(-k // self.group)
        if self.uniform_count >= 0:
            counts = np.full(self.n * groups, self.uniform_count)
        else:
            counts = _unpack(self.counts, _count_bits(self.group), self.n * groups)
        group_of = np.repeat(np.arange(self.n * groups), counts)
        mask_t = np.zeros((self.n, groups * self.group), bool)
        mask_t[group_of // groups, (group_of % groups) * self.group + remainders] = True
        return mask_t[:, :k]


def compress(qw: QuantizedWeight, mask: np.ndarray) -> CompressedWeight:
    """Store only the kept values of ``qw`` (values outside ``mask`` are dropped) with their
    positions as a bitmask, indices within groups along K or Rice-coded gaps, whichever takes
    the fewest bytes (of whole 1x4 blocks when the mask is made of them), and the scales of the
    vectors that keep a weight."""
    keep = np.asarray(mask, bool)
    if keep.shape != qw.q.shape:
        raise UserError(f"the mask has shape {keep.shape} but the weight has shape {qw.q.shape}")
    k, n = qw.q.shape
    keep_t = keep.T
    values = qw.q.T[keep_t]
    block_of = _block_of(k, qw.channels)
    block_t = np.zeros((n, int(block_of[-1]) + 1), bool)
    np.logical_or.at(block_t.T, block_of, keep_t.T)  # a block with a kept weight is kept
    blocks = bool(np.array_equal(block_t[:, block_of], keep_t))
    positions, group, index_data, counts, uniform = _smallest_positions(
        block_t if blocks else keep_t
    )
    return CompressedWeight(
        k,
        n,
        qw.vector_size,
        qw.scale_bits,
        qw.channels,
        blocks,
        int((block_t if blocks else keep_t).sum()),
        _pack(values.astype(np.uint8) & 0xF, VALUE_BITS),
        positions,
        group,
        index_data,
        counts,
        uniform,
        _pack(qw.sq.T[_kept_vectors(keep_t, qw.vector_of)], qw.scale_bits),
        qw.gamma.astype(np.float32),
    )


def _smallest_positions(keep_t: np.ndarray) -> tuple[str, int, np.ndarray, np.ndarray, int]:
    """(positions, group, index data, counts, uniform count): the bitmask, indices in the group
    length, or gaps with the Rice divisor, that takes the fewest bytes (ties: the bitmask, then
    indices, then the shorter group)."""
    nnz = int(np.count_nonzero(keep_t))
    gaps = np.diff(np.flatnonzero(keep_t), prepend=-1) - 1  # channel-major, K inner
    best, best_bytes = (BITMASK, 1), _bytes(keep_t.size)
    for size in INDEX_GROUPS:
        counts, _ = _group_counts(keep_t, size)
        stored = 0 if _uniform(counts) else _bytes(counts.size * _count_bits(size))
        if _bytes(nnz * _index_bits(size)) + stored < best_bytes:
            best, best_bytes = (INDICES, size), _bytes(nnz * _index_bits(size)) + stored
    for size in INDEX_GROUPS:
        unary = _bytes(int((gaps // size).sum()) + nnz)
        if _bytes(nnz * _index_bits(size)) + unary < best_bytes:
            best, best_bytes = (GAPS, size), _bytes(nnz * _index_bits(size)) + unary
    positions, size = best
    if positions == BITMASK:
        return BITMASK, 1, np.packbits(keep_t, bitorder="little"), NO_COUNTS, -1
    if positions == GAPS:
        quotients = gaps // size
        unary = np.ones(int(quotients.sum()) + nnz, bool)
        unary[np.cumsum(quotients + 1) - 1] = False
        index = _pack(gaps % size, _index_bits(size))
        return GAPS, size, index, np.packbits(unary, bitorder="little"), -1
    counts, grouped = _group_counts(keep_t, size)
    index = _pack(np.nonzero(grouped)[1], _index_bits(size))  # channel, group, position order
    if _uniform(counts):
        return INDICES, size, index, NO_COUNTS, int(counts[0])
    return INDICES, size, index, _pack(counts, _count_bits(size)), -1


def _kept_vectors(keep_t: np.ndarray, vector_of: np.ndarray) -> np.ndarray:
    """bool [N, vectors]: the vectors that keep at least one weight (``vector_of``: the vector
    of each k, non-decreasing)."""
    starts = np.flatnonzero(np.diff(vector_of, prepend=-1))
    return np.add.reduceat(keep_t, starts, axis=1) > 0


def _block_of(k: int, channels: int) -> np.ndarray:
    """int [K]: the 1x4 block of each k."""
    return vector_index(k, channels or k, BLOCK)


def _group_counts(keep_t: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept per group, bool [N · groups, size]) for groups of ``size`` along K of every
    channel; a short last group (K not a multiple of size) is a group of its own."""
    n, k = keep_t.shape
    groups = -(-k // size)
    padded = np.zeros((n, groups * size), bool)
    padded[:, :k] = keep_t
    grouped = padded.reshape(n * groups, size)
    return np.count_nonzero(grouped, axis=1), grouped


def _uniform(counts: np.ndarray) -> bool:
    return bool((counts == counts[0]).all())


def _bytes(bits: int) -> int:
    return -(-bits // 8)


def _index_bits(size: int) -> int:
    return size.bit_length() - 1  # log2 of a power of two


def _count_bits(size: int) -> int:
    return size.bit_length()  # 0..size


def _pack(values: np.ndarray, width: int) -> np.ndarray:
    """Unsigned integers below 2^width, ``width`` bits each, low bits first."""
    shifts = np.arange(width, dtype=np.uint16)
    bits = (np.asarray(values, np.uint16)[:, None] >> shifts) & 1
    return np.packbits(bits.astype(np.uint8).ravel(), bitorder="little")


def _unpack(data: np.ndarray, width: int, count: int) -> np.ndarray:
    bits = np.unpackbits(data, count=count * width, bitorder="little").reshape(count, width)
    return (bits.astype(np.int64) << np.arange(width)).sum(axis=1)


def _from_nibbles(nibbles: np.ndarray) -> np.ndarray:
    """4-bit two's complement back to int8 (-7..7 here; -8 never occurs)."""
    return np.where(nibbles >= 8, nibbles - 16, nibbles).astype(np.int8)


def _keep_largest(magnitude: np.ndarray, keep: int, axis: int) -> np.ndarray:
    """bool mask of the ``keep`` largest along ``axis``; equal ones: the lower index first."""
    order = np.argsort(-magnitude, axis=axis, kind="stable")
    mask = np.zeros(magnitude.shape, bool)
    np.put_along_axis(mask, np.take(order, np.arange(keep), axis=axis), True, axis=axis)
    return mask


def _checked_weight(w: np.ndarray) -> np.ndarray:
    data = np.asarray(w, np.float64)  # exact for float16/32 weights: no new ties
    if data.ndim != 2 or data.size == 0:
        raise UserError(f"the weight must be a non-empty 2-D array [K, N], not shape {data.shape}")
    if not np.isfinite(data).all():
        raise UserError("the weight holds NaN or infinite values; clean it before pruning")
    return data
