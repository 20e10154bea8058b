"""New dataset folders that appear only when complete."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.errors import UserError


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A hidden folder to fill, renamed to ``out`` when the block ends without error and
    removed otherwise; ``out`` must not exist (nothing is overwritten)."""
    if out.exists():
        raise UserError(f"{out} already exists; choose a new folder (nothing is overwritten)")
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        partial.mkdir()
    except OSError as exc:
        raise UserError(
            f"cannot make {out}: {exc.strerror or exc}; choose another folder"
        ) from None
    try:
        yield partial
        os.rename(partial, out)
    finally:
        if partial.exists():
            shutil.rmtree(partial)
