"""The compiled kernel behind numpy-shaped calls: quantize a channel-major activation tensor into
u8 planes, and multiply them with a packed 4-bit weight (a MatMul, or a convolution read straight
from the planes), bit for bit ``vsquant.reference_matmul`` / ``vsquant.reference_conv``.

Activations are channel-major: float32 [C, M], rows m = (image, y, x) or tokens, the layout the
kernel writes its outputs in, so layer follows layer without a transpose. Quantized, they are
planes of 4 channels (uint8 [ceil(C / 4), rows, 4]) holding each value folded with its vector
scale (q · sq, + 128 when signed), laid out with the zero padding of the convolution that reads
them around each image. A packed weight holds its folded values 4 input channels to an int32:
dense [N, planes], or only the kept blocks of 4 when pruned below ``SPARSE_BELOW``.
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
    QuantizedWeight,
    conv_output_side,
)
from harness.errors import UserError

PATHS: tuple[str, ...] = tuple(_kernel.paths())  # what this CPU runs, best first
ALL_PATHS = ("avx512vnni", "avxvnni", "avx2", "portable")
TILE_ROWS = _kernel.TILE_ROWS  # rows of a GEMM tile: plane buffers hold whole tiles
MAX_PLANES = _kernel.MAX_PLANES  # kept blocks name their plane in 16 bits
SIGNED_OFFSET = 128  # signed folded values are stored as u8 = value + 128
SPARSE_BELOW = 0.5  # kept blocks per plane and channel under which the sparse loop wins


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class ConvGeometry:
    kernel: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # ONNX order: top, left, bottom, right
    dilations: tuple[int, int] = (1, 1)

    @property
    def taps(self) -> int:
        return self.kernel[0] * self.kernel[1]

    @property
    def implicit(self) -> bool:
        """Stride 1: the taps are shifted rows of the padded planes, no window copy."""
        return self.strides == (1, 1)

    def output_side(self, side: tuple[int, int]) -> tuple[int, int]:
        return conv_output_side(side, self.kernel, self.strides, self.pads, self.dilations)


POINTWISE = ConvGeometry((1, 1))  # a MatMul is the 1x1 convolution of one-pixel images


@dataclass(frozen=True)
class PackedWeight:
    """A quantized weight in the kernel's layout: K = taps x channels as planes of 4 channels
    (plane = tap · ceil(C / 4) + c // 4), 4 folded s8 per int32; dense [N, planes], or per
    channel n the kept blocks ptr[n]:ptr[n + 1] (each its plane and 4 weights); corr[n] = 128 ·
    the channel's folded sum (what signed activations' +128 adds); gamma, bias float32 [N]."""

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


@dataclass(frozen=True)
class Activations:
    """A quantized activation tensor: planes uint8 [ceil(C / 4), rows, 4] (images of side
    (H, W) with ``pads`` around each, then padding rows), one gamma per group of
    ``group_rows`` rows (an image, or a token)."""

    planes: np.ndarray
    gamma: np.ndarray
    channels: int
    vector_size: int
    signed: bool
    images: int
    side: tuple[int, int]
    pads: tuple[int, int, int, int]
    group_rows: int

    @property
    def rows(self) -> int:
        return self.planes.shape[1]

    @property
    def padded_side(self) -> tuple[int, int]:
        h, w = self.side
        return h + self.pads[0] + self.pads[2], w + self.pads[1] + self.pads[3]

    @property
    def used_rows(self) -> int:
        """Rows holding the images and their padding."""
        hs, ws = self.padded_side
        return self.images * hs * ws


def pack(
    w: QuantizedWeight, bias: np.ndarray | None = None, sparse: bool | None = None
) -> PackedWeight:
    """Pack a quantized weight (pruned or not); ``sparse=None`` picks the faster layout."""
    channels = w.channels or w.k
    taps, c4 = w.k // channels, -(-channels // 4)
    folded = np.zeros((w.n, taps, c4 * 4), np.int8)
    folded[:, :, :channels] = w.folded().T.reshape(w.n, taps, channels)  # |q sq| <= 105
    planes = folded.reshape(w.n, taps * c4, 4).view(np.int32)[:, :, 0]  # [N, planes]
    if taps * c4 > MAX_PLANES:
        raise UserError(f"K = {w.k} is too long for the kernel (at most {4 * MAX_PLANES})")
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
        return PackedWeight(*common, np.ascontiguousarray(planes), empty, empty.astype(np.uint16), empty)
    channel, plane = np.nonzero(kept)  # channel-major, planes ascending
    ptr = np.zeros(w.n + 1, np.int32)
    np.cumsum(np.bincount(channel, minlength=w.n), out=ptr[1:])
    return PackedWeight(
        taps, channels, w.n, w.vector_size, gamma, bias, corr, None, ptr,
        plane.astype(np.uint16), np.ascontiguousarray(planes[channel, plane]),
    )  # fmt: skip


def quantize(
    x: np.ndarray,
    vector_size: int = 16,
    signed: bool = True,
    *,
    images: int | None = None,
    side: tuple[int, int] = (1, 1),
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    reach: int = 0,
    clip: np.ndarray | None = None,
    scale_bits: int = SCALE_BITS,
    path: str | None = None,
    threads: int | None = None,
) -> Activations:
    """Quantize a channel-major float32 tensor [C, M] as ``vsquant.quantize_activations`` does
    (clip="max", or given clipping scalars [ceil(C / V), M], e.g. Octav's) on its rows [M, C]:
    one gamma per image of ``side`` (M = images · H · W), or per row when ``images`` is None
    (tokens). The planes are laid out with ``pads`` around each image and ``reach`` rows of
    slack after them (how far the consumer's taps reach past a row; see ``conv_reach``)."""
    x = np.ascontiguousarray(x, np.float32)
    c, m = x.shape
    if images is None:
        images, side, group_rows = m, (1, 1), 1
        if pads != (0, 0, 0, 0):
            raise UserError("only images take padding")
    else:
        group_rows = side[0] * side[1]
    if images * side[0] * side[1] != m:
        raise UserError(f"{m} rows are not {images} images of {side[0]}x{side[1]}")
    nv = -(-c // vector_size)
    hs, ws = side[0] + pads[0] + pads[2], side[1] + pads[1] + pads[3]
    used = images * hs * ws if any(pads) else m
    rows = _tiled(used) + reach
    planes = np.empty((-(-c // 4), rows, 4), np.uint8)
    gamma = np.empty(m // group_rows, np.float32)
    if clip is not None:
        clip = np.ascontiguousarray(clip, np.float32)
        if clip.shape != (nv, m):
            raise UserError(f"clipping scalars must be [{nv}, {m}], not {list(clip.shape)}")
    level = SIGNED_LEVEL if signed else UNSIGNED_LEVEL
    _kernel.quantize(
        x, clip, planes, gamma, np.empty((nv, m), np.float32), np.empty(m, np.float32),
        (c, images, *side, *pads, rows, group_rows), vector_size, level,
        -level if signed else 0, 2**scale_bits - 1, SIGNED_OFFSET if signed else 0,
        path or PATHS[0], _threads(threads),
    )  # fmt: skip
    return Activations(planes, gamma, c, vector_size, signed, images, side, pads, group_rows)


def conv_reach(geometry: ConvGeometry, side: tuple[int, int]) -> int:
    """Rows a stride-1 convolution's last tap reaches past the first over an image of ``side``
    laid out with the convolution's padding (the slack its input planes need)."""
    if not geometry.implicit:
        return 0
    ws = side[1] + geometry.pads[1] + geometry.pads[3]
    (kh, kw), (dh, dw) = geometry.kernel, geometry.dilations
    return (kh - 1) * dh * ws + (kw - 1) * dw


def matmul(
    a: Activations,
    w: PackedWeight,
    *,
    residual: np.ndarray | None = None,
    relu: bool = False,
    path: str | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """float32 [N, M]: the GEMM of quantized rows (tokens, or pixels of a 1x1 convolution)."""
    return conv(a, w, POINTWISE, residual=residual, relu=relu, path=path, threads=threads)


def conv(
    a: Activations,
    w: PackedWeight,
    geometry: ConvGeometry,
    *,
    residual: np.ndarray | None = None,
    relu: bool = False,
    path: str | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """float32 [N, B · OH · OW]: the convolution of quantized images (laid out with the
    convolution's padding) with a packed weight, + bias, + ``residual`` [N, B · OH · OW], then
    ReLU if asked, each as the reference orders it."""
    if a.channels != w.channels or a.vector_size != w.vector_size or geometry.taps != w.taps:
        raise UserError(
            f"activations ({a.channels} channels, vectors of {a.vector_size}) do not fit the "
            f"weight ({w.channels} channels x {w.taps} taps, vectors of {w.vector_size})"
        )
    threads = _threads(threads)
    b, (oh, ow), c4 = a.images, geometry.output_side(a.side), -(-a.channels // 4)
    m = b * oh * ow
    if a.pads != geometry.pads:
        raise UserError(
            f"activations padded {a.pads} cannot feed a convolution padded {geometry.pads}"
        )
    if geometry.implicit:
        planes, rows, dense_of = a.planes, a.used_rows, _output_rows(a, oh, ow)
        hs, ws = a.padded_side
        (kh, kw), (dh, dw) = geometry.kernel, geometry.dilations
        shifts = [ky * dh * ws + kx * dw for ky in range(kh) for kx in range(kw)]
        group_of_row = np.arange(rows) // (hs * ws)
    else:
        hs, ws = a.padded_side
        rows, dense_of, shifts = m, None, [0] * geometry.taps
        planes = np.empty((geometry.taps * c4, _tiled(m), 4), np.uint8)
        _kernel.pack_windows(
            a.planes, planes, (c4, a.rows, planes.shape[1], b, hs, ws, *geometry.kernel,
                               *geometry.strides, *geometry.dilations, oh, ow),
            SIGNED_OFFSET * 0x01010101 if a.signed else 0, threads,
        )  # fmt: skip
        group_of_row = np.arange(rows) // (oh * ow)
    stride = planes.shape[1] * 4
    if geometry.implicit:
        table = np.array([c * stride + 4 * s for s in shifts for c in range(c4)], np.int64)
    else:
        table = np.arange(geometry.taps * c4, dtype=np.int64) * stride
    ga = np.zeros(_tiled(rows), np.float32)
    ga[:rows] = a.gamma[group_of_row]
    out = np.empty((w.n, m), np.float32)
    if residual is not None:
        residual = np.ascontiguousarray(residual, np.float32)
        if residual.shape != out.shape:
            raise UserError(f"the residual is {list(residual.shape)}, the output {list(out.shape)}")
    _kernel.gemm(
        planes, table, ga, dense_of, (rows, m, w.n, w.planes), w.dense, w.ptr, w.idx, w.wv,
        w.corr if a.signed else None, w.gamma, w.bias, residual, relu, out,
        path or PATHS[0], threads,
    )  # fmt: skip
    return out


def _output_rows(a: Activations, oh: int, ow: int) -> np.ndarray | None:
    """int64 [used rows]: the output row of each padded position (-1 where no window starts),
    or None when every row is an output (no padding)."""
    if not any(a.pads):
        return None
    hs, ws = a.padded_side
    y, x = np.arange(hs)[:, None], np.arange(ws)[None, :]
    inside = (y < oh) & (x < ow)
    index = np.where(inside, y * ow + x, -1)
    per_image = np.arange(a.images)[:, None, None] * (oh * ow)
    return np.where(inside, index + per_image, -1).reshape(-1).astype(np.int64)


def _tiled(rows: int) -> int:
    return -(-rows // TILE_ROWS) * TILE_ROWS


def _threads(threads: int | None) -> int:
    return threads if threads is not None else default_threads()
