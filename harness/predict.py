"""``sparseperf predict``: the simulated accelerator's timing model without LoadGen."""

from __future__ import annotations

from backends.simaccel.profiles import DeviceProfile
from backends.simaccel.timing import BatchTime

# Samples per batch each scenario puts on the device by default.
SCENARIO_BATCH = {"Offline": 64, "SingleStream": 1, "MultiStream": 8}


def default_dtype(profile: DeviceProfile) -> str:
    """The narrowest integer type the device computes in."""
    for dtype in ("int4", "int8", "bf16", "fp16"):
        if dtype in profile.macs_per_cycle:
            return dtype
    return next(iter(profile.macs_per_cycle))


def render(timing: BatchTime, limit: int) -> str:
    """The ``limit`` slowest layers as a markdown table, in graph order."""
    slowest = sorted(timing.layers, key=lambda layer: layer.seconds, reverse=True)[:limit]
    shown = [layer for layer in timing.layers if layer in slowest]
    lines = [
        "| layer | op | dense MACs | effective MACs | bytes | bound | time (us) | energy (mJ) |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    lines += [
        f"| {layer.name} | {layer.op} | {layer.dense_macs:,} | {layer.effective_macs:,} | "
        f"{layer.bytes:,} | {layer.bound} | {layer.seconds * 1e6:.2f} | {layer.joules * 1e3:.4f} |"
        for layer in shown
    ]
    return "\n".join(lines) + "\n"


def totals(timing: BatchTime, scenario: str) -> list[str]:
    """Throughput, latency and energy of one batch, as the scenario reports them."""
    busy = {}
    for layer in timing.layers:
        busy[layer.bound] = busy.get(layer.bound, 0.0) + layer.seconds
    share = ", ".join(f"{bound} {100 * s / timing.seconds:.0f}%" for bound, s in busy.items())
    lines = [
        f"batch {timing.batch}: {timing.seconds * 1e3:.4g} ms ({share}; input transfer "
        f"{timing.transfer_s * 1e6:.1f} us, launch {timing.launch_s * 1e6:.1f} us)",
        f"weights {'stay on chip' if timing.weights_on_chip else 'are read every batch'}",
        f"energy: {timing.joules / timing.batch * 1e3:.4g} mJ per sample, "
        f"{timing.batch / timing.joules:.4g} samples/J",
    ]
    if scenario == "Offline":
        lines.append(f"Offline: {timing.batch / timing.seconds:.5g} samples/s")
    else:
        lines.append(f"{scenario}: {timing.seconds * 1e3:.4g} ms per query")
    return lines
