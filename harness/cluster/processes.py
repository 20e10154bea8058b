"""Process trees from /proc: a local cluster is one ``ray start --block`` process and what it
started, and it is stopped by those process ids only."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[0] != "Z":
                children.setdefault(stat[1], []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def command_line(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def wait_gone(pids: set[int], within_s: float) -> set[int]:
    """The processes still alive after ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    left = {pid for pid in pids if alive(pid)}
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = {pid for pid in left if alive(pid)}
    return left


def end_tree(pid: int, grace_s: float) -> None:
    """SIGTERM ``pid`` (which stops what it started), then SIGKILL whatever of its tree, as it
    was before the signal, is left after ``grace_s``."""
    tree = descendants(pid) | {pid}
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    for left in wait_gone(tree, grace_s):
        with contextlib.suppress(ProcessLookupError):
            os.kill(left, signal.SIGKILL)
    wait_gone(tree, grace_s)
