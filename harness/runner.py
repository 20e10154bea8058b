"""Run orchestration: check the spec, prepare model and data, run LoadGen in a child process
under a watchdog, and publish the run folder only when its result is complete (anything else
ends as ``<name>.failed`` with the reason)."""

from __future__ import annotations

import multiprocessing
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import NoReturn

from harness import interrupts
from harness.cache import CACHE_ENV, cache_root
from harness.calibration_list import check_calibration_list
from harness.cluster import Connection
from harness.cluster.local import cluster_for_run
from harness.console import say
from harness.errors import UserError
from harness.files import write_text
from harness.loadgen_run import ERROR_FILE, child_main
from harness.models.check import ModelFile, check_model, read_interface
from harness.runfolder import Staging, check_complete, recover
from harness.settings import check_sample_counts
from harness.spec import RunSpec, validate
from harness.watchdog import Heartbeat
from harness.workloads import get_workload
from submissions.compliance import AUDIT_CONFIG, audit_config

POLL_S = 0.25  # how often the watchdog looks
STOP_GRACE_S = 5.0  # after SIGTERM, how long the run process has before SIGKILL


@dataclass(frozen=True)
class RunOutcome:
    folder: Path
    result: dict


class RunFailed(UserError):
    """A run that started and failed; its folder keeps the logs."""

    def __init__(self, message: str, folder: Path) -> None:
        super().__init__(f"{message} (run failed; logs kept in {folder})")
        self.reason = message  # as the failed folder's result.json records it
        self.folder = folder


def _folder_name(spec: RunSpec) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    parts = (stamp, spec.model_label, spec.scenario, spec.backend_label, spec.mode,
             spec.compliance or "")  # fmt: skip
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "_".join(filter(None, parts)))


def model_file(spec: RunSpec) -> ModelFile:
    """The model (the user's file, checked against the workload, or the built-in one, pruned
    when built if the spec asks for a reference), the outputs it declares, and its pruning."""
    workload = get_workload(spec.model)
    path = spec.model_path or workload.builtin_model(say, spec.model_recipe)
    outputs = check_model(path, workload.inputs, workload.outputs)
    return ModelFile(path, outputs, read_interface(path).pruning, spec.model_path is not None)


def prepare_model(spec: RunSpec) -> Path:
    return model_file(spec).path


def run(spec: RunSpec) -> RunOutcome:
    if Path(AUDIT_CONFIG).exists():
        raise UserError(
            "an audit.config is in the working directory; LoadGen would apply it to this run. "
            "Move it away (compliance tests are run with: sparseperf submission run)"
        )
    spec = spec.resolved()  # the run process works in its run folder
    user_values = validate(spec)
    model = model_file(spec)
    workload = get_workload(spec.model)
    # Build and check the dataset caches here, so that errors surface before any process starts.
    data = workload.open_data(spec.data_source, model.path, say)
    if spec.calibration_list is not None:
        check_calibration_list(spec.calibration_list, data)
    check_sample_counts(user_values, data.count, f"user.conf {spec.user_conf}")
    os.environ[CACHE_ENV] = str(cache_root())  # the same cache for the run process

    with cluster_for_run(spec.cluster, say) as connection:  # stopped however the run ends
        recover(spec.runs_dir, say)
        staging = Staging(spec.runs_dir, _folder_name(spec), spec.to_json())
        try:
            if spec.compliance:
                # LoadGen reads audit.config from the working directory: only this run's folder.
                write_text(staging.path / AUDIT_CONFIG, audit_config(spec.compliance))
            result = _supervise(spec, user_values, model, staging, connection)
        except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP: the run process is ended
            folder = staging.fail(interrupts.reason(exc))
            say(f"{interrupts.reason(exc)}: run marked failed in {folder}")
            raise
        except UserError as exc:
            _fail(staging, str(exc))
        return RunOutcome(staging.publish(), result)


def _fail(staging: Staging, message: str) -> NoReturn:
    raise RunFailed(message, staging.fail(message))


def _supervise(
    spec: RunSpec,
    user_values: dict[str, str],
    model: ModelFile,
    staging: Staging,
    cluster: Connection | None,
) -> dict:
    """Run the LoadGen process to its end, or stop it when the watchdog finds it stuck; the
    run's complete result, or UserError why there is none."""
    context = multiprocessing.get_context("spawn")
    heartbeat = Heartbeat(context, spec.stall_timeout_s)
    process = context.Process(
        target=child_main,
        args=(spec, user_values, model, staging.path, heartbeat, os.getpid(), cluster),
    )
    try:
        with interrupts.sigint_ignored():  # the process ignores Ctrl-C: this one ends it
            process.start()
        while process.exitcode is None:
            process.join(POLL_S)
            stall = heartbeat.stalled() if process.exitcode is None else None
            if stall is not None:
                raise UserError(stall)
    finally:  # however this ends, the run process does not outlive it
        _stop(process)
    if process.exitcode != 0:
        raise UserError(_exit_reason(process.exitcode, heartbeat, staging.path))
    try:
        return check_complete(staging.path, spec.mode)
    except UserError as exc:
        raise UserError(f"{exc} (its exit status was 0)") from None


def _stop(process: multiprocessing.process.BaseProcess) -> None:
    if process.pid is None or process.exitcode is not None:
        return
    process.terminate()
    process.join(STOP_GRACE_S)
    if process.exitcode is None:
        process.kill()
        process.join()


def _exit_reason(code: int | None, heartbeat: Heartbeat, run_dir: Path) -> str:
    """Why the run process failed, in one line."""
    line = heartbeat.error()
    if not line and (run_dir / ERROR_FILE).is_file():
        line = (run_dir / ERROR_FILE).read_text(errors="replace").strip()
    if line:
        return line
    if code is not None and code < 0:
        hint = " (out of memory?)" if code == -9 else ""
        return f"the run process was killed by signal {-code}{hint}"
    return f"the run process exited with code {code}"
