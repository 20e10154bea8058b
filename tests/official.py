"""The official MLCommons tools, read from a copy of mlcommons/inference that the user names in
$SPARSEPERF_INFERENCE (nothing of it is vendored); tests that need them are skipped without it.
$SPARSEPERF_INFERENCE_PYTHON may name the interpreter that has the scripts' own dependencies
(accuracy-squad.py needs transformers, six and the BERT tokenization module)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ENV = "SPARSEPERF_INFERENCE"
MISSING_IMPORT = re.compile(r"ModuleNotFoundError: .*|Error importing local modules")
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


def run_script(script: Path, *args: str) -> str:
    """What an official script prints (its verdicts are printed or end in sys.exit text);
    skip if it cannot import its own dependencies."""
    python = os.environ.get(f"{ENV}_PYTHON") or sys.executable
    out = subprocess.run(
        [python, str(script), *args], cwd=script.parent, capture_output=True, text=True, timeout=300
    )
    missing = MISSING_IMPORT.search(out.stderr)
    if missing:
        pytest.skip(f"{script.name} cannot import its dependencies ({missing.group(0)})")
    return out.stdout + out.stderr
