"""Scaled dot-product attention in int8, as the kernel computes it: the numpy definition.

A transformer's activation x activation products (scores = Q Kᵀ, context = P V) have no weights
to prune, but on a CPU they cost as much as the rest of the layer's non-weight work together when
run in float32. Here both are u8 x s8 integer GEMMs on the kernel's own tiles, exact in int32:

- Q and K are quantized to 8 bits per token (one scale per query, per key: max |x| / 127), V per
  channel (one scale per head dimension over the sequence); Q is stored +128 as u8, with the
  kernel's usual per-channel correction (128 · the sum of each key's values).
- scores[j, i] = float(acc) · (sq_i · (sk_j · scale)) + mask_j for key j and query i;
- softmax over the keys of each query with the float32 exp below (Cephes' expf polynomial, one
  float32 operation a step): e = exp(score - max), in (0, 1], quantized to u8 against the
  maximum, p = rint(e · 255), so that even a flat row over 384 keys keeps ~7 bits; the sum
  of e (key by key) divides at the end;
- context[d, i] = float(Σ_j p[j, i] · qv[d, j]) · ((1 / (255 · Σ e_i)) · sv_d).

Tensors are channel-major ([heads · dim, batch · seq]), the executor's layout, so every step
works on rows of queries, the SIMD lanes of the kernel.
"""

from __future__ import annotations

import numpy as np

LOG2E = 1.44269504088896341
LN2_HI = 0.693359375
LN2_LO = -2.12194440e-4
EXP_LOW = -87.0  # e^-87 is near float32's smallest normal: lower inputs give it
EXP_P = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
         1.6666665459e-1, 5.0000001201e-1)  # fmt: skip
ROUNDER = np.float32(12582912.0)  # 1.5 · 2^23: (q + R) - R rounds to an integer, half to even
INT8_LEVEL = 127
PROBABILITY_LEVEL = 255


def exp(x: np.ndarray) -> np.ndarray:
    """float32 e^x for x <= 0 (scores less their maximum), in the kernel's order."""
    f = np.float32
    x = np.maximum(np.asarray(x, f), f(EXP_LOW))
    k = (x * f(LOG2E) + ROUNDER) - ROUNDER
    r = (x - k * f(LN2_HI)) - k * f(LN2_LO)
    p = np.full_like(r, f(EXP_P[0]))
    for c in EXP_P[1:]:
        p = p * r + f(c)
    e = (p * (r * r) + r) + f(1)
    two_k = ((k.astype(np.int32) + 127) << 23).view(f)
    return e * two_k


def quantize_rows(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(q int32, scale float32): 8-bit symmetric values with one scale along ``axis``'s
    complement (max |x| / 127 over ``axis``), q = clamp(rint(x · (1 / scale)), -127, 127)."""
    f = np.float32
    x = np.asarray(x, f)
    scale = np.abs(x).max(axis=axis) / f(INT8_LEVEL)
    inverse = np.divide(f(1), scale, out=np.zeros_like(scale), where=scale > 0)
    scaled = x * np.expand_dims(inverse, axis)
    q = np.clip((scaled + ROUNDER) - ROUNDER, -INT8_LEVEL, INT8_LEVEL)
    return q.astype(np.int32), scale


def reference_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    mask: np.ndarray | None,
    heads: int,
    batch: int,
    scale: float,
) -> np.ndarray:
    """float32 [heads · dim, batch · seq]: the int8 attention of channel-major Q, K, V (mask:
    [batch, seq], added to every score of a key, or None)."""
    f = np.float32
    channels, rows = q.shape
    dim, seq = channels // heads, rows // batch
    out = np.empty((channels, rows), f)
    for b in range(batch):
        cols = slice(b * seq, (b + 1) * seq)
        for h in range(heads):
            chans = slice(h * dim, (h + 1) * dim)
            qq, sq = quantize_rows(q[chans, cols], axis=0)  # per query
            qk, sk = quantize_rows(k[chans, cols], axis=0)  # per key
            qv, sv = quantize_rows(v[chans, cols], axis=1)  # per head dimension
            acc = _exact(qk.T, qq)  # [keys, queries]: the u8 offset and its correction cancel
            scores = acc.astype(f) * (sq[None, :] * (sk * f(scale))[:, None])
            if mask is not None:
                scores = scores + np.asarray(mask[b], f)[:, None]
            e = exp(scores - scores.max(axis=0))
            total = np.zeros(seq, f)
            for row in e:  # key by key, as the kernel sums
                total = total + row
            p = (e * f(PROBABILITY_LEVEL) + ROUNDER) - ROUNDER  # 0..255: e <= 1
            context = _exact(qv, p.astype(np.int32))  # [dim, queries]
            row_scale = f(1) / (f(PROBABILITY_LEVEL) * total)
            out[chans, cols] = context.astype(f) * (row_scale[None, :] * sv[:, None])
    return out


def _exact(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer matrix product (exact in float64: every partial sum is below 2^53)."""
    return (a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)
