"""The simulated accelerator's timing and energy model, on hand-made workloads."""

from __future__ import annotations

from dataclasses import replace

import pytest

from backends.simaccel.device import DeviceProfile
from backends.simaccel.profiles import get_profile
from backends.simaccel.timing import (
    BatchTime,
    DeviceClock,
    Options,
    TimingModel,
    density_warning,
    sparse_speedup,
    token_load,
)
from backends.simaccel.workload import LayerWork, ModelWork
from harness.errors import UserError

DEVICE = DeviceProfile(
    name="unit",
    description="1 GHz, 1000 int8 MACs per cycle",
    clock_ghz=1.0,
    macs_per_cycle={"int8": 1000.0},
    memory_bandwidth_gbs=1e6,  # never the bottleneck unless a test lowers it
    on_chip_memory_mb=1.0,
    vector_gflops=1.0,
    host_link_gbs=1.0,
    tdp_w=10.0,
    sparsity="unstructured",
    max_sparse_speedup=4.0,
    layer_overhead_us=1.0,
    launch_overhead_us=5.0,
)
GEMM = LayerWork(
    "fc", "MatMul", macs=10**6, weights=10**4, weight_zeros=0, in_elements=0, out_elements=0
)
WORK = ModelWork((GEMM,), float_input_elements=1000, other_input_bytes=0)


def timed(work: ModelWork, device: DeviceProfile, samples: int, options: Options | None = None):
    model = TimingModel(work, device, options or Options())
    load = token_load([1.0] * samples)
    return model.batch(load), model.layer_times(load)


def test_compute_bound_layer_takes_macs_over_peak_plus_overheads():
    timing, (layer,) = timed(WORK, DEVICE, 2)
    assert layer.bound == "compute" and layer.dense_macs == 2 * 10**6
    assert layer.seconds == pytest.approx(2e6 / 1e12 + 1e-6)
    assert timing.transfer_s == pytest.approx(2000 / 1e9)  # float inputs sent as int8
    assert timing.device_s == pytest.approx(layer.seconds + 5e-6)
    assert timing.latency_s == pytest.approx(timing.device_s + timing.transfer_s)
    assert timing.interval_s == pytest.approx(max(timing.device_s, timing.transfer_s))
    assert timing.joules == pytest.approx(10.0 * timing.device_s)  # TDP x busy time


def test_efficiency_scales_the_compute_peak():
    slow = TimingModel(WORK, replace(DEVICE, efficiency=0.5), Options())
    _, (layer,) = timed(WORK, DEVICE, 1)
    (half,) = slow.layer_times(token_load([1.0]))
    assert half.seconds - 1e-6 == pytest.approx(2 * (layer.seconds - 1e-6))


def test_sparsity_speeds_up_only_as_far_as_the_device_allows():
    assert sparse_speedup(DEVICE, 0.5, "unstructured") == 2.0
    assert sparse_speedup(DEVICE, 1 / 32, "unstructured") == 4.0  # capped
    assert sparse_speedup(replace(DEVICE, sparse_efficiency=0.5), 0.25, "unstructured") == 2.5
    gpu = get_profile("a100-sxm")
    assert sparse_speedup(gpu, 0.5, "2:4") == 2.0
    assert sparse_speedup(gpu, 0.75, "2:4") == pytest.approx(4 / 3)
    assert sparse_speedup(gpu, 0.25, "unstructured") == 1.0  # 2:4 hardware only
    _, (dense,) = timed(WORK, DEVICE, 1)
    _, (sparse,) = timed(WORK, DEVICE, 1, Options(density=0.25))
    assert sparse.effective_macs == dense.dense_macs // 4
    assert sparse.seconds - 1e-6 == pytest.approx((dense.seconds - 1e-6) / 4)


@pytest.mark.parametrize(
    ("device", "options", "message"),
    [
        ("unit", Options(density=1 / 16), "exploits density down to 0.25: density 0.0625"),
        ("unit", Options(density=0.5), ""),
        ("a100-sxm", Options(density=0.5), "only in the 2:4 pattern: unstructured is timed"),
        ("a100-sxm", Options(density=0.25, pattern="2:4"), "down to 0.5"),
        ("vsq-5nm", Options(dtype="int4", density=0.5), "cannot skip zero weights"),
    ],
)
def test_a_density_the_device_cannot_exploit_is_clamped_with_a_warning(device, options, message):
    profile = DEVICE if device == "unit" else get_profile(device)
    warning = density_warning(profile, options)
    assert (message in warning) if message else warning == ""


def test_a_model_too_big_for_the_chip_reads_its_weights_every_batch():
    fits, _ = timed(WORK, DEVICE, 1)
    small = replace(DEVICE, on_chip_memory_mb=0.001, memory_bandwidth_gbs=0.001)
    spills, (layer,) = timed(WORK, small, 1)
    assert fits.weights_on_chip and not spills.weights_on_chip
    assert layer.bytes == 10**4 and layer.bound == "memory"


def test_activations_go_through_memory_only_when_the_batch_does_not_fit():
    gemm = replace(GEMM, in_elements=100_000, out_elements=100_000)  # 0.2 MB per sample (int8)
    work = ModelWork((gemm,), 0, 0)
    device = replace(DEVICE, memory_bandwidth_gbs=1.0)
    _, (small,) = timed(work, device, 4)  # 0.8 MB + 0.01 MB of weights fit in 1 MB
    _, (large,) = timed(work, device, 5)  # 1.0 MB beside the weights does not
    assert small.bytes == 0 and small.bound == "compute"
    assert large.bytes == 1_000_000 and large.bound == "memory"


def test_vector_ops_take_one_operation_per_element_written_and_no_memory():
    relu = LayerWork("relu", "Relu", 0, 0, 0, in_elements=10**6, out_elements=10**6)
    _, (layer,) = timed(ModelWork((relu,), 0, 0), DEVICE, 3)
    assert layer.bound == "vector" and layer.bytes == 0
    assert layer.seconds == pytest.approx(3e6 / 1e9)


def test_token_work_follows_each_samples_length():
    per_token = replace(GEMM, token_power=1)
    scores = LayerWork("scores", "MatMul", 10**6, 0, 0, 0, 0, token_power=2)
    model = TimingModel(ModelWork((per_token, scores), 0, 0, tokens=8), DEVICE, Options())
    padded = model.layer_times(token_load([1.0, 1.0]))
    half = model.layer_times(token_load([0.5, 0.25]))
    assert half[0].dense_macs == round(padded[0].dense_macs * 0.75 / 2)
    assert half[1].dense_macs == round(padded[1].dense_macs * (0.25 + 0.0625) / 2)


def test_energy_per_op_where_the_profile_has_it():
    device = replace(DEVICE, energy_pj_per_mac=0.5, energy_pj_per_byte=10.0)
    timing, _ = timed(WORK, device, 1, Options(density=0.5))
    assert timing.joules == pytest.approx(0.5e6 * 0.5e-12)


def test_the_device_clock_overlaps_a_transfer_with_earlier_compute():
    clock = DeviceClock()
    batch = BatchTime(1, transfer_s=1.0, launch_s=0.0, weights_on_chip=True, device_s=2.0, joules=0)
    assert clock.finish(0.0, batch) == (1.0, 3.0)
    assert clock.finish(0.0, batch) == (3.0, 5.0)  # sent during the first compute
    assert clock.finish(10.0, batch) == (11.0, 13.0)  # an idle device starts at once


def test_a_dtype_the_device_lacks_is_refused():
    with pytest.raises(UserError, match="unit has no fp16 MACs"):
        TimingModel(WORK, DEVICE, Options(dtype="fp16"))


def test_predict_prints_layers_and_totals(builtin_model, capsys):
    from tests.conftest import run_cli

    args = ["predict", "--device", "moffett-s30", "--density", "0.0625", "--layers", "4"]
    code, out, _ = run_cli(args, capsys)
    assert code == 0 and "simulated" in out
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + 4  # the header and the 4 slowest layers
    throughput = float(out.split("Offline: ")[1].split()[0])
    assert throughput > 0 and "samples/J" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "tpu"], "unknown device 'tpu'"),
        ([], "give one of --device NAME or --device-file FILE"),
        (["--device", "a100-sxm", "--density", "1.5"], "density must be in (0, 1]"),
        (["--device", "vsq-5nm", "--precision", "fp16"], "vsq-5nm has no fp16 MACs"),
        (["--device", "a100-sxm", "--device-file", "x.toml"], "give one of --device NAME"),
        (["--device", "a100-sxm", "--scenario", "Sever"], "unknown scenario 'Sever'"),
        (["--device", "a100-sxm", "--scenario", "SingleStream", "--batch", "4"], "--batch applies"),
        (["--device", "a100-sxm", "--tokens", "real"], "tokens=real needs a token model"),
        (["--device", "a100-sxm", "--tokens", "some"], "tokens must be padded or real"),
    ],
)
def test_predict_bad_input_is_one_line(args, message, capsys, builtin_model):
    from tests.conftest import run_cli

    code, _, err = run_cli(["predict", *args], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
