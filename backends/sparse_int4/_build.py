"""The kernel's build step (setuptools' build_ext, named in pyproject.toml): a machine without a
C compiler or without Python's headers gets one line saying what to install, instead of the
compiler's own error deep in pip's output. Imported by the build only."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools.command.build_ext import build_ext
from setuptools.errors import PlatformError

WHEELS = "or install a prebuilt wheel (Linux x86_64 or aarch64, Python 3.10-3.13)"


def missing_tools(compiler: str, include_dirs: list[str]) -> str | None:
    """What the kernel's build lacks and what to install; None when nothing."""
    if shutil.which(compiler) is None:
        return (
            f"no C compiler ({compiler} not found). Install one (Debian/Ubuntu: apt-get install "
            "gcc; Fedora/RHEL: dnf install gcc)"
        )
    if not any((Path(folder) / "Python.h").is_file() for folder in include_dirs):
        return (
            f"no Python headers (no Python.h in {', '.join(include_dirs)}). Install them "
            "(Debian/Ubuntu: apt-get install python3-dev; Fedora/RHEL: dnf install python3-devel)"
        )
    return None


class BuildKernel(build_ext):
    def build_extensions(self) -> None:
        # compiler_so: the command a unix compiler compiles with, program first
        problem = missing_tools(self.compiler.compiler_so[0], self.include_dirs)
        if problem:
            raise PlatformError(
                f"cannot build sparseperf's sparse-int4 kernel: {problem}, {WHEELS}."
            )
        super().build_extensions()
