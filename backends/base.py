"""The backend interface: everything a backend knows is a model file and numpy batches."""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Batch = dict[str, np.ndarray]


@dataclass(frozen=True)
class ModelHandle:
    """An ONNX model file and what a backend may need besides it."""

    path: Path
    name: str  # e.g. "resnet50"; for describe() and cache keys, never for special cases
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    # Representative input batches drawn from the dataset, for backends that calibrate; made
    # only when asked for, so that runs which do not calibrate pay nothing.
    calibration: Callable[[], Sequence[Batch]] = field(default=lambda: (), compare=False)
    # The workload's advice for int8 activations: "static" (calibrated) or "dynamic" (per batch).
    int8_activations: str = "static"
    # The input whose nonzero entries mark a sample's real tokens ("" for non-token models).
    token_mask: str = ""


def batches_digest(batches: Sequence[Batch]) -> str:
    """Identifies a set of input batches (e.g. a calibration set) in cache keys."""
    digest = hashlib.sha256()
    for batch in batches:
        for name in sorted(batch):
            digest.update(name.encode() + batch[name].tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class BackendOption:
    """A constructor option a backend declares, so that the harness can name it: a built-in's
    become flags of their own (--NAME; other options, and a plug-in's, come as -o NAME=VALUE),
    and labels and compare choices read them."""

    name: str  # the constructor's parameter
    type: type  # how its flag reads a value: str, int, float or Path
    help: str
    # Shown in the backend's label after this prefix when given ("d": sparse-int4-d0.125);
    # None: not shown.
    label: str | None = None


def option_text(value: object) -> str:
    """A value as labels and compare choices spell it (floats shortest: 0.125, 1)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


class Backend(abc.ABC):
    """Loads a model once, then predicts on batches. Knows nothing about LoadGen."""

    name: str = ""
    declared_options: tuple[BackendOption, ...] = ()  # those the harness names (BackendOption)
    # The declared option a compare choice's bare first argument sets (onnxruntime:int8).
    main_option: str = ""
    # Why results from this backend may only enter MLPerf's open division ("": closed is
    # fine); unknown plug-ins are not vetted for closed.
    open_division_only: str = "a plug-in backend, not vetted for the closed division"
    simulated: bool = False  # times come from a model of a device, not from running on it
    timing_only: bool = False  # outputs are placeholders: performance runs only

    @classmethod
    def label_parts(cls, options: Mapping[str, Any]) -> tuple[str, ...]:
        """What the label shows after the backend's name, so that runs that compute
        differently are named apart: each given option declared with a label prefix, in
        order (a path by its file's stem)."""
        return tuple(
            option.label + (Path(value).stem if option.type is Path else option_text(value))
            for option in cls.declared_options
            if option.label is not None and (value := options.get(option.name)) not in (None, "")
        )

    @abc.abstractmethod
    def load(self, model: ModelHandle) -> None:
        """Prepare the model (compile, quantize, allocate); called once before any predict."""

    @abc.abstractmethod
    def predict(self, inputs: Batch) -> Batch:
        """Run one batch: named input arrays in, named output arrays out (batch first)."""

    def inputs_read(self) -> frozenset[str] | None:
        """The inputs ``predict`` reads (None: all). The harness passes the others as zero-copy
        views of one sample, right in shape and dtype, so that a backend that needs only batch
        sizes (a timing model) costs the host no data movement."""
        return None

    def start_measuring(self) -> None:
        """Called as the LoadGen test starts, after any warm-up: ``report`` covers from here."""
        return None

    def report(self) -> dict[str, Any]:
        """What the backend observed over the run, for result.json; a non-empty "warning"
        is also shown on the run's result line."""
        return {}

    @abc.abstractmethod
    def describe(self) -> dict[str, str]:
        """Precision, sparsity, framework and version, device, and for submissions the
        weight_data_types and weight_transformations: for reports and system files."""
