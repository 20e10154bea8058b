"""Deterministic synthetic RGB images for runs without the ImageNet validation set.

Each image is a smooth colour gradient overlaid with a few random ellipses, rotated rectangles
and stripe patches, plus mild noise: structured and varied enough that a network sees genuinely
different inputs, and of varied size and aspect so the resize and crop path is exercised.
Image ``i`` depends only on ``(seed, i)``, so any prefix of a longer run is identical.
"""

from collections.abc import Iterator

import numpy as np

MIN_SHORT_SIDE = 224
MAX_SHORT_SIDE = 400
MAX_ASPECT = 1.33
NOISE_AMPLITUDE = 6.0  # peak of the uniform per-pixel noise, in 0..255 units


def synth_images(count: int, seed: int) -> Iterator[np.ndarray]:
    """Yield ``count`` uint8 RGB images [H, W, 3]; image ``i`` is a function of ``(seed, i)``."""
    for index in range(count):
        yield _image(np.random.default_rng([seed, index]))


def _image(rng: np.random.Generator) -> np.ndarray:
    short = int(rng.integers(MIN_SHORT_SIDE, MAX_SHORT_SIDE + 1))
    aspect = float(np.exp(rng.uniform(-np.log(MAX_ASPECT), np.log(MAX_ASPECT))))  # width / height
    if aspect >= 1.0:
        height, width = short, round(short * aspect)
    else:
        height, width = round(short / aspect), short
    # Coordinates in units of the short side, kept as a column and a row so arrays broadcast.
    ys = (np.arange(height, dtype=np.float32) / short)[:, None]
    xs = (np.arange(width, dtype=np.float32) / short)[None, :]
    # Channel-planar while drawing: blending a [h, w] mask into [h, w, 3] is several times slower.
    image = _gradient(rng, ys, xs)
    for _ in range(int(rng.integers(3, 9))):
        kind = int(rng.integers(3))
        if kind == 0:
            _ellipse(rng, image, ys, xs)
        elif kind == 1:
            _rectangle(rng, image, ys, xs)
        else:
            _stripes(rng, image, ys, xs)
    # Uniform byte noise is several times cheaper to draw than Gaussian noise at this size.
    noise = rng.integers(0, 256, size=image.shape, dtype=np.uint8).astype(np.float32)
    image += (noise - 127.5) * (NOISE_AMPLITUDE / 127.5)
    return np.ascontiguousarray(np.clip(image, 0.0, 255.0).astype(np.uint8).transpose(1, 2, 0))


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, 255.0, size=3).astype(np.float32)


def _gradient(rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Three colours blended along two random directions: a smooth, non-uniform background."""
    base, first, second = _colour(rng), _colour(rng), _colour(rng)
    # Each ramp is affine in (x, y), so the whole background is one broadcast sum per axis.
    corners_y = np.array([0.0, 0.0, ys[-1, 0], ys[-1, 0]])
    corners_x = np.array([0.0, xs[0, -1], 0.0, xs[0, -1]])
    offset = base.astype(np.float64)
    slope_y = np.zeros(3)
    slope_x = np.zeros(3)
    for colour in (first, second):
        angle = rng.uniform(0.0, 2.0 * np.pi)
        at_corners = np.cos(angle) * corners_x + np.sin(angle) * corners_y
        span = at_corners.max() - at_corners.min()
        weight = rng.uniform(0.3, 1.0) * (colour - base) / span
        offset -= at_corners.min() * weight
        slope_x += np.cos(angle) * weight
        slope_y += np.sin(angle) * weight
    column = ys * _planes(slope_y) + _planes(offset)
    return column + xs * _planes(slope_x)


def _planes(values: np.ndarray) -> np.ndarray:
    """Per-channel values shaped [3, 1, 1] to broadcast over a planar image."""
    return values.astype(np.float32).reshape(3, 1, 1)


def _region(
    rng: np.random.Generator, image: np.ndarray, ys: np.ndarray, xs: np.ndarray, radius: float
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
    """A random centre's bounding box (as slices) and the coordinates inside it, centred."""
    height, width = image.shape[1:]
    short = min(height, width)
    cy = rng.uniform(0.0, height / short)
    cx = rng.uniform(0.0, width / short)
    top, bottom = max(0, int((cy - radius) * short)), min(height, int((cy + radius) * short) + 1)
    left, right = max(0, int((cx - radius) * short)), min(width, int((cx + radius) * short) + 1)
    if top >= bottom or left >= right:
        return None
    box = (slice(top, bottom), slice(left, right))
    return box, ys[box[0]] - np.float32(cy), xs[:, box[1]] - np.float32(cx)


def _rotate(rng: np.random.Generator, dy: np.ndarray, dx: np.ndarray) -> tuple[np.ndarray, ...]:
    angle = rng.uniform(0.0, np.pi)
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    return cos * dx + sin * dy, cos * dy - sin * dx


def _paint(
    rng: np.random.Generator, image: np.ndarray, box: tuple[slice, slice], mask: np.ndarray
) -> None:
    """Alpha-blend a flat random colour into ``image[:, box]`` where ``mask`` is set."""
    alpha = mask.astype(np.float32) * np.float32(rng.uniform(0.6, 1.0))
    keep = 1.0 - alpha
    for plane, value in zip(image, _colour(rng), strict=True):
        patch = plane[box]
        patch *= keep
        patch += alpha * value


def _ellipse(rng: np.random.Generator, image: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> None:
    semi_major = rng.uniform(0.05, 0.45)
    semi_minor = semi_major * rng.uniform(0.3, 1.0)
    region = _region(rng, image, ys, xs, semi_major)
    if region is None:
        return
    box, dy, dx = region
    along, across = _rotate(rng, dy, dx)
    _paint(rng, image, box, (along / semi_major) ** 2 + (across / semi_minor) ** 2 <= 1.0)


def _rectangle(rng: np.random.Generator, image: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> None:
    half_long = rng.uniform(0.05, 0.4)
    half_short = half_long * rng.uniform(0.2, 1.0)
    region = _region(rng, image, ys, xs, half_long * np.sqrt(2.0))
    if region is None:
        return
    box, dy, dx = region
    along, across = _rotate(rng, dy, dx)
    _paint(rng, image, box, (np.abs(along) <= half_long) & (np.abs(across) <= half_short))


def _stripes(rng: np.random.Generator, image: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> None:
    """A disc filled with a sinusoidal grating at a random frequency and orientation."""
    radius = rng.uniform(0.15, 0.6)
    region = _region(rng, image, ys, xs, radius)
    if region is None:
        return
    box, dy, dx = region
    along, _ = _rotate(rng, dy, dx)
    cycles = np.float32(rng.uniform(3.0, 40.0) * 2.0 * np.pi)  # per short side
    wave = 0.5 + 0.5 * np.sin(cycles * along + np.float32(rng.uniform(0.0, 2.0 * np.pi)))
    inside = (dy**2 + dx**2) <= radius**2
    _paint(rng, image, box, wave * inside)
