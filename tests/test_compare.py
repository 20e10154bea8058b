"""compare, report and tune from the CLI: matrices of ordinary runs, tables checked against the
run folders they came from, baselines, bad input, and Server tuning on a backend of known
capacity."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from harness.cli import main
from harness.compare.choices import parse_backend
from harness.compare.publish import summary_markdown
from harness.compare.rows import empty_row
from harness.compare.tables import cell
from harness.errors import UserError
from tests.conftest import SMALL_DATASET, run_cli

FAST = "tests.fakes:VettedBackend"
FAILING = "tests.fakes:FailingBackend"


@pytest.fixture(scope="module")
def compared(tmp_path_factory, builtin_model):
    """One small matrix: a working and a failing backend, Offline and SingleStream, with
    accuracy runs; the job summary file as GitHub Actions would give it."""
    out = tmp_path_factory.mktemp("compare") / "out"
    step_summary = out.parent / "step_summary.md"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))
        try:
            main(["compare", "--backends", f"{FAST},{FAILING}", "--scenarios",
                  "Offline,SingleStream", "--dataset-count", str(SMALL_DATASET),
                  "--out", str(out)])  # fmt: skip
            code = 0
        except SystemExit as exc:
            code = exc.code
    return out, code, step_summary


def test_backend_choices_have_one_spelling():
    assert parse_backend("onnxruntime:int8").options == {"precision": "int8"}
    assert parse_backend("sparse-int4:0.125").text == "sparse-int4:0.125"
    choice = parse_backend("simaccel:moffett-s30:density=0.0625")
    assert choice.options == {"device": "moffett-s30", "density": 0.0625}
    assert choice.text == "simaccel:moffett-s30:density=0.0625"
    for bad, message in [
        ("nope", "unknown backend 'nope'"),
        ("onnxruntime:fp32:int8", "must be key=value"),
        ("sparse-int4:2", "density must be in"),
        ("simaccel:warp-9", "unknown device"),
    ]:
        with pytest.raises(UserError, match=message):
            parse_backend(bad)


def test_cells_mark_invalid_failed_and_host_bound_results():
    row = empty_row(status="complete", value=96049.2, units="samples/s", validity="VALID")
    assert cell(row) == "9.605e+04 samples/s"
    assert cell({**row, "validity": "INVALID"}) == "X 9.605e+04 samples/s"
    assert cell({**row, "host_bound": True}) == "9.605e+04 samples/s (host-bound)"
    assert cell({**row, "status": "failed"}) == "failed"
    assert "host-bound" in summary_markdown([{**row, "host_bound": True}], None, None)


def test_summary_shows_markup_in_fields_as_text():
    """summary.md escapes what report.html escapes: a field's markup, pipes and line breaks
    stay text in their own cell."""
    error = "<img src=x onerror=alert(1)> **bold** `code` [link](u) a|b\nnext"
    row = empty_row(model="resnet50", backend="tests.fakes:Odd", scenario="Offline",
                    mode="performance", status="failed", synthetic_data=False,
                    modelled_samples_per_joule=None, host_bound=False, error=error)  # fmt: skip
    summary = summary_markdown([row], None, None)
    (line,) = [line for line in summary.splitlines() if "bold" in line]
    assert "<img" not in summary and "&lt;img src=x onerror=alert(1)&gt;" in line
    assert r"\*\*bold\*\* \`code\` \[link\](u) a\|b next |" in line


def test_compare_records_every_cell_and_goes_on_after_a_failure(compared):
    out, code, step_summary = compared
    assert code != 0  # a failed cell fails the command, after every output is written
    rows = json.loads((out / "results.json").read_text())
    with (out / "results.csv").open() as f:
        assert [r["backend"] for r in csv.DictReader(f)] == [r["backend"] for r in rows]
    cells = {(r["backend"], r["scenario"], r["mode"]): r for r in rows}
    assert set(cells) == {
        (backend, scenario, mode)
        for backend in (FAST, FAILING)
        for scenario, mode in (("Offline", "performance"), ("SingleStream", "performance"),
                               ("Offline", "accuracy"))
    }  # fmt: skip
    for (backend, _, _), row in cells.items():
        if backend == FAILING:
            assert row["status"] == "failed" and "device lost" in row["error"]
            assert row["run_folder"].endswith(".failed")
    for row in (r for r in rows if r["status"] == "complete"):
        # Every table value comes from the run folder it names.
        result = json.loads((Path(row["run_folder"]) / "result.json").read_text())
        run = json.loads((Path(row["run_folder"]) / "run.json").read_text())
        assert row["scenario"] == run["spec"]["scenario"] and row["synthetic_data"] is True
        if row["mode"] == "performance":
            assert row["value"] == result["value"] and row["units"] == result["units"]
            assert row["p99_ms"] == result["latency_ms"]["99.00"]
            assert row["validity"] == result["validity"]
        else:
            assert row["accuracy"] == result["accuracy"]["value"]
            assert row["accuracy_target"] == 99.0
    summary = (out / "summary.md").read_text()
    offline = cells[(FAST, "Offline", "performance")]
    assert f"| {FAST} | {offline['value']:.4g} samples/s |" in summary
    assert "synthetic data" in summary and "| failed |" in summary
    assert step_summary.read_text().strip() == summary.strip()
    assert (out / "report.html").stat().st_size > 1000


def test_report_renders_the_same_rows_from_run_folders(compared, tmp_path, capsys):
    out, _, _ = compared
    code, _, err = run_cli(["report", str(out / "runs"), "--out", str(tmp_path)], capsys)
    assert code != 0 and "cell(s) failed" in err  # the failed cells are still failed
    again = json.loads((tmp_path / "results.json").read_text())
    before = json.loads((out / "results.json").read_text())
    key = lambda r: (r["backend"], r["scenario"], r["mode"])  # noqa: E731
    assert sorted(again, key=key) == sorted(before, key=key)


def test_baseline_regression_fails_the_check(compared, tmp_path, capsys):
    out, _, _ = compared
    rows = json.loads((out / "results.json").read_text())
    for row in rows:
        if row["mode"] == "performance" and row["status"] == "complete":
            # Twice as fast before: throughput halved now; latency doubled now.
            row["value"] = row["value"] * (2 if row["units"] != "ms" else 0.5)
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps(rows))
    folders = [str(Path(r["run_folder"])) for r in rows if r["backend"] == FAST]
    code, _, err = run_cli(
        ["report", *folders, "--out", str(tmp_path / "o"), "--baseline", str(baseline),
         "--fail-below", "0.9"], capsys)  # fmt: skip
    assert code != 0 and "below 0.9x the baseline" in err
    summary = (tmp_path / "o" / "summary.md").read_text()
    assert re.search(r"\| resnet50 .*Offline \| .* \| 0\.50x \| X regressed \|", summary)
    # The same baseline passes against itself at a bar of 0.4.
    code, _, err = run_cli(
        ["report", *folders, "--out", str(tmp_path / "p"), "--baseline", str(baseline),
         "--fail-below", "0.4"], capsys)  # fmt: skip
    assert code == 0, err


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d.mkdir(), "not a finished run folder"),
        (lambda d: (d.mkdir(), (d / "result.json").write_text('{"status": "complete"}')),
         "its result.json has no format field"),
        (lambda d: (d.mkdir(), (d / "result.json").write_text('{"format": 2}')),
         "incomplete: result.json without run.json"),
    ],
)  # fmt: skip
def test_report_refuses_incomplete_and_old_folders(make, message, tmp_path, capsys):
    folder = tmp_path / "run"
    make(folder)
    code, _, err = run_cli(["report", str(folder), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_bad_matrix_and_outputs_fail_before_any_run(compared, tmp_path, capsys):
    out, _, _ = compared
    blocker = tmp_path / "file"
    blocker.write_text("[1, 2]")
    for args, message in [
        (["--backends", "onnxruntime:fp64"], "precision"),
        (["--backends", "warp-drive"], "unknown backend 'warp-drive'"),
        (["--scenarios", "Offline,Batch"], "unknown scenario 'Batch'"),
        (["--batch-size", "0"], "batch size must be at least 1"),
        (["--dataset-count", "-3"], "dataset count must be at least 1"),
        (["--out", str(blocker / "out")], "cannot write to output folder"),
        (["--baseline", str(blocker)], "is not a sparseperf results.json"),
        (["--backends", "tests.fakes:InstantBackend", "--baseline", str(out / "results.json")],
         "does not match the matrix"),
    ]:  # fmt: skip
        if "--out" not in args:
            args = [*args, "--out", str(tmp_path / "o")]
        code, _, err = run_cli(["compare", *args], capsys)
        assert code == 2 and message in err, err
        assert not (tmp_path / "o" / "runs").exists()


@pytest.mark.heavy  # ten LoadGen probes; the search itself runs by default on a fake prober
def test_tune_finds_the_server_capacity_of_a_fixed_time_backend(session_cache, tmp_path, capfd):
    """10 ms per query, one at a time: at most 100 queries/s. With a 1 s latency bound the
    highest VALID rate is close to that capacity, and the search takes at most 10 runs."""
    conf = tmp_path / "user.conf"
    conf.write_text("*.Server.target_latency = 1000\n")
    args = ["--backend", "tests.fakes:FixedTimeBackend", "-o", "service_ms=10", "--batch-size",
            "1", "--preset", "smoke", "--user-conf", str(conf), "--dataset-count",
            str(SMALL_DATASET), "--runs-dir", str(tmp_path / "runs")]  # fmt: skip
    store = session_cache / "tuned.json"
    try:
        code, out, err = run_cli(["tune", "--scenario", "Server", *args], capfd)
        assert code == 0, err
        tuned = re.search(r"target_qps = ([\d.]+)", out).group(1)
        assert 70 <= float(tuned) <= 110, out
        probes = [p for p in (tmp_path / "runs" / "tune").iterdir() if p.is_dir()]
        assert len(probes) <= 10
        # A later run uses the stored value and says so; tune without --retune does not search.
        code, _, err = run_cli(["run", "--scenario", "Server", *args], capfd)
        assert code == 0 and f"using stored target_qps = {tuned} (tuned" in err
        code, out, _ = run_cli(["tune", "--scenario", "Server", *args], capfd)
        assert code == 0 and "--retune searches again" in out
    finally:
        store.unlink(missing_ok=True)
