"""Quantized weights in the sparse-int4 kernel's layout. A packed weight holds its folded values
4 input channels to an int32: dense [N, planes], or only the kept blocks of 4 when pruned below
``SPARSE_BELOW``: a channel's own, or those that 4 or 16 consecutive channels keep together (the
"4x4" and "16x4" patterns)."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from backends.sparse_int4 import _kernel
from backends.sparse_int4.vsquant import QuantizedWeight
from harness.errors import UserError

MAX_PLANES = _kernel.MAX_PLANES  # kept blocks name their plane in 16 bits
SIGNED_OFFSET = 128  # signed folded values are stored as u8 = value + 128
INT8_MAX = 127  # folded weights are s8
# a plane adds 4 products of an s8 weight and a u8 activation to an int32 accumulator
LONGEST_PLANES = min(MAX_PLANES, (2**31 - 1) // (4 * INT8_MAX * 255))
SPARSE_BELOW = 0.5  # kept blocks per plane and channel under which the sparse loop wins
OWNERS = (16, 4)  # channels that may keep blocks together: a run of AMX tile rows, or a quad
SHARED_BELOW = 1.5  # a shared layout's blocks (all its channels' on every plane it keeps) per
# kept block it takes: the zeros it multiplies to share activation loads


@dataclass(frozen=True)
class PackedWeight:
    """A quantized weight in the kernel's layout: K = taps x channels as planes of 4 channels
    (plane = tap · ceil(C / 4) + c // 4), 4 folded s8 per int32; dense [N, planes], or the kept
    blocks (each its plane and 4 weights) of channel n at ptr[n]:ptr[n + 1], or, with ``owners``
    4 or 16, of channels u · owners.. at ptr[u]:ptr[u + 1] (each its plane and owners x 4
    weights: [4] per block for quads, [16][run] per run of 16 blocks for groups of 16);
    corr[n] = 128 · the channel's folded sum (what signed activations' +128 adds); gamma, bias
    float32 [N]."""

    taps: int
    channels: int
    n: int
    vector_size: int
    gamma: np.ndarray
    bias: np.ndarray | None
    corr: np.ndarray
    dense: np.ndarray | None
    ptr: np.ndarray
    idx: np.ndarray
    wv: np.ndarray
    owners: int = 1

    @property
    def planes(self) -> int:
        return self.taps * -(-self.channels // 4)

    @property
    def k(self) -> int:
        return self.taps * self.channels

    @property
    def sparse(self) -> bool:
        return self.dense is None

    @property
    def kept_blocks(self) -> int:
        """Blocks of 4 the kernel multiplies per row: every plane when dense."""
        return self.n * self.planes if self.dense is not None else len(self.wv)


def pack(
    w: QuantizedWeight, bias: np.ndarray | None = None, sparse: bool | None = None
) -> PackedWeight:
    """Pack a quantized weight (pruned or not); ``sparse=None`` picks the faster layout."""
    channels = w.channels or w.k
    taps, c4 = w.k // channels, -(-channels // 4)
    values = w.folded()
    if np.abs(values).max(initial=0) > INT8_MAX:
        raise UserError(
            f"{w.scale_bits}-bit vector scales fold weights past 8 bits; the kernel takes 4-bit"
        )
    if taps * c4 > LONGEST_PLANES:
        raise UserError(
            f"K = {w.k} is too long for the kernel's int32 accumulators (at most "
            f"{4 * LONGEST_PLANES}); split the layer"
        )
    folded = np.zeros((w.n, taps, c4 * 4), np.int8)
    folded[:, :, :channels] = values.T.reshape(w.n, taps, channels)  # |q sq| <= 105
    planes = folded.reshape(w.n, taps * c4, 4).view(np.int32)[:, :, 0]  # [N, planes]
    gamma = np.ascontiguousarray(w.gamma, np.float32)
    if bias is not None:
        bias = np.ascontiguousarray(bias, np.float32).reshape(-1)
        if bias.shape != (w.n,):
            raise UserError(f"bias has {bias.size} values but the weight has {w.n} channels")
    corr = (SIGNED_OFFSET * folded.astype(np.int32).sum(axis=(1, 2))).astype(np.int32)
    kept = planes != 0
    if sparse is None:
        sparse = kept.mean() < SPARSE_BELOW
    empty = np.zeros(0, np.int32)
    if not sparse:
        common = (taps, channels, w.n, w.vector_size, gamma, bias, corr)
        return PackedWeight(
            *common, np.ascontiguousarray(planes), empty, empty.astype(np.uint16), empty
        )
    owners, ptr, idx, wv = next(
        (layout for size in OWNERS if (layout := _shared(planes, kept, size)) is not None),
        (1, *_own(planes, kept)),
    )
    _kernel.check_blocks(ptr, idx, taps * c4, len(ptr) - 1)
    return PackedWeight(
        taps, channels, w.n, w.vector_size, gamma, bias, corr, None, frozen(ptr), frozen(idx),
        frozen(wv), owners,
    )  # fmt: skip


def _own(planes: np.ndarray, kept: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ptr, idx, wv) of each channel's own kept blocks."""
    channel, plane = np.nonzero(kept)  # channel-major, planes ascending
    return _block_ranges(channel, len(planes)), plane.astype(np.uint16), planes[channel, plane]


def _shared(
    planes: np.ndarray, kept: np.ndarray, owners: int
) -> tuple[int, np.ndarray, np.ndarray, np.ndarray] | None:
    """(owners, ptr, idx, wv) of the blocks that groups of ``owners`` channels keep together,
    when the zeros this multiplies are few (pruned so, e.g. "4x4"), else None. Groups of 16 hold
    whole groups only (AMX tiles) and lay out each run of 16 blocks as [16 channels][run]."""
    n = len(planes)
    if owners == 16 and n % 16:
        return None
    units = -(-n // owners)
    by_unit = np.zeros((units * owners, planes.shape[1]), np.int32)
    by_unit[:n] = planes
    by_unit = by_unit.reshape(units, owners, -1)
    unit_kept = (by_unit != 0).any(axis=1)  # [units, planes]: what a group's channels keep
    if owners * unit_kept.sum() > SHARED_BELOW * kept.sum():
        return None
    unit, plane = np.nonzero(unit_kept)
    ptr = _block_ranges(unit, units)
    wv = by_unit[unit, :, plane]  # [blocks, owners]: the group's weights on each kept plane
    if owners == 16:
        runs = [wv[r : min(r + 16, end)].T for s, end in pairwise(ptr) for r in range(s, end, 16)]
        wv = np.concatenate([run.reshape(-1) for run in runs]) if runs else wv
    return owners, ptr, plane.astype(np.uint16), np.ascontiguousarray(wv).reshape(-1)


def _block_ranges(owner: np.ndarray, owners: int) -> np.ndarray:
    """int32 [owners + 1]: where each owner's kept blocks start (owners ascending)."""
    ptr = np.zeros(owners + 1, np.int32)
    np.cumsum(np.bincount(owner, minlength=owners), out=ptr[1:])
    return ptr


def frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array
