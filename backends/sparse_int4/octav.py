"""MSE-optimal clipping scalars for 4-bit (and wider) quantizers: Octav (Sakr et al., ICML 2022).

Clipping at max |x| wastes most of a 4-bit grid on rare outliers; clipping too tight adds
clipping noise. Octav balances the two: with B bits and clipping scalar s, the idealised quantizer
(uniform step Δ = s / L, L the largest integer level, values clipped to ±s) has mean squared error

    J(s) = s² / (12 L²) · P(|X| <= s) + E[(|X| - s)² · 1{|X| > s}]

and the Newton-Raphson fixed point

    s_{n+1} = E[|X| · 1{|X| > s_n}] / (k · P(|X| <= s_n) + P(|X| > s_n)),   k = 1 / (12 L²)

reaches its minimum in a handful of steps. With the formula's grid, L = 2^(B-1) for signed data
(k = 4^-B / 3) and L = 2^B for unsigned, non-negative data such as post-ReLU activations
(k = 4^-B / 12). Integer grids such as -7..7 pass ``max_level=7`` to compare like with like.

``octav_clip`` serves one tensor; ``octav_clip_rows`` serves every row of a matrix at once (one
weight vector offline, one activation vector at run time), without a Python loop over rows.
"""

from __future__ import annotations

import numpy as np

from harness.errors import UserError

MIN_BITS = 2
MAX_BITS = 16


def octav_clip(
    x: np.ndarray,
    bits: int = 4,
    signed: bool = True,
    iterations: int = 30,
    tol: float = 1e-6,
    *,
    max_level: int | None = None,
) -> float:
    """The MSE-optimal clipping scalar of all of ``x``: the Octav fixed point started from
    mean |x| and stopped at a relative change below ``tol``; 0.0 for all-zero input, and
    max |x| when nothing exceeds the estimate (constant input), where the step would give 0."""
    row = np.asarray(x).reshape(1, -1)
    return float(octav_clip_rows(row, bits, signed, iterations, tol, max_level=max_level)[0])


def octav_clip_rows(
    x: np.ndarray,
    bits: int = 4,
    signed: bool = True,
    iterations: int = 30,
    tol: float = 1e-6,
    *,
    max_level: int | None = None,
) -> np.ndarray:
    """One clipping scalar per row of a 2-D array (float64 [rows]), by the same fixed point.

    A row stops moving once its relative change is below ``tol`` (so each row takes exactly
    the steps ``octav_clip`` would take on it); the loop ends when every row has converged or
    after ``iterations`` steps, a fixed cost bound for run-time use. A row still moving then
    (on a few samples the map can cycle between two values) keeps the better of its last two.
    """
    data = _checked(x, bits, signed, max_level)
    if data.ndim != 2:
        raise UserError(f"octav_clip_rows needs a 2-D array, not shape {data.shape}")
    if iterations < 1:
        raise UserError(f"Octav needs at least one iteration, not {iterations}")
    k = _noise_constant(bits, signed, max_level)
    a = np.abs(data)
    count = a.shape[1]
    row_max = a.max(axis=1)
    s = a.mean(axis=1)
    done = row_max == 0  # all-zero rows clip at 0.0
    s[done] = 0.0
    previous = s
    for _ in range(iterations):
        above = a > s[:, None]
        clipped = np.count_nonzero(above, axis=1) / count
        tail = np.where(above, a, 0.0).sum(axis=1) / count
        # Nothing above s (constant rows): the fixed point would collapse to 0; keep every value.
        new = np.where(clipped > 0, tail / (k * (1 - clipped) + clipped), row_max)
        new = np.where(done, s, new)
        done |= np.abs(new - s) <= tol * new
        previous, s = s, new
        if done.all():
            return s
    # On a few samples the empirical map can cycle between two values: keep the better one.
    better = ~done & (_objective(a, previous, k) < _objective(a, s, k))
    return np.where(better, previous, s)


def mse(
    x: np.ndarray, s: float, bits: int = 4, signed: bool = True, *, max_level: int | None = None
) -> float:
    """Mean squared error of the idealised quantizer of the formula at clipping scalar ``s``.

    Signed: step s / L, integer levels -L..L (L = 2^(B-1) unless given), so values clip at ±s.
    Unsigned: step s / L, levels 0..L (L = 2^B unless given), values clip to [0, s].
    """
    data = _checked(x, bits, signed, max_level)
    level = _max_level(bits, signed, max_level)
    return float(np.mean((data - _to_grid(data, s, level, signed)) ** 2))


def quantize_ideal(
    x: np.ndarray, s: float, bits: int = 4, signed: bool = True, *, max_level: int | None = None
) -> np.ndarray:
    """``x`` rounded (half to even) to the idealised grid of ``mse``, as float64."""
    data = _checked(x, bits, signed, max_level)
    return _to_grid(data, s, _max_level(bits, signed, max_level), signed)


def sqnr_db(x: np.ndarray, xq: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when ``xq`` equals ``x``)."""
    signal = np.sum(np.square(np.asarray(x, np.float64)))
    noise = np.sum(np.square(np.asarray(x, np.float64) - np.asarray(xq, np.float64)))
    if noise == 0:
        return float("inf")
    if signal == 0:
        return float("-inf")
    return float(10 * np.log10(signal / noise))


def _to_grid(data: np.ndarray, s: float, level: int, signed: bool) -> np.ndarray:
    if s <= 0:
        return np.zeros_like(data)
    step = s / level
    return np.clip(np.rint(data / step), -level if signed else 0, level) * step


def _objective(a: np.ndarray, s: np.ndarray, k: float) -> np.ndarray:
    """J(s) of each row of |x| (the model error the fixed point minimises)."""
    excess = np.maximum(a - s[:, None], 0.0)
    return k * s**2 * np.mean(a <= s[:, None], axis=1) + np.mean(excess**2, axis=1)


def _max_level(bits: int, signed: bool, max_level: int | None) -> int:
    if max_level is not None:
        return max_level
    return 2 ** (bits - 1) if signed else 2**bits


def _noise_constant(bits: int, signed: bool, max_level: int | None) -> float:
    """k of the fixed point: the uniform rounding noise Δ²/12 per unit s², Δ = s / L."""
    return 1.0 / (12.0 * _max_level(bits, signed, max_level) ** 2)


def _checked(x: np.ndarray, bits: int, signed: bool, max_level: int | None) -> np.ndarray:
    """``x`` as float64 after the checks every entry point shares."""
    if not MIN_BITS <= bits <= MAX_BITS:
        raise UserError(f"Octav supports {MIN_BITS} to {MAX_BITS} bits, not {bits}")
    if max_level is not None and max_level < 1:
        raise UserError(f"the largest quantization level must be at least 1, not {max_level}")
    data = np.asarray(x, np.float64)
    if data.size == 0:
        raise UserError("cannot choose a clipping scalar for an empty array")
    if not np.isfinite(data).all():
        raise UserError("the data holds NaN or infinite values; clean it before quantizing")
    if not signed and (data < 0).any():
        raise UserError("unsigned quantization needs non-negative data; use signed=True")
    return data
