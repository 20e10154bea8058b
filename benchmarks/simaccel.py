"""The simulated accelerator: fidelity against published MLPerf results, and its own speed.

1. Fidelity. Each GPU/Moffett profile is calibrated on one published point only, ResNet-50
   Offline, then predicts the other published results; the table gives each error.
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
from dataclasses import dataclass, replace
from pathlib import Path

from backends.simaccel.profiles import write_profile_file
from harness.calibrate import fit_efficiency
from harness.predict import PredictRequest, prepare


@dataclass(frozen=True)
class Published:
    model: str
    scenario: str
    value: float  # per accelerator: samples/s (Offline) or queries/s (Server)
    source: str


@dataclass(frozen=True)
class Device:
    name: str
    calibration: Published  # ResNet-50 Offline
    held_back: tuple[Published, ...]
    density: float | None = None  # the published model's weight density, where sparse
    offline_batch: int = 256  # S30: the largest whose activations stay on chip


# Per accelerator, MLPerf Inference v3.0 (systems with 8 GPUs divided by 8).
DEVICES = (
    Device(
        "a100-sxm",
        Published("resnet50", "Offline", 42_379, "v3.0 closed, NVIDIA DGX A100 (per GPU)"),
        (),
    ),
    Device(
        "h100-sxm",
        Published("resnet50", "Offline", 91_826, "v3.0 closed, NVIDIA DGX H100 (per GPU)"),
        (),
    ),
    Device(
        "moffett-s30",
        Published("resnet50", "Offline", 96_049, "v3.0 open, Moffett S30"),
        (),
        density=1 / 32,
        offline_batch=128,
    ),
)
SERVER_BATCH = 64
WORKERS = 2  # accelerator harnesses overlap the next transfer with compute


def request(device: Device, item: Published) -> PredictRequest:
    return PredictRequest(
        model=item.model,
        device=device.name,
        scenario=item.scenario,
        batch=device.offline_batch if item.scenario == "Offline" else SERVER_BATCH,
        workers=WORKERS,
        density=device.density,
        tokens="real" if item.model == "bert-large" else None,
    )


def fidelity() -> list[str]:
    lines = [
        "| device | efficiency | result | published | predicted | error |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for device in DEVICES:
        calibration = prepare(request(device, device.calibration))
        profile = fit_efficiency(calibration, device.calibration.value)
        for item in (device.calibration, *device.held_back):
            prediction = prepare(request(device, item))
            predicted = prediction.with_profile(profile).figure()[0]
            error = predicted / item.value - 1
            role = " (calibration)" if item is device.calibration else ""
            lines.append(
                f"| {device.name} | {profile.efficiency:.3g} | {item.model} {item.scenario}"
                f"{role} | {item.value:,.0f} | {predicted:,.0f} | {100 * error:+.0f}% |"
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
    device = DEVICES[2]
    base = request(device, device.calibration)
    profile = fit_efficiency(prepare(base), device.calibration.value)
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        profile_file = Path(tmp) / "s30.toml"
        write_profile_file(replace(profile, name="s30-calibrated"), profile_file)
        conf = Path(tmp) / "user.conf"
        conf.write_text(f"*.Offline.min_duration = {seconds * 1000}\n")
        for batch, workers in ((128, 2), (256, 2), (128, 3)):
            modelled = prepare(
                replace(base, device=None, device_file=profile_file, batch=batch, workers=workers)
            ).figure()[0]
            conf_values = f"*.Offline.target_qps = {modelled:.0f}\n"
            conf.write_text(f"*.Offline.min_duration = {seconds * 1000}\n{conf_values}")
            subprocess.run(
                ["sparseperf", "run", "--backend", "simaccel", "--device-file",
                 str(profile_file), "--density", str(device.density), "--functional", "off",
                 "--batch-size", str(batch), "--workers", str(workers), "--user-conf",
                 str(conf), "--preset", "short", "--runs-dir", tmp],
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
    print("\n".join(fidelity()))
    print(f"\npredict, BERT-Large, CLI end to end: {predict_seconds():.2f} s")
    if not args.skip_loadgen:
        print("\nS30 (calibrated), ResNet-50 Offline, timing only, under LoadGen:")
        print("\n".join(loadgen_offline(args.seconds)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
