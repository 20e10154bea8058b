"""Accuracy logs in a submission (accuracy.txt keeps the full log's hash): each log
is cut to its first and last 4096 characters, as the MLPerf truncation tool does."""

from __future__ import annotations

import shutil
from pathlib import Path

from harness.files import read_text

VIEWABLE_CHARS = 4096
MARKER = "\n\n...\n\n"


def write_truncated(source: Path, target: Path) -> None:
    text = read_text(source, "accuracy log")
    if len(text) <= 2 * VIEWABLE_CHARS + len(MARKER):
        shutil.copyfile(source, target)
    else:
        target.write_text(text[:VIEWABLE_CHARS] + MARKER + text[-VIEWABLE_CHARS:])
