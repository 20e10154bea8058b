"""How a device's published MLPerf results were run: its submitted configuration per model.

Each value is a ``Fact``: the value and where it comes from, ``published: <where>`` (a file
of the submission, a spec sheet) or ``assumed: <why>``. ``predict`` and ``run --backend
simaccel`` use these values where no flag says otherwise, and print them, so a prediction
made without flags describes the device as it was submitted rather than an idealised dense one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from harness.errors import UserError

TOKENS = ("padded", "real")


@dataclass(frozen=True)
class Fact:
    value: Any
    source: str  # "published: <where>" or "assumed: <why>"

    @property
    def kind(self) -> str:
        return "published" if self.source.startswith("published") else "assumed"


@dataclass(frozen=True)
class Submission:
    """One model's submitted configuration; a field left None was not stated."""

    precision: Fact | None = None  # the device's compute type
    density: Fact | None = None  # weight density of the submitted model (1: dense)
    pattern: Fact | None = None  # its pruning pattern: unstructured or N:M
    offline_batch: Fact | None = None
    server_batch: Fact | None = None  # the largest dynamic batch
    server_timeout_ms: Fact | None = None  # how long a Server batch waits to fill
    workers: Fact | None = None  # batches in flight, so transfers overlap compute
    tokens: Fact | None = None  # real when the harness removes padding (token models)

    def facts(self) -> dict[str, Fact]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}

    def value(self, name: str) -> Any:
        fact = getattr(self, name)
        return None if fact is None else fact.value


FIELDS = tuple(f.name for f in fields(Submission))


def sparse_floor(sparsity: str, max_sparse_speedup: float) -> float:
    """The lowest weight density a device's sparsity support still speeds up."""
    if sparsity == "none":
        return 1.0
    return 1 / min(2.0, max_sparse_speedup) if sparsity == "2:4" else 1 / max_sparse_speedup


def check_submission(
    where: str, submission: Submission, dtypes: Mapping[str, float], sparsity: str, floor: float
) -> None:
    """Refuse a configuration the device cannot run, naming the field (``where`` names the
    profile and model, e.g. "moffett-s30 submitted.resnet50")."""
    precision = submission.value("precision")
    if precision is not None and precision not in dtypes:
        raise UserError(
            f"{where}.precision: the device has no {precision} MACs; it computes in "
            f"{', '.join(dtypes)}"
        )
    density = submission.value("density")
    if density is not None:
        if isinstance(density, bool) or not isinstance(density, (int, float)):
            raise UserError(f"{where}.density must be a number, got {density!r}")
        if not 0 < density <= 1:
            raise UserError(f"{where}.density must be in (0, 1], got {density}")
        if density < 1 and density < floor - 1e-12:
            raise UserError(
                f"{where}.density {density:g} is below what the device exploits "
                f"({floor:g}, {sparsity} sparsity); give a density of at least {floor:g}"
            )
        pattern = submission.value("pattern") or "unstructured"
        if density < 1 and sparsity == "2:4" and pattern != "2:4":
            raise UserError(
                f"{where}.pattern {pattern!r}: the device skips zeros only in the 2:4 pattern"
            )
    for name in ("offline_batch", "server_batch", "workers"):
        value = submission.value(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise UserError(f"{where}.{name} must be a whole number of at least 1, got {value!r}")
    timeout = submission.value("server_timeout_ms")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0
    ):
        raise UserError(
            f"{where}.server_timeout_ms must be a number of at least 0, got {timeout!r}"
        )
    tokens = submission.value("tokens")
    if tokens is not None and tokens not in TOKENS:
        raise UserError(f"{where}.tokens must be padded or real, got {tokens!r}")


def parse_submitted(where: str, raw: object) -> dict[str, Submission]:
    """``[submitted.<model>]`` tables of a profile file: each value plain (then marked as
    assumed, stated in the file) or ``{ value = ..., source = "published: ..." }``."""
    if not isinstance(raw, dict):
        raise UserError(f"{where} must be a table of models, e.g. [submitted.resnet50]")
    result = {}
    for model, table in raw.items():
        if not isinstance(table, dict):
            raise UserError(f"{where}.{model} must be a table of configuration values")
        unknown = sorted(set(table) - set(FIELDS))
        if unknown:
            raise UserError(
                f"{where}.{model}: unknown key(s) {', '.join(unknown)}; known: {', '.join(FIELDS)}"
            )
        values = {}
        for name, entry in table.items():
            if isinstance(entry, dict):
                if set(entry) != {"value", "source"} or not isinstance(entry["source"], str):
                    raise UserError(
                        f"{where}.{model}.{name} must be a value or "
                        '{ value = ..., source = "published: ..." or "assumed: ..." }'
                    )
                values[name] = Fact(entry["value"], entry["source"])
            else:
                values[name] = Fact(entry, "assumed: stated in the profile file")
        result[model] = Submission(**values)
    return result


def submitted_table(submitted: Mapping[str, Submission]) -> dict[str, dict[str, dict]]:
    """The TOML form ``parse_submitted`` reads back."""
    return {
        model: {name: {"value": f.value, "source": f.source} for name, f in s.facts().items()}
        for model, s in submitted.items()
    }
