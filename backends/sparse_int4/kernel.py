"""The compiled kernel behind numpy-shaped calls: quantize a channel-major activation tensor into
u8 planes, and multiply them with a packed 4-bit weight (a MatMul, or a convolution read straight
from the planes), bit for bit ``reference.reference_matmul`` / ``reference.reference_conv``.
Weights come packed by ``packing.pack``; the kernel's other passes are in ``passes.py``.

Activations are channel-major: float32 [C, M], rows m = (image, y, x) or tokens, the layout the
kernel writes its outputs in, so layer follows layer without a transpose. Quantized, they are
planes of 4 channels (uint8 [ceil(C / 4), rows, 4]) holding each value folded with its vector
scale (q · sq, + 128 when signed), laid out with the zero padding of the convolution that reads
them around each image.
"""

from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass

import numpy as np

from backends.sparse_int4 import _kernel
from backends.sparse_int4.packing import SIGNED_OFFSET, PackedWeight, frozen
from backends.sparse_int4.reference import conv_output_side
from backends.sparse_int4.vsquant import SCALE_BITS, SIGNED_LEVEL, UNSIGNED_LEVEL
from harness.errors import UserError

PATHS: tuple[str, ...] = tuple(_kernel.paths())  # what this CPU runs, best first
ALL_PATHS = ("amx", "avx512vnni", "avxvnni", "avx2", "portable")
TILE_ROWS = _kernel.TILE_ROWS  # rows of a GEMM tile: plane buffers hold whole tiles
HALF_OR_FLOAT = (np.dtype(np.float16), np.dtype(np.float32))  # what outputs and residuals hold
PLANE_PERIOD, PLANE_PHASE = 256, 128  # plane rows are PLANE_PHASE past a multiple of PERIOD
SCRATCH_SHAPES = 16  # temporaries kept per thread: strided convolutions x a few batch sizes


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
    scale_bits: int = SCALE_BITS
    fixed: bool = False  # one static gamma for every group (else each group's own)

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


def quantize(
    x: np.ndarray,
    vector_size: int = 16,
    signed: bool = True,
    *,
    images: int | None = None,
    side: tuple[int, int] = (1, 1),
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    reach: int = 0,
    gamma: float | None = None,
    clip: np.ndarray | None = None,
    scale_bits: int = SCALE_BITS,
    path: str | None = None,
    threads: int | None = None,
) -> Activations:
    """Quantize a channel-major float32 tensor [C, M] as ``vsquant.quantize_activations`` does
    (clip="max", or given clipping scalars [ceil(C / V), M], e.g. Octav's) on its rows [M, C]:
    one gamma per image of ``side`` (M = images · H · W), or per row when ``images`` is None
    (tokens); a static ``gamma`` (calibrated) serves every group. The planes are laid out with
    ``pads`` around each image and ``reach`` rows of slack after them (how far the consumer's
    taps reach past a row; see ``conv_reach``)."""
    x = np.ascontiguousarray(x, np.float32)
    c, m = x.shape
    level = SIGNED_LEVEL if signed else UNSIGNED_LEVEL
    if level * (2**scale_bits - 1) + (SIGNED_OFFSET if signed else 0) > 255:
        raise UserError(f"{scale_bits}-bit vector scales fold activations past a byte")
    if images is None:
        images, side = m, (1, 1)
        if pads != (0, 0, 0, 0):
            raise UserError("only images take padding")
    if images * side[0] * side[1] != m:
        raise UserError(f"{m} rows are not {images} images of {side[0]}x{side[1]}")
    target = planes_for(images, side, c, vector_size, signed, pads, reach, gamma, scale_bits)
    nv = -(-c // vector_size)
    if clip is not None:
        clip = np.ascontiguousarray(clip, np.float32)
        if clip.shape != (nv, m):
            raise UserError(f"clipping scalars must be [{nv}, {m}], not {list(clip.shape)}")
    _kernel.quantize(
        x, clip, target.planes, target.gamma, np.empty((nv, m), np.float32),
        np.empty(m, np.float32), (c, images, *side, *pads, target.rows, target.group_rows),
        vector_size, level, -level if signed else 0, 2**scale_bits - 1,
        SIGNED_OFFSET if signed else 0, -1.0 if gamma is None else gamma, path or PATHS[0],
        threads_or_default(threads),
    )  # fmt: skip
    return target


def planes_for(
    images: int,
    side: tuple[int, int],
    channels: int,
    vector_size: int = 16,
    signed: bool = True,
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    reach: int = 0,
    gamma: float | None = None,
    scale_bits: int = SCALE_BITS,
) -> Activations:
    """Empty planes for a tensor of ``images`` of ``side`` (one-pixel images: tokens, one gamma
    each) laid out for its consumer, padding and slack already holding zeros, for a producer's
    epilogue to write: with one static ``gamma`` for every group, or, for tokens, each token's
    own gamma (the producer computes it once all channels of a row are done)."""
    group_rows = side[0] * side[1]
    hs, ws = side[0] + pads[0] + pads[2], side[1] + pads[1] + pads[3]
    rows = _plane_rows(_tiled(images * hs * ws) + reach)
    planes = aligned_empty((-(-channels // 4), rows, 4))
    planes.fill(SIGNED_OFFSET if signed else 0)
    gamma_array = np.full(images, 0.0 if gamma is None else gamma, np.float32)
    return Activations(
        planes, gamma_array, channels, vector_size, signed, images, side, pads, group_rows,
        scale_bits, gamma is not None,
    )  # fmt: skip


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
    gelu: bool = False,
    path: str | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """float32 [N, M]: the GEMM of quantized rows (tokens, or pixels of a 1x1 convolution)."""
    out = conv(a, w, POINTWISE, residual=residual, relu=relu, gelu=gelu, path=path, threads=threads)
    assert out is not None
    return out


def conv(
    a: Activations,
    w: PackedWeight,
    geometry: ConvGeometry,
    *,
    residual: np.ndarray | None = None,
    relu: bool = False,
    gelu: bool = False,
    floats: bool = True,
    out: np.ndarray | None = None,
    target: Activations | None = None,
    path: str | None = None,
    threads: int | None = None,
) -> np.ndarray | None:
    """The convolution of quantized images (laid out with the convolution's padding) with a
    packed weight, + bias, then GELU if asked, + ``residual`` [N, B · OH · OW] (float32 or
    float16), then ReLU if asked, each as the reference orders it: float32 [N, B · OH · OW]
    when ``floats`` (into ``out`` if given: float16 there rounds to nearest even), and
    quantized straight into ``target``'s planes (its static gamma, see ``planes_for``)."""
    if a.channels != w.channels or a.vector_size != w.vector_size or geometry.taps != w.taps:
        raise UserError(
            f"activations ({a.channels} channels, vectors of {a.vector_size}) do not fit the "
            f"weight ({w.channels} channels x {w.taps} taps, vectors of {w.vector_size})"
        )
    if a.pads != geometry.pads:
        raise UserError(
            f"activations padded {a.pads} cannot feed a convolution padded {geometry.pads}"
        )
    threads = threads_or_default(threads)
    b, (oh, ow), c4 = a.images, geometry.output_side(a.side), -(-a.channels // 4)
    m = b * oh * ow
    hs, ws = a.padded_side
    shifted = geometry.implicit and any(a.pads)  # taps are shifted rows of padded images
    rows, dense_of, _ = _virtual_rows(b, (hs, ws), (oh, ow), shifted)
    if geometry.implicit:
        planes = a.planes
        (kh, kw), (dh, dw) = geometry.kernel, geometry.dilations
        shifts = tuple(ky * dh * ws + kx * dw for ky in range(kh) for kx in range(kw))
        table = _table(planes.shape[1] * 4, c4, shifts)
    else:
        planes = _scratch("windows", (geometry.taps * c4, _plane_rows(_tiled(m)), 4))
        _kernel.pack_windows(
            a.planes, planes, (c4, a.rows, planes.shape[1], b, hs, ws, *geometry.kernel,
                               *geometry.strides, *geometry.dilations, oh, ow),
            SIGNED_OFFSET * 0x01010101 if a.signed else 0, threads,
        )  # fmt: skip
        table = _table(planes.shape[1] * 4, geometry.taps * c4, (0,))
    key = (b, (hs, ws), (oh, ow), shifted)
    static = bool((a.gamma == a.gamma[0]).all())
    ga = _static_gammas(*key, float(a.gamma[0])) if static else _row_gammas(a.gamma, *key)
    if floats and out is None:
        out = aligned_empty((w.n, m), np.float32)
    elif not floats:
        out = None
    elif out.shape != (w.n, m) or out.dtype not in HALF_OR_FLOAT or not out.flags.c_contiguous:
        raise UserError(f"the output buffer must be float32 or float16 [{w.n}, {m}]")
    if residual is not None:
        if residual.dtype not in HALF_OR_FLOAT:
            residual = residual.astype(np.float32)
        residual = np.ascontiguousarray(residual)
        if residual.shape != (w.n, m):
            raise UserError(f"the residual is {list(residual.shape)}, the output [{w.n}, {m}]")
    quantized: tuple = (None, None, (0.0, 0, 0, 0, 0, 0), None)
    group = 16
    if target is not None:
        if target.channels != w.n or target.images != b or target.side != (oh, ow):
            raise UserError("the target planes do not hold this convolution's output")
        if not target.fixed and (target.group_rows != 1 or dense_of is not None):
            raise UserError("only tokens take a gamma each from their producer's epilogue")
        level = SIGNED_LEVEL if target.signed else UNSIGNED_LEVEL
        row_of = _target_rows(b, (hs, ws), (oh, ow), shifted, target.padded_side, target.pads[:2])
        quantized = (
            target.planes, row_of,
            (float(target.gamma[0]), level, -level if target.signed else 0,
             2**target.scale_bits - 1, SIGNED_OFFSET if target.signed else 0, target.rows),
            None if target.fixed else target.gamma,
        )  # fmt: skip
        group = target.vector_size
    _kernel.gemm(
        planes, table, ga, dense_of, (rows, m, w.n, w.planes), w.dense, w.ptr, w.idx, w.wv,
        w.owners, w.corr if a.signed else None, w.gamma, w.bias, residual, (relu, gelu), out,
        *quantized, group, (_is_half(residual), _is_half(out)), path or PATHS[0], threads,
    )  # fmt: skip
    return out


@functools.lru_cache(maxsize=256)
def _table(stride: int, planes_per_shift: int, shifts: tuple[int, ...]) -> np.ndarray:
    """int64 [planes]: each plane's byte offset (tap shifts outer, planes inner)."""
    offsets = [p * stride + 4 * s for s in shifts for p in range(planes_per_shift)]
    return np.array(offsets, np.int64)


@functools.lru_cache(maxsize=256)
def _virtual_rows(
    images: int, padded: tuple[int, int], out: tuple[int, int], shifted: bool
) -> tuple[int, np.ndarray | None, np.ndarray]:
    """(rows, dense_of, image of each row) of a convolution's GEMM: its output rows, or, when
    its taps are shifted rows of padded images, every padded position, with the output row
    of each (-1 where no window starts; whole tiles)."""
    (hs, ws), (oh, ow) = padded, out
    if not shifted:
        rows = images * oh * ow
        return rows, None, frozen(np.arange(rows) // (oh * ow))
    rows = images * hs * ws
    y, x = np.arange(hs)[:, None], np.arange(ws)[None, :]
    inside = (y < oh) & (x < ow)
    per_image = np.where(inside, y * ow + x, -1)[None]
    index = np.where(inside, per_image + np.arange(images)[:, None, None] * (oh * ow), -1)
    dense_of = np.full(_tiled(rows), -1, np.int64)
    dense_of[:rows] = index.reshape(-1)
    _kernel.check_rows(dense_of, images * oh * ow)
    return rows, frozen(dense_of), frozen(np.arange(rows) // (hs * ws))


def _row_gammas(
    gamma: np.ndarray, images: int, padded: tuple[int, int], out: tuple[int, int], shifted: bool
) -> np.ndarray:
    """float32 [rows, whole tiles]: each GEMM row's gamma (0 past the rows)."""
    rows, _, image_of = _virtual_rows(images, padded, out, shifted)
    ga = np.zeros(_tiled(rows), np.float32)
    ga[:rows] = gamma[image_of]
    return ga


@functools.lru_cache(maxsize=256)
def _static_gammas(
    images: int, padded: tuple[int, int], out: tuple[int, int], shifted: bool, gamma: float
) -> np.ndarray:
    """``_row_gammas`` of one gamma for all, made once."""
    return frozen(_row_gammas(np.full(images, gamma, np.float32), images, padded, out, shifted))


@functools.lru_cache(maxsize=256)
def _target_rows(
    images: int,
    padded: tuple[int, int],
    out: tuple[int, int],
    shifted: bool,
    target_padded: tuple[int, int],
    target_corner: tuple[int, int],
) -> np.ndarray:
    """int64 [rows, whole tiles]: each GEMM row's row in planes laid out with the padding of
    the layer that reads the output (-1: none)."""
    rows, dense_of, _ = _virtual_rows(images, padded, out, shifted)
    (oh, ow), (hs, ws), (top, left) = out, target_padded, target_corner
    o = np.arange(_tiled(rows)) if dense_of is None else dense_of
    b, y, x = o // (oh * ow), o % (oh * ow) // ow, o % ow
    valid = (o >= 0) & (o < images * oh * ow)
    rows_of = np.where(valid, (b * hs + y + top) * ws + x + left, -1).astype(np.int64)
    _kernel.check_rows(rows_of, images * hs * ws)
    return frozen(rows_of)


_SCRATCH = threading.local()


def _scratch(kind: str, shape: tuple[int, ...]) -> np.ndarray:
    """A 64-byte aligned uint8 buffer for one call's temporaries, kept per thread so the next
    call of the same shape reuses its pages (fresh pages cost a fault each); the last
    SCRATCH_SHAPES shapes are kept."""
    buffers = _SCRATCH.__dict__.setdefault(kind, {})
    buffer = buffers.pop(shape, None)
    if buffer is None:
        buffer = aligned_empty(shape)
        if len(buffers) >= SCRATCH_SHAPES:
            buffers.pop(next(iter(buffers)))
    buffers[shape] = buffer  # the most recent last
    return buffer


def aligned_empty(shape: tuple[int, ...], dtype: type = np.uint8) -> np.ndarray:
    """An array whose data starts on a 64-byte boundary (numpy's own are 16-byte aligned): row
    vectors fill whole cache lines, and large outputs can be stored past the caches."""
    item = np.dtype(dtype).itemsize
    size = int(np.prod(shape)) * item
    raw = np.empty(size + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start : start + size].view(dtype).reshape(shape)


def _plane_rows(rows: int) -> int:
    """At least ``rows``, and 128 past a multiple of 256: planes then lie 8 cache lines (mod 16)
    apart, so a tile's row vectors of 64 planes spread over every L1 set. A power-of-two
    stride (6144 bytes for 1536 tokens) put them all in 2 of the 64 sets."""
    return rows + (PLANE_PHASE - rows) % PLANE_PERIOD


def _is_half(array: np.ndarray | None) -> bool:
    return array is not None and array.dtype == np.float16


def _tiled(rows: int) -> int:
    return -(-rows // TILE_ROWS) * TILE_ROWS


def threads_or_default(threads: int | None) -> int:
    return threads if threads is not None else default_threads()
