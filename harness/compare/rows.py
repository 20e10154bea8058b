"""One row per run folder: the columns of results.csv / results.json, read from the folder's
result.json and run.json (the source of truth every table and plot is drawn from)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from harness import runfolder
from harness.compare.choices import backend_spec
from harness.errors import UserError
from harness.files import read_json_object
from harness.results import RUN_FORMAT
from harness.spec import RunSpec

# Columns in order. Metric units: Offline samples/s, Server queries/s (with its target QPS),
# SingleStream/MultiStream early-stopping latency in ms.
COLUMNS = (
    "model",
    "model_note",
    "backend",
    "backend_label",
    "precision",
    "density",
    "device",
    "scenario",
    "mode",
    "status",
    "metric",
    "value",
    "units",
    "target_qps",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "validity",
    "invalid_reason",
    "accuracy",
    "accuracy_target",
    "queries",
    "duration_s",
    "synthetic_data",
    "simulated",
    "host_bound",
    "modelled_samples_per_joule",
    "host_cpu",
    "versions",
    "git_sha",
    "run_folder",
    "error",
)
SYNTHETIC_ACCURACY_TARGET = 99.0  # synthetic labels are FP32's answers: agreement, in %


def empty_row(**values: Any) -> dict[str, Any]:
    row = dict.fromkeys(COLUMNS)
    row.update(values)
    return row


def failed_row(spec: RunSpec, error: str | None, folder: Path | None) -> dict[str, Any]:
    """The row of a cell that did not finish: what it was, and why."""
    return empty_row(
        model=spec.model_label,
        backend=backend_spec(spec),
        backend_label=spec.backend_label,
        scenario=spec.scenario,
        mode=spec.mode,
        status="failed",
        error=error,
        run_folder=str(folder) if folder else None,
    )


def read_row(folder: Path) -> dict[str, Any]:
    """The row of one run folder; an incomplete folder or one of another format is an error.
    A run whose processes were killed is a failed row, whatever its staging folder holds."""
    result_file, run_file = folder / "result.json", folder / "run.json"
    if not folder.is_dir():
        raise UserError(f"run folder {folder} does not exist")
    kind = runfolder.state(folder)
    if kind == runfolder.RUNNING:
        raise UserError(f"{folder} is a run still in progress; report it when it has finished")
    if kind == runfolder.ABANDONED:
        spec = RunSpec.from_json(runfolder.recorded_spec(folder))
        return failed_row(spec, runfolder.ABANDONED_REASON, folder)
    if not result_file.is_file():
        raise UserError(
            f"{folder} is not a finished run folder (no result.json): the run is still going, "
            "was killed, or the path is wrong"
        )
    result = _read_json(result_file)
    if result.get("format") != RUN_FORMAT:
        found = f"format {result['format']!r}" if "format" in result else "no format field"
        raise UserError(
            f"{folder} is not a run folder this sparseperf reads: its result.json has {found}, "
            f"and this version reads format {RUN_FORMAT} only; re-run it with this version"
        )
    if result.get("status") == "failed" or kind == runfolder.FAILED:
        error = result.get("error") or "the run failed (its folder is marked .failed)"
        return failed_row(RunSpec.from_json(result.get("spec") or {}), error, folder)
    if not run_file.is_file():
        raise UserError(f"{folder} is incomplete: result.json without run.json")
    run = _read_json(run_file)
    try:
        return _row(folder, result, run)
    except (KeyError, AttributeError, TypeError) as exc:
        raise UserError(f"{folder} is incomplete: run.json lacks {exc}") from exc


def _row(folder: Path, result: dict, run: dict) -> dict[str, Any]:
    spec = RunSpec.from_json(run["spec"])
    report = result.get("backend_report") or {}
    latency = result.get("latency_ms") or {}
    accuracy = result.get("accuracy") or {}
    model = run.get("model") or {}
    return empty_row(
        model=model.get("label", spec.model_label),
        model_note=model.get("note") or None,
        backend=backend_spec(spec),
        backend_label=spec.backend_label,
        precision=run["backend"].get("precision"),
        density=spec.backend_options.get("density"),
        device=spec.backend_options.get("device"),
        scenario=spec.scenario,
        mode=spec.mode,
        status="complete",
        metric=result.get("metric"),
        value=result.get("value"),
        units=result.get("units"),
        target_qps=result.get("target_qps"),
        p50_ms=latency.get("50.00"),
        p90_ms=latency.get("90.00"),
        p99_ms=latency.get("99.00"),
        validity=result.get("validity"),
        invalid_reason="; ".join(result.get("invalid_reasons") or []) or None,
        accuracy=accuracy.get("value"),
        accuracy_target=_accuracy_target(spec.model, result) if accuracy else None,
        queries=result.get("query_count"),
        duration_s=result.get("duration_s"),
        synthetic_data=result.get("synthetic_data"),
        simulated=run["division"].get("simulated"),
        host_bound=report.get("host_bound"),
        modelled_samples_per_joule=report.get("modelled_samples_per_joule"),
        host_cpu=run["host"].get("cpu"),
        versions="; ".join(f"{k} {v}" for k, v in run["versions"].items()),
        git_sha=run.get("git_sha"),
        run_folder=str(folder),
    )


def _accuracy_target(model: str, result: dict) -> float:
    """On synthetic data accuracy is agreement with FP32 (target 99%); else the MLPerf bar."""
    if result.get("synthetic_data"):
        return SYNTHETIC_ACCURACY_TARGET
    from submissions.rules import BENCHMARKS

    return BENCHMARKS[model].accuracy_target


def _read_json(path: Path) -> dict:
    return read_json_object(path, "run record")


def write_rows(rows: list[dict[str, Any]], out: Path) -> None:
    """results.json and results.csv, the same rows and columns."""
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
