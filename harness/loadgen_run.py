"""One LoadGen run, inside its own process (LoadGen's FromConfig may be called once per process).

The process works in the run folder, so LoadGen only ever sees an ``audit.config`` that a
compliance test put there on purpose.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NoReturn

import mlperf_loadgen as lg
import numpy as np

from backends import create_backend
from backends.base import ModelHandle
from harness import provenance
from harness.accuracy import read_responses, write_accuracy_txt
from harness.errors import UserError
from harness.qsl import SampleStore
from harness.results import RUN_FORMAT, summarize
from harness.settings import (
    COMPLIANT_PRESETS,
    EARLY_STOPPING_QUERIES,
    PRESETS,
    ConfLine,
    effective_user_values,
    format_number,
    render_user_conf,
)
from harness.spec import RunSpec
from harness.tune import store_key, stored
from harness.workloads import get_workload
from scenarios import ScenarioOptions, make_sut

ERROR_FILE = "error.txt"  # one line for the user; error.log keeps the traceback
EXIT_USER_ERROR = 2
EXIT_BACKEND_FAILED = 3
EXIT_INTERNAL = 4
WARMUP_SECONDS = {"smoke": 0.5, "short": 2.0, "valid": 5.0}
PROGRESS_EVERY_S = 10.0
MULTISTREAM_SAMPLES = 8


def say(message: str) -> None:
    print(f"[sparseperf] {message}", file=sys.stderr, flush=True)


def fail(run_dir: Path, line: str, code: int, exc: BaseException | None = None) -> NoReturn:
    """Record why the run failed and end the process at once: LoadGen cannot be aborted."""
    (run_dir / ERROR_FILE).write_text(line + "\n")
    if exc is not None:
        (run_dir / "error.log").write_text("".join(traceback.format_exception(exc)))
    sys.stderr.flush()
    os._exit(code)


def child_main(spec: RunSpec, conf: list[ConfLine], model_path: Path, run_dir: Path) -> None:
    """Process entry point: run, or write error.txt and exit non-zero."""
    os.chdir(run_dir)
    try:
        execute(spec, conf, model_path, run_dir)
    except UserError as exc:
        fail(run_dir, str(exc), EXIT_USER_ERROR)
    except BaseException as exc:
        fail(run_dir, f"internal error: {type(exc).__name__}: {exc}", EXIT_INTERNAL, exc)


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
        return {"target_qps": format_number(round(1.05 * qps, 1))}
    if spec.scenario == "Server":
        times = warmup(infer, store, 1, seconds)
        return {"target_qps": format_number(round(0.5 / float(np.median(times)), 1))}
    batch = 1 if spec.scenario == "SingleStream" else MULTISTREAM_SAMPLES
    times = warmup(infer, store, batch, seconds)
    # LoadGen pre-generates min_duration / expected latency queries: err on the low side.
    return {"target_latency": format_number(round(0.75 * 1000 * min(times), 3))}


def run_plan(settings: lg.TestSettings, scenario: str) -> tuple[float, str]:
    """How long a performance run will take and how many queries it needs, from its settings
    (LoadGen runs until both the minimum duration and the minimum query count are met)."""
    minimum_s, queries = settings.min_duration_ms / 1000, settings.min_query_count
    seconds_per_query = {
        "Offline": 0.0,  # one query, sized to last the minimum duration
        "Server": 1 / max(settings.server_target_qps, 1e-9),
        "SingleStream": settings.single_stream_expected_latency_ns / 1e9,
        "MultiStream": settings.multi_stream_expected_latency_ns / 1e9,
    }[scenario]
    expected_s = max(minimum_s, queries * seconds_per_query)
    plan = f"about {expected_s:.0f} s (at least {minimum_s:.0f} s"
    if scenario in EARLY_STOPPING_QUERIES:
        percentile = 90 if scenario == "SingleStream" else 99
        plan += (
            f" and {queries} queries; early stopping needs at least "
            f"{EARLY_STOPPING_QUERIES[scenario]} for its p{percentile} estimate"
        )
    return expected_s, plan + ")"


def write_json(path: Path, body: dict) -> None:
    path.write_text(json.dumps(body, indent=2, sort_keys=False, default=str) + "\n")


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


def execute(spec: RunSpec, conf: list[ConfLine], model_path: Path, run_dir: Path) -> None:
    workload = get_workload(spec.model)
    data = workload.open_data(spec.data_source, model_path, say)
    backend = create_backend(spec.backend, spec.backend_options)

    def on_fatal(exc: BaseException) -> NoReturn:
        message = f"backend {spec.backend_label} failed: {type(exc).__name__}: {exc}"
        fail(run_dir, message, EXIT_BACKEND_FAILED, exc)

    say(f"loading {spec.backend_label} backend")
    handle = ModelHandle(
        path=model_path,
        name=workload.name,
        input_names=tuple(t.name for t in workload.inputs),
        output_names=workload.outputs,
        calibration=data.calibration,
        int8_activations=workload.int8_activations,
        token_mask=workload.token_mask,
    )
    try:
        backend.load(handle)
    except UserError:
        raise
    except Exception as exc:
        on_fatal(exc)
    store = SampleStore(data.count, data.load)
    reads = backend.inputs_read()

    def infer(indices: Sequence[int]) -> np.ndarray:
        return workload.responses(backend.predict(store.batch(indices, reads)))

    model_key = workload.loadgen_key
    user_values = effective_user_values(conf, model_key, spec.scenario)
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
    user_conf = run_dir / "user.conf"
    user_conf.write_text(render_user_conf(model_key, spec.scenario, sections))

    settings = lg.TestSettings()
    settings.FromConfig(str(user_conf), model_key, spec.scenario)
    settings.scenario = getattr(lg.TestScenario, spec.scenario)
    settings.mode = (
        lg.TestMode.PerformanceOnly if spec.mode == "performance" else lg.TestMode.AccuracyOnly
    )

    options = ScenarioOptions(spec.batch_size, spec.workers, spec.server_batch_timeout_ms)
    sut = make_sut(spec.scenario, infer, options, on_fatal)
    log_output = lg.LogOutputSettings()
    log_output.outdir = str(run_dir)
    log_output.copy_summary_to_stdout = False
    log_settings = lg.LogSettings()
    log_settings.log_output = log_output
    log_settings.enable_trace = False

    perf_count = min(data.count, workload.performance_sample_count)
    lg_sut = lg.ConstructSUT(sut.issue_queries, sut.flush_queries)
    lg_qsl = lg.ConstructQSL(data.count, perf_count, store.load_samples, store.unload_samples)
    expected_s, plan = (
        run_plan(settings, spec.scenario)
        if spec.mode == "performance"
        else (0.0, f"over {data.count} samples")
    )
    say(f"LoadGen {spec.scenario} {spec.mode} run started: {plan}")
    sut.start()
    backend.start_measuring()
    try:
        with Progress(sut, expected_s):
            lg.StartTestWithLogSettings(lg_sut, lg_qsl, settings, log_settings)
    finally:
        sut.stop()
        lg.DestroyQSL(lg_qsl)
        lg.DestroySUT(lg_sut)

    result = summarize(run_dir / "mlperf_log_detail.txt", spec.scenario, spec.mode)
    result["backend_report"] = backend.report()
    if result["backend_report"].get("warning"):
        say(f"warning: {result['backend_report']['warning']}")
    result["compliant_preset"] = spec.preset in COMPLIANT_PRESETS
    result["synthetic_data"] = data.synthetic
    if spec.mode == "accuracy":
        accuracy = data.score(read_responses(run_dir / "mlperf_log_accuracy.json"))
        write_accuracy_txt(run_dir, accuracy)
        result["accuracy"] = {"value": accuracy.value, "line": accuracy.line, **accuracy.details}
    write_json(
        run_dir / "run.json",
        {
            "spec": spec.to_json(),
            "model_file": str(model_path),
            "dataset": data.description,
            "backend": backend.describe(),
            "division": {
                "open_only": backend.open_division_only,
                "simulated": backend.simulated,
            },
            "versions": provenance.versions(),
            "host": provenance.host(),
            "git_sha": provenance.git_sha(),
            "seeds": result["seeds"],
        },
    )
    result["format"] = RUN_FORMAT
    result["status"] = "complete"
    write_json(run_dir / "result.json", result)
