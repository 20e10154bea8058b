"""The timing and energy model of a device running a model, one batch at a time.

Per layer: time = max(MACs / (MACs per cycle x clock x efficiency x sparse speed-up),
bytes / memory bandwidth) + the profile's per-layer overhead. Weights stay on chip when the
whole model fits, else every batch reads them. Non-GEMM layers run on the vector unit. Each
batch adds the input transfer over the host link and a launch overhead. Every term is kept,
so that a prediction can be shown layer by layer.
"""

from __future__ import annotations

from dataclasses import dataclass

from backends.simaccel.profiles import DeviceProfile
from backends.simaccel.workload import LayerWork, ModelWork
from harness.errors import UserError

BYTES = {"int4": 0.5, "int8": 1.0, "fp16": 2.0, "bf16": 2.0}


@dataclass(frozen=True)
class Options:
    dtype: str = "int8"  # the device's compute type for weights and activations
    density: float | None = None  # weight density to model; None: the model's own zeros
    pattern: str = "unstructured"  # or N:M such as 2:4


@dataclass(frozen=True)
class LayerTime:
    name: str
    op: str
    dense_macs: int  # per batch
    effective_macs: int  # per batch, with pruned weights skipped
    bytes: int  # moved to or from memory per batch
    bound: str  # compute, memory or vector
    seconds: float
    joules: float


@dataclass(frozen=True)
class BatchTime:
    batch: int
    layers: tuple[LayerTime, ...]
    transfer_s: float  # inputs over the host link
    launch_s: float
    weights_on_chip: bool
    seconds: float
    joules: float


def sparse_speedup(profile: DeviceProfile, density: float, pattern: str) -> float:
    """What the device gains from a layer's weight density, limited to what it supports."""
    if density >= 1 or profile.sparsity == "none":
        return 1.0
    if profile.sparsity == "2:4":
        return min(2.0, profile.max_sparse_speedup) if pattern == "2:4" else 1.0
    ideal = min(1 / density, profile.max_sparse_speedup)
    return 1 + (ideal - 1) * profile.sparse_efficiency


def _density(layer: LayerWork, options: Options) -> float:
    if not layer.weights:
        return 1.0  # activation x activation products have nothing to prune
    if options.density is not None:
        return options.density
    return 1 - layer.weight_zeros / layer.weights


def batch_time(work: ModelWork, profile: DeviceProfile, batch: int, options: Options) -> BatchTime:
    if options.dtype not in profile.macs_per_cycle:
        raise UserError(
            f"{profile.name} has no {options.dtype} MACs; it computes in "
            f"{', '.join(profile.macs_per_cycle)}"
        )
    item = BYTES[options.dtype]
    peak = profile.peak_macs_per_s(options.dtype) * profile.efficiency
    weight_bytes = sum(layer.weights * item * _density(layer, options) for layer in work.layers)
    on_chip = weight_bytes <= profile.on_chip_memory_mb * 1e6
    bandwidth = profile.memory_bandwidth_gbs * 1e9
    overhead = profile.layer_overhead_us * 1e-6
    layers = []
    for layer in work.layers:
        activations = (layer.in_elements + layer.out_elements) * batch * item
        if layer.macs:
            density = _density(layer, options)
            weights = 0 if on_chip else layer.weights * item * density
            moved = activations + weights
            dense = layer.macs * batch
            compute = dense / (peak * sparse_speedup(profile, density, options.pattern))
            memory = moved / bandwidth
            bound = "compute" if compute >= memory else "memory"
            seconds = max(compute, memory) + overhead
            effective = round(dense * density)
        else:
            moved, dense, effective = activations, 0, 0
            vector = (
                (layer.in_elements + layer.out_elements) * batch / (profile.vector_gflops * 1e9)
            )
            memory = moved / bandwidth
            bound = "vector" if vector >= memory else "memory"
            seconds = max(vector, memory) + overhead
        joules = _energy(profile, seconds, effective, moved)
        layers.append(
            LayerTime(layer.name, layer.op, dense, effective, int(moved), bound, seconds, joules)
        )
    transfer = work.input_bytes * batch / (profile.host_link_gbs * 1e9)
    launch = profile.launch_overhead_us * 1e-6
    total = sum(layer.seconds for layer in layers) + transfer + launch
    if profile.energy_pj_per_mac is None:
        joules = profile.tdp_w * total  # busy for the whole batch
    else:
        joules = sum(layer.joules for layer in layers)
    return BatchTime(batch, tuple(layers), transfer, launch, on_chip, total, joules)


def _energy(profile: DeviceProfile, seconds: float, macs: int, moved: float) -> float:
    """Per-op and per-byte energies where the profile has them, else TDP x the layer's time."""
    if profile.energy_pj_per_mac is None:
        return profile.tdp_w * seconds
    per_byte = profile.energy_pj_per_byte or 0.0
    return (macs * profile.energy_pj_per_mac + moved * per_byte) * 1e-12
