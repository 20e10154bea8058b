"""The run's watchdog: the run process says what it is busy with, the parent ends a run that
makes no progress for too long.

Both sides share a few numbers in memory that the run process writes and the parent reads:
how many watched calls are in flight, when the last one started or finished, what is being
waited for, the slowest batch so far, and the run process's one-line error (so that the parent
learns it even when the disk is full). A backend call may take ``stall_s`` until a batch has
been timed; after that a batch may take ``FACTOR`` times the slowest one seen (at least
``FLOOR_S``, at most ``stall_s``). The harness's own steps may take ``HARNESS_S``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.context import BaseContext

FACTOR = 50
FLOOR_S = 10.0
HARNESS_S = 300.0
DEFAULT_STALL_S = 900.0
KINDS = ("harness", "backend", "batch")  # what is in flight: each has its own limit
_BUSY, _SINCE, _KIND, _SLOWEST, _STALL = range(5)
_TEXT_BYTES = 400
_ERROR_BYTES = 4000


class Heartbeat:
    """Made by the parent before the run process starts, and handed to it."""

    def __init__(self, context: BaseContext, stall_s: float) -> None:
        self._numbers = context.RawArray("d", 5)
        self._what = context.RawArray("c", _TEXT_BYTES)
        self._error = context.RawArray("c", _ERROR_BYTES)
        self._numbers[_STALL] = stall_s
        self._lock = threading.Lock()
        # The run process is busy starting until it says otherwise.
        self._begin("the run process while starting", "harness", time.monotonic())

    def __getstate__(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # The run process's side.

    def started(self) -> None:
        """The run process is up: nothing is in flight until the next ``busy``."""
        with self._lock:
            self._numbers[_BUSY] = 0
            self._numbers[_SINCE] = time.monotonic()

    @contextmanager
    def busy(self, what: str, kind: str) -> Iterator[None]:
        """Watch a call: ``what`` names it in the parent's message ("backend X in load()");
        ``kind`` (one of KINDS) sets its limit."""
        start = time.monotonic()
        with self._lock:
            if self._numbers[_BUSY] <= 0:
                self._begin(what, kind, start)
            self._numbers[_BUSY] += 1
        try:
            yield
        finally:
            now = time.monotonic()
            with self._lock:
                self._numbers[_BUSY] -= 1
                self._numbers[_SINCE] = now
                if kind == "batch":
                    self._numbers[_SLOWEST] = max(self._numbers[_SLOWEST], now - start)

    def record_error(self, line: str) -> None:
        self._error.value = line.encode("utf-8", "replace")[: _ERROR_BYTES - 1]

    # The parent's side.

    def error(self) -> str:
        """The run process's one-line error, if it recorded one."""
        return self._error.value.decode("utf-8", "replace")

    def stalled(self) -> str | None:
        """Why the run is stuck, or None while it makes progress (or waits for LoadGen)."""
        busy, since, kind, slowest, stall_s = self._numbers[:]
        if busy <= 0:
            return None
        waited = time.monotonic() - since
        limit_s, why = limit(KINDS[int(kind)], slowest, stall_s)
        if waited <= limit_s:
            return None
        what = self._what.value.decode("utf-8", "replace")
        return f"{what} made no progress for {waited:.0f} s (limit: {why}); the run was stopped"

    def _begin(self, what: str, kind: str, when: float) -> None:
        self._what.value = what.encode("utf-8", "replace")[: _TEXT_BYTES - 1]
        self._numbers[_KIND] = KINDS.index(kind)
        self._numbers[_SINCE] = when


def limit(kind: str, slowest: float, stall_s: float) -> tuple[float, str]:
    """How long a call of this kind may go without progress, and how that was decided."""
    setting = f"--stall-timeout {stall_s:g} s"
    if kind == "harness":
        longest = max(HARNESS_S, stall_s)
        return longest, f"{longest:g} s for the harness's own steps"
    if kind == "backend" or slowest <= 0:
        return stall_s, f"{setting} before a batch is timed; raise it if the backend is only slow"
    derived = max(FLOOR_S, FACTOR * slowest)
    if derived >= stall_s:
        return stall_s, f"{setting}; raise it if the backend is only slow"
    return derived, f"{FACTOR} x the slowest batch so far ({slowest:.3g} s), at least {FLOOR_S:g} s"
