"""Accuracy against weight density: one LoadGen accuracy run per density on the sparse-int4
backend beside an FP32 onnxruntime run, written as a markdown and a CSV table."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from harness.errors import UserError
from harness.runner import run
from harness.spec import RunSpec

MLPERF_FRACTION = 0.99  # the closed-division accuracy bar: 99% of FP32


@dataclass(frozen=True)
class Row:
    label: str
    density: float | None
    accuracy: float
    folder: Path
    synthetic: bool


def parse_densities(text: str) -> tuple[float, ...]:
    try:
        densities = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise UserError(f"--densities must be numbers separated by commas, not {text!r}") from exc
    if not densities or any(not 0 < d <= 1 for d in densities):
        raise UserError(f"every density must be in (0, 1]; got {text!r}")
    return densities


def measure(base: RunSpec, densities: Sequence[float], options: dict) -> list[Row]:
    """The FP32 reference row, then one row per density (same samples, accuracy mode)."""
    reference = replace(
        base, mode="accuracy", backend="onnxruntime", backend_options={"precision": "fp32"}
    )
    rows = [_row("onnxruntime fp32", None, reference)]
    for density in densities:
        spec = replace(
            base,
            mode="accuracy",
            backend="sparse-int4",
            backend_options={**options, "density": density},
        )
        rows.append(_row(f"sparse-int4 {density:g}", density, spec))
    return rows


def _row(label: str, density: float | None, spec: RunSpec) -> Row:
    outcome = run(spec)
    accuracy = float(outcome.result["accuracy"]["value"])
    return Row(label, density, accuracy, outcome.folder, bool(outcome.result["synthetic_data"]))


def write_tables(rows: list[Row], out: Path, title: str) -> tuple[Path, Path]:
    """table.md and table.csv in ``out``; accuracy relative to the FP32 row."""
    out.mkdir(parents=True, exist_ok=True)
    fp32 = rows[0].accuracy
    header = ["backend", "density", "accuracy", "% of FP32", f"meets {MLPERF_FRACTION:.0%}"]
    body = [
        [
            row.label,
            "fp32" if row.density is None else f"{row.density:g}",
            f"{row.accuracy:.3f}",
            f"{100 * row.accuracy / fp32:.2f}" if fp32 else "n/a",
            "yes" if fp32 and row.accuracy >= MLPERF_FRACTION * fp32 else "no",
        ]
        for row in rows
    ]
    note = (
        "Synthetic data: accuracy is agreement with the FP32 model's own predictions."
        if any(row.synthetic for row in rows)
        else "Official data."
    )
    lines = [f"# {title}", "", note, "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "---|" * len(header))
    lines.extend("| " + " | ".join(cells) + " |" for cells in body)
    lines.append("")
    lines.append("Pruning is magnitude pruning without retraining; run folders:")
    lines.extend(f"- {row.label}: `{row.folder}`" for row in rows)
    markdown = out / "table.md"
    markdown.write_text("\n".join(lines) + "\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*header, "run_folder"])
    writer.writerows([*cells, str(row.folder)] for cells, row in zip(body, rows, strict=True))
    table = out / "table.csv"
    table.write_text(buffer.getvalue())
    return markdown, table
