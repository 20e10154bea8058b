"""End-to-end runs from the CLI: LoadGen in a child process, run folders, results, accuracy."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from tests.conftest import SMALL_DATASET, run_cli


def only_run(runs: Path) -> Path:
    (folder,) = [p for p in runs.iterdir() if not p.name.startswith(".")]
    return folder


@pytest.mark.parametrize("scenario", ["Offline", "Server", "SingleStream", "MultiStream"])
def test_every_scenario_runs_under_loadgen(scenario, small_dataset, tmp_path, capsys):
    runs = tmp_path / "runs"
    code, out, err = run_cli(
        [
            "run",
            "--scenario",
            scenario,
            "--backend",
            "tests.fakes:InstantBackend",
            "--preset",
            "smoke",
            "--dataset-path",
            str(small_dataset),
            "--runs-dir",
            str(runs),
        ],
        capsys,
    )
    assert code == 0, err
    folder = only_run(runs)
    assert re.fullmatch(
        rf"\d{{8}}T\d{{6}}Z_resnet50_{scenario}_InstantBackend_performance", folder.name
    )
    result = json.loads((folder / "result.json").read_text())
    assert result["status"] == "complete"
    assert result["scenario"] == scenario
    assert result["validity"] in ("VALID", "INVALID")
    assert result["value"] > 0
    assert result["synthetic_data"] is True
    assert result["errors"] == []
    assert result["seeds"]["qsl_rng_seed"] == 2085463073848966840
    # The performance sample count follows the small dataset, and user.conf says so.
    assert result["performance_sample_count"] == SMALL_DATASET
    conf = (folder / "user.conf").read_text()
    assert f"resnet50.{scenario}.performance_sample_count_override = {SMALL_DATASET}" in conf
    assert f"resnet50.{scenario}.min_duration = 2000" in conf
    for name in ("mlperf_log_summary.txt", "mlperf_log_detail.txt", "run.json"):
        assert (folder / name).is_file()
    line = out.strip().splitlines()[-1]
    assert line.startswith(f"RESULT resnet50 {scenario} InstantBackend performance:")
    assert "synthetic data" in line and "not compliant" in line and str(folder) in line


def test_offline_onnxruntime_fp32_reports_throughput(small_dataset, tmp_path, capsys):
    runs = tmp_path / "runs"
    code, out, err = run_cli(
        ["run", "--preset", "smoke", "--dataset-path", str(small_dataset), "--runs-dir", str(runs)],
        capsys,
    )
    assert code == 0, err
    folder = only_run(runs)
    result = json.loads((folder / "result.json").read_text())
    assert result["metric"] == "result_samples_per_second" and result["units"] == "samples/s"
    assert result["value"] > 1
    assert set(result["latency_ms"]) >= {"50.00", "90.00", "99.00"}
    # ONNX Runtime's threads spin as its default has them (-o spinning=off stops them).
    backend = json.loads((folder / "run.json").read_text())["backend"]
    assert backend["session_options"].endswith("session.intra_op.allow_spinning=1")
    # Offline expected QPS came from the warm-up and is recorded with its source.
    assert re.search(
        r"# measured in a warm-up.*\nresnet50\.Offline\.target_qps = [\d.]+",
        (folder / "user.conf").read_text(),
    )
    meta = json.loads((folder / "run.json").read_text())
    assert meta["backend"]["precision"] == "fp32"
    assert meta["versions"]["mlcommons-loadgen"]
    assert "synthetic" in meta["dataset"]
    assert re.search(r": [\d.]+ samples/s, (VALID|INVALID)", out)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_accuracy_mode_scores_every_sample(precision, small_dataset, tmp_path, capsys):
    runs = tmp_path / "runs"
    code, out, err = run_cli(
        [
            "run",
            "--mode",
            "accuracy",
            "--precision",
            precision,
            "--dataset-path",
            str(small_dataset),
            "--runs-dir",
            str(runs),
        ],
        capsys,
    )
    assert code == 0, err
    folder = only_run(runs)
    log = folder / "mlperf_log_accuracy.json"
    entries = json.loads(log.read_text())
    assert sorted(e["qsl_idx"] for e in entries) == list(range(SMALL_DATASET))
    first, second = (folder / "accuracy.txt").read_text().splitlines()
    match = re.fullmatch(r"accuracy=([\d.]+)%, good=(\d+), total=(\d+)", first)
    assert match and int(match[3]) == SMALL_DATASET
    assert second == f"hash={hashlib.sha256(log.read_bytes()).hexdigest()}"
    # Labels are the FP32 model's predictions: fp32 agrees exactly, int8 nearly.
    accuracy = float(match[1])
    assert accuracy == 100.0 if precision == "fp32" else accuracy >= 75.0
    assert "agreement with the FP32 reference" in out
