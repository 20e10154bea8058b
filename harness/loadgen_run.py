"""One LoadGen run, inside its own process (LoadGen's FromConfig may be called once per process).

The process works in the run folder, so LoadGen only ever sees an ``audit.config`` that a
compliance test put there on purpose. It tells the parent's watchdog what it is busy with,
dies with the parent, and ignores Ctrl-C (the parent ends it).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NoReturn

import mlperf_loadgen as lg
import numpy as np

from backends import create_backend
from backends.base import Batch, ModelHandle
from harness import provenance
from harness.accuracy import read_responses, write_accuracy_txt
from harness.calibration_list import Calibration, check_calibration_list
from harness.errors import UserError
from harness.files import write_json, write_text
from harness.loadgen_keys import MAX_DURATION_MS
from harness.models.check import ModelFile
from harness.outputs import BadOutput, check_outputs
from harness.qsl import SampleStore
from harness.results import RUN_FORMAT, summarize
from harness.runfolder import hold
from harness.settings import (
    COMPLIANT_PRESETS,
    EARLY_STOPPING_QUERIES,
    PRESETS,
    format_number,
    loaded_mismatches,
    render_user_conf,
    rounded,
)
from harness.spec import RunSpec
from harness.tune import store_key, stored
from harness.watchdog import Heartbeat
from harness.workloads import get_workload
from scenarios import ScenarioOptions, make_sut
from scenarios.timeline import COLUMNS as TIMELINE_COLUMNS
from scenarios.timeline import summary as timeline_summary

ERROR_FILE = "error.txt"  # one line for the user; error.log keeps the traceback
TIMELINE_FILE = "server_timeline.csv"  # a Server run's per-query times
OFFICIAL_DATASET = "dataset"  # a repeated set's files for the official accuracy script
EXIT_USER_ERROR = 2
EXIT_BACKEND_FAILED = 3
EXIT_INTERNAL = 4
WARMUP_SECONDS = {"smoke": 0.5, "short": 2.0, "valid": 5.0}
PROGRESS_EVERY_S = 10.0
MULTISTREAM_SAMPLES = 8
# The most samples a performance run may plan (LoadGen pre-generates them all in memory).
MAX_PLANNED_SAMPLES = 100_000_000
PR_SET_PDEATHSIG = 1


def say(message: str) -> None:
    print(f"[sparseperf] {message}", file=sys.stderr, flush=True)


def fail(
    run_dir: Path, heartbeat: Heartbeat, line: str, code: int, exc: BaseException | None = None
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
    os._exit(code)


def _die_with_parent(parent_pid: int) -> None:
    """End this process when the parent dies (Linux), so that killing the parent never leaves
    a run going on its own."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the parent's lock on the run folder still marks it abandoned
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(EXIT_INTERNAL)


def child_main(
    spec: RunSpec,
    user_values: dict[str, str],
    model: ModelFile,
    run_dir: Path,
    heartbeat: Heartbeat,
    parent_pid: int,
) -> None:
    """Process entry point: run, or record the error and exit non-zero."""
    _die_with_parent(parent_pid)
    os.chdir(run_dir)
    lock = hold(run_dir)  # held until the process ends
    heartbeat.started()
    try:
        execute(spec, user_values, model, run_dir, heartbeat)
    except UserError as exc:
        fail(run_dir, heartbeat, str(exc), EXIT_USER_ERROR)
    except BaseException as exc:
        fail(run_dir, heartbeat, f"internal error: {type(exc).__name__}: {exc}", EXIT_INTERNAL, exc)
    os.close(lock)


def warmup(infer, store: SampleStore, batch: int, seconds: float) -> list[float]:
    """Seconds per call of ``infer`` on ``batch`` loaded samples (first call discarded)."""
    indices = list(range(min(store.count, max(batch, 64))))
    store.load_samples(indices)
    times: list[float] = []
    picks = [indices[(i * batch) % len(indices) :][:batch] for i in range(1000)]
    try:
        infer(picks[0])
        deadline = time.perf_counter() + seconds
        for pick in picks[1:]:
            start = time.perf_counter()
            infer(pick if len(pick) == batch else indices[:batch])
            times.append(time.perf_counter() - start)
            if time.perf_counter() > deadline and len(times) >= 2:
                break
    finally:
        store.unload_samples(indices)
    return times


def concurrent_rate(infer, store: SampleStore, batch: int, workers: int, seconds: float) -> float:
    """Samples/s of ``workers`` threads each calling ``infer`` on ``batch`` samples, as the
    Offline SUT's workers do (a backend that overlaps calls beats one call's time)."""
    indices = list(range(min(store.count, batch)))
    store.load_samples(indices)
    try:
        infer(indices)
        start = time.perf_counter()
        deadline = start + seconds

        def loop() -> int:
            calls = 0
            while calls < 2 or time.perf_counter() < deadline:
                infer(indices)
                calls += 1
            return calls

        with ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(loop) for _ in range(workers)]
            calls = sum(future.result() for future in futures)  # re-raises a backend error
        return calls * len(indices) / (time.perf_counter() - start)
    finally:
        store.unload_samples(indices)


def auto_settings(spec: RunSpec, infer, store: SampleStore) -> dict[str, str]:
    """Expected QPS / latency from a short warm-up, so valid runs neither end short of the
    minimum duration nor run out of pre-generated queries."""
    seconds = WARMUP_SECONDS[spec.preset]
    if spec.scenario == "Offline":
        if spec.workers > 1:
            qps = concurrent_rate(infer, store, spec.batch_size, spec.workers, seconds)
        else:
            qps = spec.batch_size / float(np.median(warmup(infer, store, spec.batch_size, seconds)))
        return {"target_qps": rounded(1.05 * qps)}
    if spec.scenario == "Server":
        times = warmup(infer, store, 1, seconds)
        return {"target_qps": rounded(0.5 / float(np.median(times)))}
    batch = 1 if spec.scenario == "SingleStream" else MULTISTREAM_SAMPLES
    times = warmup(infer, store, batch, seconds)
    # LoadGen pre-generates min_duration / expected latency queries: err on the low side.
    return {"target_latency": rounded(max(0.75 * 1000 * min(times), 1e-3))}


def server_batch_times(spec: RunSpec, infer, store: SampleStore) -> tuple[tuple[int, float], ...]:
    """The backend's median seconds per batch at 1, half and all of the batch size, for the
    Server policy to size batches by (nothing to measure at batch 1)."""
    if spec.scenario != "Server" or spec.mode != "performance" or spec.batch_size == 1:
        return ()
    seconds = WARMUP_SECONDS[spec.preset] / 3
    sizes = sorted({1, max(1, spec.batch_size // 2), spec.batch_size})
    return tuple((b, float(np.median(warmup(infer, store, b, seconds)))) for b in sizes)


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
) -> None:
    workload = get_workload(spec.model)
    label = spec.backend_label

    def backend_call(what: str):  # a watched call that is not a batch
        return heartbeat.busy(f"backend {label} in {what}", "backend")

    def on_fatal(exc: BaseException) -> NoReturn:
        if isinstance(exc, BadOutput):
            fail(run_dir, heartbeat, f"backend {label} {exc}", EXIT_BACKEND_FAILED, exc)
        message = f"backend {label} failed: {type(exc).__name__}: {exc}"
        fail(run_dir, heartbeat, message, EXIT_BACKEND_FAILED, exc)

    with heartbeat.busy("the run process while opening the dataset", "harness"):
        data = workload.open_data(spec.data_source, model.path, say)
    with backend_call("its constructor"):
        backend = create_backend(spec.backend, spec.backend_options)
    say(f"loading {label} backend")
    names = check_calibration_list(spec.calibration_list, data) if spec.calibration_list else ()
    calibrated: list[Calibration] = []  # what the backend drew, if it calibrated

    def calibration() -> Sequence[Batch]:
        batches = data.calibration(names)
        samples = sum(len(next(iter(batch.values()))) for batch in batches)
        calibrated.append(Calibration.of(spec.calibration_list, samples))
        return batches

    handle = ModelHandle(
        path=model.path,
        name=workload.name,
        input_names=tuple(t.name for t in workload.inputs),
        output_names=workload.outputs,
        calibration=calibration,
        int8_activations=workload.int8_activations,
        token_mask=workload.token_mask,
    )
    with backend_call("load()"):
        try:
            backend.load(handle)
        except UserError:
            raise
        except Exception as exc:
            on_fatal(exc)
    with backend_call("inputs_read()"):
        reads = backend.inputs_read()
    store = SampleStore(data.count, data.fetch, data.to_inputs)
    phase = ["the warm-up"]

    def infer(indices: Sequence[int]) -> np.ndarray:
        with heartbeat.busy(f"backend {label} in predict() during {phase[0]}", "batch"):
            batch = backend.predict(store.batch(indices, reads))
        return workload.responses(check_outputs(batch, model.outputs, len(indices)))

    def loading(action: Callable[[Sequence[int]], None]) -> Callable[[Sequence[int]], None]:
        """A QSL callback: watched, and fatal on failure (an exception must not reach
        LoadGen's C++ caller)."""

        def call(indices: Sequence[int]) -> None:
            try:
                with heartbeat.busy("the run process while loading samples", "harness"):
                    action(indices)
            except BaseException as exc:
                line = f"loading samples failed: {type(exc).__name__}: {exc}"
                fail(run_dir, heartbeat, line, EXIT_INTERNAL, exc)

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
                found = auto_settings(spec, infer, store)
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
        batch_times = server_batch_times(spec, infer, store)
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
    sut = make_sut(spec.scenario, infer, options, on_fatal)
    log_output = lg.LogOutputSettings()
    log_output.outdir = str(run_dir)
    log_output.copy_summary_to_stdout = False
    log_settings = lg.LogSettings()
    log_settings.log_output = log_output
    log_settings.enable_trace = False

    perf_count = min(data.count, workload.performance_sample_count)
    lg_sut = lg.ConstructSUT(sut.issue_queries, sut.flush_queries)
    lg_qsl = lg.ConstructQSL(
        data.count, perf_count, loading(store.load_samples), loading(store.unload_samples)
    )
    say(f"LoadGen {spec.scenario} {spec.mode} run started: {plan}")
    phase[0] = "the LoadGen test"
    sut.start()
    with backend_call("start_measuring()"):
        backend.start_measuring()
    try:
        with Progress(sut, expected_s):
            lg.StartTestWithLogSettings(lg_sut, lg_qsl, settings, log_settings)
    finally:
        sut.stop()
        lg.DestroyQSL(lg_qsl)
        lg.DestroySUT(lg_sut)

    with heartbeat.busy("the run process while writing its results", "harness"):
        result = summarize(run_dir / "mlperf_log_detail.txt", spec.scenario, spec.mode)
        with backend_call("report()"):
            result["backend_report"] = backend.report()
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
        with backend_call("describe()"):
            description = backend.describe()
        write_json(
            run_dir / "run.json",
            {
                "spec": spec.to_json(),
                "model_file": str(model.path),
                "model": model.record(spec.model_label),
                "dataset": data.description,
                "calibration": calibrated[0].__dict__ if calibrated else None,
                "backend": description,
                "division": {
                    "open_only": backend.open_division_only or model.open_only,
                    "simulated": backend.simulated,
                },
                "versions": provenance.versions(),
                "host": provenance.host(),
                "git_sha": provenance.git_sha(),
                "seeds": result["seeds"],
                # what sized the Server batches (none measured: greedy up to the batch size)
                "server_batch_times_ms": {str(b): t * 1e3 for b, t in batch_times},
            },
        )
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
