"""The kernel's passes besides the GEMM, behind numpy-shaped calls: int8 attention, LayerNorm and
max pooling of channel-major tensors, each bit for bit its reference (``attention.py``,
``reference.layer_norm``, ONNX MaxPool)."""

from __future__ import annotations

import numpy as np

from backends.sparse_int4 import _kernel
from backends.sparse_int4.kernel import PATHS, ConvGeometry, aligned_empty, threads_or_default
from harness.errors import UserError


def attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    mask: np.ndarray | None,
    heads: int,
    batch: int,
    scale: float,
    *,
    out: np.ndarray | None = None,
    path: str | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """float32 [heads · dim, batch · seq]: ``attention.reference_attention`` of channel-major
    Q, K, V (mask [batch, seq] or None) on the kernel's int8 tiles (into ``out`` if given)."""
    q, k, v = (np.ascontiguousarray(t, np.float32) for t in (q, k, v))
    channels, rows = q.shape
    if k.shape != q.shape or v.shape != q.shape or channels % heads or rows % batch:
        raise UserError("attention needs Q, K, V of one shape [heads x dim, batch x seq]")
    dim, seq = channels // heads, rows // batch
    if dim % 4:
        raise UserError(f"attention heads of {dim} dimensions: the kernel needs a multiple of 4")
    if mask is not None:
        mask = np.ascontiguousarray(mask, np.float32).reshape(batch, seq)
    out = aligned_empty(q.shape, np.float32) if out is None else out
    _kernel.attention(
        q, k, v, mask, out, (batch, seq, heads, dim), float(scale), path or PATHS[0],
        threads_or_default(threads),
    )  # fmt: skip
    return out


def layer_norm(
    x: np.ndarray,
    scale: np.ndarray,
    bias: np.ndarray,
    epsilon: float,
    *,
    out: np.ndarray | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """float32 [C, M]: ``reference.layer_norm`` of a channel-major tensor (into ``out`` if
    given)."""
    x = np.ascontiguousarray(x, np.float32)
    out = aligned_empty(x.shape, np.float32) if out is None else out
    scale, bias = (np.ascontiguousarray(v, np.float32).reshape(-1) for v in (scale, bias))
    if scale.shape != (x.shape[0],) or bias.shape != scale.shape or out.shape != x.shape:
        raise UserError(f"LayerNormalization over {x.shape[0]} channels needs as many scales")
    _kernel.layer_norm(x, scale, bias, float(epsilon), out, threads_or_default(threads))
    return out


def max_pool(
    x: np.ndarray,
    images: int,
    side: tuple[int, int],
    window: ConvGeometry,
    *,
    out: np.ndarray | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """float32 [C, B · OH · OW] (into ``out`` if given): ONNX MaxPool (padding never wins) of a
    channel-major tensor [C, B · H · W] of ``images`` images of ``side``."""
    x = np.ascontiguousarray(x, np.float32)
    oh, ow = window.output_side(side)
    shape = (x.shape[0], images * oh * ow)
    if out is None:
        out = aligned_empty(shape, np.float32)
    elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise UserError(f"the output buffer must be float32 {list(shape)}")
    geometry = (x.shape[0] * images, *side, *window.kernel, *window.strides, *window.pads[:2],
                *window.dilations, oh, ow)  # fmt: skip
    _kernel.max_pool(x, out, geometry, threads_or_default(threads))
    return out
