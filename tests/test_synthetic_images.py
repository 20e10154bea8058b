"""Synthetic images: deterministic per (seed, index), varied in size and content, in classes
whose images look alike, and fast."""

import numpy as np
import pytest
from PIL import Image

from harness.datasets.imagenet import VAL_MAP
from harness.datasets.imagenet_preprocess import preprocess
from harness.datasets.synthetic_images import (
    CLASSES,
    MAX_SHORT_SIDE,
    MIN_SHORT_SIDE,
    image_classes,
    prototype,
    synth_images,
)
from harness.errors import UserError
from harness.workloads import resnet50 as workload


def test_image_depends_only_on_seed_and_index() -> None:
    longer = list(synth_images(6, seed=7))
    again = list(synth_images(6, seed=7))
    prefix = list(synth_images(3, seed=7))
    for first, second in zip(longer, again, strict=True):
        np.testing.assert_array_equal(first, second)
    for first, second in zip(longer, prefix, strict=False):
        np.testing.assert_array_equal(first, second)


def test_different_seeds_give_different_images() -> None:
    first = next(synth_images(1, seed=0))
    second = next(synth_images(1, seed=1))
    assert first.shape != second.shape or not np.array_equal(first, second)


def test_zero_count_yields_nothing() -> None:
    assert list(synth_images(0, seed=0)) == []


def test_images_are_rgb_uint8_of_varied_sizes() -> None:
    images = list(synth_images(60, seed=3))
    for image in images:
        assert image.dtype == np.uint8
        assert image.ndim == 3 and image.shape[2] == 3
        assert image.flags.c_contiguous
        short, long = sorted(image.shape[:2])
        assert MIN_SHORT_SIDE <= short <= MAX_SHORT_SIDE
        assert long / short <= 1.34
    shapes = {image.shape for image in images}
    assert len(shapes) >= 40
    assert any(image.shape[0] > image.shape[1] for image in images)  # portrait
    assert any(image.shape[0] < image.shape[1] for image in images)  # landscape


def test_content_is_structured_and_differs_between_images() -> None:
    images = list(synth_images(30, seed=5))
    for image in images:
        # Large-scale structure (gradient and shapes), not just noise around one flat colour.
        blocks = image[:224, :224].astype(np.float64).reshape(8, 28, 8, 28, 3).mean(axis=(1, 3))
        assert blocks.std() > 10.0
        coarse = {tuple(colour) for colour in (image[::4, ::4] // 64).reshape(-1, 3)}
        assert len(coarse) >= 4
    mean_colours = np.array([image.reshape(-1, 3).mean(axis=0) for image in images])
    assert mean_colours.std(axis=0).min() > 10.0


def test_classes_are_drawn_with_the_images_and_cover_many_classes() -> None:
    classes = image_classes(200, seed=0)
    assert classes.shape == (200,) and classes.min() >= 0 and classes.max() < CLASSES
    assert len(set(classes.tolist())) >= 100
    np.testing.assert_array_equal(classes[:50], image_classes(50, seed=0))


def test_images_of_a_class_look_like_its_prototype_and_unlike_other_classes() -> None:
    def crop(image: np.ndarray) -> np.ndarray:
        return preprocess(Image.fromarray(image)).astype(np.float64)

    images = [crop(image) for image in synth_images(40, seed=2)]
    classes = image_classes(40, seed=2)
    for image, cls in zip(images, classes, strict=True):
        own = np.abs(image - crop(prototype(int(cls)))).mean()
        others = [crop(prototype(int(cls + step) % CLASSES)) for step in (1, 2, 3)]
        other = np.mean([np.abs(image - scene).mean() for scene in others])
        assert own < 0.6 * other, (cls, own, other)


def test_a_prototype_is_fixed_square_and_noise_free() -> None:
    first, again = prototype(3), prototype(3)
    np.testing.assert_array_equal(first, again)
    assert first.shape[0] == first.shape[1]
    assert not np.array_equal(first, prototype(4))


@pytest.mark.usefixtures("small_builds")
def test_a_short_builtin_set_is_the_whole_sets_prefix() -> None:
    model = workload.builtin_model(lambda _: None)
    whole = workload.builtin_dataset(model, None, lambda _: None)
    short = workload.builtin_dataset(model, 10, lambda _: None)
    assert short != whole
    whole_lines = (whole / VAL_MAP).read_text().splitlines()
    short_lines = (short / VAL_MAP).read_text().splitlines()
    assert len(whole_lines) == workload.BUILTIN_DATASET_COUNT and short_lines == whole_lines[:10]
    for line in short_lines:
        name = line.split()[0]
        assert (short / name).read_bytes() == (whole / name).read_bytes()
    with pytest.raises(UserError, match=r"dataset count 25 out of range: the built-in set has 24"):
        workload.builtin_dataset(model, 25, lambda _: None)
