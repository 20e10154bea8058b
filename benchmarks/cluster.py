"""Scale-out on Ray, measured side by side in one run on local clusters (127.0.0.1).

1. The dispatcher's ceiling: a no-op backend (it reads no input and answers at once) through
   the cluster, Offline samples/s and Server completed queries/s at a target rate, so that
   what is measured is the dispatcher and Ray, not a backend.
2. ONNX Runtime int8 ResNet-50 Offline: two replicas of one thread each against one process
   with two threads, interleaved and repeated so that the shared machine's noise hits both.

Run from the repository root: PYTHONPATH=. python benchmarks/cluster.py
     [--seconds 20] [--repeats 2] [--server-qps 5000] [--skip-resnet]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import numpy as np

from backends.base import Backend, Batch, ModelHandle
from harness.runner import run
from harness.spec import RunSpec

NOOP = "benchmarks.cluster:NoopBackend"
CLUSTER = "local:2"  # one node on 127.0.0.1, two replica slots, started and stopped per run


class NoopBackend(Backend):
    """Reads no input (the harness passes zero-copy views) and answers class 1 at once."""

    name = "noop"

    def load(self, model: ModelHandle) -> None:
        self._input, self._output = model.input_names[0], model.output_names[0]

    def inputs_read(self) -> frozenset[str]:
        return frozenset()

    def predict(self, inputs: Batch) -> Batch:
        return {self._output: np.ones(len(inputs[self._input]), dtype=np.int64)}

    def describe(self) -> dict[str, str]:
        return {"backend": self.name, "precision": "none", "sparsity": "dense"}


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def one_run(workdir: Path, conf: str, **fields) -> dict:
    path = workdir / "user.conf"
    path.write_text(conf)
    spec = RunSpec(preset="smoke", user_conf=path, runs_dir=workdir / "runs", **fields)
    return run(spec).result


def dispatcher_ceiling(address: str, args: argparse.Namespace, workdir: Path) -> None:
    seconds = int(args.seconds * 1000)
    for replicas in (1, 2):
        result = one_run(
            workdir,
            f"*.Offline.target_qps = 200000\n*.Offline.min_duration = {seconds}\n",
            backend=NOOP, batch_size=256, cluster=address, replicas=replicas,
        )  # fmt: skip
        dispatch = result["cluster"]["dispatch"]
        print(
            f"no-op Offline, {replicas} replica(s), batch 256: {result['value']:,.0f} samples/s "
            f"({result['validity']}; message round trip p50 {dispatch['round_trip_ms']['p50']} "
            f"ms) [{load()}]"
        )
    for replicas in (1, 2):
        result = one_run(
            workdir,
            f"*.Server.target_qps = {args.server_qps}\n*.Server.min_duration = {seconds}\n",
            backend=NOOP, batch_size=64, scenario="Server", cluster=address, replicas=replicas,
        )  # fmt: skip
        dispatch = result["cluster"]["dispatch"]
        print(
            f"no-op Server, {replicas} replica(s), target {args.server_qps:,} q/s: "
            f"{result['value']:,.0f} q/s completed, p99 {result['latency_ms']['99.00']:.1f} ms "
            f"(bound 15 ms: {result['validity']}; message round trip p50 "
            f"{dispatch['round_trip_ms']['p50']} ms, p99 {dispatch['round_trip_ms']['p99']} ms) "
            f"[{load()}]"
        )


def resnet_side_by_side(address: str, args: argparse.Namespace, workdir: Path) -> None:
    conf = f"*.Offline.min_duration = {int(args.seconds * 1000)}\n"
    single, cluster = [], []
    for repeat in range(args.repeats):
        order = ("single", "cluster") if repeat % 2 == 0 else ("cluster", "single")
        for which in order:
            if which == "single":
                options = {"precision": "int8", "threads": 2}
                result = one_run(workdir, conf, backend_options=options)
                single.append(round(result["value"], 2))
            else:
                options = {"precision": "int8", "threads": 1}
                result = one_run(workdir, conf, backend_options=options, cluster=address,
                                 replicas=2)  # fmt: skip
                cluster.append(round(result["value"], 2))
            why = f": {'; '.join(result['invalid_reasons'])}" if result["invalid_reasons"] else ""
            rate = f"{result['value']:.2f} samples/s"
            print(f"  {which}: {rate} ({result['validity']}{why}) [{load()}]")
    s, c = statistics.median(single), statistics.median(cluster)
    print(
        f"ResNet-50 int8 Offline: one process x 2 threads {s:.2f} samples/s, 2 replicas x 1 "
        f"thread {c:.2f} samples/s, ratio {c / s:.3f}  (runs: {single} / {cluster})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="LoadGen minimum duration")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--server-qps", type=int, default=5000)
    parser.add_argument("--skip-resnet", action="store_true")
    parser.add_argument("--skip-noop", action="store_true")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, {load()}; each cluster run starts its own local:2 cluster")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_noop:
            dispatcher_ceiling(CLUSTER, args, Path(tmp))
        if not args.skip_resnet:
            resnet_side_by_side(CLUSTER, args, Path(tmp))


if __name__ == "__main__":
    main()
