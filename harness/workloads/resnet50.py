"""ResNet-50 v1.5 on ImageNet val: the official MLPerf interface, model and data built in."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np

from backends.base import Batch
from harness.accuracy import Accuracy, imagenet_top1
from harness.cache import build_once, cache_dir, reusable, source_digest
from harness.datasets import imagenet, imagenet_preprocess, synthetic_images
from harness.datasets.imagenet_preprocess import to_model_input
from harness.errors import UserError
from harness.files import write_text
from harness.models import pruning
from harness.models import recipe as recipe_module
from harness.models import resnet50 as builder
from harness.models.check import TensorSpec, read_interface
from harness.models.recipe import Recipe
from harness.workloads.base import DataSource, Progress, Workload, WorkloadData, repeat_note

MODEL_SEED = 0
DATA_SEED = 0
BUILTIN_DATASET_COUNT = 1024  # = LoadGen's ResNet-50 performance sample count
DATASET_SIZE = 50000  # ImageNet validation images


def builtin_model(progress: Progress, recipe: Recipe | None = None) -> Path:
    """The synthetic ResNet-50, built once; with ``recipe``, the pruned reference."""
    digest = source_digest(builder, synthetic_images, imagenet_preprocess, pruning, recipe_module)
    tag = f"-{recipe.tag}" if recipe else ""
    path = cache_dir("models") / f"resnet50-seed{MODEL_SEED}{tag}-{digest}.onnx"

    def build(partial: Path) -> None:
        what = f", {recipe.describe()}" if recipe else ""
        progress(f"building the synthetic ResNet-50 model (seed {MODEL_SEED}{what}) into {path}")
        builder.build_resnet50(partial, seed=MODEL_SEED, recipe=recipe)

    return build_once(path, build, read_interface, progress)


def fp32_labels(model_path: Path):
    """A labeller for synthetic data: the FP32 model's top-1 class (official label offset)."""
    from backends.onnxruntime import reference_runner

    run = reference_runner(model_path, "to label the synthetic images")

    def label(crops: np.ndarray) -> np.ndarray:
        outputs = [
            run([builder.ARGMAX_OUTPUT], {builder.INPUT_NAME: to_model_input(part)})[0]
            for part in np.array_split(crops, max(1, len(crops) // 32))
        ]
        return np.concatenate(outputs) - 1  # class 0 is background; ImageNet labels start at 1

    return label


def builtin_dataset(model_path: Path, count: int | None, progress: Progress) -> Path:
    """The first ``count`` (None: all) images of the built-in set. Image ``i`` depends only on
    ``(DATA_SEED, i)`` and its label on the image, so a short run need not make them all."""
    count = count or BUILTIN_DATASET_COUNT
    if count > BUILTIN_DATASET_COUNT:
        raise UserError(
            f"dataset count {count} out of range: the built-in set has {BUILTIN_DATASET_COUNT} "
            "images (give --dataset-path for a larger set)"
        )
    digest = source_digest(synthetic_images, imagenet_preprocess)
    model_digest = hashlib.sha256(str(model_path.resolve()).encode()).hexdigest()[:8]
    name = f"imagenet-synth-{count}-seed{DATA_SEED}-{digest}-{model_digest}"
    path = cache_dir("datasets") / name
    if not reusable(path, imagenet.open_imagenet, progress):
        progress(f"generating {count} synthetic images labelled by the FP32 model into {path}")
        imagenet.write_synthetic_imagenet(
            path, count, DATA_SEED, fp32_labels(model_path), model_path.name, progress
        )
    return path


class ImageNetData(WorkloadData):
    """ImageNet crops by QSL index; ``total`` > the folder's count repeats the images. Loaded
    samples are held as uint8 crops (147 KiB each) and made float32 per batch."""

    def __init__(self, folder: imagenet.ImageNetFolder, crops: Path, total: int) -> None:
        self.folder = folder
        self.crops = crops  # the preprocessed cache file
        self.count = total
        self.labels = np.resize(folder.labels, total)
        self.synthetic = folder.synthetic is not None
        if folder.synthetic:
            size = (
                repeat_note(folder.count, total, "images")
                if total > folder.count
                else f"{total} images"
            )
            self.description = (
                f"synthetic ImageNet-layout set, {size}, labels = "
                f"{folder.synthetic['labels']} (accuracy means agreement with FP32)"
            )
        else:
            self.description = f"ImageNet val from {folder.root}, {self.count} images"

    def fetch(self, indices: np.ndarray) -> Batch:
        # Mapped only while rows are copied out, so that the process keeps just the copies.
        crops = imagenet.open_crops(self.crops, self.folder.count)
        return {builder.INPUT_NAME: np.array(crops[indices % self.folder.count])}

    def to_inputs(self, samples: Batch) -> Batch:
        return {name: to_model_input(crops) for name, crops in samples.items()}

    def score(self, responses: dict[int, bytes]) -> Accuracy:
        return imagenet_top1(responses, self.labels)

    def write_official_files(self, target: Path) -> tuple[str, ...]:
        if self.count == self.folder.count:
            return ()
        files = self.folder.files
        lines = (f"{files[i % len(files)]} {label}\n" for i, label in enumerate(self.labels))
        target.mkdir(exist_ok=True)
        write_text(target / imagenet.VAL_MAP, "".join(lines))
        return (imagenet.VAL_MAP,)

    def calibration_problem(self, names: Sequence[str]) -> str | None:
        root = self.folder.root
        for name in names:
            image = PurePosixPath(name)
            if image.is_absolute() or ".." in image.parts or not (root / name).is_file():
                return f"image {name!r} is not in the dataset folder {root}"
        return None

    def named_calibration(self, names: Sequence[str]) -> Sequence[Batch]:
        # The images need not be in val_map.txt: they are preprocessed (and cached) on their own.
        listed = imagenet.ImageNetFolder(
            self.folder.root, tuple(names), np.zeros(len(names), np.int64), self.folder.synthetic
        )
        crops = imagenet.open_crops(imagenet.preprocessed_crops(listed), len(names))
        step = self.calibration_batch
        return [
            {builder.INPUT_NAME: to_model_input(np.array(crops[i : i + step]))}
            for i in range(0, len(names), step)
        ]


def open_data(source: DataSource, model_path: Path, progress: Progress) -> ImageNetData:
    path = source.path or builtin_dataset(model_path, source.count, progress)
    folder = imagenet.open_imagenet(path, source.count)
    total = DATASET_SIZE if source.full_size and source.path is None else folder.count
    return ImageNetData(folder, imagenet.preprocessed_crops(folder, progress), total)


def responses(outputs: Batch) -> np.ndarray:
    """One float32 label per sample: the official model's ArgMax minus the background class."""
    return (outputs[builder.ARGMAX_OUTPUT] - 1).astype(np.float32)


RESNET50 = Workload(
    name="resnet50",
    loadgen_key="resnet50",
    scenarios=("Offline", "Server", "SingleStream", "MultiStream"),
    inputs=(TensorSpec(builder.INPUT_NAME, "float32", (None, 3, 224, 224)),),
    outputs=(builder.ARGMAX_OUTPUT,),
    performance_sample_count=BUILTIN_DATASET_COUNT,
    dataset_size=DATASET_SIZE,
    server_latency_ms=15.0,
    builtin_model=builtin_model,
    open_data=open_data,
    responses=responses,
    official_calibration="calibration/ImageNet/cal_image_list_option_1.txt or _2.txt",
)
