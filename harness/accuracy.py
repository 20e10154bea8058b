"""Accuracy from LoadGen's mlperf_log_accuracy.json, in the lines the MLPerf checker reads."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.errors import UserError
from harness.files import read_json


@dataclass(frozen=True)
class Accuracy:
    value: float  # the headline number the checker compares with its target
    line: str  # the line accuracy.txt carries, in the official format
    details: dict


def read_responses(path: Path) -> dict[int, bytes]:
    """qsl_idx -> response bytes; a sample logged twice keeps its first response."""
    responses: dict[int, bytes] = {}
    for index, data in read_log(path):
        responses.setdefault(index, data)
    return responses


def read_log(path: Path) -> list[tuple[int, bytes]]:
    """(qsl_idx, response bytes) of every entry of a LoadGen accuracy log, in order."""
    entries = read_json(path, "accuracy log")
    try:
        return [(int(entry["qsl_idx"]), bytes.fromhex(entry["data"])) for entry in entries]
    except (TypeError, KeyError, ValueError) as exc:
        raise UserError(
            f"accuracy log {path} is not a LoadGen accuracy log (entries need qsl_idx and "
            f"hex data: {type(exc).__name__} {exc})"
        ) from None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def imagenet_top1(responses: dict[int, bytes], labels: np.ndarray) -> Accuracy:
    """Top-1 over the logged samples; each response is one float32 label."""
    if not responses:
        raise UserError("the accuracy log holds no responses")
    indices = np.fromiter(responses, dtype=np.int64, count=len(responses))
    predicted = np.array([np.frombuffer(responses[i], np.float32)[0] for i in indices])
    good = int(np.sum(predicted == labels[indices]))
    total = len(indices)
    value = 100.0 * good / total
    return Accuracy(
        value, f"accuracy={value:.3f}%, good={good}, total={total}", {"good": good, "total": total}
    )


def hash_line(accuracy_log: Path) -> str:
    """The line of accuracy.txt that identifies the full log (submissions truncate it)."""
    return f"hash={file_sha256(accuracy_log)}"


def write_accuracy_txt(run_dir: Path, accuracy: Accuracy) -> None:
    """accuracy.txt: the official line plus the hash of the full accuracy log."""
    line = hash_line(run_dir / "mlperf_log_accuracy.json")
    (run_dir / "accuracy.txt").write_text(f"{accuracy.line}\n{line}\n")
