"""The simulated accelerator's timing and energy model, on hand-made workloads."""

from __future__ import annotations

from dataclasses import replace

import pytest

from backends.simaccel.profiles import DeviceProfile, get_profile
from backends.simaccel.timing import Options, batch_time, sparse_speedup
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
WORK = ModelWork((GEMM,), input_bytes=1000)


def test_compute_bound_layer_takes_macs_over_peak_plus_overheads():
    timing = batch_time(WORK, DEVICE, 2, Options())
    (layer,) = timing.layers
    assert layer.bound == "compute" and layer.dense_macs == 2 * 10**6
    assert layer.seconds == pytest.approx(2e6 / 1e12 + 1e-6)
    assert timing.transfer_s == pytest.approx(2000 / 1e9)
    assert timing.seconds == pytest.approx(layer.seconds + timing.transfer_s + 5e-6)
    assert timing.joules == pytest.approx(10.0 * timing.seconds)  # TDP x busy time


def test_sparsity_speeds_up_only_as_far_as_the_device_allows():
    assert sparse_speedup(DEVICE, 0.5, "unstructured") == 2.0
    assert sparse_speedup(DEVICE, 1 / 32, "unstructured") == 4.0  # capped
    assert sparse_speedup(replace(DEVICE, sparse_efficiency=0.5), 0.25, "unstructured") == 2.5
    gpu = get_profile("a100-sxm")
    assert sparse_speedup(gpu, 0.5, "2:4") == 2.0
    assert sparse_speedup(gpu, 0.25, "unstructured") == 1.0  # 2:4 hardware only
    dense = batch_time(WORK, DEVICE, 1, Options()).layers[0]
    sparse = batch_time(WORK, DEVICE, 1, Options(density=0.25)).layers[0]
    assert sparse.effective_macs == dense.dense_macs // 4
    assert sparse.seconds - 1e-6 == pytest.approx((dense.seconds - 1e-6) / 4)


def test_a_model_too_big_for_the_chip_reads_its_weights_every_batch():
    fits = batch_time(WORK, DEVICE, 1, Options())
    small = replace(DEVICE, on_chip_memory_mb=0.001, memory_bandwidth_gbs=0.001)
    spills = batch_time(WORK, small, 1, Options())
    assert fits.weights_on_chip and not spills.weights_on_chip
    assert spills.layers[0].bytes == 10**4 and spills.layers[0].bound == "memory"


def test_energy_per_op_where_the_profile_has_it():
    device = replace(DEVICE, energy_pj_per_mac=0.5, energy_pj_per_byte=10.0)
    timing = batch_time(WORK, device, 1, Options(density=0.5))
    assert timing.joules == pytest.approx(0.5e6 * 0.5e-12)


def test_a_dtype_the_device_lacks_is_refused():
    with pytest.raises(UserError, match="unit has no fp16 MACs"):
        batch_time(WORK, DEVICE, 1, Options(dtype="fp16"))


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
        (["--device", "vsq-5nm", "--dtype", "fp16"], "vsq-5nm has no fp16 MACs"),
    ],
)
def test_predict_bad_input_is_one_line(args, message, capsys):
    from tests.conftest import run_cli

    code, _, err = run_cli(["predict", *args], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
