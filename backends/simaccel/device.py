"""What a simulated accelerator is: its rates, capacities, overheads and the configuration its
published results were submitted with (``DeviceProfile``); the built-in ones are in
``builtin.py``, TOML files are read and written by ``profiles.py``."""

from __future__ import annotations

from dataclasses import dataclass, field

from backends.simaccel.submitted import Submission, check_submission, sparse_floor
from harness.errors import UserError

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
