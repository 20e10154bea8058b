"""A run never hangs and never outlives its command: the watchdog stops hung backends, SIGTERM
and SIGHUP end a run as Ctrl-C does, and a run whose processes were killed is recognised as
failed by report, submission build and the next run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.runfolder import ABANDONED_REASON
from harness.watchdog import FLOOR_S, HARNESS_S, limit
from tests.conftest import run_cli
from tests.test_bad_input import assert_one_line_error, no_complete_run

STARTED = "LoadGen Offline performance run started"
REPO = Path(__file__).resolve().parent.parent


def child_pids(pid: int) -> set[int]:
    """The processes whose parent is ``pid``, but multiprocessing's resource tracker (which
    lives as long as the process that started it)."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
            command = (entry / "cmdline").read_bytes() if stat else b""
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1]) if stat else None
        if parent == pid and b"resource_tracker" not in command:
            found.add(int(entry.name))
    return found


def gone(pids: set[int], within_s: float = 30.0) -> bool:
    """Whether every process in ``pids`` has ended: all its threads, since a killed process's
    main thread turns zombie while the others may still be exiting with its files (and locks)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not any(_runs(pid) for pid in pids):
            return True
        time.sleep(0.2)
    return False


def _runs(pid: int) -> bool:
    """Whether a thread of process ``pid`` is not yet a zombie."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False
    for task in tasks:
        try:
            state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            return True
    return False


def test_the_stall_limit_follows_the_slowest_batch():
    assert limit("backend", 0.0, 900)[0] == 900  # load(): the setting
    assert limit("batch", 0.0, 900)[0] == 900  # no batch timed yet
    assert limit("batch", 0.5, 900)[0] == 25  # 50 x the slowest batch
    assert limit("batch", 0.001, 900)[0] == FLOOR_S
    assert limit("batch", 60.0, 900)[0] == 900  # never above the setting
    assert limit("batch", 0.001, 2)[0] == 2
    assert limit("harness", 0.0, 2)[0] == HARNESS_S


@pytest.mark.parametrize(
    ("stall_in", "where"),
    [
        ("load", "in load()"),
        ("warm-up", "in predict() during the warm-up"),
        ("test", "in predict() during the LoadGen test"),
    ],
)
def test_a_hung_backend_is_stopped(stall_in, where, small_dataset, tmp_path, capsys):
    before = child_pids(os.getpid())
    runs = tmp_path / "runs"
    started = time.monotonic()
    code, _, err = run_cli(
        ["run", "--preset", "smoke", "--runs-dir", str(runs), "--dataset-path",
         str(small_dataset), "--backend", "tests.fakes:StallingBackend", "-o",
         f"stall_in={stall_in}", "--stall-timeout", "2"],
        capsys,
    )  # fmt: skip
    line = assert_one_line_error(code, err, f"backend StallingBackend {where}", "no progress")
    assert "--stall-timeout 2 s" in line and "run failed" in line
    assert time.monotonic() - started < 120  # seconds, not forever
    no_complete_run(runs)
    (failed,) = runs.iterdir()
    assert where in json.loads((failed / "result.json").read_text())["error"]
    assert gone(child_pids(os.getpid()) - before)


def start_run(tmp_path: Path, dataset: Path, **popen) -> subprocess.Popen:
    """``sparseperf run`` in its own process, long enough to be stopped while it runs."""
    conf = tmp_path / "long.conf"
    conf.write_text("*.*.min_duration = 600000\n")
    log = (tmp_path / "stderr.txt").open("w")
    args = ["run", "--preset", "smoke", "--dataset-path", str(dataset), "--backend",
            "tests.fakes:FixedTimeBackend", "-o", "service_ms=20", "--user-conf", str(conf),
            "--runs-dir", str(tmp_path / "runs")]  # fmt: skip
    # Ctrl-C's default, as from a terminal: a command started in the background by a
    # non-interactive shell (a CI script's `&`) inherits SIGINT ignored
    command = (
        "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from harness.cli import main; main()"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", command, *args],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=log,
        **popen,
    )
    deadline = time.monotonic() + 180
    while STARTED not in (tmp_path / "stderr.txt").read_text():
        assert process.poll() is None and time.monotonic() < deadline, stderr(tmp_path)
        time.sleep(0.2)
    return process


def stderr(tmp_path: Path) -> str:
    return (tmp_path / "stderr.txt").read_text()


@pytest.mark.parametrize(
    ("signum", "reason"),
    [
        (signal.SIGTERM, "stopped by SIGTERM"),
        (signal.SIGHUP, "stopped by SIGHUP"),
        (signal.SIGINT, "interrupted by the user"),
    ],
)
def test_a_signal_to_the_command_ends_its_run(signum, reason, small_dataset, tmp_path):
    process = start_run(tmp_path, small_dataset)
    run_process = child_pids(process.pid)
    assert run_process
    process.send_signal(signum)  # to the command only, as docker stop does
    assert process.wait(timeout=60) == 128 + signum
    err = stderr(tmp_path)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {reason}"] and "Traceback" not in err
    assert gone(run_process)
    runs = tmp_path / "runs"
    no_complete_run(runs)
    (failed,) = runs.iterdir()
    assert json.loads((failed / "result.json").read_text())["error"] == reason


def test_a_killed_run_is_failed_for_report_build_and_the_next_run(small_dataset, tmp_path, capsys):
    process = start_run(tmp_path, small_dataset, start_new_session=True)
    run_process = child_pids(process.pid)
    os.killpg(process.pid, signal.SIGKILL)  # the whole process group, no chance to clean up
    process.wait(timeout=60)
    assert gone(run_process)  # a killed process holds its run's lock until it has exited
    runs = tmp_path / "runs"
    (staging,) = runs.iterdir()
    assert staging.name.startswith(".") and staging.name.count(".partial-") == 1
    # As if the run process had gone on to write its result: still not a result.
    (staging / "result.json").write_text(json.dumps({"format": 2, "status": "complete"}))

    for target in (runs, staging):
        code, _, err = run_cli(["report", str(target), "--out", str(tmp_path / "r")], capsys)
        assert_one_line_error(code, err, "1 of 1 cell(s) failed")
        (row,) = json.loads((tmp_path / "r" / "results.json").read_text())
        assert row["status"] == "failed" and row["error"] == ABANDONED_REASON
        assert row["scenario"] == "Offline"  # the spec it recorded when it started

    system = tmp_path / "system.json"
    system.write_text('{"host_storage_type": "SSD", "host_memory_configuration": "1x", '
                      '"cooling": "air"}')  # fmt: skip
    code, _, err = run_cli(
        ["submission", "build", "--division", "open", "--submitter", "Org", "--system", "box",
         "--system-file", str(system), "--out", str(tmp_path / "tree"), str(staging)],
        capsys,
    )  # fmt: skip
    assert_one_line_error(code, err, "is not a complete run", ABANDONED_REASON)

    code, _, err = run_cli(
        ["run", "--preset", "smoke", "--backend", "tests.fakes:InstantBackend",
         "--dataset-path", str(small_dataset), "--runs-dir", str(runs)],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "an earlier run was killed before it finished" in err
    names = sorted(p.name for p in runs.iterdir())
    assert not [n for n in names if n.startswith(".")] and len(names) == 2
    (marked,) = [runs / n for n in names if n.endswith(".failed")]
    assert json.loads((marked / "result.json").read_text())["error"] == ABANDONED_REASON


def test_the_run_process_dies_with_the_command(small_dataset, tmp_path):
    process = start_run(tmp_path, small_dataset)
    run_process = child_pids(process.pid)
    process.kill()  # SIGKILL to the command alone
    process.wait(timeout=60)
    assert gone(run_process)
