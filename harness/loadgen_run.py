"""One LoadGen run, inside its own process (LoadGen's FromConfig may be called once per process).

The process works in the run folder, so LoadGen only ever sees an ``audit.config`` that a
compliance test put there on purpose. It tells the parent's watchdog what it is busy with,
dies with the parent, and ignores Ctrl-C (the parent ends it).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

import mlperf_loadgen as lg
import numpy as np

from harness import interrupts, provenance
from harness.accuracy import read_responses, write_accuracy_txt
from harness.cluster import Connection, ReplicaFailed
from harness.console import say
from harness.engine import Engine, LocalEngine
from harness.errors import UserError
from harness.files import write_json, write_text
from harness.inference import LocalInference
from harness.loadgen_keys import MAX_DURATION_MS
from harness.models.check import ModelFile
from harness.outputs import BadOutput
from harness.results import RUN_FORMAT, summarize
from harness.runfolder import hold
from harness.settings import (
    COMPLIANT_PRESETS,
    EARLY_STOPPING_QUERIES,
    PRESETS,
    format_number,
    loaded_mismatches,
    render_user_conf,
)
from harness.spec import RunSpec
from harness.tuned import store_key, stored
from harness.warmup import auto_settings
from harness.watchdog import Heartbeat
from harness.workloads import get_workload
from harness.workloads.base import WorkloadData
from scenarios import ScenarioOptions
from scenarios.timeline import COLUMNS as TIMELINE_COLUMNS
from scenarios.timeline import summary as timeline_summary

ERROR_FILE = "error.txt"  # one line for the user; error.log keeps the traceback
TIMELINE_FILE = "server_timeline.csv"  # a Server run's per-query times
OFFICIAL_DATASET = "dataset"  # a repeated set's files for the official accuracy script
# The parent reads why a run failed from the heartbeat or error.txt; the code only says it did.
EXIT_FAILED = 2
PROGRESS_EVERY_S = 10.0
# The most samples a performance run may plan (LoadGen pre-generates them all in memory).
MAX_PLANNED_SAMPLES = 100_000_000


def fail(
    run_dir: Path, heartbeat: Heartbeat, line: str, exc: BaseException | None = None
) -> NoReturn:
    """Record why the run failed and end the process at once: LoadGen cannot be aborted. The
    parent learns the line from the heartbeat even when the files cannot be written."""
    heartbeat.record_error(line)
    try:
        (run_dir / ERROR_FILE).write_text(line + "\n")
        if exc is not None:
            (run_dir / "error.log").write_text("".join(traceback.format_exception(exc)))
    except OSError:
        pass
    sys.stderr.flush()
    os._exit(EXIT_FAILED)


def _die_with_parent(parent_pid: int) -> None:
    """End this process when the parent dies (Linux), so that killing the parent never leaves
    a run going on its own."""
    # Not Linux: the parent's lock on the run folder still marks the run abandoned.
    interrupts.parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(EXIT_FAILED)


def child_main(
    spec: RunSpec,
    user_values: dict[str, str],
    model: ModelFile,
    run_dir: Path,
    heartbeat: Heartbeat,
    parent_pid: int,
    cluster: Connection | None = None,
) -> None:
    """Process entry point: run, or record the error and exit non-zero."""
    _die_with_parent(parent_pid)
    os.chdir(run_dir)
    lock = hold(run_dir)  # held until the process ends
    heartbeat.started()
    try:
        execute(spec, user_values, model, run_dir, heartbeat, cluster)
    except UserError as exc:
        fail(run_dir, heartbeat, str(exc))
    except BaseException as exc:
        fail(run_dir, heartbeat, f"internal error: {type(exc).__name__}: {exc}", exc)
    os.close(lock)


def run_plan(settings: lg.TestSettings, scenario: str) -> tuple[float, str]:
    """How long a performance run will take and how many queries it needs, from its settings
    (LoadGen runs until both the minimum duration and the minimum query count are met); a
    plan longer than LoadGen's duration limit, or of more samples than memory holds, is a
    UserError."""
    minimum_s, queries = settings.min_duration_ms / 1000, settings.min_query_count
    seconds_per_query = {
        "Offline": 0.0,  # one query, sized to last the minimum duration
        "Server": 1 / settings.server_target_qps,
        "SingleStream": settings.single_stream_expected_latency_ns / 1e9,
        "MultiStream": settings.multi_stream_expected_latency_ns / 1e9,
    }[scenario]
    expected_s = max(minimum_s, queries * seconds_per_query)
    if scenario == "Offline":
        samples = max(queries, 1.1 * minimum_s * settings.offline_expected_qps)
    else:
        per_query = settings.multi_stream_samples_per_query if scenario == "MultiStream" else 1
        samples = max(queries, minimum_s / seconds_per_query) * per_query
    if expected_s * 1000 > MAX_DURATION_MS:
        raise UserError(
            f"the settings plan a {scenario} run of {expected_s / 86400:.0f} days (more than 7); "
            "check min_duration, min_query_count and the expected QPS or latency in user.conf"
        )
    if samples > MAX_PLANNED_SAMPLES:
        raise UserError(
            f"the settings plan a {scenario} run of {samples:.3g} samples, more than "
            f"{MAX_PLANNED_SAMPLES:.0e} (LoadGen makes them all in advance); lower min_duration "
            "or the expected QPS, or raise the expected latency, in user.conf"
        )
    plan = f"about {expected_s:.0f} s (at least {minimum_s:.0f} s"
    if scenario in EARLY_STOPPING_QUERIES:
        percentile = 90 if scenario == "SingleStream" else 99
        plan += (
            f" and {queries} queries; early stopping needs at least "
            f"{EARLY_STOPPING_QUERIES[scenario]} for its p{percentile} estimate"
        )
    return expected_s, plan + ")"


class Progress:
    """Prints how far a long run has got, every few seconds, until stopped."""

    def __init__(self, sut, expected_s: float) -> None:
        self._sut = sut
        self._expected_s = expected_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Progress:
        self._start = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        # The rate is over the last interval: the first one also holds LoadGen's sample loading.
        last_done, last_time = 0, self._start
        while not self._stop.wait(PROGRESS_EVERY_S):
            now, done = time.monotonic(), self._sut.completed_samples
            target = f" of at least {self._expected_s:.0f} s" if self._expected_s else ""
            rate = (done - last_done) / (now - last_time)
            say(f"{now - self._start:.0f} s{target}: {done} samples done ({rate:.1f}/s lately)")
            last_done, last_time = done, now


def execute(
    spec: RunSpec,
    user_values: dict[str, str],
    model: ModelFile,
    run_dir: Path,
    heartbeat: Heartbeat,
    cluster: Connection | None = None,
) -> None:
    workload = get_workload(spec.model)
    label = spec.backend_label

    def on_fatal(exc: BaseException) -> NoReturn:
        if isinstance(exc, BadOutput):
            fail(run_dir, heartbeat, f"backend {label} {exc}", exc)
        if isinstance(exc, ReplicaFailed):  # the line names the replica; the cause is in the log
            fail(run_dir, heartbeat, str(exc), exc)
        message = f"backend {label} failed: {type(exc).__name__}: {exc}"
        fail(run_dir, heartbeat, message, exc)

    with heartbeat.busy("the run process while opening the dataset", "harness"):
        data = workload.open_data(spec.data_source, model.path, say)
    engine = open_engine(spec, model, data, heartbeat, on_fatal, cluster)
    try:
        _run_loadgen(spec, user_values, model, data, engine, run_dir, heartbeat, on_fatal)
    finally:
        engine.close()


def open_engine(
    spec: RunSpec,
    model: ModelFile,
    data: WorkloadData,
    heartbeat: Heartbeat,
    on_fatal: Callable[[BaseException], NoReturn],
    cluster: Connection | None,
) -> Engine:
    """The backend in this process, or its replicas on the cluster (Ray imported only then)."""
    if cluster is not None:
        os.environ.update(cluster.env)  # read by Ray as it is imported
        from harness.cluster.engine import ClusterEngine

        return ClusterEngine(spec, model, cluster, heartbeat, on_fatal, say)
    say(f"loading {spec.backend_label} backend")
    return LocalEngine(LocalInference(spec, model, data, heartbeat.busy, on_fatal))


def _run_loadgen(
    spec: RunSpec,
    user_values: dict[str, str],
    model: ModelFile,
    data: WorkloadData,
    engine: Engine,
    run_dir: Path,
    heartbeat: Heartbeat,
    on_fatal: Callable[[BaseException], NoReturn],
) -> None:
    workload = get_workload(spec.model)

    def loading(action: Callable[[Sequence[int]], None]) -> Callable[[Sequence[int]], None]:
        """A QSL callback: watched, and fatal on failure (an exception must not reach
        LoadGen's C++ caller)."""

        def call(indices: Sequence[int]) -> None:
            try:
                with heartbeat.busy("the run process while loading samples", "harness"):
                    action(indices)
            except BaseException as exc:
                if isinstance(exc, ReplicaFailed):
                    on_fatal(exc)
                line = f"loading samples failed: {type(exc).__name__}: {exc}"
                fail(run_dir, heartbeat, line, exc)

        return call

    model_key = workload.loadgen_key
    preset = {k: format_number(v) for k, v in PRESETS[spec.preset][spec.scenario].items()}
    sections: list[tuple[str, dict[str, str]]] = [(f"preset {spec.preset}", preset)]
    if data.count < workload.performance_sample_count:
        sections.append(
            (
                f"dataset has only {data.count} samples",
                {"performance_sample_count_override": str(data.count)},
            )
        )
    if spec.mode == "performance":
        kept = stored(spec)
        if kept is not None:
            source, found = f"stored by sparseperf tune for {store_key(spec)}", kept.values
        else:
            source = "measured in a warm-up before the run"
            try:
                found = auto_settings(spec.scenario, engine.warm_up(spec))
            except Exception as exc:
                on_fatal(exc)
        tuned = {k: v for k, v in found.items() if k not in user_values}
        if tuned:
            say(
                f"using stored {kept.describe()}; `sparseperf tune --retune` refreshes it"
                if kept is not None
                else "from warm-up: " + ", ".join(f"{k} = {v}" for k, v in tuned.items())
            )
            sections.append((source, tuned))
    sections.append((f"user.conf {spec.user_conf}", user_values))
    settings = load_settings(run_dir / "user.conf", model_key, spec.scenario, sections)
    settings.scenario = getattr(lg.TestScenario, spec.scenario)
    settings.mode = (
        lg.TestMode.PerformanceOnly if spec.mode == "performance" else lg.TestMode.AccuracyOnly
    )
    expected_s, plan = (
        run_plan(settings, spec.scenario)
        if spec.mode == "performance"
        else (0.0, f"over {data.count} samples")
    )

    try:
        batch_times = engine.server_batch_times(spec)
    except Exception as exc:
        on_fatal(exc)
    if batch_times:
        say(
            "Server batches sized by the measured batch times: "
            + ", ".join(f"{b}: {t * 1e3:.3g} ms" for b, t in batch_times)
        )
    options = ScenarioOptions(
        spec.batch_size, spec.workers, spec.server_batch_timeout_ms, batch_times
    )
    sut = engine.sut(spec.scenario, options, on_fatal)
    log_output = lg.LogOutputSettings()
    log_output.outdir = str(run_dir)
    log_output.copy_summary_to_stdout = False
    log_settings = lg.LogSettings()
    log_settings.log_output = log_output
    log_settings.enable_trace = False

    perf_count = min(data.count, workload.performance_sample_count)
    lg_sut = engine.construct(sut)
    lg_qsl = lg.ConstructQSL(
        data.count, perf_count, loading(engine.load_samples), loading(engine.unload_samples)
    )
    say(f"LoadGen {spec.scenario} {spec.mode} run started: {plan}")
    sut.start()
    engine.start_measuring()
    try:
        with Progress(sut, expected_s):
            lg.StartTestWithLogSettings(lg_sut, lg_qsl, settings, log_settings)
    finally:
        sut.stop()
        lg.DestroyQSL(lg_qsl)
        engine.destroy(lg_sut)

    with heartbeat.busy("the run process while writing its results", "harness"):
        result = summarize(run_dir / "mlperf_log_detail.txt", spec.scenario, spec.mode)
        result["backend_report"] = engine.report()
        if result["backend_report"].get("warning"):
            say(f"warning: {result['backend_report']['warning']}")
        if sut.timeline is not None:
            table = sut.timeline.table()
            write_timeline(run_dir / TIMELINE_FILE, table)
            result["server_timeline"] = timeline_summary(table)
        result["compliant_preset"] = spec.preset in COMPLIANT_PRESETS
        result["synthetic_data"] = data.synthetic
        result["model_note"] = model.note
        if spec.mode == "accuracy":
            accuracy = data.score(read_responses(run_dir / "mlperf_log_accuracy.json"))
            write_accuracy_txt(run_dir, accuracy)
            written = data.write_official_files(run_dir / OFFICIAL_DATASET)
            if written:  # the dataset's own files hold fewer samples than the log
                result["official_dataset"] = [f"{OFFICIAL_DATASET}/{name}" for name in written]
            result["accuracy"] = {
                "value": accuracy.value,
                "line": accuracy.line,
                **accuracy.details,
            }
        description = engine.describe()
        cluster = engine.record()
        record = {
            "spec": spec.to_json(),
            "model_file": str(model.path),
            "model": model.record(spec.model_label),
            "dataset": data.description,
            "calibration": description.calibration,
            "backend": description.backend,
            "division": {
                "open_only": description.open_division_only or model.open_only,
                "simulated": description.simulated,
            },
            "versions": provenance.versions(),
            "host": provenance.host(),
            "git_sha": provenance.git_sha(),
            "seeds": result["seeds"],
            # what sized the Server batches (none measured: greedy up to the batch size)
            "server_batch_times_ms": {str(b): t * 1e3 for b, t in batch_times},
        }
        if cluster is not None:
            record["cluster"] = result["cluster"] = cluster
        write_json(run_dir / "run.json", record)
        result["format"] = RUN_FORMAT
        result["status"] = "complete"
        write_json(run_dir / "result.json", result)


def write_timeline(path: Path, table: np.ndarray) -> None:
    """Every query's times, one sample per line (ns from the first issue)."""
    lines = [",".join(TIMELINE_COLUMNS), *(",".join(map(str, row)) for row in table.tolist())]
    write_text(path, "\n".join(lines) + "\n")


def load_settings(
    user_conf: Path, model_key: str, scenario: str, sections: list[tuple[str, dict[str, str]]]
) -> lg.TestSettings:
    """Write the run's user.conf and have LoadGen read it; what LoadGen holds afterwards must
    be exactly what the file says (LoadGen drops a file it cannot parse without a word)."""
    write_text(user_conf, render_user_conf(model_key, scenario, sections))
    settings = lg.TestSettings()
    code = settings.FromConfig(str(user_conf), model_key, scenario)
    if code != 0:
        raise UserError(f"LoadGen could not read the run's user.conf {user_conf} (error {code})")
    values = {key: value for _, section in sections for key, value in section.items()}
    wrong = loaded_mismatches(settings, scenario, values)
    if wrong:
        raise UserError(f"LoadGen did not read user.conf as written: {'; '.join(wrong)}")
    return settings
