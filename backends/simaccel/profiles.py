"""Device profiles for the simulated accelerator: built-in ones from published specs, and user
profiles from TOML files, validated field by field.

A profile states rates in the units of its field names (GHz, GB/s, MB, W, µs, pJ). In a TOML
file a value may also be a string with its unit ("1.76 GHz", "2 TB/s", "40 MiB"), converted
here; a unit of the wrong kind is an error.
"""

from __future__ import annotations

import re
import sys
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import tomli_w

from backends.simaccel.published import SUBMITTED
from backends.simaccel.submitted import (
    Submission,
    check_submission,
    parse_submitted,
    sparse_floor,
    submitted_table,
)
from harness.errors import UserError
from harness.files import read_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, from PyPI
    import tomli as tomllib

ASSUMED = (
    "assumed, not published: on-chip memory (where not cited), vector rate, host link, overheads"
)
DTYPES = ("int4", "int8", "fp16", "bf16")
SPARSITY_KINDS = ("none", "2:4", "unstructured")


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    clock_ghz: float
    macs_per_cycle: dict[str, float]  # dense multiply-accumulates per cycle, by dtype
    memory_bandwidth_gbs: float
    on_chip_memory_mb: float  # weights stay on chip when they fit here
    vector_gflops: float  # rate of the non-GEMM ops (elementwise, softmax, norms)
    host_link_gbs: float  # host-to-device input transfer
    tdp_w: float
    sparsity: str = "none"  # what the MAC array can skip: none, 2:4, unstructured
    max_sparse_speedup: float = 1.0  # most the sparsity can speed a layer up
    sparse_efficiency: float = 1.0  # share of the ideal sparse speed-up reached
    layer_overhead_us: float = 0.0  # fixed cost per layer (scheduling, synchronisation)
    launch_overhead_us: float = 0.0  # fixed cost per batch
    energy_pj_per_mac: float | None = None  # else energy comes from TDP x busy time
    energy_pj_per_byte: float | None = None
    efficiency: float = 1.0  # the one factor calibration may fit (share of peak reached)
    calibrated_on: str = ""  # the published result the efficiency was fitted to
    references: tuple[str, ...] = field(default=())
    # How the device's published results were run, per model (LoadGen model key).
    submitted: dict[str, Submission] = field(default_factory=dict)

    def peak_macs_per_s(self, dtype: str) -> float:
        return self.macs_per_cycle[dtype] * self.clock_ghz * 1e9

    def default_dtype(self) -> str:
        """The narrowest integer type the device computes in, else its first type."""
        for dtype in ("int4", "int8", "bf16", "fp16"):
            if dtype in self.macs_per_cycle:
                return dtype
        return next(iter(self.macs_per_cycle))

    def check_dtype(self, dtype: str) -> None:
        if dtype not in self.macs_per_cycle:
            raise UserError(
                f"{self.name} has no {dtype} MACs; it computes in {', '.join(self.macs_per_cycle)}"
            )

    def submission(self, model_key: str) -> Submission:
        """The configuration this device's results for a model were submitted with (empty
        when none is known)."""
        return self.submitted.get(model_key, Submission())

    def check_submitted(self, where: str) -> None:
        """Refuse a submitted configuration the device cannot run, naming the field."""
        floor = sparse_floor(self.sparsity, self.max_sparse_speedup)
        for model, submission in self.submitted.items():
            check_submission(
                f"{where}submitted.{model}", submission, self.macs_per_cycle, self.sparsity, floor
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

# Unit strings accepted in TOML files, by the unit of the field they may fill.
_UNITS = {
    "GHz": {"Hz": 1e-9, "kHz": 1e-6, "MHz": 1e-3, "GHz": 1.0},
    "GB/s": {"MB/s": 1e-3, "GB/s": 1.0, "TB/s": 1e3, "MiB/s": 2**20 / 1e9, "GiB/s": 2**30 / 1e9},
    "MB": {
        "KB": 1e-3,
        "MB": 1.0,
        "GB": 1e3,
        "KiB": 2**10 / 1e6,
        "MiB": 2**20 / 1e6,
        "GiB": 2**30 / 1e6,
    },
    "GFLOP/s": {"GFLOP/s": 1.0, "TFLOP/s": 1e3, "GOP/s": 1.0, "TOP/s": 1e3},
    "W": {"mW": 1e-3, "W": 1.0, "kW": 1e3},
    "us": {"ns": 1e-3, "us": 1.0, "µs": 1.0, "ms": 1e3, "s": 1e6},
    "pJ": {"fJ": 1e-3, "pJ": 1.0, "nJ": 1e3},
}
_FIELD_UNITS = {
    "clock_ghz": "GHz",
    "memory_bandwidth_gbs": "GB/s",
    "host_link_gbs": "GB/s",
    "on_chip_memory_mb": "MB",
    "vector_gflops": "GFLOP/s",
    "tdp_w": "W",
    "layer_overhead_us": "us",
    "launch_overhead_us": "us",
    "energy_pj_per_mac": "pJ",
    "energy_pj_per_byte": "pJ",
}
_QUANTITY = re.compile(r"^\s*([0-9.eE+-]+)\s*([A-Za-zµ/]+)\s*$")
_REQUIRED = tuple(
    f.name for f in fields(DeviceProfile) if f.default is MISSING and f.default_factory is MISSING
)
_FRACTIONS = ("sparse_efficiency", "efficiency")


def get_profile(name: str) -> DeviceProfile:
    try:
        return BUILTIN[name]
    except KeyError:
        raise UserError(
            f"unknown device {name!r}; choose one of {', '.join(BUILTIN)} or give --device-file"
        ) from None


def resolve_profile(device: str | None, device_file: Path | str | None) -> DeviceProfile:
    """The profile a command names: a built-in device or a TOML file, exactly one of them."""
    if (device is None) == (device_file is None):
        raise UserError("give one of --device NAME or --device-file FILE")
    return load_profile_file(Path(device_file)) if device_file else get_profile(str(device))


def load_profile_file(path: Path) -> DeviceProfile:
    """A user profile from TOML: unknown keys, missing fields, bad units or values are errors
    that name the file and the field."""
    text = read_text(path, "device file")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"device file {path} is not valid TOML: {exc}") from exc
    known = {f.name for f in fields(DeviceProfile)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(
            f"device file {path}: unknown key(s) {', '.join(unknown)}; "
            f"known keys: {', '.join(sorted(known))}"
        )
    missing = [name for name in _REQUIRED if name not in data]
    if missing:
        raise UserError(f"device file {path}: missing field(s) {', '.join(missing)}")
    values = {key: _value(path, key, raw) for key, raw in data.items()}
    profile = DeviceProfile(**values)
    profile.check_submitted(f"device file {path}: ")
    return profile


def _value(path: Path, key: str, raw: object) -> object:
    where = f"device file {path}: {key}"
    if key in ("name", "description"):
        if not isinstance(raw, str) or not raw:
            raise UserError(f"{where} must be non-empty text")
        return raw
    if key == "calibrated_on":
        if not isinstance(raw, str):
            raise UserError(f"{where} must be text")
        return raw
    if key == "submitted":
        return parse_submitted(where, raw)
    if key == "references":
        if not isinstance(raw, list) or not all(isinstance(r, str) for r in raw):
            raise UserError(f"{where} must be a list of text")
        return tuple(raw)
    if key == "sparsity":
        if raw not in SPARSITY_KINDS:
            raise UserError(f"{where} must be one of {', '.join(SPARSITY_KINDS)}, got {raw!r}")
        return raw
    if key == "macs_per_cycle":
        if not isinstance(raw, dict) or not raw:
            raise UserError(f"{where} must be a table of dtype = MACs per cycle, e.g. int8 = 512")
        bad = sorted(set(raw) - set(DTYPES))
        if bad:
            raise UserError(f"{where}: unknown dtype(s) {', '.join(bad)}; use {', '.join(DTYPES)}")
        return {dtype: _positive(f"{where}.{dtype}", value) for dtype, value in raw.items()}
    number = _quantity(where, raw, _FIELD_UNITS.get(key))
    value = _positive(where, number)
    if key in _FRACTIONS and value > 1:
        raise UserError(f"{where} is a fraction of peak: in (0, 1], got {value}")
    if key == "max_sparse_speedup" and value < 1:
        raise UserError(f"{where} must be at least 1, got {value}")
    return value


def _quantity(where: str, raw: object, unit: str | None) -> object:
    """A number, or (for fields with a unit) a string such as "1.76 GHz" in that unit's kind."""
    if not isinstance(raw, str):
        return raw
    match = _QUANTITY.match(raw)
    if unit is None or match is None:
        raise UserError(f"{where} must be a number, got {raw!r}")
    number, given = match.groups()
    scale = _UNITS[unit].get(given)
    if scale is None:
        raise UserError(
            f"{where}: unit {given!r} is not a {unit} unit; use one of {', '.join(_UNITS[unit])}"
        )
    return float(number) * scale


def _positive(where: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{where} must be a number, got {value!r}")
    if not value > 0:
        raise UserError(f"{where} must be positive, got {value}")
    return float(value)


def write_profile_file(profile: DeviceProfile, path: Path) -> None:
    """Save a profile as TOML that ``load_profile_file`` reads back to the same profile."""
    body = {key: value for key, value in asdict(profile).items() if value is not None}
    body["references"] = list(profile.references)
    body["submitted"] = submitted_table(profile.submitted)
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text(tomli_w.dumps(body))
        partial.replace(path)
    except OSError as exc:
        raise UserError(f"cannot write device file {path}: {exc.strerror}") from exc
