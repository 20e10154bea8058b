"""Server latency against the MLCommons reference harness, side by side in one run (issue 25).

Both sides run the same int8 ResNet-50 file (the built-in synthetic model, quantized by the
harness's own static recipe), the same 1024 synthetic images and the same user.conf (target_qps,
min_duration), so LoadGen 6.0.17 issues them the same Poisson schedule; only the harness around
the ONNX Runtime session differs. The reference is
``vision/classification_and_detection/python/main.py --scenario Server`` from a copy of
mlcommons/inference named by $SPARSEPERF_INFERENCE (nothing of it is vendored: it runs as a
subprocess), with the interpreter $SPARSEPERF_INFERENCE_PYTHON (default: this one), which needs
the reference's own imports: mlcommons-loadgen, onnxruntime, numpy, opencv-python-headless and
pycocotools. It reads the images as its preprocessed .npy cache, written here from the
harness's own model inputs. The reference's --threads is its worker-thread count, its ONNX
Runtime session takes the default intra-op threads (one per physical core); sparseperf's
--threads is ONNX Runtime's intra-op threads and --workers its worker threads.

Loads are shares of the batch-1 rate (1 / the median batch-1 latency of the int8 model with
--threads, timed as the harness's Server warm-up times it); runs alternate between the sides.
The machine may be shared: each run says how many cores other work took meanwhile.

Run: SPARSEPERF_INFERENCE=/path/to/inference [SPARSEPERF_INFERENCE_PYTHON=python3] \
     python benchmarks/server_reference.py [--loads 0.25,0.5] [--seconds 20] [--repeats 2]
     [--threads 2] [--workers 1] [--batch 8] [--spinning on|off]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from backends.base import ModelHandle
from backends.onnxruntime import SPINNING, OnnxRuntimeBackend, quantize_int8
from harness.console import say
from harness.datasets.imagenet import VAL_MAP
from harness.machine import machine
from harness.provenance import versions
from harness.qsl import SampleStore
from harness.results import summarize
from harness.runner import prepare_model, run
from harness.spec import RunSpec
from harness.warmup import warmup
from harness.workloads import get_workload
from harness.workloads.base import DataSource, WorkloadData
from harness.workloads.resnet50 import ImageNetData

ENV = "SPARSEPERF_INFERENCE"  # as tests/official.py
REFERENCE_MAIN = Path("vision/classification_and_detection/python/main.py")
REFERENCE_DEPS = "mlcommons-loadgen onnxruntime numpy opencv-python-headless pycocotools"
PERCENTILES = ("50.00", "90.00", "99.00")
SIDES = ("sparseperf", "reference")
VERSIONED = ("onnxruntime", "mlcommons-loadgen")
PRINT_VERSIONS = f"from importlib.metadata import version; print(*map(version, {VERSIONED}))"


def reference_main() -> tuple[Path, str, dict[str, str]]:
    """The reference main.py, the interpreter to run it with and the versions of ONNX Runtime
    and LoadGen it imports; SystemExit (one line) when the copy is not named, lacks the file,
    or the interpreter lacks the reference's imports."""
    root = os.environ.get(ENV)
    if not root:
        sys.exit(f"set {ENV} to a copy of mlcommons/inference (the reference harness to run)")
    main = Path(root) / REFERENCE_MAIN
    if not main.is_file():
        sys.exit(f"{ENV}={root} has no {REFERENCE_MAIN}")
    python = os.environ.get(f"{ENV}_PYTHON") or sys.executable
    # main.py imports its dataset modules (cv2, pycocotools) at the top, its backend lazily.
    check = subprocess.run(
        [python, "-c", f"import main, backend_onnxruntime; {PRINT_VERSIONS}"],
        cwd=main.parent,
        capture_output=True,
        text=True,
    )
    if check.returncode != 0:
        last = (check.stderr.strip().splitlines() or ["(no output)"])[-1]
        sys.exit(
            f"{python} cannot import the reference harness ({last}); it needs: {REFERENCE_DEPS} "
            f"(set {ENV}_PYTHON to an interpreter that has them)"
        )
    return main, python, dict(zip(VERSIONED, check.stdout.split(), strict=True))


def busy_elsewhere_s() -> float:
    """CPU seconds the machine has been busy, less this process's and its ended children's
    (every run of either side): the difference over a run is what other work on the shared
    machine took meanwhile."""
    cpu = psutil.cpu_times()
    busy = sum(getattr(cpu, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq"))
    own = os.times()
    return busy - (own.user + own.system + own.children_user + own.children_system)


def write_reference_dataset(data: ImageNetData, folder: Path) -> None:
    """The images as the reference's preprocessed cache: val_map.txt and ``<image>.npy`` of the
    float32 CHW input the harness feeds the model, so both sides infer identical inputs."""
    names, labels = data.folder.files, data.folder.labels
    lines = []
    for index, (name, label) in enumerate(zip(names, labels, strict=True)):
        target = folder / f"{name}.npy"
        target.parent.mkdir(parents=True, exist_ok=True)
        np.save(target, next(iter(data.load(np.array([index])).values()))[0])
        lines.append(f"{name} {label}")
    (folder / VAL_MAP).write_text("\n".join(lines) + "\n")


def batch1_seconds(handle: ModelHandle, data: WorkloadData, threads: int) -> float:
    """Median batch-1 latency of the int8 model through the harness's backend with ONNX
    Runtime's default spinning (the backend's default, as the reference's session has it),
    timed as the harness's Server warm-up times it."""
    backend = OnnxRuntimeBackend(precision="int8", threads=threads)
    backend.load(handle)
    store = SampleStore(data.count, data.fetch, data.to_inputs)
    return float(np.median(warmup(lambda idx: backend.predict(store.batch(idx)), store, 1, 5.0)))


def sparseperf_server(conf: Path, args: argparse.Namespace, workdir: Path) -> dict:
    """One sparseperf Server run; its result with the ORT session options run.json records."""
    options = {"precision": "int8", "threads": args.threads, "spinning": args.spinning}
    spec = RunSpec(
        scenario="Server",
        backend_options=options,
        preset="smoke",  # the user.conf sets the duration and target
        user_conf=conf,
        batch_size=args.batch,
        workers=args.workers,
        runs_dir=workdir / "runs",
    )
    outcome = run(spec)
    record = json.loads((outcome.folder / "run.json").read_text())
    return {**outcome.result, "session_options": record["backend"]["session_options"]}


def reference_server(
    main: Path, python: str, model: Path, images: Path, conf: Path, args: argparse.Namespace
) -> dict:
    """One reference Server run in a fresh folder (no audit.config there); its verdict as
    sparseperf parses LoadGen's detail log."""
    out = Path(tempfile.mkdtemp(dir=conf.parent, prefix="reference-"))
    command = [
        python, str(main), "--profile", "resnet50-onnxruntime", "--backend", "onnxruntime",
        "--model", str(model), "--dataset-path", str(images), "--use_preprocessed_dataset",
        "--preprocessed_dir", str(images), "--scenario", "Server", "--threads", str(args.workers),
        "--max-batchsize", str(args.batch), "--user_conf", str(conf), "--output", str(out),
    ]  # fmt: skip
    log = out / "reference.log"
    with log.open("w") as sink:
        done = subprocess.run(
            command, cwd=out, stdout=sink, stderr=subprocess.STDOUT, timeout=args.seconds * 10 + 600
        )
    if done.returncode != 0:
        last = (log.read_text(errors="replace").strip().splitlines() or ["(no output)"])[-1]
        sys.exit(f"the reference harness failed (exit {done.returncode}): {last} (log: {log})")
    return summarize(out / "mlperf_log_detail.txt", "Server", "performance")


def table(rows: dict[tuple[float, str], list[dict]], targets: dict[float, float]) -> str:
    """Markdown: the median p50/p90/p99 of the repeats per load and side, and each run's p99
    with the cores other work took meanwhile."""
    lines = [
        "| load | target q/s | side | p50 ms | p90 ms | p99 ms | p99 of each run, ms (other "
        "work, cores) | valid |",
        "|---|---:|---|---:|---:|---:|---|---|",
    ]
    for (share, side), results in rows.items():
        medians = [statistics.median(r["latency_ms"][p] for r in results) for p in PERCENTILES]
        each = ", ".join(f"{r['latency_ms']['99.00']:.1f} ({r['elsewhere']:.1f})" for r in results)
        valid = sum(r["validity"] == "VALID" for r in results)
        lines.append(
            f"| {share:.0%} | {targets[share]:g} | {side} | "
            + " | ".join(f"{m:.1f}" for m in medians)
            + f" | {each} | {valid}/{len(results)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--loads",
        default=[0.25, 0.5],
        type=lambda t: [float(s) for s in t.split(",")],
        help="shares of the batch-1 rate, comma-separated",
    )
    parser.add_argument("--seconds", type=int, default=20, help="LoadGen min_duration per run")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="sparseperf's ORT intra-op threads")
    parser.add_argument("--workers", type=int, default=1, help="worker threads of either side")
    parser.add_argument("--batch", type=int, default=8, help="sparseperf's Server batch size")
    parser.add_argument(
        "--spinning", default="on", choices=SPINNING, help="sparseperf's ORT thread spinning"
    )
    args = parser.parse_args()
    main_py, python, reference_versions = reference_main()

    workload = get_workload("resnet50")
    model = prepare_model(RunSpec())
    data = workload.open_data(DataSource(), model, say)
    handle = workload.model_handle(model, data.calibration)
    int8 = quantize_int8(handle, handle.int8_activations)  # the file a sparseperf int8 run loads
    single = batch1_seconds(handle, data, args.threads)
    targets = {share: round(share / single, 1) for share in args.loads}
    host = machine()
    software = "; ".join(
        f"{side} " + ", ".join(f"{name} {found[name]}" for name in VERSIONED)
        for side, found in zip(SIDES, (versions(), reference_versions), strict=True)
    )
    header = (
        f"{host.cpu_model}, {host.logical_cpus} CPUs; {software}; int8 batch-1 latency "
        f"{single * 1e3:.2f} ms ({1 / single:.1f} q/s) with {args.threads} threads; sparseperf "
        f"{args.threads} ORT threads x {args.workers} worker(s), batch {args.batch}; reference "
        f"{args.workers} worker thread(s), ORT default threads; "
        f"{args.seconds} s per run, {args.repeats} repeats, sides alternating"
    )
    say(header)
    rows: dict[tuple[float, str], list[dict]] = {
        (s, side): [] for s in args.loads for side in SIDES
    }
    with tempfile.TemporaryDirectory(prefix="server-reference-") as tmp:
        workdir = Path(tmp)
        images = workdir / "imagenet"
        say(f"writing {data.count} preprocessed images for the reference into {images}")
        write_reference_dataset(data, images)
        confs = {share: workdir / f"user-{share:g}.conf" for share in args.loads}
        for share, conf in confs.items():  # one file both sides read: the same LoadGen run
            conf.write_text(
                f"resnet50.Server.target_qps = {targets[share]:g}\n"
                f"resnet50.Server.min_duration = {args.seconds * 1000}\n"
                "resnet50.Server.min_query_count = 1\n"
            )
        for repeat in range(args.repeats):
            for (share, side), results in rows.items():
                before, start = busy_elsewhere_s(), time.monotonic()
                result = (
                    sparseperf_server(confs[share], args, workdir)
                    if side == "sparseperf"
                    else reference_server(main_py, python, int8, images, confs[share], args)
                )
                busy = (busy_elsewhere_s() - before) / (time.monotonic() - start)
                results.append({**result, "elsewhere": busy})
                p = result["latency_ms"]
                say(
                    f"{side} {share:.0%} ({targets[share]:g} q/s) run {repeat + 1}: p50 "
                    f"{p['50.00']:.1f} p90 {p['90.00']:.1f} p99 {p['99.00']:.1f} ms, "
                    f"{result['query_count']} queries, {result['validity']}; other work "
                    f"{busy:.2f} cores"
                )
    session = rows[(args.loads[0], "sparseperf")][0]["session_options"]
    print(f"\n{header}; sparseperf's ORT session: {session}\n\n{table(rows, targets)}")


if __name__ == "__main__":
    main()
