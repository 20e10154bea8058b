"""SIGTERM and SIGHUP (``docker stop``, service managers, a closed terminal) end a command the
way Ctrl-C does: as a KeyboardInterrupt, which a run answers by ending its run process and
marking its folder failed."""

from __future__ import annotations

import ctypes
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from types import FrameType

HANDLED = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """A KeyboardInterrupt raised for SIGTERM or SIGHUP."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


PR_SET_PDEATHSIG = 1


def parent_death_signal(signum: int) -> None:
    """Have the kernel send ``signum`` to this process when its parent dies (Linux; elsewhere
    nothing happens)."""
    with suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum)


def _raise(signum: int, _frame: FrameType | None) -> None:
    raise Terminated(signum)


@contextmanager
def handled() -> Iterator[None]:
    """SIGTERM and SIGHUP raise Terminated inside the block (main thread only)."""
    if not _main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _raise) for signum in HANDLED}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def sigint_ignored() -> Iterator[None]:
    """Ctrl-C is ignored inside the block; processes started here ignore it for good (the
    parent ends them), so that an interrupted run reports once, from the parent."""
    if not _main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def reason(exc: KeyboardInterrupt) -> str:
    """Why the command stopped, for the failed run's record."""
    if isinstance(exc, Terminated):
        return f"stopped by {signal.Signals(exc.signum).name}"
    return "interrupted by the user"


def exit_code(exc: KeyboardInterrupt) -> int:
    """The shell's convention: 128 + the signal's number."""
    return 128 + (exc.signum if isinstance(exc, Terminated) else signal.SIGINT)
