"""Calibration lists: the dataset samples, by name, that a backend calibrates on.

MLPerf's closed division requires quantization to be calibrated on the official list of the
benchmark (calibration/ImageNet/cal_image_list_option_1.txt or _2.txt, one image name per
line, in mlcommons/inference); without a list, backends calibrate on samples drawn from the
evaluation set, which only the open division takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.accuracy import file_sha256
from harness.errors import UserError
from harness.files import read_text
from harness.workloads.base import CALIBRATION_SEED, WorkloadData


def read_calibration_list(path: Path) -> tuple[str, ...]:
    """The names a list holds, one per line (blank lines skipped)."""
    names = tuple(line.strip() for line in read_text(path, "calibration list").splitlines())
    names = tuple(name for name in names if name)
    if not names:
        raise UserError(f"calibration list {path} names no samples; give one name per line")
    return names


def check_calibration_list(path: Path, data: WorkloadData) -> tuple[str, ...]:
    """The list's names, each checked to be a sample of ``data``."""
    names = read_calibration_list(path)
    problem = data.calibration_problem(names)
    if problem:
        raise UserError(f"calibration list {path}: {problem}")
    return names


@dataclass(frozen=True)
class Calibration:
    """What a run's backend calibrated on, as run.json records it."""

    samples: int
    list: str | None = None  # the calibration list's path; None: drawn from the evaluation set
    sha256: str | None = None

    @classmethod
    def of(cls, path: Path | None, samples: int) -> Calibration:
        if path is None:
            return cls(samples)
        return cls(samples, str(path), file_sha256(path))

    def describe(self) -> str:
        if self.list is None:
            return (
                f"{self.samples} samples of the evaluation set, drawn with seed "
                f"{CALIBRATION_SEED} (no calibration list)"
            )
        return f"{self.samples} samples named in {Path(self.list).name} (sha256 {self.sha256})"
