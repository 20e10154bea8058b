"""Comparison report speed (issue: compare): summary.md and report.html of a large matrix must
take well under 5 s.

Makes N rows as a compare of two models over many backends would (every scenario plus an
accuracy run per backend, some INVALID, some failed, simulated devices with modelled energy),
then times the tables with their markdown, and write_report (tables, plots, page).

Run: python benchmarks/report.py [--rows 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.compare import tables
from harness.compare.html import write_report
from harness.compare.rows import SYNTHETIC_ACCURACY_TARGET, empty_row

MODELS = {"resnet50": ("Offline", "Server", "SingleStream", "MultiStream"),
          "bert-large": ("Offline", "Server", "SingleStream")}  # fmt: skip
UNITS = {"Offline": "samples/s", "Server": "queries/s"}
BASELINE = "onnxruntime:fp32"


PROVENANCE = {"synthetic_data": True, "host_cpu": "AMD EPYC 7B13", "git_sha": "0123abc",
              "versions": "onnxruntime 1.18.0; numpy 1.26.4"}  # fmt: skip


def backend_names(count: int) -> list[str]:
    """Dense baselines, then sparse densities and simulated devices: ``count`` names."""
    names = [BASELINE, "onnxruntime:int8"]
    for k in range(2, count):
        names += [f"sparse-int4:{1 / k:.4g}", f"simaccel:moffett-s30:density={1 / k:.4g}"]
    return names[:count]


def make_rows(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """Each backend: every scenario of each model, then its accuracy run; every 17th result
    INVALID, every 23rd cell failed."""
    rng = random.Random(seed)
    cells = [(b, m, s) for b in backend_names(count) for m in MODELS for s in (*MODELS[m], None)]
    rows = []
    for number, (backend, model, scenario) in enumerate(cells[:count]):
        row = empty_row(**PROVENANCE, model=model, backend=backend, status="complete",
                        scenario=scenario or "Offline",
                        mode="performance" if scenario else "accuracy")  # fmt: skip
        latency = rng.uniform(1, 200)
        if number % 23 == 22:
            row.update(status="failed", error="device lost")
        elif scenario is None:
            row.update(validity="VALID", accuracy=rng.uniform(97, 100),
                       accuracy_target=SYNTHETIC_ACCURACY_TARGET)  # fmt: skip
        else:
            row.update(
                value=rng.uniform(10, 10_000) if scenario in UNITS else latency,
                units=UNITS.get(scenario, "ms"),
                validity="INVALID" if number % 17 == 16 else "VALID",
                p50_ms=latency * 0.8,
                p90_ms=latency,
                p99_ms=latency * 1.3,
            )
            if backend.startswith("simaccel"):
                row["modelled_samples_per_joule"] = rng.uniform(5, 500)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rows = make_rows(args.rows)
    markdown_s, html_s = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            start = time.perf_counter()
            summary = "\n".join(map(tables.markdown, tables.all_tables(rows, BASELINE)))
            markdown_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            size = write_report(rows, Path(tmp), BASELINE).stat().st_size
            html_s.append(time.perf_counter() - start)
    print(
        f"{len(rows)} rows: tables + markdown median {statistics.median(markdown_s):.3f} s "
        f"({len(summary) / 1e3:.0f} kB); write_report median {statistics.median(html_s):.3f} s "
        f"({size / 1e3:.0f} kB; runs {', '.join(f'{t:.3f}' for t in html_s)}), target < 5 s"
    )


if __name__ == "__main__":
    main()
