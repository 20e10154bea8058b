"""Run orchestration: check the spec, prepare model and data, run LoadGen in a child process,
and publish the run folder atomically (complete, or clearly marked failed)."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from harness.errors import UserError
from harness.loadgen_run import ERROR_FILE, child_main, say, write_json
from harness.models.check import check_model
from harness.results import RUN_FORMAT
from harness.spec import RunSpec, validate
from harness.workloads import get_workload
from submissions.compliance import AUDIT_CONFIG, audit_config

FAILED_SUFFIX = ".failed"


@dataclass(frozen=True)
class RunOutcome:
    folder: Path
    result: dict


def _folder_name(spec: RunSpec) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    parts = (stamp, spec.model, spec.scenario, spec.backend_label, spec.mode, spec.compliance or "")
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "_".join(filter(None, parts)))


def _publish(staging: Path, name: str) -> Path:
    """Rename the staging folder to its final name; never replace an existing run."""
    for attempt in range(1, 1000):
        target = staging.parent / (name if attempt == 1 else f"{name}-{attempt}")
        try:
            os.rename(staging, target)  # fails if target exists and is not empty
            return target
        except OSError:
            if not target.exists():
                raise
    raise UserError(f"cannot find a free run folder name for {name}")


def prepare_model(spec: RunSpec) -> Path:
    """The model file: the user's (checked against the workload) or the built-in one."""
    workload = get_workload(spec.model)
    path = spec.model_path or workload.builtin_model(say)
    check_model(path, workload.inputs, workload.outputs)
    return path


def run(spec: RunSpec) -> RunOutcome:
    if Path(AUDIT_CONFIG).exists():
        raise UserError(
            "an audit.config is in the working directory; LoadGen would apply it to this run. "
            "Move it away (compliance tests are run with: sparseperf submission run)"
        )
    conf = validate(spec)
    model_path = prepare_model(spec)
    workload = get_workload(spec.model)
    # Build and check the dataset caches here, so that errors surface before any process starts.
    workload.open_data(spec.data_source, model_path, say)

    spec.runs_dir.mkdir(parents=True, exist_ok=True)
    name = _folder_name(spec)
    staging = spec.runs_dir / f".{name}.partial-{os.getpid()}"
    staging.mkdir()
    if spec.compliance:
        # LoadGen reads audit.config from the working directory: only this run's folder.
        (staging / AUDIT_CONFIG).write_text(audit_config(spec.compliance))
    process = multiprocessing.get_context("spawn").Process(
        target=child_main, args=(spec, conf, model_path.resolve(), staging.resolve())
    )
    process.start()
    try:
        process.join()
    except KeyboardInterrupt:
        process.terminate()
        process.join()
        _fail(spec, staging, name, "interrupted by the user")
    if process.exitcode != 0:
        error_file = staging / ERROR_FILE
        if error_file.exists():
            message = error_file.read_text().strip()
        elif process.exitcode is not None and process.exitcode < 0:
            message = f"the run process was killed by signal {-process.exitcode}"
        else:
            message = f"the run process exited with code {process.exitcode}"
        _fail(spec, staging, name, message)
    folder = _publish(staging, name)
    return RunOutcome(folder, json.loads((folder / "result.json").read_text()))


class RunFailed(UserError):
    """A run that started and failed; its folder keeps the logs."""

    def __init__(self, message: str, folder: Path) -> None:
        super().__init__(f"{message} (run failed; logs kept in {folder})")
        self.reason = message  # as the failed folder's result.json records it
        self.folder = folder


def _fail(spec: RunSpec, staging: Path, name: str, message: str) -> None:
    write_json(
        staging / "result.json",
        {"format": RUN_FORMAT, "status": "failed", "error": message, "spec": spec.to_json()},
    )
    raise RunFailed(message, _publish(staging, name + FAILED_SUFFIX))
