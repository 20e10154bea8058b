"""report.html in a real browser (Debian's chromium driven by Playwright): it renders without
errors, its tables hold the rows' values as the tables format them, every plot is drawn, and
text from the rows is escaped, not run."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from harness.compare import tables
from harness.compare.html import write_report
from harness.compare.rows import empty_row

CHROMIUM = Path("/usr/bin/chromium")
# Nothing may reach the network: no first-run, sync, update or QUIC traffic.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]  # fmt: skip
BASELINE = "onnxruntime:fp32"
INT8 = "onnxruntime:int8"
SIM = "simaccel:moffett-s30"
SCRIPT = "<script>alert(1)</script>"
COMMON = {"status": "complete", "synthetic_data": True, "host_cpu": "AMD EPYC 7B13",
          "versions": "onnxruntime 1.18.0; numpy 1.26.4", "git_sha": "0123abc"}  # fmt: skip


def perf(model: str, backend: str, scenario: str, value: float, **extra: Any) -> dict[str, Any]:
    units = {"Offline": "samples/s", "Server": "queries/s"}.get(scenario, "ms")
    p90 = value if units == "ms" else 8000 / value  # a batch of 8 at that throughput
    return empty_row(**{**COMMON, "model": model, "backend": backend, "scenario": scenario,
                        "mode": "performance", "value": value, "units": units,
                        "validity": "VALID", "p50_ms": 0.8 * p90, "p90_ms": p90,
                        "p99_ms": 1.3 * p90, **extra})  # fmt: skip


def accuracy(model: str, backend: str, value: float, target: float) -> dict[str, Any]:
    return empty_row(**{**COMMON, "model": model, "backend": backend, "scenario": "Offline",
                        "mode": "accuracy", "validity": "VALID", "accuracy": value,
                        "accuracy_target": target})  # fmt: skip


def make_rows() -> list[dict[str, Any]]:
    """Two models, a baseline, int8 and a simulated device; one INVALID and one failed cell,
    and an error text that would run as a script if it were not escaped."""
    return [
        perf("resnet50", BASELINE, "Offline", 412.5),
        perf("resnet50", BASELINE, "Server", 380.0),
        perf("resnet50", BASELINE, "SingleStream", 4.75),
        perf("resnet50", INT8, "Offline", 1234.4),
        perf("resnet50", INT8, "Server", 990.0, validity="INVALID", invalid_reason="p99 too high"),
        perf("resnet50", INT8, "SingleStream", 1.9),
        perf("resnet50", SIM, "Offline", 8800.0, modelled_samples_per_joule=152.0),
        perf("resnet50", SIM, "SingleStream", 0.31, modelled_samples_per_joule=96.5),
        perf("bert-large", BASELINE, "Offline", 11.2),
        perf("bert-large", BASELINE, "SingleStream", 190.0),
        empty_row(
            model="bert-large",
            backend=INT8,
            scenario="Offline",
            mode="performance",
            status="failed",
            error=f"device lost {SCRIPT}",
        ),
        perf("bert-large", SIM, "Offline", 540.0, modelled_samples_per_joule=12.25),
        accuracy("resnet50", BASELINE, 100.0, 99.0),
        accuracy("resnet50", INT8, 99.4, 99.0),
        accuracy("bert-large", BASELINE, 98.2, 99.0),
    ]


@pytest.fixture(scope="module")
def browser():
    """One headless chromium for the module."""
    if not CHROMIUM.is_file():  # fail, not skip: the report would go untested
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium); these "
            "tests drive it through Playwright and never download a browser"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, list[dict[str, Any]]]:
    rows = make_rows()
    return write_report(rows, tmp_path_factory.mktemp("report"), BASELINE), rows


def test_report_renders_in_a_browser(browser, report, tmp_path):
    path, rows = report
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    dialogs: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")

    assert page.title() == "sparseperf comparison"
    assert page.locator("h1").inner_text() == "sparseperf comparison"
    assert "Results from synthetic data" in page.inner_text(".banner")
    assert "Simulated devices" in page.inner_text(".note")
    assert "0123abc" in page.inner_text("header") and "AMD EPYC 7B13" in page.inner_text("header")

    # Every table, each cell as tables.cell formats it; invalid cells marked and red.
    expected = tables.all_tables(rows, BASELINE)
    assert page.locator("table").count() == len(expected)
    offline = tables.find(
        rows, model="resnet50", backend=INT8, scenario="Offline", mode="performance"
    )
    cells = page.locator("td").all_inner_texts()
    assert tables.cell(offline) == "1234 samples/s" and "1234 samples/s" in cells
    assert "X 990 queries/s" in cells and "failed" in cells
    invalid = page.locator("td.invalid").all_inner_texts()
    assert "X 990 queries/s" in invalid and all(c.startswith("X ") for c in invalid)
    red = page.locator("td.invalid").first.evaluate("e => getComputedStyle(e).color")
    assert red == "rgb(198, 40, 40)"
    assert page.locator("h2").all_inner_texts()[: len(expected)] == [t.title for t in expected]
    assert page.locator("table").first.locator("tbody tr").count() == len(expected[0].rows)

    # Plots: throughput (resnet50 Offline and Server, bert-large Offline), latency (resnet50 x3,
    # bert-large x2), accuracy, energy; each with a title, a label and a visible box.
    plots = page.locator("svg")
    assert plots.count() >= 10
    for i in range(plots.count()):
        plot = plots.nth(i)
        box = plot.bounding_box()
        assert box and box["width"] > 0 and box["height"] > 0
        assert plot.get_attribute("role") == "img" and plot.get_attribute("aria-label")
        assert plot.locator("title").count() > 0
    server = page.locator('svg[aria-label="resnet50 Server: throughput"]')
    assert server.locator("text", has_text="X 990 queries/s").count() == 1
    assert page.locator("svg", has_text="accuracy against target").count() == 1

    # The error string is shown as text, never run.
    assert SCRIPT in page.inner_text("body") and not dialogs
    assert page.evaluate("document.scripts.length") == 0
    assert not errors, errors

    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    page.close()


def test_report_of_200_rows(tmp_path):
    """Every one of 200 cells reaches the page (timing: benchmarks/report.py)."""
    cycle = zip(range(200), itertools.cycle(make_rows()))
    rows = [{**row, "backend": f"{row['backend']}-{i}"} for i, row in cycle]
    html = write_report(rows, tmp_path, BASELINE).read_text()
    assert all(f"{r['backend']}<" in html for r in rows)
    complete = [r for r in tables.performance_rows(rows) if r["status"] == "complete"]
    latency = next(t for t in tables.all_tables(rows, BASELINE) if t.title == "latency percentiles")
    assert len(latency.rows) == len(complete)
    assert html.count("<svg") >= 10 and "&lt;script&gt;" in html and SCRIPT not in html
