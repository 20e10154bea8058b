"""The simaccel backend under LoadGen, Server prediction through the batching policy, and
calibration."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from backends.simaccel.profiles import load_profile_file
from backends.simaccel.timing import TimingModel
from harness.calibrate import fit_efficiency
from harness.errors import UserError
from harness.predict import PredictRequest, prepare, server_capacity
from harness.qsl import SampleStore
from scenarios import ScenarioOptions
from scenarios.server import poisson_arrivals, simulate
from tests.conftest import SMALL_DATASET, run_cli

RESNET_MACS = 4_089_186_304 + 2048 * 1001  # the built-in ResNet-50's GEMMs per sample


def slow_device(tmp_path: Path, ms_per_sample: float) -> Path:
    """A device on which one built-in ResNet-50 sample takes ``ms_per_sample`` of compute and
    nothing else takes measurable time."""
    path = tmp_path / "slow.toml"
    macs_per_cycle = RESNET_MACS / (ms_per_sample * 1e-3 * 1e9)
    path.write_text(
        f"""name = "slow"
description = "a test device"
clock_ghz = "1 GHz"
macs_per_cycle = {{ int8 = {macs_per_cycle} }}
memory_bandwidth_gbs = "1000 TB/s"
on_chip_memory_mb = "10 GB"
vector_gflops = 1e9
host_link_gbs = "1000 TB/s"
tdp_w = 10
"""
    )
    return path


def result_of(folder: Path) -> dict:
    return json.loads((folder / "result.json").read_text())


def timing_only_run(device: Path, runs: Path) -> list[str]:
    """A timing-only SingleStream smoke run on a device file."""
    return ["run", "--backend", "simaccel", "--device-file", str(device), "--functional", "off",
            "--scenario", "SingleStream", "--preset", "smoke", "--runs-dir", str(runs),
            "--dataset-count", str(SMALL_DATASET)]  # fmt: skip


def test_loadgen_sees_the_modelled_latency(tmp_path, capsys, builtin_model):
    device = slow_device(tmp_path, ms_per_sample=10.0)
    code, out, err = run_cli(timing_only_run(device, tmp_path), capsys)
    assert code == 0, err
    assert "RESULT resnet50 SingleStream simaccel-slow performance" in out
    (folder,) = tmp_path.glob("*simaccel-slow*")
    result = result_of(folder)
    latencies = result["latency_ms"]
    assert 10.0 <= latencies["50.00"] < 11.0  # the device's 10 ms plus the host's wake-up
    report = result["backend_report"]
    assert report["simulated_device"] == "slow" and not report["host_bound"]
    assert report["samples"] == result["query_count"]  # the warm-up is not in the report
    assert report["modelled_samples_per_joule"] == pytest.approx(1 / (10 * 10e-3), rel=0.01)
    run = json.loads((folder / "run.json").read_text())
    assert run["division"] == {"open_only": "a simulated device: its times are modelled, "
                               "not measured", "simulated": True}  # fmt: skip
    assert "simulated" in run["backend"]["device"]


def test_a_device_faster_than_the_host_is_reported_host_bound(tmp_path, capsys, builtin_model):
    device = slow_device(tmp_path, ms_per_sample=1e-4)  # 0.1 us: Python cannot keep up
    code, out, err = run_cli(timing_only_run(device, tmp_path), capsys)
    assert code == 0, err
    assert "HOST-BOUND" in out
    (folder,) = tmp_path.glob("*simaccel-slow*")
    assert result_of(folder)["backend_report"]["host_bound"] is True


def test_functional_outputs_are_the_sparse_int4_numerics(tmp_path, capsys):
    base = ["run", "--model", "bert-tiny", "--mode", "accuracy", "--preset", "smoke",
            "--dataset-count", "16", "--density", "0.5", "--sparsity-pattern", "unstructured",
            "--runs-dir", str(tmp_path)]  # fmt: skip
    simulated = [*base, "--backend", "simaccel", "--device", "moffett-s4", "--tokens", "real"]
    code, _, err = run_cli(simulated, capsys)
    assert code == 0, err
    code, _, err = run_cli([*base, "--backend", "sparse-int4"], capsys)
    assert code == 0, err
    (sim,) = tmp_path.glob("*simaccel*")
    (reference,) = tmp_path.glob("*sparse-int4*")
    assert result_of(sim)["accuracy"] == result_of(reference)["accuracy"]
    described = json.loads((sim / "run.json").read_text())["backend"]
    assert "outputs from sparse-int4" in described["framework"]
    assert described["bert_tokens"] == "real"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--device", "tpu9"], "unknown device 'tpu9'"),
        (["--device", "moffett-s30", "--functional", "off", "--mode", "accuracy"],
         "accuracy mode needs them; drop --functional off"),
        (["--device", "moffett-s30", "--functional", "maybe"], "functional must be on or off"),
        (["--device", "moffett-s30", "--precision", "int4"], "moffett-s30 has no int4 MACs"),
        (["--device", "moffett-s30", "--density", "0"], r"density must be in \(0, 1\]"),
        ([], "give one of --device NAME or --device-file FILE"),
    ],
)  # fmt: skip
def test_bad_simaccel_runs_fail_in_one_line(flags, message, capsys, tmp_path):
    args = ["run", "--backend", "simaccel", "--runs-dir", str(tmp_path), *flags]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
    assert not list(tmp_path.iterdir())  # nothing was started


def test_a_density_the_device_cannot_exploit_is_clamped_and_said(tmp_path, capsys, builtin_model):
    args = ["run", "--backend", "simaccel", "--device", "moffett-s30", "--density", "0.01",
            "--functional", "off", "--preset", "smoke", "--runs-dir", str(tmp_path),
            "--dataset-count", str(SMALL_DATASET)]  # fmt: skip
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert "exploits density down to 0.03125: density 0.01 is timed as 0.03125" in out


def test_timing_only_runs_gather_no_inputs():
    data = {"image": np.arange(24, dtype=np.float32).reshape(4, 6), "mask": np.eye(4, 6)}
    store = SampleStore(4, lambda index: {k: v[index] for k, v in data.items()})
    store.load_samples([0, 1, 2, 3])
    batch = store.batch([2, 3], only=frozenset({"mask"}))
    assert np.array_equal(batch["mask"], data["mask"][[2, 3]])
    assert batch["image"].shape == (2, 6) and batch["image"].strides[0] == 0  # a view
    assert np.array_equal(store.batch([2, 3])["image"], data["image"][[2, 3]])


def test_server_simulation_follows_the_batching_policy():
    arrivals = [0.0, 0.1, 0.15, 0.2, 5.0]
    served: list[tuple[float, int]] = []

    def serve(dispatch: float, samples: int) -> float:
        served.append((dispatch, samples))
        return dispatch + 1.0

    latencies = simulate(arrivals, ScenarioOptions(batch_size=2), serve)
    # The first query goes alone; the next two were waiting when the worker came back; then
    # the fourth alone; the last after an idle gap.
    assert served == [(0.0, 1), (1.0, 2), (2.0, 1), (5.0, 1)]
    assert latencies.tolist() == pytest.approx([1.0, 1.9, 1.85, 2.8, 1.0])
    served.clear()
    simulate(arrivals[:4], ScenarioOptions(batch_size=4, server_batch_timeout_ms=120), serve)
    # Each worker waits the timeout for its batch to fill; neither fills.
    assert served == [(0.12, 2), (pytest.approx(1.24), 2)]


def test_server_capacity_is_the_highest_rate_within_the_bound(tmp_path):
    device = slow_device(tmp_path, ms_per_sample=2.0)
    prediction = prepare(
        PredictRequest(device_file=device, scenario="Server", batch=4, precision="int8")
    )
    model = TimingModel(prediction.work, prediction.profile, prediction.options)
    options = ScenarioOptions(batch_size=4)
    point = server_capacity(model, prediction.ratios, options, bound_s=0.015)
    assert 0 < point.qps < 500  # 2 ms per sample: the device cannot do more than 500/s
    assert point.p99_s <= 0.015
    # A little faster breaks the bound.
    service = [model.batch(np.array([n, n, n], dtype=float)) for n in range(5)]
    latencies = simulate(
        poisson_arrivals(point.qps * 1.02, 20_000),
        options,
        lambda t, n: t + service[n].latency_s,
    )
    assert np.percentile(latencies, 99) > 0.015


def test_calibration_fits_the_measured_rate_and_writes_a_profile(tmp_path, capsys, builtin_model):
    out = tmp_path / "s30.toml"
    args = ["calibrate", "--device", "moffett-s30", "--density", "0.03125", "--batch", "128",
            "--workers", "2", "--measured", "96049", "--out", str(out)]  # fmt: skip
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    profile = load_profile_file(out)
    assert 0 < profile.efficiency < 1 and "fitted to 96049 samples/s" in profile.references[-1]
    request = PredictRequest(device_file=out, density=0.03125, batch=128, workers=2)
    assert prepare(request).figure()[0] == pytest.approx(96049, rel=1e-3)
    assert "after:  Offline: 96" in stdout


def test_calibration_refuses_what_the_model_cannot_reach(builtin_model, tmp_path, capsys):
    prediction = prepare(PredictRequest(device="vsq-5nm"))
    with pytest.raises(UserError, match=r"cannot give 1e\+07 samples/s .* even at full"):
        fit_efficiency(prediction, 1e7)
    code, _, err = run_cli(["calibrate", "--device", "a100-sxm", "--measured", "100"], capsys)
    assert code == 2 and "give --out FILE" in err
