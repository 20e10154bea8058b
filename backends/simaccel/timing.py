"""The timing and energy model of a device running a model, one batch at a time.

Per GEMM layer: time = max(MACs / (MACs per cycle x clock x efficiency x sparse speed-up),
bytes / memory bandwidth) + the profile's per-layer overhead. Weights stay on chip when the
whole model fits, else every batch reads them; a layer's input and output activations for the
batch stay on chip when they fit beside the weights, else they go through memory.
Vector ops (activations, norms, softmax, residual adds) run on the vector unit at one operation
per element they write, fused into the GEMMs around them as accelerator compilers do: they take
vector time and move no extra memory.
Each batch adds a launch overhead on the device and sends its inputs over the host link
(float inputs in the device's compute type, token ids as they are).

A batch's load is its sample count, its total relative token count and the sum of the squared
relative token counts: per-token layers scale with the second, attention scores with the third,
so that a token model's work can follow each sample's real length or the padded one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from backends.simaccel.device import DeviceProfile
from backends.simaccel.workload import LayerWork, ModelWork
from harness.errors import UserError

BYTES = {"int4": 0.5, "int8": 1.0, "fp16": 2.0, "bf16": 2.0}
BOUNDS = ("compute", "memory", "vector")


@dataclass(frozen=True)
class Options:
    dtype: str = "int8"  # the device's compute type for weights and activations
    density: float | None = None  # weight density to model; None: the model's own zeros
    pattern: str = "unstructured"  # or N:M such as 2:4

    def __post_init__(self) -> None:
        if self.density is not None and not 0 < self.density <= 1:
            raise UserError(f"density must be in (0, 1], got {self.density}")


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
    samples: int
    transfer_s: float  # inputs over the host link
    launch_s: float
    weights_on_chip: bool
    device_s: float  # layers and launch: how long the device is busy
    joules: float

    @property
    def latency_s(self) -> float:
        """One batch on an idle device: its transfer, then its compute."""
        return self.transfer_s + self.device_s

    @property
    def interval_s(self) -> float:
        """Seconds per batch in a steady stream, transfers overlapping compute."""
        return max(self.transfer_s, self.device_s)


def token_load(ratios: Sequence[float]) -> np.ndarray:
    """A batch's load from each sample's tokens / L (all 1.0 for padded or image samples)."""
    r = np.asarray(ratios, dtype=np.float64)
    return np.array([len(r), r.sum(), (r * r).sum()])


def sparse_speedup(profile: DeviceProfile, density: float, pattern: str) -> float:
    """What the device gains from a layer's weight density, limited to what it supports."""
    if density >= 1 or profile.sparsity == "none":
        return 1.0
    if profile.sparsity == "2:4":
        return min(2.0, 1 / density, profile.max_sparse_speedup) if pattern == "2:4" else 1.0
    ideal = min(1 / density, profile.max_sparse_speedup)
    return 1 + (ideal - 1) * profile.sparse_efficiency


def density_warning(profile: DeviceProfile, options: Options) -> str:
    """Why the device gains less from the requested density than 1 / density ("" if it does
    not), saying what the timing uses instead."""
    density, pattern = options.density, options.pattern
    if density is None or density >= 1:
        return ""
    if profile.sparsity == "none":
        return f"{profile.name} cannot skip zero weights: timed as dense"
    if profile.sparsity == "2:4" and pattern != "2:4":
        return f"{profile.name} skips zeros only in the 2:4 pattern: {pattern} is timed as dense"
    floor = 1 / (2.0 if profile.sparsity == "2:4" else profile.max_sparse_speedup)
    if density < floor:
        return (
            f"{profile.name} exploits density down to {floor:g}: density {density:g} is "
            f"timed as {floor:g} (clamped)"
        )
    return ""


def _density(layer: LayerWork, options: Options) -> float:
    if not layer.weights:
        return 1.0  # activation x activation products have nothing to prune
    if options.density is not None:
        return options.density
    return 1 - layer.weight_zeros / layer.weights


class TimingModel:
    """One model on one device: per-layer coefficients computed once, evaluated per batch."""

    def __init__(self, work: ModelWork, profile: DeviceProfile, options: Options) -> None:
        profile.check_dtype(options.dtype)
        self.work, self.profile, self.options = work, profile, options
        item = BYTES[options.dtype]
        layers = work.layers
        self._power = np.array([layer.token_power for layer in layers], dtype=np.intp)
        gemm = np.array([layer.macs > 0 for layer in layers])
        macs = np.array([layer.macs for layer in layers], dtype=np.float64)
        density = np.array([_density(layer, options) for layer in layers])
        speedup = np.array([sparse_speedup(profile, d, options.pattern) for d in density])
        weights = np.array([layer.weights for layer in layers], dtype=np.float64) * item * density
        elements = np.array([layer.in_elements + layer.out_elements for layer in layers], float)
        self.weight_bytes = float(weights.sum())
        self.weights_on_chip = self.weight_bytes <= profile.on_chip_memory_mb * 1e6
        peak = profile.peak_macs_per_s(options.dtype) * profile.efficiency
        # Per padded sample, except _weights and _overhead, which are per batch.
        self._macs = macs
        self._effective = macs * density
        self._compute = macs / (peak * speedup)
        self._activations = np.where(gemm, elements * item, 0.0)
        self._weights = weights * (gemm & (not self.weights_on_chip))
        self._activation_room = profile.on_chip_memory_mb * 1e6 - (
            self.weight_bytes if self.weights_on_chip else 0.0
        )
        written = np.array([layer.out_elements for layer in layers], dtype=np.float64)
        self._vector = np.where(gemm, 0.0, written / (profile.vector_gflops * 1e9))
        self._overhead = np.where(gemm, profile.layer_overhead_us * 1e-6, 0.0)
        self._input_bytes = work.float_input_elements * item + work.other_input_bytes

    def _layers(self, load: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per layer: bytes moved, bound (index into BOUNDS), seconds, effective MACs, joules."""
        profile = self.profile
        scale = load[self._power]
        activations = self._activations * scale
        moved = np.where(activations > self._activation_room, activations, 0.0) + self._weights
        terms = np.stack(
            [
                self._compute * scale,
                moved / (profile.memory_bandwidth_gbs * 1e9),
                self._vector * scale,
            ]
        )
        seconds = terms.max(axis=0) + self._overhead
        effective = self._effective * scale
        if profile.energy_pj_per_mac is None:
            joules = profile.tdp_w * seconds  # busy for the layer's whole time
        else:
            per_byte = profile.energy_pj_per_byte or 0.0
            joules = (effective * profile.energy_pj_per_mac + moved * per_byte) * 1e-12
        return moved, terms.argmax(axis=0), seconds, effective, joules

    def batch(self, load: np.ndarray) -> BatchTime:
        """Time and energy of one batch of the given ``token_load``."""
        _, _, seconds, _, joules = self._layers(load)
        launch = self.profile.launch_overhead_us * 1e-6
        launch_energy = self.profile.tdp_w * launch if self.profile.energy_pj_per_mac is None else 0
        return BatchTime(
            samples=int(load[0]),
            transfer_s=self._input_bytes * float(load[1]) / (self.profile.host_link_gbs * 1e9),
            launch_s=launch,
            weights_on_chip=self.weights_on_chip,
            device_s=float(seconds.sum()) + launch,
            joules=float(joules.sum()) + launch_energy,
        )

    def layer_times(self, load: np.ndarray) -> list[LayerTime]:
        """The batch layer by layer, every term as ``predict`` shows it."""
        moved, bound, seconds, effective, joules = self._layers(load)
        scale = load[self._power]
        return [
            LayerTime(
                layer.name,
                layer.op,
                round(self._macs[i] * scale[i]),
                round(effective[i]),
                round(moved[i]),
                BOUNDS[bound[i]],
                float(seconds[i]),
                float(joules[i]),
            )
            for i, layer in enumerate(self.work.layers)
        ]


class DeviceClock:
    """When batches finish on one device: its host link and its compute each work on one
    batch at a time, in the order batches arrive, so a transfer overlaps earlier compute."""

    def __init__(self) -> None:
        self.link_free = 0.0
        self.device_free = 0.0

    def finish(self, ready: float, batch: BatchTime) -> tuple[float, float]:
        """(start of compute, end of compute) of a batch whose inputs are ready at ``ready``."""
        self.link_free = max(ready, self.link_free) + batch.transfer_s
        start = max(self.link_free, self.device_free)
        self.device_free = start + batch.device_s
        return start, self.device_free
