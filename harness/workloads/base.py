"""What a workload (a model with its dataset and accuracy rule) gives the run engine."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backends.base import Batch, ModelHandle
from harness.accuracy import Accuracy
from harness.models.check import TensorSpec
from harness.models.recipe import Recipe

Progress = Callable[[str], None]
CALIBRATION_SEED = 0


@dataclass(frozen=True)
class DataSource:
    """Where a run's dataset comes from."""

    path: Path | None = None  # None: the built-in synthetic set
    count: int | None = None  # keep only the first N items (images, questions)
    vocab: Path | None = None  # tokenizer vocabulary, for text workloads
    # Repeat the built-in synthetic set to the official dataset size (the valid preset does:
    # the MLPerf checker requires accuracy runs over the whole official dataset).
    full_size: bool = False


def repeat_note(distinct: int, total: int, unit: str) -> str:
    """How a synthetic set was repeated to the official size, for descriptions."""
    return f"{distinct} distinct {unit} repeated to {total} samples (the official dataset size)"


class WorkloadData(abc.ABC):
    """A dataset prepared for one workload: loads stacked model inputs by QSL index.

    The query sample library holds loaded samples as ``fetch`` returns them (as compact as the
    data allows) and makes each batch's model inputs with ``to_inputs``, so that memory grows
    with the samples' own size, not with the model's input types.
    """

    count: int
    description: str  # for run.json and the result line
    synthetic: bool
    calibration_count = 128  # samples in the calibration set, drawn once with a fixed seed
    calibration_batch = 16

    @abc.abstractmethod
    def fetch(self, indices: np.ndarray) -> Batch:
        """These samples as the QSL holds them in memory, stacked along the batch dimension."""

    def to_inputs(self, samples: Batch) -> Batch:
        """Model inputs from fetched samples (elementwise per sample)."""
        return samples

    def load(self, indices: np.ndarray) -> Batch:
        """Model inputs for these samples, stacked along the batch dimension."""
        return self.to_inputs(self.fetch(indices))

    def calibration(self, names: Sequence[str] = ()) -> Sequence[Batch]:
        """The input batches backends calibrate on: the samples a calibration list names, else
        a fixed set of ``calibration_count`` samples drawn once with a fixed seed."""
        if names:
            return self.named_calibration(names)
        rng = np.random.default_rng(CALIBRATION_SEED)
        size = min(self.calibration_count, self.count)
        indices = np.sort(rng.choice(self.count, size=size, replace=False))
        step = self.calibration_batch
        return [self.load(indices[i : i + step]) for i in range(0, size, step)]

    @abc.abstractmethod
    def write_official_files(self, target: Path) -> tuple[str, ...]:
        """If the dataset's own files do not hold every QSL index (a set repeated to the
        official size), write into ``target`` the files the official accuracy script reads,
        in QSL order, and return their names."""

    @abc.abstractmethod
    def calibration_problem(self, names: Sequence[str]) -> str | None:
        """Why a calibration list's names are not samples of this dataset (None: they are)."""

    @abc.abstractmethod
    def named_calibration(self, names: Sequence[str]) -> Sequence[Batch]:
        """Input batches of the samples a calibration list names."""

    @abc.abstractmethod
    def score(self, responses: dict[int, bytes]) -> Accuracy:
        """Accuracy of logged responses (qsl_idx -> response bytes)."""


@dataclass(frozen=True)
class Workload:
    name: str  # CLI name
    loadgen_key: str  # model key in mlperf.conf
    scenarios: tuple[str, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[str, ...]  # what the backend must compute
    performance_sample_count: int  # LoadGen's built-in count for this model
    dataset_size: int  # samples in the official dataset (ImageNet val images, SQuAD features)
    server_latency_ms: float  # the Server scenario's p99 latency bound
    # Builds (once) and returns the synthetic model, pruned when built by the recipe if given.
    builtin_model: Callable[[Progress, Recipe | None], Path]
    open_data: Callable[[DataSource, Path, Progress], WorkloadData]
    responses: Callable[[Batch], np.ndarray]  # backend outputs -> official response rows
    # The official calibration list(s) in mlcommons/inference, for messages.
    official_calibration: str
    # How int8 backends best quantize activations: "static" (calibrated ranges) suits CNNs,
    # "dynamic" (ranges per batch) suits transformers.
    int8_activations: str = "static"
    uses_vocab: bool = False  # takes a tokenizer vocabulary (DataSource.vocab)
    response_dtype: str = "float32"  # element type of the official response rows
    token_mask: str = ""  # the input whose nonzero entries are a sample's real tokens

    def model_handle(
        self, path: Path, calibration: Callable[[], Sequence[Batch]] = tuple
    ) -> ModelHandle:
        """What a backend loads: the model file at ``path`` with this workload's interface."""
        return ModelHandle(
            path=path,
            name=self.name,
            input_names=tuple(t.name for t in self.inputs),
            output_names=self.outputs,
            calibration=calibration,
            int8_activations=self.int8_activations,
            token_mask=self.token_mask,
        )
