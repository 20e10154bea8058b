"""The compiled kernel behind numpy-shaped calls: quantize activation rows (or a convolution's
rows straight from its NCHW input), im2col, and the integer GEMM against a packed 4-bit weight,
bit for bit ``vsquant.reference_matmul``.

A packed weight holds each value already multiplied by its vector scale (q · sq, an int16). Dense,
it is K pairs per output channel; pruned below ``SPARSE_BELOW``, it is only the kept weights,
two to an entry within each K block of ``BLOCK`` columns, and the kernel's work follows them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from backends.sparse_int4 import _kernel
from backends.sparse_int4.vsquant import (
    SCALE_BITS,
    SIGNED_LEVEL,
    UNSIGNED_LEVEL,
    QuantizedActivation,
    QuantizedWeight,
)
from harness.errors import UserError

PATHS: tuple[str, ...] = tuple(_kernel.paths())  # what this CPU runs, best first
ALL_PATHS = ("avx512vnni", "avx2", "portable")
BLOCK = _kernel.KBLOCK  # K columns per block: both weights of a sparse entry lie in one block
GROUP = _kernel.SPARSE_GROUP  # channels whose sparse entries interleave block by block
SPARSE_BELOW = 0.6  # entries per dense pair under which the sparse loop beats the dense one
MAX_K = 65536  # sparse entries hold K columns in 16 bits
TILE = _kernel.TILE_M  # rows per activation tile


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class PackedWeight:
    """A quantized weight in the kernel's layout: dense pairs [N, K/2], or sparse entries per
    output channel and K block (``ptr`` into ``entries`` [count, 2]: two K columns as
    k1 | k2 << 16, their two weights as int16 halves), runs ordered as the kernel reads them
    (channel groups of ``GROUP``, then K blocks, then channels); gamma, bias float32 [N]."""

    k: int
    n: int
    vector_size: int
    gamma: np.ndarray
    bias: np.ndarray | None
    dense: np.ndarray | None
    ptr: np.ndarray
    entries: np.ndarray

    @property
    def blocks(self) -> int:
        return -(-_even(self.k) // BLOCK)

    @property
    def multiply_adds(self) -> int:
        """Two-weight multiply-adds per row: dense pairs, or sparse entries."""
        return self.n * (_even(self.k) // 2) if self.dense is not None else len(self.entries)

    @property
    def sparse(self) -> bool:
        return self.dense is None


@dataclass(frozen=True)
class Activations:
    """Activation rows quantized for the kernel: folded q · sq int16 in row tiles laid out for
    one kernel path ([ceil(M / TILE), K rounded up to even, TILE], rows at the path's
    positions), and gamma float32 [M]."""

    tiles: np.ndarray
    gamma: np.ndarray
    k: int
    vector_size: int
    path: str

    def folded(self) -> np.ndarray:
        """int16 [M, K rounded up to even]: the folded values row by row."""
        rows = self.tiles[:, :, _positions(self.path)].transpose(0, 2, 1)
        return rows.reshape(-1, self.tiles.shape[1])[: len(self.gamma)]


def pack(
    w: QuantizedWeight, bias: np.ndarray | None = None, sparse: bool | None = None
) -> PackedWeight:
    """Pack a quantized weight (pruned or not); ``sparse=None`` picks the faster layout."""
    folded = _folded_weight(w)  # int16 [N, Kp]
    gamma = np.ascontiguousarray(w.gamma, np.float32)
    if bias is not None:
        bias = np.ascontiguousarray(bias, np.float32).reshape(-1)
        if bias.shape != (w.n,):
            raise UserError(f"bias has {bias.size} values but the weight has {w.n} channels")
    if sparse is None:
        entries = int(((_block_counts(folded) + 1) // 2).sum())  # two kept weights per entry
        sparse = entries < SPARSE_BELOW * folded.size / 2
    if not sparse:
        pairs = folded.view(np.int32)  # [N, Kp/2], little-endian (w[2j], w[2j+1])
        empty = np.zeros(0, np.int32)
        return PackedWeight(w.k, w.n, w.vector_size, gamma, bias, pairs, empty, empty)
    if folded.shape[1] > MAX_K:
        raise UserError(f"K = {w.k} is too long for the sparse kernel (at most {MAX_K})")
    return PackedWeight(w.k, w.n, w.vector_size, gamma, bias, None, *_entries(folded))


def _block_counts(folded: np.ndarray) -> np.ndarray:
    """int [N, blocks]: nonzero weights of each channel in each K block."""
    n, kp = folded.shape
    padded = np.zeros((n, -(-kp // BLOCK) * BLOCK), bool)
    padded[:, :kp] = folded != 0
    return np.count_nonzero(padded.reshape(n, -1, BLOCK), axis=2)


def _entries(folded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ptr, entries) of the sparse layout: each channel's nonzero weights in K order, paired
    within each K block (an odd one out is paired with a zero weight at its own column)."""
    n, kp = folded.shape
    blocks = -(-kp // BLOCK)
    channel, column = np.nonzero(folded)  # channel-major, K ascending
    first_of_group = channel // GROUP * GROUP
    group_size = np.minimum(GROUP, n - first_of_group)
    run = first_of_group * blocks + column // BLOCK * group_size + channel - first_of_group
    order = np.argsort(run, kind="stable")  # the kernel's reading order, K ascending in a run
    run, channel, column = run[order], channel[order], column[order]
    counts = np.bincount(run, minlength=n * blocks)
    starts = np.cumsum(counts) - counts
    first = np.flatnonzero((np.arange(len(run)) - starts[run]) % 2 == 0)
    after = np.minimum(first + 1, len(run) - 1)
    paired = (first + 1 < len(run)) & (run[after] == run[first])
    second = np.where(paired, after, first)
    values = folded[channel, column].astype(np.uint16).astype(np.uint32)
    entries = np.empty((len(first), 2), np.uint32)
    entries[:, 0] = column[first].astype(np.uint32) | column[second].astype(np.uint32) << 16
    entries[:, 1] = values[first] | np.where(paired, values[second], 0) << 16
    ptr = np.zeros(n * blocks + 1, np.int32)
    np.cumsum((counts + 1) // 2, out=ptr[1:])
    return ptr, entries


def quantize(
    x: np.ndarray,
    vector_size: int = 16,
    signed: bool = True,
    clip: np.ndarray | None = None,
    *,
    scale_bits: int = SCALE_BITS,
    path: str | None = None,
    threads: int | None = None,
) -> Activations:
    """Quantize float32 rows [M, K] as ``vsquant.quantize_activations`` does (clip="max"), or
    with given clipping scalars [M, ceil(K / V)] (e.g. Octav's), for the kernel ``path``."""
    x = np.ascontiguousarray(x, np.float32)
    m, k = x.shape
    rows_as_conv = (m, k, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1)  # M one-pixel images, 1x1 kernel
    return _quantize(x, rows_as_conv, vector_size, signed, clip, scale_bits, path, threads)


def quantize_conv(
    x: np.ndarray,
    kernel: tuple[int, int],
    strides: tuple[int, int] = (1, 1),
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    dilations: tuple[int, int] = (1, 1),
    vector_size: int = 16,
    signed: bool = True,
    *,
    scale_bits: int = SCALE_BITS,
    path: str | None = None,
    threads: int | None = None,
) -> Activations:
    """``quantize(im2col(x, ...))`` without the float rows: a convolution's rows quantized
    straight from its NCHW float32 input."""
    x = np.ascontiguousarray(x, np.float32)
    geometry = _conv_geometry(x, kernel, strides, pads, dilations)
    return _quantize(x, geometry, vector_size, signed, None, scale_bits, path, threads)


def from_reference(a: QuantizedActivation, path: str | None = None) -> Activations:
    """The kernel's form of numpy-quantized activations (for tests and the reference path)."""
    m, kp = a.q.shape[0], _even(a.k)
    folded = np.zeros((-(-m // TILE) * TILE, kp), np.int16)
    sq = np.repeat(a.sq.astype(np.int16), a.vector_size, axis=1)[:, : a.k]
    folded[:m, : a.k] = a.q.astype(np.int16) * sq
    path = path or PATHS[0]
    tiles = np.empty((len(folded) // TILE, kp, TILE), np.int16)
    tiles[:, :, _positions(path)] = folded.reshape(-1, TILE, kp).transpose(0, 2, 1)
    return Activations(tiles, a.gamma.astype(np.float32), a.k, a.vector_size, path)


def matmul(
    a: Activations,
    w: PackedWeight,
    *,
    pixels: int = 1,
    threads: int | None = None,
) -> np.ndarray:
    """float32 output of the integer GEMM on the path the activations were laid out for: [M, N],
    or for ``pixels`` > 1 (conv rows ordered image, pixel) [M / pixels, N, pixels], i.e. NCHW."""
    if a.k != w.k or a.vector_size != w.vector_size:
        raise UserError(
            f"activations (K = {a.k}, vectors of {a.vector_size}) do not fit the weight "
            f"(K = {w.k}, vectors of {w.vector_size})"
        )
    m, kp = len(a.gamma), a.tiles.shape[1]
    if m % pixels:
        raise UserError(f"{m} rows are not whole images of {pixels} pixels")
    shape = (m, w.n) if pixels == 1 else (m // pixels, w.n, pixels)
    out = np.empty(shape, np.float32)
    _kernel.gemm(
        a.tiles, a.gamma, w.dense, w.ptr, w.entries, w.gamma, w.bias, out,
        m, kp, w.n, w.blocks, pixels, a.path, _threads(threads),
    )  # fmt: skip
    return out


def im2col(
    x: np.ndarray,
    kernel: tuple[int, int],
    strides: tuple[int, int] = (1, 1),
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    dilations: tuple[int, int] = (1, 1),
    *,
    threads: int | None = None,
) -> np.ndarray:
    """Conv rows of an NCHW float32 batch: [B · OH · OW, KH · KW · C], K ordered (kh, kw, c);
    ``pads`` as ONNX (top, left, bottom, right)."""
    x = np.ascontiguousarray(x, np.float32)
    geometry = _conv_geometry(x, kernel, strides, pads, dilations)
    b, c, _, _, kh, kw, *_, oh, ow = geometry
    out = np.empty((b * oh * ow, kh * kw * c), np.float32)
    _kernel.im2col(x, out, geometry, _threads(threads))
    return out


def conv_output_side(
    side: tuple[int, int],
    kernel: tuple[int, int],
    strides: tuple[int, int],
    pads: tuple[int, int, int, int],
    dilations: tuple[int, int],
) -> tuple[int, int]:
    """(OH, OW) of a convolution over an H x W input; ``pads`` as ONNX (top, left, bottom,
    right)."""
    out = [
        (side[a] + pads[a] + pads[a + 2] - dilations[a] * (kernel[a] - 1) - 1) // strides[a] + 1
        for a in range(2)
    ]
    return out[0], out[1]


def _conv_geometry(
    x: np.ndarray,
    kernel: tuple[int, int],
    strides: tuple[int, int],
    pads: tuple[int, int, int, int],
    dilations: tuple[int, int],
) -> tuple[int, ...]:
    """The kernel's conv geometry of an NCHW input: (B, C, H, W, KH, KW, SH, SW, pad top, pad
    left, DH, DW, OH, OW)."""
    b, c, h, w = x.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilations
    oh, ow = conv_output_side((h, w), kernel, strides, pads, dilations)
    if oh < 1 or ow < 1:
        raise UserError(f"a {kh}x{kw} window does not fit a {h}x{w} input")
    return (b, c, h, w, kh, kw, sh, sw, pads[0], pads[1], dh, dw, oh, ow)


def _quantize(
    x: np.ndarray,
    geometry: tuple[int, ...],
    vector_size: int,
    signed: bool,
    clip: np.ndarray | None,
    scale_bits: int,
    path: str | None,
    threads: int | None,
) -> Activations:
    b, c, _, _, kh, kw, *_, oh, ow = geometry
    m, k = b * oh * ow, kh * kw * c
    path = path or PATHS[0]
    tiles = np.empty((-(-m // TILE), _even(k), TILE), np.int16)
    gamma = np.empty(m, np.float32)
    if clip is not None:
        clip = np.ascontiguousarray(clip, np.float32)
    level = SIGNED_LEVEL if signed else UNSIGNED_LEVEL
    _kernel.quantize(
        x, geometry, clip, tiles, gamma, vector_size, level, -level if signed else 0,
        2**scale_bits - 1, path, _threads(threads),
    )  # fmt: skip
    return Activations(tiles, gamma, k, vector_size, path)


def _positions(path: str) -> np.ndarray:
    """Where each of a tile's rows sits in its columns on ``path``."""
    return np.frombuffer(_kernel.positions(path), np.uint8)


def _folded_weight(w: QuantizedWeight) -> np.ndarray:
    """int16 [N, K rounded up to even]: q · sq per weight, channels as rows, zero padded."""
    folded = np.zeros((w.n, _even(w.k)), np.int16)
    sq = np.repeat(w.sq.astype(np.int16), w.vector_size, axis=0)[: w.k]
    folded[:, : w.k] = (w.q.astype(np.int16) * sq).T
    return folded


def _even(k: int) -> int:
    return k + k % 2


def _threads(threads: int | None) -> int:
    return threads if threads is not None else default_threads()
