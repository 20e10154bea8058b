"""Files that cannot be used end in one line naming them: input files that are not UTF-8 or
are nested too deeply, run and cache folders that cannot be written, damaged cache entries."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.test_bad_input import assert_one_line_error, run_args

LATIN1 = "caf\xe9 = 1\n".encode("latin-1")  # not UTF-8
DEEP = b"[" * 100_000 + b"]" * 100_000  # valid JSON, deeper than Python's parser recurses
SYSTEM = {"host_storage_type": "SSD", "host_memory_configuration": "1x", "cooling": "air"}


def build_args(tmp_path: Path, system: Path, *extra: str) -> list[str]:
    return ["submission", "build", "--division", "open", "--submitter", "Org", "--system",
            "box", "--system-file", str(system), "--out", str(tmp_path / "tree"),
            *extra]  # fmt: skip


def test_user_conf_not_utf8(tmp_path, capsys):
    conf = tmp_path / "user.conf"
    conf.write_bytes(LATIN1)
    code, _, err = run_cli(run_args(tmp_path, "--user-conf", str(conf)), capsys)
    assert_one_line_error(code, err, "user.conf", "is not UTF-8 text", "save it as UTF-8")
    assert not (tmp_path / "runs").exists()


def test_val_map_not_utf8(small_dataset, tmp_path, capsys):
    copy = shutil.copytree(small_dataset, tmp_path / "copy")
    (copy / "val_map.txt").write_bytes(b"caf\xe9.JPEG 3\n")
    code, _, err = run_cli(run_args(tmp_path, "--dataset-path", str(copy)), capsys)
    assert_one_line_error(code, err, "val_map.txt", "is not UTF-8 text")


@pytest.mark.parametrize(("content", "needle"), [(LATIN1, "not UTF-8"), (DEEP, "too deeply")])
def test_system_file_unusable(content, needle, tmp_path, capsys):
    system = tmp_path / "system.json"
    system.write_bytes(content)
    code, _, err = run_cli(build_args(tmp_path, system, str(tmp_path)), capsys)
    assert_one_line_error(code, err, "system file", needle)


def test_run_list_not_utf8(tmp_path, capsys):
    system = tmp_path / "system.json"
    system.write_text(json.dumps(SYSTEM))
    runs = tmp_path / "runs.txt"
    runs.write_bytes(b"runs/r\xe9sultat\n")
    code, _, err = run_cli(build_args(tmp_path, system, "--from", str(runs)), capsys)
    assert_one_line_error(code, err, "run list", "not UTF-8")


def test_device_file_not_utf8(tmp_path, capsys):
    device = tmp_path / "device.toml"
    device.write_bytes(LATIN1)
    code, _, err = run_cli(["predict", "--device-file", str(device)], capsys)
    assert_one_line_error(code, err, "device file", "not UTF-8")


def test_submission_check_reports_unusable_files(tmp_path, capsys):
    root = tmp_path / "tree" / "open" / "Org"
    (root / "src").mkdir(parents=True)
    (root / "systems").mkdir()
    (root / "systems" / "box.json").write_bytes(LATIN1)
    scenario = root / "results" / "box" / "resnet50" / "Offline"
    (scenario / "accuracy").mkdir(parents=True)
    (scenario / "measurements.json").write_bytes(DEEP)
    (scenario / "accuracy" / "accuracy.txt").write_bytes(LATIN1)
    for name in ("mlperf_log_summary.txt", "mlperf_log_detail.txt", "mlperf_log_accuracy.json"):
        (scenario / "accuracy" / name).write_bytes(b':::MLLOG {"key": \xff}\n')
    code, out, err = run_cli(["submission", "check", str(tmp_path / "tree")], capsys)
    assert_one_line_error(code, err, "problem(s)")
    assert "box.json: unreadable JSON: it is not UTF-8 text" in out
    assert "measurements.json: unreadable JSON: it is nested too deeply" in out
    assert "accuracy.txt: unreadable: it is not UTF-8 text" in out
    assert "mlperf_log_detail.txt: LoadGen detail log" in out


@pytest.mark.parametrize(("content", "needle"), [(LATIN1, "not UTF-8"), (DEEP, "too deeply")])
def test_report_of_unusable_run_records(content, needle, tmp_path, capsys):
    folder = tmp_path / "runs" / "20260101T000000Z_resnet50_Offline_x_performance"
    folder.mkdir(parents=True)
    (folder / "result.json").write_bytes(content)
    code, _, err = run_cli(["report", str(folder), "--out", str(tmp_path / "out")], capsys)
    assert_one_line_error(code, err, "result.json", needle)
    baseline = tmp_path / "baseline.json"
    baseline.write_bytes(DEEP)
    code, _, err = run_cli(
        ["report", str(folder), "--out", str(tmp_path / "o"), "--baseline", str(baseline)], capsys
    )
    assert_one_line_error(code, err)


def test_run_folder_of_another_format_says_which(tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "result.json").write_text('{"format": "2", "status": "complete"}')
    code, _, err = run_cli(["report", str(folder), "--out", str(tmp_path / "out")], capsys)
    assert_one_line_error(code, err, "result.json has format '2'", "reads format 2 only")


def runs_dir_cases(tmp_path: Path) -> dict[str, Path]:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    # root writes to read-only folders anyway; sysfs refuses even root.
    return {"a file": a_file, "under a file": a_file / "runs",
            "read-only": read_only if os.geteuid() else Path("/sys/sparseperf-runs")}  # fmt: skip


@pytest.mark.parametrize("case", ["a file", "under a file", "read-only"])
def test_runs_dir_that_cannot_be_written(case, small_dataset, tmp_path, capsys):
    runs = runs_dir_cases(tmp_path)[case]
    code, _, err = run_cli(
        ["run", "--preset", "smoke", "--backend", "tests.fakes:InstantBackend",
         "--dataset-path", str(small_dataset), "--runs-dir", str(runs)],
        capsys,
    )  # fmt: skip
    assert_one_line_error(code, err, "cannot make a run folder in", "choose a writable --runs-dir")


def test_cache_folder_that_is_a_file(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    cache.write_text("")
    monkeypatch.setenv("SPARSEPERF_CACHE", str(cache))
    code, _, err = run_cli(run_args(tmp_path), capsys)
    assert_one_line_error(code, err, "cannot use cache folder", "SPARSEPERF_CACHE")


def test_damaged_cache_entries_are_made_again(
    small_dataset, builtin_model, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("SPARSEPERF_CACHE", str(tmp_path / "cache"))
    args = ["run", "--preset", "smoke", "--backend", "tests.fakes:InstantBackend",
            "--dataset-path", str(small_dataset), "--model-path", str(builtin_model),
            "--runs-dir", str(tmp_path / "runs")]  # fmt: skip
    assert run_cli(args, capsys)[0] == 0
    tuned = tmp_path / "cache" / "tuned.json"
    tuned.write_text('{"half')  # not a cache entry: state the user made, so not remade
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, "tuned-values file", "delete it and tune again")
    tuned.unlink()
    (crops,) = (tmp_path / "cache" / "preprocessed").glob("*.npy")
    crops.write_bytes(crops.read_bytes()[:100_000])  # truncated
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert f"cache entry {crops} is damaged" in err and "making it again" in err
