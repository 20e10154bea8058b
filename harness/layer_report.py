"""Per-layer tables of a sparse-int4 model: what ``sparseperf inspect`` prints."""

from __future__ import annotations

import csv
import io

from backends.sparse_int4.steps import Layer

COLUMNS = (
    "layer", "op", "K", "N", "rows/sample", "density", "bits/weight", "clip", "clip/max",
    "SQNR dB", "dense MMAC", "effective MMAC", "weight KiB", "activation KiB",
)  # fmt: skip


def layer_rows(layers: list[Layer]) -> list[list[str]]:
    """One row of COLUMNS per layer, then a total row."""
    rows = []
    for layer in layers:
        s = layer.stats
        rows.append(
            [
                layer.node, layer.op, str(s.k), str(s.n), str(layer.rows_per_sample),
                f"{s.density:.4f}", f"{s.bits_per_weight:.2f}", s.clip, f"{s.clip_ratio:.3f}",
                f"{s.sqnr_db:.1f}", f"{layer.dense_macs / 1e6:.2f}",
                f"{layer.effective_macs / 1e6:.2f}", f"{layer.weight_bytes / 1024:.1f}",
                f"{layer.activation_bytes / 1024:.1f}",
            ]
        )  # fmt: skip
    weights = sum(s.stats.k * s.stats.n for s in layers)
    kept = sum(s.stats.density * s.stats.k * s.stats.n for s in layers)
    stored = sum(s.weight_bytes for s in layers)
    rows.append(
        [
            "total", "", "", "", "", f"{kept / max(weights, 1):.4f}",
            f"{8 * stored / max(weights, 1):.2f}", "", "", "",
            f"{sum(s.dense_macs for s in layers) / 1e6:.1f}",
            f"{sum(s.effective_macs for s in layers) / 1e6:.1f}", f"{stored / 1024:.1f}",
            f"{sum(s.activation_bytes for s in layers) / 1024:.1f}",
        ]
    )  # fmt: skip
    return rows


def summary(layers: list[Layer]) -> str:
    """Stored weight bytes against the same weights in int8 (one byte each, a float32 scale
    per output channel)."""
    stored = sum(layer.weight_bytes for layer in layers)
    int8 = sum(layer.stats.int8_bytes for layer in layers)
    return (
        f"{len(layers)} kernel layers; weights stored in {stored / 2**20:.2f} MiB = "
        f"{stored / int8:.3f} of int8 ({int8 / 2**20:.2f} MiB), scales and positions included"
    )


def render(rows: list[list[str]], fmt: str) -> str:
    if fmt == "csv":
        buffer = io.StringIO()
        csv.writer(buffer).writerows([list(COLUMNS), *rows])
        return buffer.getvalue()
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines) + "\n"
