"""Run folders on disk: a run is written under a hidden staging name, published under its final
name only when its result is complete, and renamed ``<name>.failed`` otherwise.

The run's processes hold a lock on a file in the staging folder while they live, so that a
staging folder left behind by killed processes (``kill -9`` of the process group, a power cut)
is recognised as abandoned: readers take it for a failed run, never for a result, and the next
run in the same runs folder renames it ``<name>.failed``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.files import read_json_object, write_json
from harness.results import RUN_FORMAT

FAILED_SUFFIX = ".failed"
LOCK_FILE = ".running"
PUBLISHED, FAILED, RUNNING, ABANDONED = "published", "failed", "running", "abandoned"
ABANDONED_REASON = "the run's processes were killed before it finished"
_STAGING = re.compile(r"^\.(?P<name>.+)\.partial-(?P<pid>\d+)$")


def state(folder: Path) -> str:
    """PUBLISHED or FAILED (by the folder's name), or for a staging folder RUNNING while its
    processes live and ABANDONED after."""
    match = _STAGING.match(folder.name)
    if match is None:
        return FAILED if folder.name.endswith(FAILED_SUFFIX) else PUBLISHED
    return RUNNING if _held(folder, int(match["pid"])) else ABANDONED


def hold(folder: Path) -> int:
    """Take the run's shared lock on ``folder``; it lasts as long as the returned descriptor
    (or the process) does."""
    fd = os.open(folder / LOCK_FILE, os.O_RDONLY | os.O_CREAT, 0o644)
    # On a file system without locks, the staging folder's process id decides instead.
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def _held(folder: Path, pid: int) -> bool:
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return _alive(pid)  # made by an older sparseperf, or just being made
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return _alive(pid)
    finally:
        os.close(fd)  # also drops the lock just taken
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recorded_spec(folder: Path) -> dict[str, Any]:
    """The run's spec as its result.json or run.json recorded it ({} when neither can say)."""
    for name in ("result.json", "run.json"):
        try:
            spec = read_json_object(folder / name, "run record").get("spec")
        except UserError:
            continue
        if isinstance(spec, dict):
            return spec
    return {}


def write_record(folder: Path, spec: dict[str, Any], body: dict[str, Any]) -> None:
    """The harness's own result.json (running or failed) with the run's spec."""
    write_json(folder / "result.json", {"format": RUN_FORMAT, **body, "spec": spec})


class Staging:
    """The folder of a run in progress, held by this process."""

    def __init__(self, runs_dir: Path, name: str, spec: dict[str, Any]) -> None:
        self.name = name
        self.path = runs_dir / f".{name}.partial-{os.getpid()}"
        self.spec = spec
        try:
            runs_dir.mkdir(parents=True, exist_ok=True)
            self.path.mkdir()
            self._lock = hold(self.path)
        except OSError as exc:
            raise UserError(
                f"cannot make a run folder in {runs_dir}: {exc.strerror or exc}; choose a "
                "writable --runs-dir"
            ) from None
        try:
            self.write_result({"status": "running"})
        except UserError:
            os.close(self._lock)
            shutil.rmtree(self.path, ignore_errors=True)
            raise

    def write_result(self, body: dict[str, Any]) -> None:
        write_record(self.path, self.spec, body)

    def publish(self) -> Path:
        """Move the complete run to its final name."""
        return self._release(self.name)

    def fail(self, reason: str) -> Path:
        """Record why the run failed and move it to ``<name>.failed``. On a full disk the
        record may not fit: then result.json is removed, so that nothing there looks like a
        result."""
        try:
            self.write_result({"status": "failed", "error": reason})
        except UserError:
            (self.path / "result.json").unlink(missing_ok=True)
        return self._release(self.name + FAILED_SUFFIX)

    def _release(self, name: str) -> Path:
        (self.path / LOCK_FILE).unlink(missing_ok=True)
        try:
            return free_rename(self.path, name)
        finally:
            os.close(self._lock)


def free_rename(folder: Path, name: str) -> Path:
    """Rename ``folder`` to ``name`` in its parent, or ``name-2``, ``name-3``... when taken:
    an existing run is never replaced."""
    for attempt in range(1, 1000):
        target = folder.parent / (name if attempt == 1 else f"{name}-{attempt}")
        try:
            os.rename(folder, target)  # fails if target exists and is not empty
            return target
        except OSError as exc:
            if not target.exists():
                raise UserError(f"cannot rename {folder} to {target}: {exc.strerror}") from None
    raise UserError(f"cannot find a free run folder name for {name}")


def recover(runs_dir: Path, say: Callable[[str], None]) -> None:
    """Mark the abandoned staging folders in ``runs_dir`` failed."""
    try:
        folders = sorted(p for p in runs_dir.iterdir() if _STAGING.match(p.name))
    except OSError:
        return  # no runs folder yet (or an unreadable one, which making the run reports)
    for folder in folders:
        if state(folder) != ABANDONED:
            continue
        match = _STAGING.match(folder.name)
        assert match is not None
        body = {"status": "failed", "error": ABANDONED_REASON}
        try:
            write_record(folder, recorded_spec(folder), body)
            (folder / LOCK_FILE).unlink(missing_ok=True)
            target = free_rename(folder, match["name"] + FAILED_SUFFIX)
        except (UserError, OSError):
            continue  # another run got there first, or the folder cannot be changed
        say(f"an earlier run was killed before it finished: marked {target.name} failed")


def check_complete(folder: Path, mode: str) -> dict[str, Any]:
    """The run's result, if its run process left a complete one; else UserError why not."""
    if not (folder / "result.json").is_file():
        raise UserError("the run process ended without writing result.json")
    result = read_json_object(folder / "result.json", "result record")
    if result.get("status") != "complete" or result.get("format") != RUN_FORMAT:
        raise UserError(
            "the run process ended before its result was complete (result.json says status "
            f"{result.get('status')!r})"
        )
    needed = ("accuracy",) if mode == "accuracy" else ("metric", "value", "validity")
    missing = [key for key in needed if key not in result]
    if missing:
        raise UserError(f"the run's result.json lacks {', '.join(missing)}")
    if not (folder / "run.json").is_file():
        raise UserError("the run process ended without writing run.json")
    read_json_object(folder / "run.json", "run record")
    return result
