"""The comparison tables, built once from the rows and rendered as markdown (summary.md) and
HTML (report.html): metric per backend and scenario, speed-ups against a baseline, latency
percentiles, accuracy against its target, modelled energy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.settings import SCENARIO_NAMES

LATENCY_UNITS = "ms"  # SingleStream/MultiStream metrics: lower is better
INVALID_MARK = "X "
MISSING = "-"
HOST_BOUND = " (host-bound)"  # the host's speed, not the simulated device's


@dataclass(frozen=True)
class Table:
    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def performance_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["mode"] == "performance"]


def models(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["model"] for r in rows if r["model"]))


def backends(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["backend"] for r in rows if r["backend"]))


def scenarios(rows: list[dict[str, Any]]) -> list[str]:
    present = {r["scenario"] for r in rows}
    return [name for name in SCENARIO_NAMES if name in present]


def cell(row: dict[str, Any] | None) -> str:
    """A metric as a table shows it: invalid results prefixed "X ", failed runs "failed", and
    a simulated device the host could not keep up with marked host-bound."""
    if row is None:
        return MISSING
    if row["status"] == "failed":
        return "failed"
    text = f"{row['value']:.4g} {row['units']}"
    if row["host_bound"]:
        text += HOST_BOUND
    return text if row["validity"] == "VALID" else INVALID_MARK + text


def find(rows: list[dict[str, Any]], **where: Any) -> dict[str, Any] | None:
    """The last row matching ``where`` (a re-run replaces an earlier one)."""
    matches = [r for r in rows if all(r[k] == v for k, v in where.items())]
    return matches[-1] if matches else None


def speedup(row: dict[str, Any] | None, base: dict[str, Any] | None) -> float | None:
    """How many times better ``row`` is than ``base``: throughput / throughput, or
    latency inverted; None unless both finished."""
    if not row or not base or row["status"] != "complete" or base["status"] != "complete":
        return None
    if not row["value"] or not base["value"]:
        return None
    if row["units"] == LATENCY_UNITS:
        return base["value"] / row["value"]
    return row["value"] / base["value"]


def model_title(rows: list[dict[str, Any]], model: str) -> str:
    """The model's name, and how it was pruned when it was: every backend ran that model."""
    notes = [r["model_note"] for r in rows if r["model"] == model and r.get("model_note")]
    return f"{model} ({notes[-1]})" if notes else model


def metric_tables(rows: list[dict[str, Any]]) -> list[Table]:
    """Per model: the scenario metric of each backend."""
    perf = performance_rows(rows)
    names = scenarios(perf)
    return [
        Table(
            f"{model_title(rows, model)}: scenario metric",
            ("backend", *names),
            tuple(
                (
                    backend,
                    *(cell(find(perf, model=model, backend=backend, scenario=s)) for s in names),
                )
                for backend in backends(perf)
                if find(perf, model=model, backend=backend)
            ),
        )
        for model in models(perf)
    ]


def speedup_table(rows: list[dict[str, Any]], baseline: str) -> Table:
    """Each backend's speed-up over ``baseline`` per model and scenario (latency inverted)."""
    perf = performance_rows(rows)
    pairs = [
        (m, s) for m in models(perf) for s in scenarios(perf) if find(perf, model=m, scenario=s)
    ]
    body = []
    for backend in backends(perf):
        if backend == baseline:
            continue
        values = []
        for model, scenario in pairs:
            ratio = speedup(
                find(perf, model=model, backend=backend, scenario=scenario),
                find(perf, model=model, backend=baseline, scenario=scenario),
            )
            values.append(MISSING if ratio is None else f"{ratio:.2f}x")
        body.append((backend, *values))
    return Table(
        f"speed-up over {baseline}",
        ("backend", *(f"{m} {s}" for m, s in pairs)),
        tuple(body),
    )


def latency_table(rows: list[dict[str, Any]]) -> Table:
    body = tuple(
        (r["model"], r["backend"], r["scenario"],
         *(MISSING if r[k] is None else f"{r[k]:.4g}" for k in ("p50_ms", "p90_ms", "p99_ms")),
         r["validity"] or r["status"])
        for r in performance_rows(rows)
        if r["status"] == "complete"
    )  # fmt: skip
    return Table(
        "latency percentiles",
        ("model", "backend", "scenario", "p50 ms", "p90 ms", "p99 ms", "validity"),
        body,
    )


def accuracy_table(rows: list[dict[str, Any]]) -> Table:
    body = tuple(
        (r["model"], r["backend"], f"{r['accuracy']:.3f}", f"{r['accuracy_target']:.3f}",
         "meets" if r["accuracy"] >= r["accuracy_target"] else INVALID_MARK + "below")
        for r in rows
        if r["mode"] == "accuracy" and r["status"] == "complete" and r["accuracy"] is not None
    )  # fmt: skip
    return Table("accuracy", ("model", "backend", "accuracy %", "target %", "verdict"), body)


def energy_table(rows: list[dict[str, Any]]) -> Table:
    body = tuple(
        (r["model"], r["backend"], r["scenario"], f"{r['modelled_samples_per_joule']:.4g}")
        for r in performance_rows(rows)
        if r["modelled_samples_per_joule"] is not None
    )
    return Table(
        "modelled energy (simulated devices)",
        ("model", "backend", "scenario", "samples/J"),
        body,
    )


def failures_table(rows: list[dict[str, Any]]) -> Table:
    body = tuple(
        (r["model"] or MISSING, r["backend"] or MISSING, r["scenario"] or MISSING,
         r["mode"] or MISSING, r["error"] or r["invalid_reason"] or "")
        for r in rows
        if r["status"] != "complete" or (r["validity"] not in (None, "VALID"))
    )  # fmt: skip
    return Table("failed and invalid cells", ("model", "backend", "scenario", "mode", "why"), body)


def all_tables(rows: list[dict[str, Any]], baseline: str | None) -> list[Table]:
    """Every table with something in it, in report order."""
    tables = metric_tables(rows)
    if baseline:
        tables.append(speedup_table(rows, baseline))
    tables += [
        latency_table(rows),
        accuracy_table(rows),
        energy_table(rows),
        failures_table(rows),
    ]
    return [t for t in tables if t.rows]


# Markdown and HTML markup in a field (an error message, a backend name) is shown as text,
# as report.html's autoescaping shows it; a line break would end the table row.
_MARKDOWN_TEXT = str.maketrans(
    {**{c: "\\" + c for c in "\\`*_[]|~"}, "<": "&lt;", ">": "&gt;", "&": "&amp;"}
    | dict.fromkeys("\r\n", " ")
)


def markdown_text(text: str) -> str:
    """``text`` as literal markdown inline text."""
    return text.translate(_MARKDOWN_TEXT)


def markdown(table: Table) -> str:
    """A GitHub-flavoured markdown table under a heading, every field shown as text."""

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(markdown_text(c) for c in cells) + " |"

    return "\n".join(
        [f"### {markdown_text(table.title)}", "", line(table.headers),
         "|" + "|".join("---" for _ in table.headers) + "|", *map(line, table.rows), ""]
    )  # fmt: skip
