"""ImageNet validation set in the MLPerf layout: ``val_map.txt`` lines ``<image> <label>``.

The QSL index of an image is its line number in val_map.txt. Preprocessed crops are cached on
disk (uint8 NCHW, keyed by the folder, val_map.txt and the preprocessing), so a run decodes
each JPEG once, not once per run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from numpy.lib.format import open_memmap
from PIL import Image

from harness.cache import build_once, cache_dir
from harness.datasets.imagenet_preprocess import CROP, PREPROCESS_VERSION, preprocess
from harness.datasets.staging import staged_folder
from harness.datasets.synthetic_images import synth_images
from harness.errors import UserError
from harness.files import read_json_object, read_text

VAL_MAP = "val_map.txt"
SYNTHETIC_MARKER = "SYNTHETIC.json"  # written by the generator; says how labels were made
NUM_LABELS = 1000
_CHUNK = 256


@dataclass(frozen=True)
class ImageNetFolder:
    root: Path
    files: tuple[str, ...]
    labels: np.ndarray  # int64 [N], 0..999
    synthetic: dict | None  # the generator's marker, None for real data

    @property
    def count(self) -> int:
        return len(self.files)


def open_imagenet(root: Path, count: int | None = None) -> ImageNetFolder:
    """Read and check val_map.txt; ``count`` keeps only its first lines."""
    if not root.is_dir():
        raise UserError(f"dataset folder {root} does not exist; give an ImageNet val folder")
    val_map = root / VAL_MAP
    if not val_map.is_file():
        raise UserError(
            f"no {VAL_MAP} in {root}: an ImageNet val folder needs one '<image> <label>' per "
            "line (make a synthetic set with: sparseperf data synth imagenet)"
        )
    files, labels = [], []
    for number, line in enumerate(read_text(val_map, "image list").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) >= NUM_LABELS:
            raise UserError(
                f"{val_map}:{number}: expected '<image path> <label 0..999>', got {line!r}"
            )
        image = PurePosixPath(parts[0])
        if image.is_absolute() or ".." in image.parts:
            raise UserError(
                f"{val_map}:{number}: image {parts[0]!r} is outside the dataset folder; "
                "val_map.txt paths are relative to its folder, without '..'"
            )
        files.append(parts[0])
        labels.append(int(parts[1]))
    if not files:
        raise UserError(f"{val_map} lists no images")
    if count is not None:
        if count < 1 or count > len(files):
            raise UserError(f"dataset count {count} out of range: {val_map} has {len(files)}")
        files, labels = files[:count], labels[:count]
    missing = [name for name in files if not (root / name).is_file()]
    if missing:
        raise UserError(
            f"{len(missing)} image(s) listed in {val_map} are missing, first: {root / missing[0]}"
        )
    marker = root / SYNTHETIC_MARKER
    synthetic = read_json_object(marker, "dataset marker") if marker.is_file() else None
    return ImageNetFolder(root, tuple(files), np.asarray(labels, dtype=np.int64), synthetic)


def _load_crop(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return preprocess(image)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UserError(f"cannot decode image {path}: {exc}") from exc


def _crops(paths: list[Path]) -> Iterator[np.ndarray]:
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        yield from pool.map(_load_crop, paths)


def preprocessed_crops(
    folder: ImageNetFolder, progress: Callable[[str], None] = lambda _: None
) -> Path:
    """The cache file of the folder's uint8 crops [N, 3, 224, 224] (built on first use)."""
    key = hashlib.sha256()
    key.update(str(folder.root.resolve()).encode())
    key.update("\n".join(folder.files).encode())
    key.update(PREPROCESS_VERSION.encode())
    path = cache_dir("preprocessed") / f"imagenet-{folder.count}-{key.hexdigest()[:20]}.npy"

    def build(partial: Path) -> None:
        progress(f"preprocessing {folder.count} images from {folder.root} (cached for next runs)")
        out = open_memmap(partial, mode="w+", dtype=np.uint8, shape=(folder.count, 3, CROP, CROP))
        for i, crop in enumerate(_crops([folder.root / name for name in folder.files])):
            out[i] = crop
        out.flush()

    return build_once(path, build, lambda p: open_crops(p, folder.count), progress)


def open_crops(path: Path, count: int) -> np.ndarray:
    """The crops cache file, memory-mapped (nothing is read until rows are taken)."""
    crops = np.load(path, mmap_mode="r")
    if crops.shape != (count, 3, CROP, CROP) or crops.dtype != np.uint8:
        raise ValueError(f"holds {crops.dtype} {crops.shape}, not {count} uint8 crops")
    return crops


def write_synthetic_imagenet(
    out: Path,
    count: int,
    seed: int,
    label: Callable[[np.ndarray], np.ndarray],
    labelled_by: str,
    progress: Callable[[str], None] = lambda _: None,
) -> None:
    """Write ``count`` JPEGs and a val_map.txt whose labels are ``label(crops)``.

    ``label`` sees the crops exactly as the harness will preprocess them (decoded back from
    the written JPEG files), so the labels are the reference model's predictions on the data.
    The folder appears only when complete.
    """
    if count < 1:
        raise UserError(f"--count must be at least 1, got {count}")
    with staged_folder(out) as partial:
        names = [f"ILSVRC2012_val_{i + 1:08d}.JPEG" for i in range(count)]
        labels: list[np.ndarray] = []
        images = synth_images(count, seed)
        for start in range(0, count, _CHUNK):
            chunk = names[start : start + _CHUNK]
            for name, pixels in zip(chunk, images, strict=False):
                Image.fromarray(pixels).save(partial / name, quality=90)
            crops = np.stack(list(_crops([partial / name for name in chunk])))
            labels.append(np.asarray(label(crops), dtype=np.int64))
            if count > _CHUNK:
                progress(f"{start + len(chunk)} of {count} images written and labelled")
        all_labels = np.concatenate(labels)
        (partial / VAL_MAP).write_text(
            "".join(f"{name} {lab}\n" for name, lab in zip(names, all_labels, strict=True))
        )
        marker = {
            "generator": "sparseperf data synth imagenet",
            "count": count,
            "seed": seed,
            "labels": f"FP32 predictions of {labelled_by}",
        }
        (partial / SYNTHETIC_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
