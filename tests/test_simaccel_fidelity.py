"""The simulated devices against published results: calibration, held-out figures, the
results file's checks, the Server run model, and predict's machine-readable output."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from backends.simaccel.builtin import BUILTIN
from harness.errors import UserError
from harness.fidelity import calibrated, evaluate, load_results
from harness.predict import PredictRequest, prepare
from harness.server_model import allowed_over_bound, issued
from tests.conftest import run_cli

RESULTS = Path(__file__).parents[1] / "benchmarks" / "published_results.toml"
ENTRY = """
[[result]]
device = "h100-sxm"
model = "resnet50"
scenario = "Offline"
role = "calibration"
value = 91825.7
accelerators = 1
source = "a summary file"
"""
HELD_OUT = ENTRY.replace('"calibration"', '"held-out"').replace('"Offline"', '"Server"')


def results_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "results.toml"
    path.write_text(text)
    return path


def test_builtin_profiles_ship_calibrated_on_their_own_resnet50_offline_result(builtin_model):
    results = load_results(RESULTS)
    devices = sorted({r.device for r in results})
    assert {"a100-sxm", "h100-sxm", "h100-pcie", "h200-sxm", "moffett-s30", "moffett-s40"} <= set(
        devices
    )
    for device in devices:
        profile, point = calibrated(device, results)
        assert point.source in BUILTIN[device].calibrated_on
        assert BUILTIN[device].efficiency == pytest.approx(profile.efficiency, abs=2e-4), device


def test_a_held_out_prediction_uses_the_submitted_configuration_and_no_fit(builtin_model, tmp_path):
    rows = evaluate(load_results(results_file(tmp_path, ENTRY + HELD_OUT)))
    calibration, server = rows
    assert calibration.error == pytest.approx(0, abs=1e-3)
    assert any("server_batch = 256 (published" in line for line in server.configuration)
    assert 0 < server.predicted <= calibration.predicted  # Server never beats Offline


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (ENTRY.replace("value = 91825.7\n", ""), r"result 1: missing value"),
        (ENTRY.replace("value = 91825.7", "value = -5"), r"value must be a positive number"),
        (ENTRY.replace("accelerators = 1", "accelerators = 0"), r"accelerators must be a pos"),
        (ENTRY.replace('"calibration"', '"guess"'), r"role must be one of"),
        (HELD_OUT, r"h100-sxm needs exactly one calibration entry"),
        (ENTRY + "colour = 1\n", r"unknown key\(s\) colour"),
        ("", r"holds no \[\[result\]\] entries"),
    ],
)
def test_a_bad_results_file_names_the_entry_and_the_field(tmp_path, text, message):
    path = results_file(tmp_path, text)
    with pytest.raises(UserError, match=message) as info:
        load_results(path)
    assert str(path) in str(info.value)


def test_early_stopping_allows_fewer_late_queries_than_one_percent():
    assert allowed_over_bound(270_336) < 2703  # 1% of LoadGen's minimum Server run
    assert allowed_over_bound(270_336) > 2500
    assert allowed_over_bound(100) == 0


def test_loadgen_hands_queries_on_one_at_a_time():
    arrivals = np.array([0.0, 0.0, 0.0, 10.0])
    assert issued(arrivals, 1.0).tolist() == [1.0, 2.0, 3.0, 11.0]


def test_predict_without_flags_uses_and_prints_the_submitted_configuration(builtin_model, capsys):
    code, out, err = run_cli(["predict", "--device", "h100-sxm", "--layers", "1"], capsys)
    assert code == 0, err
    assert "offline_batch = 2048 (published: inference_results_v3.0/closed/NVIDIA" in out
    assert "batch of 2048" in out and "simulated" in out
    code, out, _ = run_cli(["predict", "--device", "h100-sxm", "--batch", "64"], capsys)
    assert "batch = 64 (given)" in out and "batch of 64" in out


def test_predict_writes_json_and_csv_with_every_layer_and_the_totals(builtin_model, capsys):
    args = ["predict", "--device", "moffett-s30", "--batch", "8"]
    code, out, err = run_cli([*args, "--format", "json"], capsys)
    assert code == 0, err
    body = json.loads(out)
    assert body["simulated"] and body["batch"] == 8 and body["density"] == 1 / 32
    work = prepare(PredictRequest(device="moffett-s30", batch=8)).work
    assert len(body["layers"]) == len(work.layers)
    assert body["totals"]["dense_macs"] == sum(layer["dense_macs"] for layer in body["layers"])
    assert body["figure"] > 0 and body["unit"] == "samples/s"
    code, out, _ = run_cli([*args, "--format", "csv"], capsys)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == len(work.layers) + 1
    total = rows[-1]
    assert total["name"].startswith("total") and float(total["figure"]) == pytest.approx(
        body["figure"]
    )
