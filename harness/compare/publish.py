"""Write a comparison's outputs (results.csv/json, summary.md, report.html), check it against a
baseline results.json, and read run folders back for ``sparseperf report``."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import runfolder
from harness.compare import tables
from harness.compare.rows import COLUMNS, read_row, write_rows
from harness.errors import UserError
from harness.files import read_json

STEP_SUMMARY = "GITHUB_STEP_SUMMARY"  # GitHub Actions' job summary file


class Regression(UserError):
    """A ratio against the baseline fell below the bar."""


def check_writable(out: Path) -> None:
    """Fail before any run starts when the output folder cannot be written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise UserError(f"cannot write to output folder {out}: {exc.strerror or exc}") from exc


def run_folders(paths: list[Path]) -> list[Path]:
    """Run folders as given, or the run folders inside a folder of runs (e.g. a compare's runs/):
    finished runs, and runs whose processes were killed (as failed); runs in progress are
    left out."""
    if not paths:
        raise UserError("no run folders given")
    folders: list[Path] = []
    for path in paths:
        children = []
        if path.is_dir() and not (path / "result.json").exists():
            children = sorted(p for p in path.iterdir() if _listed(p))
        folders += children or [path]
    return folders


def _listed(path: Path) -> bool:
    if not (path / "result.json").is_file():
        return False
    kind = runfolder.state(path)
    if kind == runfolder.ABANDONED:
        return True
    return kind != runfolder.RUNNING and not path.name.startswith(".")


@dataclass(frozen=True)
class Check:
    """Ratios of this comparison's performance cells to a baseline's."""

    table: tables.Table
    failures: tuple[str, ...]


CELL_KEY = ("model", "backend", "scenario")


def match_baseline(old: list[dict[str, Any]], cells: list[tuple[str, ...]], path: Path) -> None:
    """A baseline must have every performance cell of the matrix."""
    missing = [
        " ".join(cell)
        for cell in cells
        if not tables.find(old, mode="performance", **dict(zip(CELL_KEY, cell, strict=True)))
    ]
    if missing:
        raise UserError(
            f"baseline {path} does not match the matrix: it has no {', '.join(missing)}; "
            "make it from the same models, backends and scenarios"
        )


def check_baseline(rows: list[dict[str, Any]], baseline: Path, fail_below: float) -> Check:
    """Each performance cell's ratio to the same cell of ``baseline`` (a results.json); higher
    is better, and a cell that failed now counts as a regression."""
    old = read_baseline(baseline)
    cells = tables.performance_rows(rows)
    match_baseline(old, [tuple(str(r[k]) for k in CELL_KEY) for r in cells], baseline)
    body, failures = [], []
    for row in cells:
        before = tables.find(old, mode="performance", **{k: row[k] for k in CELL_KEY})
        ratio = tables.speedup(row, before)
        name = " ".join(str(row[k]) for k in CELL_KEY)
        verdict = "ok"
        if ratio is None or ratio < fail_below:
            verdict = tables.INVALID_MARK + "regressed"
            failures.append(f"{name}: {'not comparable' if ratio is None else f'{ratio:.2f}x'}")
        body.append((name, tables.cell(before), tables.cell(row),
                     tables.MISSING if ratio is None else f"{ratio:.2f}x", verdict))  # fmt: skip
    table = tables.Table(
        f"against baseline {baseline.name} (fail below {fail_below:g}x)",
        ("cell", "baseline", "now", "ratio", "verdict"),
        tuple(body),
    )
    return Check(table, tuple(failures))


def read_baseline(path: Path) -> list[dict[str, Any]]:
    rows = read_json(path, "baseline")
    if not isinstance(rows, list) or not all(
        isinstance(r, dict) and set(COLUMNS) <= set(r) for r in rows
    ):
        raise UserError(
            f"baseline {path} is not a sparseperf results.json (rows with {', '.join(CELL_KEY)}, "
            "...); give the results.json of an earlier compare"
        )
    return rows


def summary_markdown(
    rows: list[dict[str, Any]], baseline_backend: str | None, check: Check | None
) -> str:
    lines = ["## sparseperf comparison", ""]
    if any(r["synthetic_data"] for r in rows):
        lines.append("- Results from **synthetic data** (built-in model and data set); accuracy "
                     "is agreement with the FP32 reference.")  # fmt: skip
    if any(r["modelled_samples_per_joule"] is not None for r in rows):
        lines.append("- simaccel rows are **simulated** devices: modelled, not measured.")
    if any(r["host_bound"] for r in rows):
        lines.append(
            "- Cells marked **host-bound** show the host's speed, not the simulated device's "
            "(e.g. its functional model was slower; try functional=off)."
        )
    failed = sum(r["status"] != "complete" for r in rows)
    lines.append(f"- {len(rows)} cells, {failed} failed; invalid results are marked `X `.")
    lines.append("")
    sections = tables.all_tables(rows, baseline_backend)
    if check:
        sections.insert(0, check.table)
    return "\n".join(lines + [tables.markdown(t) for t in sections])


def publish(
    rows: list[dict[str, Any]],
    out: Path,
    baseline_backend: str | None,
    check: Check | None = None,
) -> list[Path]:
    """Write every output into ``out``; the summary also goes to the CI job summary."""
    from harness.compare.html import write_report

    check_writable(out)
    write_rows(rows, out)
    summary = summary_markdown(rows, baseline_backend, check)
    (out / "summary.md").write_text(summary)
    report = write_report(rows, out, baseline_backend, first=(check.table,) if check else ())
    if os.environ.get(STEP_SUMMARY):
        with open(os.environ[STEP_SUMMARY], "a") as f:
            f.write(summary + "\n")
    return [out / "results.csv", out / "results.json", out / "summary.md", report]


def read_rows(paths: list[Path]) -> list[dict[str, Any]]:
    return [read_row(folder) for folder in run_folders(paths)]
