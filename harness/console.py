"""What sparseperf tells the user as it works: one prefixed line on stderr, flushed at once (a
run's parent and its LoadGen child interleave their lines)."""

from __future__ import annotations

import sys


def say(message: str) -> None:
    print(f"[sparseperf] {message}", file=sys.stderr, flush=True)
