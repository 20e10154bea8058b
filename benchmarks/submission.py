"""Time ``submission build`` and ``submission check`` on existing run folders.

    python benchmarks/submission.py --division open --system-file system.json RUN_FOLDER...

The tree goes to a temporary folder and is removed afterwards.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from submissions.build import BuildRequest, build
from submissions.check import check_tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--division", default="open", choices=("open", "closed"))
    parser.add_argument("--system-file", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "tree"
        request = BuildRequest(
            "Org", "bench", args.division, out, tuple(args.runs), args.system_file
        )
        start = time.perf_counter()
        report = build(request)
        built = time.perf_counter() - start
        start = time.perf_counter()
        problems, results = check_tree(out)
        checked = time.perf_counter() - start
    print(f"build: {built:.2f} s ({', '.join(report.scenarios)}; bar: under 10 s)")
    print(f"check: {checked:.2f} s ({results} result folders, {len(problems)} problems; bar: 5 s)")


if __name__ == "__main__":
    main()
