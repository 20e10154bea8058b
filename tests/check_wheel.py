"""Check built sparseperf distributions: each holds what the package reads at run time (the
report's template; the kernel's C source with every header it includes, which submissions copy
into their src/; and in a wheel the compiled kernel), and `auditwheel show` gives each wheel a
manylinux tag. Prints each wheel's tag; exits 1 naming whatever is wrong.

    python tests/check_wheel.py dist/*.whl dist/*.tar.gz
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable, Collection
from pathlib import Path, PurePosixPath

KERNEL_SOURCE = "backends/sparse_int4/_kernel.c"
TEMPLATE = "harness/compare/templates/report.html.j2"
SDIST_FILES = ("pyproject.toml", "README.md")  # what a build from the sdist reads
COMPILED_KERNEL = re.compile(r"backends/sparse_int4/_kernel\.cpython-[^/]+\.so")
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)


def missing(names: Collection[str], read: Callable[[str], str], compiled: bool) -> list[str]:
    """What a distribution lacks, given its file names (relative to the packages' root) and a
    reader of its text files; ``compiled``: it must hold the compiled kernel too."""
    lacking = [name for name in (TEMPLATE, KERNEL_SOURCE) if name not in names]
    if compiled and not any(COMPILED_KERNEL.fullmatch(name) for name in names):
        lacking.append("backends/sparse_int4/_kernel.cpython-*.so (the compiled kernel)")
    pending, seen = [KERNEL_SOURCE], set()
    while pending:  # the headers the kernel includes, and those they include
        source = pending.pop()
        if source in seen or source not in names:
            continue
        seen.add(source)
        for header in INCLUDE.findall(read(source)):
            name = str(PurePosixPath(source).parent / header)
            if name not in names and name not in lacking:
                lacking.append(name)
            pending.append(name)
    return lacking


def wheel_problems(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as wheel:
        names = set(wheel.namelist())
        lacking = missing(names, lambda name: wheel.read(name).decode(), compiled=True)
    problems = [f"lacks {name}" for name in lacking]
    shown = subprocess.run(
        [sys.executable, "-m", "auditwheel", "show", "--json", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if shown.returncode != 0:
        return [*problems, f"auditwheel show failed: {shown.stderr.strip() or shown.stdout}"]
    tag = json.loads(shown.stdout)["overall_tag"]
    print(f"{path.name}: {tag}")
    if not tag.startswith("manylinux_"):
        problems.append(f"platform tag {tag} is not manylinux")
    return problems


def sdist_problems(path: Path) -> list[str]:
    top = path.name.removesuffix(".tar.gz")
    with tarfile.open(path) as sdist:
        members = {
            str(PurePosixPath(member.name).relative_to(top)): member
            for member in sdist.getmembers()
            if member.isfile()
        }

        def read(name: str) -> str:
            extracted = sdist.extractfile(members[name])
            assert extracted is not None  # members are regular files
            return extracted.read().decode()

        lacking = [name for name in SDIST_FILES if name not in members]
        lacking += missing(members.keys(), read, compiled=False)
    return [f"lacks {name}" for name in lacking]


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    failed = False
    for path in map(Path, argv):
        check = wheel_problems if path.suffix == ".whl" else sdist_problems
        for problem in check(path):
            print(f"{path.name}: {problem}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
