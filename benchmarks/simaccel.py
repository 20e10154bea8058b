"""The simulated accelerator: fidelity against published MLPerf results, and its own speed.

1. Fidelity. Each built-in profile ships calibrated on one published point only, its own
   ResNet-50 Offline result (``benchmarks/published_results.toml`` names it); every other
   published result is predicted with the device's submitted configuration and no flags, and
   its error shown. Power entries compare modelled samples/J with the published system's.
2. Speed. ``predict`` for BERT-Large end to end (CLI, work cached), and a timing-only LoadGen
   ResNet-50 Offline run on the calibrated S30 against its modelled rate (or host-bound).

Run: python benchmarks/simaccel.py [--skip-loadgen] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.fidelity import Row, evaluate, load_results, median_error
from harness.predict import PredictRequest, prepare

RESULTS = Path(__file__).with_name("published_results.toml")


def fidelity_table(rows: list[Row]) -> list[str]:
    lines = [
        "| device | efficiency | result | role | published | predicted | error | source |",
        "|---|---:|---|---|---:|---:|---:|---|",
    ]
    for row in rows:
        item = row.published
        unit = "samples/J, system" if item.role == "power" else "/s"
        per = f" (/{item.accelerators})" if item.accelerators > 1 and item.role != "power" else ""
        lines.append(
            f"| {item.device} | {prepare_efficiency(item.device):g} | {item.model} "
            f"{item.scenario} | {item.role} | {row.measured:,.1f}{per} {unit} | "
            f"{row.predicted:,.1f} | {100 * row.error:+.1f}% | `{item.source}` |"
        )
    return lines


def prepare_efficiency(device: str) -> float:
    return prepare(PredictRequest(model="resnet50", device=device)).profile.efficiency


def server_ratios(rows: list[Row]) -> list[str]:
    """Predicted and published Server/Offline ratios where a system has both."""
    lines = ["| device | model | published Server/Offline | predicted Server/Offline |",
             "|---|---|---:|---:|"]  # fmt: skip
    offline = {
        (r.published.device, r.published.model, r.published.source.split("/")[0]): r
        for r in rows
        if r.published.scenario == "Offline" and r.published.role != "power"
    }
    for row in rows:
        item = row.published
        key = (item.device, item.model, item.source.split("/")[0])
        if item.scenario != "Server" or key not in offline:
            continue
        base = offline[key]
        lines.append(
            f"| {item.device} | {item.model} ({key[2]}) | {row.measured / base.measured:.3f} | "
            f"{row.predicted / base.predicted:.3f} |"
        )
    return lines


def predict_seconds() -> float:
    """Wall time of ``sparseperf predict`` for BERT-Large, its work already cached."""
    command = ["sparseperf", "predict", "--model", "bert-large", "--device", "h100-sxm"]
    subprocess.run(command, check=True, capture_output=True)  # caches the model's work
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def loadgen_offline(seconds: int) -> list[str]:
    """LoadGen samples/s of the calibrated S30 (timing only) against its modelled rate."""
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "user.conf"
        for batch, workers in ((128, 2), (256, 2), (128, 3)):
            request = PredictRequest(device="moffett-s30", batch=batch, workers=workers)
            modelled = prepare(request).figure()[0]
            conf.write_text(
                f"*.Offline.min_duration = {seconds * 1000}\n"
                f"*.Offline.target_qps = {modelled:.0f}\n"
            )
            subprocess.run(
                ["sparseperf", "run", "--backend", "simaccel", "--device", "moffett-s30",
                 "--density", "0.03125", "--functional", "off", "--batch-size", str(batch),
                 "--workers", str(workers), "--user-conf", str(conf), "--preset", "short",
                 "--runs-dir", tmp],
                check=True, capture_output=True,
            )  # fmt: skip
            (folder,) = [p for p in Path(tmp).glob("*_performance") if p.is_dir()]
            result = json.loads((folder / "result.json").read_text())
            report = result["backend_report"]
            lines.append(
                f"| {batch} | {workers} | {modelled:,.0f} | {result['value']:,.0f} | "
                f"{result['value'] / modelled:.2f} | "
                f"{100 * report['late_s'] / report['busy_s']:.1f}% | {report['host_bound']} |"
            )
            folder.rename(folder.with_name(f"done-{batch}-{workers}"))
    header = [
        "| batch | workers | modelled samples/s | LoadGen samples/s | ratio | late | host-bound |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    return header + lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-loadgen", action="store_true")
    parser.add_argument("--seconds", type=int, default=10, help="LoadGen run length")
    args = parser.parse_args()
    rows = evaluate(load_results(RESULTS))
    print("\n".join(fidelity_table(rows)))
    held = [r for r in rows if r.published.role == "held-out"]
    inside = sum(abs(r.error) <= 0.2 for r in held)
    print(
        f"\nheld-out throughputs: {len(held)}, within +/-20%: {inside}, "
        f"median |error| {100 * median_error(rows):.1f}%"
    )
    print("\n" + "\n".join(server_ratios(rows)))
    print(f"\npredict, BERT-Large, CLI end to end: {predict_seconds():.2f} s")
    if not args.skip_loadgen:
        print("\nS30 (calibrated), ResNet-50 Offline, timing only, under LoadGen:")
        print("\n".join(loadgen_offline(args.seconds)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
