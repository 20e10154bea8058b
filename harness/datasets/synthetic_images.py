"""Deterministic, class-structured synthetic RGB images for runs without the ImageNet val set.

There are ``CLASSES`` classes. A class is a prototype scene, drawn once from its own seed: a
smooth colour gradient under a few ellipses, rotated rectangles and striped discs of fixed
colours, sizes and places. An image is one class's scene seen again with small changes, the
way photographs of one kind of object differ: the whole scene shifted and scaled a little,
colours and angles jittered, the stripes' phase moved, mild pixel noise, and a random image
size and aspect (so the resize and crop path is exercised). Images of one class therefore look
alike and images of different classes do not, which is what gives a network's decisions on
them trained-like margins (see ``harness.models.resnet50``).

Image ``i`` depends only on ``(seed, i)``, so any prefix of a longer run is identical; its class
is drawn from the same stream. ``prototype`` renders a class's scene without any change.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

CLASSES = 256
PROTOTYPE_SEED = 7_777_777  # the classes' seed stream, apart from any image seed
MIN_SHORT_SIDE = 224
MAX_SHORT_SIDE = 400
PROTOTYPE_SHORT_SIDE = 256  # a prototype is square: the crop sees all of its centre
MAX_ASPECT = 1.33
NOISE_AMPLITUDE = 6.0  # peak of the uniform per-pixel noise, in 0..255 units
# How much one image of a class differs from its prototype.
SHIFT = 0.05  # of the short side, each way
SCALE = 0.08  # log of the largest zoom in or out
COLOUR_JITTER = 10.0  # standard deviation per channel, in 0..255 units
ANGLE_JITTER = 0.12  # standard deviation, radians


@dataclass(frozen=True)
class Shape:
    kind: str  # "ellipse", "rectangle" or "stripes"
    centre: tuple[float, float]  # (y, x) from the image centre, in units of the short side
    size: float  # semi-major axis, half the long side, or the disc's radius
    ratio: float  # minor / major axis, short / long side (1 for stripes)
    angle: float
    colour: np.ndarray  # float [3]
    alpha: float
    cycles: float  # stripes per short side


@dataclass(frozen=True)
class Scene:
    """A class's prototype: background gradient and shapes."""

    base: np.ndarray  # float [3]: the background colour at the gradient's origin
    ramps: tuple[tuple[np.ndarray, float, float], ...]  # (colour, direction, strength)
    shapes: tuple[Shape, ...]


@dataclass(frozen=True)
class Jitter:
    """One image's departure from its class's scene (all zero: the prototype itself)."""

    height: int
    width: int
    short: int
    shift: tuple[float, float] = (0.0, 0.0)
    scale: float = 1.0
    rng: np.random.Generator | None = None  # colour, angle and phase jitter; pixel noise

    def normal(self, spread: float, size: int | None = None) -> np.ndarray | float:
        if self.rng is None:
            return 0.0 if size is None else np.zeros(size)
        return self.rng.normal(0.0, spread, size)


def synth_images(count: int, seed: int) -> Iterator[np.ndarray]:
    """Yield ``count`` uint8 RGB images [H, W, 3]; image ``i`` is a function of ``(seed, i)``."""
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        scene = class_scene(int(rng.integers(CLASSES)))
        yield _render(scene, _jitter(rng))


def image_classes(count: int, seed: int) -> np.ndarray:
    """int [count]: the class each of ``synth_images(count, seed)`` was drawn from."""
    return np.array(
        [int(np.random.default_rng([seed, i]).integers(CLASSES)) for i in range(count)], np.int64
    )


def prototype(cls: int) -> np.ndarray:
    """Class ``cls``'s scene as a uint8 RGB image, unchanged (square, noise-free)."""
    side = PROTOTYPE_SHORT_SIDE
    return _render(class_scene(cls), Jitter(side, side, side))


def class_scene(cls: int) -> Scene:
    rng = np.random.default_rng([PROTOTYPE_SEED, cls])
    base = _colour(rng)
    ramps = tuple(
        (_colour(rng), rng.uniform(0.0, 2.0 * np.pi), rng.uniform(0.3, 1.0)) for _ in range(2)
    )
    shapes = []
    for _ in range(int(rng.integers(3, 9))):
        kind = ("ellipse", "rectangle", "stripes")[int(rng.integers(3))]
        size, ratio = {
            "ellipse": (rng.uniform(0.05, 0.45), rng.uniform(0.3, 1.0)),
            "rectangle": (rng.uniform(0.05, 0.4), rng.uniform(0.2, 1.0)),
            "stripes": (rng.uniform(0.15, 0.6), 1.0),
        }[kind]
        shapes.append(
            Shape(
                kind,
                (rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5)),
                size,
                ratio,
                rng.uniform(0.0, np.pi),
                _colour(rng),
                rng.uniform(0.6, 1.0),
                rng.uniform(3.0, 40.0),
            )
        )
    return Scene(base, ramps, tuple(shapes))


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, 255.0, size=3)


def _jitter(rng: np.random.Generator) -> Jitter:
    short = int(rng.integers(MIN_SHORT_SIDE, MAX_SHORT_SIDE + 1))
    aspect = float(np.exp(rng.uniform(-np.log(MAX_ASPECT), np.log(MAX_ASPECT))))  # width / height
    if aspect >= 1.0:
        height, width = short, round(short * aspect)
    else:
        height, width = round(short / aspect), short
    shift = rng.uniform(-SHIFT, SHIFT, size=2)
    scale = float(np.exp(rng.uniform(-SCALE, SCALE)))
    return Jitter(height, width, short, (float(shift[0]), float(shift[1])), scale, rng)


def _render(scene: Scene, jitter: Jitter) -> np.ndarray:
    # Coordinates from the centre in units of the short side, as a column and a row so that
    # arrays broadcast; channel-planar while drawing (blending into [h, w, 3] is slower).
    ys = ((np.arange(jitter.height, dtype=np.float32) - jitter.height / 2) / jitter.short)[:, None]
    xs = ((np.arange(jitter.width, dtype=np.float32) - jitter.width / 2) / jitter.short)[None, :]
    image = _gradient(scene, jitter, ys, xs)
    for shape in scene.shapes:
        _paint(image, _mask(shape, jitter, ys, xs), shape, jitter)
    if jitter.rng is not None:
        # Uniform byte noise is several times cheaper to draw than Gaussian noise at this size.
        noise = jitter.rng.integers(0, 256, size=image.shape, dtype=np.uint8).astype(np.float32)
        image += (noise - 127.5) * (NOISE_AMPLITUDE / 127.5)
    return np.ascontiguousarray(np.clip(image, 0.0, 255.0).astype(np.uint8).transpose(1, 2, 0))


def _gradient(scene: Scene, jitter: Jitter, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """The background: a base colour plus two linear ramps towards other colours."""
    base = scene.base + jitter.normal(COLOUR_JITTER, 3)
    slope_y, slope_x = np.zeros(3), np.zeros(3)
    for colour, direction, strength in scene.ramps:
        angle = direction + jitter.normal(ANGLE_JITTER)
        change = strength * (colour + jitter.normal(COLOUR_JITTER, 3) - base)  # per short side
        slope_x += np.cos(angle) * change
        slope_y += np.sin(angle) * change
    return ys * _planes(slope_y) + _planes(base) + xs * _planes(slope_x)


def _planes(values: np.ndarray) -> np.ndarray:
    """Per-channel values shaped [3, 1, 1] to broadcast over a planar image."""
    return np.asarray(values, np.float32).reshape(3, 1, 1)


def _mask(shape: Shape, jitter: Jitter, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """float [h, w] coverage of one shape in 0..1, after the image's shift and scale."""
    scale = jitter.scale
    dy = ys - np.float32((shape.centre[0] + jitter.shift[0]) * scale)
    dx = xs - np.float32((shape.centre[1] + jitter.shift[1]) * scale)
    size = np.float32(shape.size * scale)
    angle = shape.angle + jitter.normal(ANGLE_JITTER)
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    along, across = cos * dx + sin * dy, cos * dy - sin * dx
    if shape.kind == "ellipse":
        inside = (along / size) ** 2 + (across / (size * np.float32(shape.ratio))) ** 2 <= 1.0
        return inside.astype(np.float32)
    if shape.kind == "rectangle":
        inside = (np.abs(along) <= size) & (np.abs(across) <= size * np.float32(shape.ratio))
        return inside.astype(np.float32)
    phase = jitter.rng.uniform(0.0, 2.0 * np.pi) if jitter.rng is not None else 0.0
    frequency = np.float32(shape.cycles * 2.0 * np.pi / scale)
    wave = 0.5 + 0.5 * np.sin(frequency * along + np.float32(phase))
    return wave * ((dy**2 + dx**2) <= size**2)


def _paint(image: np.ndarray, mask: np.ndarray, shape: Shape, jitter: Jitter) -> None:
    """Alpha-blend the shape's colour (jittered) into ``image`` where ``mask`` covers it."""
    alpha = mask * np.float32(shape.alpha)
    keep = 1.0 - alpha
    colour = shape.colour + jitter.normal(COLOUR_JITTER, 3)
    for plane, value in zip(image, colour, strict=True):
        plane *= keep
        plane += alpha * np.float32(value)
