"""The reference arithmetic of sparse-int4 on VS-Quant values (``vsquant.py``): bit for bit what
every compiled path of the kernel must produce. A product of quantized activations and weights is
exact in integers; the float32 epilogue after it runs one IEEE operation a step in a fixed order
(no FMA), as the kernel's does."""

from __future__ import annotations

import math

import numpy as np

from backends.sparse_int4.vsquant import (
    SIGNED_LEVEL,
    UNSIGNED_LEVEL,
    QuantizedActivation,
    QuantizedWeight,
)
from harness.errors import UserError

INT32_MAX = 2**31 - 1


def integer_accumulators(a: QuantizedActivation, w: QuantizedWeight) -> np.ndarray:
    """int32 [R, N]: for each output, the sum over vectors v of
    (sum of q_a · q_w over the vector) · sq_a[r, v] · sq_w[v, n], as exact integers.

    No overflow: every term q_a · q_w · sq_a · sq_w is at most L_a · 7 · sqmax_a · sqmax_w in
    magnitude (15 · 7 · 15 · 15 = 23,625 at the defaults with unsigned activations, 11,025
    signed), so |acc| <= K · 23,625, which is 96.8 M (4.5% of the int32 range) for K = 4096 and
    stays in int32 up to K = 90,899; longer K (or wider scales) is refused.

    Computed as one float64 GEMM of the folded values: every product and partial sum is an
    integer below 2^31 < 2^53, hence exact in float64 in any summation order, so this equals the
    kernel's int32 accumulation, at BLAS speed.
    """
    _check_pair(a, w)
    if w.channels:
        raise UserError("a convolution's weight takes reference_conv, not a matrix product")
    return _exact_product(a.folded(), w.folded())


def reference_matmul(
    a: QuantizedActivation,
    w: QuantizedWeight,
    bias: np.ndarray | None = None,
    residual: np.ndarray | None = None,
    relu: bool = False,
) -> np.ndarray:
    """float32 [R, N]: the reference result the kernel must match bit for bit.

    out[r, n] = float32(acc[r, n]) * (gamma_a[r] * gamma_w[n]), all in IEEE float32 with
    round-to-nearest-even: the int32 accumulator converted to float32 (one rounding), the two
    gammas multiplied in float32 (one rounding), then one float32 multiply; then, each one
    float32 operation, + bias[n], + residual[r, n], and max(., 0). No FMA, no other order (in C:
    ``(float)acc * (ga[r] * gw[n]) + bias[n] + residual`` without -ffast-math)."""
    return epilogue(integer_accumulators(a, w), a.row_gamma, w.gamma, bias, residual, relu)


def reference_conv(
    a: QuantizedActivation,
    w: QuantizedWeight,
    image: tuple[int, int],
    kernel: tuple[int, int],
    strides: tuple[int, int] = (1, 1),
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    dilations: tuple[int, int] = (1, 1),
    bias: np.ndarray | None = None,
    residual: np.ndarray | None = None,
    relu: bool = False,
) -> np.ndarray:
    """float32 [B · OH · OW, N]: a convolution of quantized activations [B · H · W, C] (rows
    (image, y, x), one gamma per image) with a quantized weight [KH · KW · C, N] (K ordered
    (kh, kw, c)), as ``reference_matmul`` on the im2col rows of the folded values (zero where
    the window leaves the image); ``pads`` as ONNX (top, left, bottom, right)."""
    h, w_side = image
    c = a.k
    if a.group_rows != h * w_side:
        raise UserError(f"a convolution's activations take one gamma per image of {h}x{w_side}")
    if w.k != kernel[0] * kernel[1] * c or (w.channels or w.k) != c:
        raise UserError(
            f"the weight does not fit a {kernel[0]}x{kernel[1]} kernel over {c} channels"
        )
    _check_pair(a, w)
    images = len(a.gamma)
    folded = a.folded().reshape(images, h, w_side, c)
    rows = _im2col(folded, kernel, strides, pads, dilations)
    acc = _exact_product(rows, w.folded())
    oh, ow = conv_output_side(image, kernel, strides, pads, dilations)
    row_gamma = np.repeat(a.gamma, oh * ow)
    return epilogue(acc, row_gamma, w.gamma, bias, residual, relu)


def epilogue(
    acc: np.ndarray,
    row_gamma: np.ndarray,
    weight_gamma: np.ndarray,
    bias: np.ndarray | None = None,
    residual: np.ndarray | None = None,
    relu: bool = False,
    gelu: bool = False,
) -> np.ndarray:
    """float32 [R, N] from int32 accumulators, in the kernel's float32 order: scale, + bias,
    then GELU, + residual, then ReLU."""
    out = acc.astype(np.float32) * (row_gamma[:, None] * weight_gamma[None, :])
    if bias is not None:
        out = out + np.asarray(bias, np.float32)[None, :]
    if gelu:
        out = gelu_erf(out)
    if residual is not None:
        out = out + np.asarray(residual, np.float32)
    return np.where(out > 0, out, np.float32(0)) if relu else out


# erf(x) = x P(x^2) / Q(x^2) on [-4, 4] (±1 beyond, to float32 precision): the rational
# approximation TensorFlow and Eigen use, each step one float32 operation.
ERF_CLAMP = 4.0
ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
         -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
         -1.60960333262415e-02)  # fmt: skip
ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
         -7.37332916720468e-03, -1.42647390514189e-02)  # fmt: skip


def erf(x: np.ndarray) -> np.ndarray:
    """float32 erf, in the kernel's order (Horner, no fused multiply-adds)."""
    f = np.float32
    t = np.clip(np.asarray(x, f), f(-ERF_CLAMP), f(ERF_CLAMP))
    t2 = t * t
    p = t2 * f(ERF_P[0]) + f(ERF_P[1])
    for c in ERF_P[2:]:
        p = p * t2 + f(c)
    p = t * p
    q = t2 * f(ERF_Q[0]) + f(ERF_Q[1])
    for c in ERF_Q[2:]:
        q = q * t2 + f(c)
    return p / q


def gelu_erf(x: np.ndarray) -> np.ndarray:
    """float32 BERT GELU, x · 0.5 · (1 + erf(x / √2)): ((x · (1 + erf(x / √2))) · 0.5), the
    order of the ONNX graph, with ``erf`` above."""
    f = np.float32
    x = np.asarray(x, f)
    return (x * (erf(x / f(math.sqrt(2))) + f(1))) * f(0.5)


def layer_norm(x: np.ndarray, scale: np.ndarray, bias: np.ndarray, epsilon: float) -> np.ndarray:
    """float32 LayerNormalization over the channels of a channel-major [C, M] tensor, in the
    kernel's order: sums channel by channel (per row), mean = sum / C, var = sum (x - mean)^2
    / C, y = ((x - mean) · (1 / sqrt(var + eps))) · scale + bias."""
    f = np.float32
    x = np.asarray(x, f)
    c = len(x)
    total = np.zeros(x.shape[1], f)
    for row in x:
        total = total + row
    mean = total / f(c)
    centred = x - mean
    squares = np.zeros(x.shape[1], f)
    for row in centred:
        squares = squares + row * row
    inverse = f(1) / np.sqrt(squares / f(c) + f(epsilon))
    return (centred * inverse) * np.asarray(scale, f)[:, None] + np.asarray(bias, f)[:, None]


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
    if out[0] < 1 or out[1] < 1:
        raise UserError(
            f"a {kernel[0]}x{kernel[1]} window does not fit a {side[0]}x{side[1]} input"
        )
    return out[0], out[1]


def _im2col(
    x: np.ndarray,
    kernel: tuple[int, int],
    strides: tuple[int, int],
    pads: tuple[int, int, int, int],
    dilations: tuple[int, int],
) -> np.ndarray:
    """Conv rows of a [B, H, W, C] batch: [B · OH · OW, KH · KW · C], K ordered (kh, kw, c)."""
    b, h, w, c = x.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilations
    oh, ow = conv_output_side((h, w), kernel, strides, pads, dilations)
    padded = np.pad(x, ((0, 0), (pads[0], pads[2]), (pads[1], pads[3]), (0, 0)))
    rows = np.empty((b, oh, ow, kh, kw, c), x.dtype)
    for ky in range(kh):
        for kx in range(kw):
            window = padded[:, ky * dh :, kx * dw :][:, : sh * oh : sh, : sw * ow : sw]
            rows[:, :, :, ky, kx, :] = window
    return rows.reshape(b * oh * ow, kh * kw * c)


def _exact_product(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    return (a.astype(np.float64) @ w.astype(np.float64)).astype(np.int32)


def _check_pair(a: QuantizedActivation, w: QuantizedWeight) -> None:
    if a.k != (w.channels or w.k):
        raise UserError(f"activations have K = {a.k} but the weight has K = {w.k}")
    if a.vector_size != w.vector_size:
        raise UserError(
            f"activation vectors of {a.vector_size} do not line up with weight vectors of "
            f"{w.vector_size}; quantize both with the same vector size"
        )
    _check_accumulator(a, w, w.k)


def _check_accumulator(a: QuantizedActivation, w: QuantizedWeight, k: int) -> None:
    largest_term = (
        (SIGNED_LEVEL if a.signed else UNSIGNED_LEVEL)
        * SIGNED_LEVEL
        * (2**a.scale_bits - 1)
        * (2**w.scale_bits - 1)
    )
    if k * largest_term > INT32_MAX:
        raise UserError(
            f"K = {k} could overflow the int32 accumulator with {a.scale_bits}- and "
            f"{w.scale_bits}-bit scales; use K <= {INT32_MAX // largest_term} or narrower scales"
        )
