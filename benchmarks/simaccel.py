"""The simulated accelerator: fidelity against published MLPerf results, and its own speed.

1. Fidelity. Each GPU/Moffett profile is calibrated on one published point only, ResNet-50
   Offline, then predicts the other published results; the table gives each error.
2. Speed. ``predict`` for BERT-Large end to end (CLI, work cached), and a timing-only LoadGen
   ResNet-50 Offline run on the calibrated S30 against its modelled rate (or host-bound).

Run: python benchmarks/simaccel.py [--skip-loadgen] [--seconds 10] [--squad DIR]
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

import numpy as np

from backends.simaccel.profiles import DeviceProfile, write_profile_file
from harness.calibrate import fit_efficiency
from harness.predict import Prediction, PredictRequest, prepare


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


# Per accelerator, MLPerf Inference v3.0 (github.com/mlcommons/inference_results_v3.0,
# results/<system>/<benchmark>/<scenario>/performance/run_1/mlperf_log_summary.txt).
# DGX A100 has no one-GPU Server results; its 8-GPU ones are divided by 8.
V3 = "v3.0 closed, NVIDIA"
DGX_A100_X8 = f"{V3} DGX-A100_A100-SXM-80GBx8_TRT / 8"
DEVICES = (
    Device(
        "a100-sxm",
        Published("resnet50", "Offline", 42_379.3, f"{V3} DGX-A100_A100-SXM-80GBx1_TRT"),
        (
            Published("bert-large", "Offline", 3_590.46, f"{V3} DGX-A100_A100-SXM-80GBx1_TRT"),
            Published("resnet50", "Server", 300_029.49 / 8, DGX_A100_X8),
            Published("bert-large", "Server", 25_403.74 / 8, DGX_A100_X8),
        ),
    ),
    Device(
        "h100-sxm",
        Published("resnet50", "Offline", 91_825.7, f"{V3} DGX-H100_H100-SXM-80GBx1_TRT"),
        (
            Published("bert-large", "Offline", 9_369.12, f"{V3} DGX-H100_H100-SXM-80GBx1_TRT"),
            Published("resnet50", "Server", 76_001.89, f"{V3} DGX-H100_H100-SXM-80GBx1_TRT"),
            Published("bert-large", "Server", 7_503.01, f"{V3} DGX-H100_H100-SXM-80GBx1_TRT"),
        ),
    ),
    Device(
        "h100-pcie",
        Published("resnet50", "Offline", 56_635, f"{V3} H100-PCIe-80GBx1_TRT"),
        (
            Published("bert-large", "Offline", 5_878.44, f"{V3} H100-PCIe-80GBx1_TRT"),
            Published("resnet50", "Server", 47_001.39, f"{V3} H100-PCIe-80GBx1_TRT"),
            Published("bert-large", "Server", 4_701.69, f"{V3} H100-PCIe-80GBx1_TRT"),
        ),
    ),
    Device(
        "moffett-s30",
        Published("resnet50", "Offline", 96_049.2, "v3.0 open, Moffett_S30_Inspur"),
        (
            Published("bert-large", "Offline", 3_840.74, "v3.0 open, Moffett_S30_Inspur (99.9%)"),
            Published("resnet50", "Server", 83_997.67, "v3.0 open, Moffett_S30_Inspur"),
            Published("bert-large", "Server", 3_008.80, "v3.0 open, Moffett_S30_Inspur (99.9%)"),
        ),
        density=1 / 32,
        offline_batch=128,
    ),
)
BATCHES = (16, 32, 64, 128, 256)  # a submitter tunes the batch size: the best one is shown
WORKERS = 2  # accelerator harnesses overlap the next transfer with compute


def request(
    device: Device,
    item: Published,
    batch: int,
    tokens: str | None = None,
    squad: Path | None = None,  # the official dev set's folder, for its real token counts
) -> PredictRequest:
    return PredictRequest(
        dataset_path=squad if tokens == "real" else None,
        model=item.model,
        device=device.name,
        scenario=item.scenario,
        batch=batch,
        workers=WORKERS,
        density=device.density,
        tokens=tokens,
    )


def best(
    device: Device, item: Published, tokens: str | None, squad: Path | None, profile: DeviceProfile
) -> tuple[float, Prediction]:
    """The best figure over the batch sizes, and its prediction."""
    predictions = [
        prepare(request(device, item, batch, tokens, squad)).with_profile(profile)
        for batch in BATCHES
    ]
    return max(((p.figure()[0], p) for p in predictions), key=lambda pair: pair[0])


def implied_tokens(prediction: Prediction, published: float) -> str:
    """The mean real token count at which the prediction meets the published figure."""
    length = prediction.work.tokens

    def figure(tokens: float) -> float:
        return replace(prediction, ratios=np.array([tokens / length])).figure()[0]

    low, high = 1.0, float(length)
    if figure(high) > published or figure(low) < published:
        return "-"
    for _ in range(30):
        middle = (low + high) / 2
        low, high = (middle, high) if figure(middle) > published else (low, middle)
    return f"{low:.0f}"


def fidelity(squad: Path | None) -> list[str]:
    """Calibrate on ResNet-50 Offline, predict the rest; BERT with padded and with real tokens
    (and, for Offline, the mean token count that would meet the published figure)."""
    lines = [
        "| device | efficiency | result | tokens | batch | published | predicted | error |"
        " tokens implied |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for device in DEVICES:
        calibration = request(device, device.calibration, device.offline_batch)
        profile = fit_efficiency(prepare(calibration), device.calibration.value)
        for item in (device.calibration, *device.held_back):
            role = " (calibration)" if item is device.calibration else ""
            for tokens in ("padded", "real") if item.model == "bert-large" else (None,):
                if role:
                    prediction = prepare(calibration).with_profile(profile)
                    predicted = prediction.figure()[0]
                else:
                    predicted, prediction = best(device, item, tokens, squad, profile)
                implied = (
                    implied_tokens(prediction, item.value)
                    if tokens == "real" and item.scenario == "Offline"
                    else ""
                )
                lines.append(
                    f"| {device.name} | {profile.efficiency:.3g} | {item.model} {item.scenario}"
                    f"{role} | {tokens or '-'} | {prediction.batch_size} | {item.value:,.0f} | "
                    f"{predicted:,.0f} | {100 * (predicted / item.value - 1):+.0f}% | {implied} |"
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
    (device,) = [d for d in DEVICES if d.name == "moffett-s30"]
    base = request(device, device.calibration, device.offline_batch)
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
    parser.add_argument(
        "--squad", type=Path, help="folder with dev-v1.1.json and vocab.txt (default: synthetic)"
    )
    args = parser.parse_args()
    print("\n".join(fidelity(args.squad)))
    print(f"\npredict, BERT-Large, CLI end to end: {predict_seconds():.2f} s")
    if not args.skip_loadgen:
        print("\nS30 (calibrated), ResNet-50 Offline, timing only, under LoadGen:")
        print("\n".join(loadgen_offline(args.seconds)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
