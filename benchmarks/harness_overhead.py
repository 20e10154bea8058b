"""Harness overhead, measured side by side in one run (issues: harness spine, BERT).

1. Offline ResNet-50 or BERT through the harness (LoadGen, QSL, scenario, backend) against a
   plain ``InferenceSession.run`` loop at the same batch size and threads, fp32 and int8 (the
   workload's int8 recipe). The two are interleaved and repeated so that the shared machine's
   noise hits both alike.
2. The harness's own ceiling: the same QSL / scenario / LoadGen path with a no-op backend and
   one-float samples, so that only the harness is measured (Offline samples/s, Server
   queries/s at a ladder of targets).
3. With --server-search: the highest Server target QPS that stays VALID for int8 in the
   ``short`` preset (bisection over full runs), and its ratio to Offline int8 throughput.

Run: python benchmarks/harness_overhead.py [--model resnet50|bert-large] [--batch 8]
     [--seconds 30] [--repeats 3] [--precisions fp32,int8|''] [--skip-noop]
     [--server-search [--offline-int8 QPS]]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import mlperf_loadgen as lg
import numpy as np
import onnxruntime as ort

from backends.base import Batch
from backends.onnxruntime import quantize_int8
from harness.qsl import SampleStore
from harness.results import summarize
from harness.runner import prepare_model, run
from harness.spec import RunSpec
from harness.workloads import get_workload
from harness.workloads.base import DataSource
from scenarios import ScenarioOptions, make_sut


def plain_loop(path: Path, batches: list[Batch], outputs, seconds: float, threads: int) -> float:
    """Samples/s of a bare InferenceSession.run loop over pre-made batches."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    session.run(list(outputs), batches[0])
    done, calls, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        batch = batches[calls % len(batches)]
        session.run(list(outputs), batch)
        done += len(next(iter(batch.values())))
        calls += 1
    return done / (time.perf_counter() - start)


def harness_offline(
    model: str, precision: str, batch: int, seconds: float, threads: int, workdir: Path
) -> float:
    conf = workdir / f"offline-{precision}.conf"
    conf.write_text(f"*.Offline.min_duration = {int(seconds * 1000)}\n")
    spec = RunSpec(
        model=model,
        backend_options={"precision": precision, "threads": threads},
        preset="smoke",
        user_conf=conf,
        batch_size=batch,
        runs_dir=workdir / "runs",
    )
    return run(spec).result["value"]


def noop_loadgen(scenario: str, target: float, seconds: float, batch: int) -> tuple[float, str]:
    """Harness path with a no-op backend and tiny samples: (metric value, validity)."""
    store = SampleStore(1024, lambda idx: {"x": idx.astype(np.float32)})
    store.load_samples(range(1024))

    def infer(indices):
        return store.batch(indices)["x"]  # gather + response rows, no inference

    def on_fatal(exc):
        raise SystemExit(f"no-op run failed: {exc}")

    sut = make_sut(scenario, infer, ScenarioOptions(batch_size=batch), on_fatal)
    settings = lg.TestSettings()
    settings.scenario = getattr(lg.TestScenario, scenario)
    settings.mode = lg.TestMode.PerformanceOnly
    settings.min_duration_ms = int(seconds * 1000)
    settings.min_query_count = 1
    if scenario == "Offline":
        settings.offline_expected_qps = target
    else:
        settings.server_target_qps = target
        settings.server_target_latency_ns = 15_000_000
    with tempfile.TemporaryDirectory() as out:
        log = lg.LogOutputSettings()
        log.outdir = out
        log.copy_summary_to_stdout = False
        log_settings = lg.LogSettings()
        log_settings.log_output = log
        lg_sut = lg.ConstructSUT(sut.issue_queries, sut.flush_queries)
        lg_qsl = lg.ConstructQSL(1024, 1024, lambda _: None, lambda _: None)
        sut.start()
        lg.StartTestWithLogSettings(lg_sut, lg_qsl, settings, log_settings)
        sut.stop()
        lg.DestroyQSL(lg_qsl)
        lg.DestroySUT(lg_sut)
        result = summarize(Path(out) / "mlperf_log_detail.txt", scenario, "performance")
    return result["value"], result["validity"]


def server_probe(target: float, threads: int, batch: int, workdir: Path) -> bool:
    """One ResNet-50 int8 Server run in the short preset at ``target`` q/s; True if VALID."""
    conf = workdir / "server.conf"
    conf.write_text(f"resnet50.Server.target_qps = {target}\n")
    spec = RunSpec(
        scenario="Server",
        backend_options={"precision": "int8", "threads": threads},
        preset="short",
        user_conf=conf,
        batch_size=batch,
        runs_dir=workdir / "runs",
    )
    result = run(spec).result
    print(
        f"  Server int8 target {target:7.2f} q/s: {result['validity']:7} "
        f"p99 {result['latency_ms'].get('99.00', float('nan')):.1f} ms"
    )
    return result["validity"] == "VALID"


def server_search(
    threads: int, batch: int, offline_qps: float, single_ms: float, workdir: Path
) -> None:
    """Bisect the ResNet-50 Server target QPS (short preset, int8) for the highest VALID one."""
    bound_ms = 15.0
    print(f"int8 batch-1 inference: {single_ms:.1f} ms; the Server p99 bound is {bound_ms} ms")
    if single_ms > bound_ms:
        # Even an idle server answers too late; one probe at a light load confirms it.
        low = 5.0 if server_probe(5.0, threads, batch, workdir) else 0.0
    else:
        low, high = 0.0, offline_qps
        for _ in range(5):
            target = round((low + high) / 2, 1)
            low, high = (
                (target, high) if server_probe(target, threads, batch, workdir) else (low, target)
            )
    print(
        f"highest VALID Server target (short preset): {low:.1f} q/s = "
        f"{low / offline_qps:.2f} x Offline int8 ({offline_qps:.1f} samples/s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50", help="resnet50, bert-large or bert-tiny")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--precisions",
        default="fp32,int8",
        type=lambda t: [p for p in t.split(",") if p],
        help="comma-separated; empty to skip the comparison",
    )
    parser.add_argument("--skip-noop", action="store_true")
    parser.add_argument("--server-search", action="store_true", help="ResNet-50 int8 only")
    parser.add_argument(
        "--offline-int8", type=float, default=0.0, help="Offline int8 rate when not measured"
    )
    args = parser.parse_args()

    workload = get_workload(args.model)
    model = prepare_model(RunSpec(model=args.model))
    data = workload.open_data(DataSource(), model, print)
    samples = min(data.count, 8 * args.batch)
    batches = [data.load(np.arange(i, i + args.batch)) for i in range(0, samples, args.batch)]
    handle = workload.model_handle(model, data.calibration)
    print(
        f"{workload.name}: batch {args.batch}, {args.threads} threads, {args.seconds:.0f} s per "
        f"measurement, {args.repeats} interleaved repeats; synthetic model and data"
    )
    offline_int8 = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for precision in args.precisions:
            path = model if precision == "fp32" else quantize_int8(handle, handle.int8_activations)
            plain, harness = [], []
            for repeat in range(args.repeats):
                # Alternate which goes first, so that drift on the shared machine cancels out.
                order = ("plain", "harness") if repeat % 2 == 0 else ("harness", "plain")
                for which in order:
                    if which == "plain":
                        rate = plain_loop(
                            path, batches, workload.outputs, args.seconds, args.threads
                        )
                        plain.append(round(rate, 2))
                    else:
                        rate = harness_offline(
                            args.model, precision, args.batch, args.seconds, args.threads, workdir
                        )
                        harness.append(round(rate, 2))
            p, h = statistics.median(plain), statistics.median(harness)
            print(
                f"Offline {precision}: plain loop {p:7.2f} samples/s, harness {h:7.2f} "
                f"samples/s, ratio {h / p:.3f}  (runs: plain {plain}, harness {harness})"
            )
            if precision == "int8":
                offline_int8 = h
        for batch in () if args.skip_noop else (8, 64):
            value, validity = noop_loadgen("Offline", 200_000, 5, batch)
            print(f"no-op Offline, batch {batch}: {value:,.0f} samples/s ({validity})")
        for target in () if args.skip_noop else (5_000, 10_000, 20_000):
            value, validity = noop_loadgen("Server", target, 10, 8)
            print(f"no-op Server, target {target:,} q/s: {value:,.0f} q/s completed ({validity})")
        if args.server_search:
            int8_model = quantize_int8(handle, handle.int8_activations)
            single = [data.load(np.arange(i, i + 1)) for i in range(8)]
            rate = plain_loop(int8_model, single, workload.outputs, 5.0, args.threads)
            offline = offline_int8 or args.offline_int8
            server_search(args.threads, args.batch, offline, 1000.0 / rate, workdir)


if __name__ == "__main__":
    main()
