"""The built-in device profiles, from published specs, each calibrated on its own published
ResNet-50 Offline result (the fitted efficiency and its source recorded in the profile)."""

from __future__ import annotations

from backends.simaccel.device import DeviceProfile
from backends.simaccel.published import SUBMITTED

ASSUMED = (
    "assumed, not published: on-chip memory (where not cited), vector rate, host link, overheads"
)


def _from_tops(tops: float, clock_ghz: float) -> float:
    """Dense MACs per cycle from a datasheet's TOPS (2 ops per MAC) at the given clock."""
    return tops * 1e12 / 2 / (clock_ghz * 1e9)


def _calibrated(efficiency: float, result: str) -> dict[str, object]:
    """The one fitted number of a built-in profile, with the result it was fitted to
    (``benchmarks/published_results.toml`` holds the same point; a test refits it)."""
    return {"efficiency": efficiency, "calibrated_on": f"ResNet-50 Offline, {result}"}


def _gpu(
    name: str,
    clock: float,
    int8_tops: float,
    fp16_tflops: float,
    bandwidth: float,
    tdp: float,
    text: str,
    calibration: dict[str, object],
) -> DeviceProfile:
    return DeviceProfile(
        name=name,
        description=text,
        clock_ghz=clock,
        macs_per_cycle={
            "int8": _from_tops(int8_tops, clock),
            "fp16": _from_tops(fp16_tflops, clock),
            "bf16": _from_tops(fp16_tflops, clock),
        },
        memory_bandwidth_gbs=bandwidth,
        on_chip_memory_mb=40.0 if name.startswith("a100") else 50.0,
        vector_gflops=fp16_tflops * 1e3 / 16,  # CUDA-core rate, about 1/16 of the tensor cores
        host_link_gbs=25.0 if name.startswith("a100") else 50.0,  # PCIe 4 / 5 x16, effective
        tdp_w=tdp,
        sparsity="2:4",
        max_sparse_speedup=2.0,
        layer_overhead_us=3.0,
        launch_overhead_us=20.0,
        references=(
            "NVIDIA data-sheet TOPS/TFLOPS, memory bandwidth and TDP; L2 size as on-chip memory",
            ASSUMED,
        ),
        submitted=SUBMITTED[name],
        **calibration,  # type: ignore[arg-type]
    )


def _moffett(name: str, chips: int, calibration: dict[str, object] | None = None) -> DeviceProfile:
    clock = 1.0  # not published: MACs/cycle is chosen so that clock x MACs = datasheet TOPS
    references = ["Moffett Antoum/S4/S30 datasheets: TOPS, bandwidth (read), TDP", ASSUMED]
    if chips == 4:  # the S40: no datasheet figures here, only its submission's system file
        references[0] = (
            "S40 as 4 Antoum chips (derived: inference_results_v3.0/open/Moffett/systems/ lists "
            "20 GB of LPDDR4X per chip, S10 40 GB, S30 60 GB, S40 80 GB); per-chip TOPS and "
            "bandwidth as the S30's; TDP assumed, the S30's per chip"
        )
    return DeviceProfile(
        name=name,
        description=f"Moffett {name[-3:].upper()} ({chips} Antoum chip(s), 12 nm), sparse to 32x",
        clock_ghz=clock,
        macs_per_cycle={
            "int8": _from_tops(29.5 * chips, clock),
            "bf16": _from_tops(14.7 * chips, clock),
        },
        memory_bandwidth_gbs=66.0 * chips,
        on_chip_memory_mb=60.0 * chips,
        vector_gflops=1000.0 * chips,
        host_link_gbs=25.0,
        tdp_w={1: 70.0, 3: 250.0, 4: 250.0 * 4 / 3}[chips],
        sparsity="unstructured",
        max_sparse_speedup=32.0,
        layer_overhead_us=2.0,
        launch_overhead_us=50.0,
        references=tuple(references),
        submitted=SUBMITTED.get(name, {}),
        **(calibration or {}),  # type: ignore[arg-type]
    )


def _vsq() -> DeviceProfile:
    clock = 1.76
    return DeviceProfile(
        name="vsq-5nm",
        description="NVIDIA 5 nm per-vector-scaled 4-bit test chip (VLSI 2022), at 1.76 GHz",
        clock_ghz=clock,
        macs_per_cycle={"int4": 1024.0, "int8": 512.0},
        memory_bandwidth_gbs=25.0,
        on_chip_memory_mb=0.5,
        vector_gflops=50.0,
        host_link_gbs=4.0,
        tdp_w=0.5,
        energy_pj_per_mac=2 / 38.7,  # 38.7 TOPS/W on BERT-Base: 2 ops per MAC
        references=("Keller et al., VLSI 2022 / JSSC 2023: MACs/cycle, clock, TOPS/W", ASSUMED),
    )


V30 = "inference_results_v3.0/closed/NVIDIA/results"
RUN = "performance/run_1/mlperf_log_summary.txt"
BUILTIN: dict[str, DeviceProfile] = {
    p.name: p
    for p in (
        _moffett("moffett-s4", 1),
        _moffett(
            "moffett-s30",
            3,
            _calibrated(
                0.7102,
                "96,049.2 samples/s, inference_results_v3.0/open/Moffett/results/"
                f"Moffett_S30_Inspur/resnet50/Offline/{RUN}",
            ),
        ),
        _moffett(
            "moffett-s40",
            4,
            _calibrated(
                0.7781,
                "127,375 samples/s, inference_results_v3.0/open/Moffett/results/"
                f"Moffett_S40_Inspur/resnet50/Offline/{RUN}",
            ),
        ),
        _gpu(
            "a100-sxm",
            1.41,
            624,
            312,
            2039,
            400,
            "NVIDIA A100 SXM 80GB",
            _calibrated(
                0.6209,
                f"42,379.3 samples/s, {V30}/DGX-A100_A100-SXM-80GBx1_TRT/resnet50/Offline/{RUN}",
            ),
        ),
        _gpu(
            "h100-sxm",
            1.98,
            1979,
            989,
            3350,
            700,
            "NVIDIA H100 SXM 80GB",
            _calibrated(
                0.4735,
                f"91,825.7 samples/s, {V30}/DGX-H100_H100-SXM-80GBx1_TRT/resnet50/Offline/{RUN}",
            ),
        ),
        _gpu(
            "h100-pcie",
            1.755,
            1513,
            756,
            2000,
            350,
            "NVIDIA H100 PCIe 80GB",
            _calibrated(
                0.3849, f"56,635 samples/s, {V30}/H100-PCIe-80GBx1_TRT/resnet50/Offline/{RUN}"
            ),
        ),
        # H200: the H100's GH100 compute with HBM3e (NVIDIA H200 data sheet: 3,958 INT8 TOPS
        # and 1,979 FP16 TFLOPS with 2:4 sparsity, 4.8 TB/s, up to 700 W).
        _gpu(
            "h200-sxm",
            1.98,
            1979,
            989,
            4800,
            700,
            "NVIDIA H200 SXM 141GB",
            _calibrated(
                0.429,
                "756,960 samples/s over 8 GPUs, inference_results_v4.1/closed/NVIDIA/results/"
                f"H200-SXM-141GBx8_TRT/resnet50/Offline/{RUN}",
            ),
        ),
        _vsq(),
    )
}
