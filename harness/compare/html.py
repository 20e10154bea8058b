"""report.html: one self-contained page (no script, no external resource) with the provenance of
the rows, every comparison table and inline SVG plots of throughput, latency, accuracy and
modelled energy."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader
from markupsafe import Markup

from harness.compare import svg, tables

THROUGHPUT_SCENARIOS = ("Offline", "Server")
PERCENTILES = (("p50", "p50_ms"), ("p90", "p90_ms"), ("p99", "p99_ms"))

_ENV = Environment(
    loader=PackageLoader("harness.compare", "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)


def write_report(
    rows: list[dict[str, Any]],
    out: Path,
    baseline: str | None,
    title: str = "sparseperf comparison",
    first: tuple[tables.Table, ...] = (),
) -> Path:
    """Write ``out/report.html`` from the same tables as summary.md (``first``, such as the
    baseline check, ahead of them); returns its path."""
    sections = [
        (heading, [Markup(svg.bar_chart(c, f"{key}{i}")) for i, c in enumerate(charts)])
        for key, heading, charts in (
            ("throughput", "Throughput per backend", throughput_charts(rows)),
            ("latency", "Latency percentiles", latency_charts(rows)),
            ("accuracy", "Accuracy against target", accuracy_charts(rows)),
            ("energy", "Modelled energy (simulated devices)", energy_charts(rows)),
        )
        if charts
    ]
    page = _ENV.get_template("report.html.j2").render(
        title=title,
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        git_shas=_distinct(rows, "git_sha"),
        host_cpus=_distinct(rows, "host_cpu"),
        versions=_distinct(rows, "versions"),
        synthetic=any(r["synthetic_data"] for r in rows),
        simulated=any(r["modelled_samples_per_joule"] is not None for r in rows),
        cells=len(rows),
        failed=sum(r["status"] != "complete" for r in rows),
        tables=[*first, *tables.all_tables(rows, baseline)],
        invalid_mark=tables.INVALID_MARK,
        sections=sections,
    )
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def throughput_charts(rows: list[dict[str, Any]]) -> list[svg.Chart]:
    """Per model, Offline samples/s and Server queries/s of each backend, as the tables show
    them (failed cells named, not drawn)."""
    perf = tables.performance_rows(rows)
    charts = []
    for model in tables.models(perf):
        for scenario in THROUGHPUT_SCENARIOS:
            cells = _cells(perf, model, scenario)
            units = next((r["units"] for r in cells if r["status"] == "complete"), "")
            groups = tuple(
                svg.Group(r["backend"], (svg.Bar(r["value"], tables.cell(r), _invalid(r)),))
                for r in cells
            )
            charts.append(
                svg.Chart(f"{model} {scenario}: throughput", units, "backend", (units,), groups)
            )
    return [c for c in charts if c.has_data()]


def latency_charts(rows: list[dict[str, Any]]) -> list[svg.Chart]:
    """Per model and scenario, the p50/p90/p99 latency of each backend that finished."""
    perf = tables.performance_rows(rows)
    charts = []
    for model in tables.models(perf):
        for scenario in tables.scenarios(perf):
            groups = tuple(
                svg.Group(
                    r["backend"],
                    tuple(_bar(r[key], ".4g", _invalid(r)) for _, key in PERCENTILES),
                )
                for r in _cells(perf, model, scenario)
                if r["status"] == "complete"
            )
            charts.append(
                svg.Chart(
                    f"{model} {scenario}: latency percentiles",
                    "latency (ms)",
                    "backend",
                    tuple(name for name, _ in PERCENTILES),
                    groups,
                )
            )
    return [c for c in charts if c.has_data()]


def accuracy_charts(rows: list[dict[str, Any]]) -> list[svg.Chart]:
    """Accuracy of each model and backend, its target drawn across the bar; below the target
    counts as invalid, as in the accuracy table."""
    groups = []
    for r in rows:
        if r["mode"] != "accuracy":
            continue
        name = f"{r['model']} / {r['backend']}"
        if r["status"] != "complete":
            groups.append(svg.Group(name, (svg.Bar(None, r["status"]),)))
            continue
        target = r["accuracy_target"]
        below = None not in (r["accuracy"], target) and r["accuracy"] < target
        groups.append(svg.Group(name, (_bar(r["accuracy"], ".3f", below),), marker=target))
    chart = svg.Chart("accuracy against target", "accuracy (%)", "model / backend",
                      ("accuracy",), tuple(groups))  # fmt: skip
    return [chart] if chart.has_data() else []


def energy_charts(rows: list[dict[str, Any]]) -> list[svg.Chart]:
    """Modelled samples per joule of the simulated devices, per scenario."""
    energy = [
        r for r in tables.performance_rows(rows) if r["modelled_samples_per_joule"] is not None
    ]
    names = tables.scenarios(energy)
    pairs = dict.fromkeys((r["model"], r["backend"]) for r in energy)
    groups = []
    for model, backend in pairs:
        bars = []
        for scenario in names:
            r = tables.find(energy, model=model, backend=backend, scenario=scenario)
            value = r["modelled_samples_per_joule"] if r else None
            bars.append(_bar(value, ".4g", r is not None and _invalid(r)))
        groups.append(svg.Group(f"{model} / {backend}", tuple(bars)))
    chart = svg.Chart("modelled energy efficiency", "samples/J (modelled)", "model / backend",
                      tuple(names), tuple(groups))  # fmt: skip
    return [chart] if chart.has_data() else []


def _cells(perf: list[dict[str, Any]], model: str, scenario: str) -> list[dict[str, Any]]:
    """The row of each backend that has one for ``model`` and ``scenario``, in backend order."""
    found = (
        tables.find(perf, model=model, backend=b, scenario=scenario) for b in tables.backends(perf)
    )
    return [r for r in found if r]


def _bar(value: float | None, spec: str, invalid: bool) -> svg.Bar:
    if value is None:
        return svg.Bar(None, tables.MISSING)
    text = format(value, spec)
    return svg.Bar(value, tables.INVALID_MARK + text if invalid else text, invalid)


def _invalid(row: dict[str, Any]) -> bool:
    """A finished result that is not VALID (the tables' "X " cells)."""
    return row["status"] == "complete" and row["validity"] != "VALID"


def _distinct(rows: list[dict[str, Any]], key: str) -> list[str]:
    return [str(v) for v in dict.fromkeys(r[key] for r in rows) if v]
