"""The official MLCommons tools, read from a copy of mlcommons/inference that the user names in
$SPARSEPERF_INFERENCE (nothing of it is vendored); tests that need them are skipped without it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ENV = "SPARSEPERF_INFERENCE"
needs_copy = pytest.mark.skipif(
    not os.environ.get(ENV), reason=f"set {ENV} to a copy of mlcommons/inference"
)


def official_file(*candidates: str) -> Path:
    """The first of these paths (newer and older layouts) in the copy; skip if none is there."""
    root = Path(os.environ[ENV])
    for candidate in candidates:
        if (root / candidate).exists():
            return root / candidate
    pytest.skip(f"{ENV}={root} holds none of {', '.join(candidates)}")


def run_script(script: Path, *args: str, cwd: Path | None = None) -> str:
    """stdout of an official script (its failures are printed or end in sys.exit text)."""
    out = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd or script.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return out.stdout + out.stderr
