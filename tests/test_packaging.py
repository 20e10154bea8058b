"""What an installed sparseperf carries (the compiled kernel, the report's template, the kernel's
C sources), what the wheel check finds missing, and what the build says on a machine without a
C compiler or Python's headers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib.metadata import distributions
from pathlib import Path

import pytest
from setuptools import Distribution, Extension
from setuptools.errors import PlatformError

import harness
from backends.sparse_int4 import _kernel
from backends.sparse_int4._build import BuildKernel
from tests.check_wheel import KERNEL_SOURCE, TEMPLATE, missing, wheel_problems

REPO = Path(__file__).resolve().parents[1]
BUILD_FILES = ("pyproject.toml", "README.md")  # with the packages, all a wheel is built from
PACKAGES = ("harness", "backends", "scenarios", "submissions")
HEADER = "backends/sparse_int4/_a.h"
NESTED = "backends/sparse_int4/_b.h"


def test_the_installed_package_carries_the_kernel_and_its_files() -> None:
    root = Path(str(harness.__file__)).resolve().parents[1]
    if (root / "pyproject.toml").is_file():
        pytest.skip(f"sparseperf runs from its source tree {root}; wheels are tested installed")
    installed = list(distributions(name="sparseperf", path=[str(root)]))
    assert len(installed) == 1, (
        f"harness is imported from {root}, where sparseperf is not installed"
    )
    names = {str(name) for name in installed[0].files or () if (root / name).is_file()}
    assert missing(names, lambda name: (root / name).read_text(), compiled=True) == []
    kernel = Path(str(_kernel.__file__)).resolve()  # the compiled kernel that runs is installed
    assert kernel.is_relative_to(root) and kernel.relative_to(root).as_posix() in names


def test_the_check_names_each_file_a_distribution_lacks() -> None:
    files = {
        KERNEL_SOURCE: '#include <Python.h>\n#include "_a.h"\n  #  include "_a.h"\n',
        HEADER: '#include "_b.h"\n',
    }
    assert missing(files.keys(), files.__getitem__, compiled=True) == [
        TEMPLATE,
        "backends/sparse_int4/_kernel.cpython-*.so (the compiled kernel)",
        NESTED,
    ]
    files |= {NESTED: "", TEMPLATE: "", "backends/sparse_int4/_kernel.cpython-313-x86_64.so": ""}
    assert missing(files.keys(), files.__getitem__, compiled=True) == []
    del files[HEADER]
    assert missing(files.keys(), files.__getitem__, compiled=False) == [HEADER]


@pytest.mark.parametrize(
    ("compiler", "headers", "says"),
    [
        ("/nowhere/cc", True, "no C compiler (/nowhere/cc not found). Install one (Debian/Ubuntu: "
         "apt-get install gcc; Fedora/RHEL: dnf install gcc), or install a prebuilt wheel"),
        (sys.executable, False, "no Python headers (no Python.h in {tmp}). Install them "
         "(Debian/Ubuntu: apt-get install python3-dev; Fedora/RHEL: dnf install python3-devel)"),
    ],
)  # fmt: skip
def test_a_build_without_what_it_needs_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compiler: str, headers: bool, says: str
) -> None:
    monkeypatch.setenv("CC", compiler)  # sys.executable: a program that exists, never run
    (tmp_path / "k.c").write_text("")
    dist = Distribution(
        {
            "ext_modules": [Extension("k", [str(tmp_path / "k.c")])],
            "cmdclass": {"build_ext": BuildKernel},
        }
    )
    command = dist.get_command_obj("build_ext")
    command.build_lib = command.build_temp = str(tmp_path)
    command.ensure_finalized()
    if not headers:
        command.include_dirs = [str(tmp_path)]
    with pytest.raises(PlatformError) as raised:
        command.run()
    assert str(raised.value).startswith("cannot build sparseperf's sparse-int4 kernel: ")
    assert says.format(tmp=tmp_path) in str(raised.value)
    assert not list(tmp_path.glob("k*.so"))


@pytest.mark.heavy
def test_the_wheel_is_manylinux_and_runs_away_from_the_sources(tmp_path: Path) -> None:
    """The real build: a wheel of this tree, checked, installed into a folder of its own and
    imported from there (kernel, template) with the source tree nowhere on the path."""
    source = tmp_path / "source"  # what the build reads, without a kernel built before
    source.mkdir()
    for name in BUILD_FILES:
        shutil.copyfile(REPO / name, source / name)
    for package in PACKAGES:
        skip = shutil.ignore_patterns("__pycache__", "*.so")
        shutil.copytree(REPO / package, source / package, ignore=skip)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(source)]
    subprocess.run(build, check=True, capture_output=True)
    (wheel,) = tmp_path.glob("sparseperf-*.whl")
    assert wheel_problems(wheel) == []
    site = tmp_path / "site"
    install = [*pip, "install", "--no-deps", "--target", str(site), str(wheel)]
    subprocess.run(install, check=True, capture_output=True)
    probe = (
        "import sys, harness.compare.html as html; from pathlib import Path;"
        "from backends.sparse_int4 import kernel;"
        "html.write_report([], Path(sys.argv[1]), None);"
        "print(html.__file__, kernel._kernel.__file__, kernel.PATHS[-1])"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    html_file, kernel_file, slowest = done.stdout.split()
    assert Path(html_file).is_relative_to(site) and Path(kernel_file).is_relative_to(site)
    assert slowest == "portable"
    assert "sparseperf comparison" in (tmp_path / "report.html").read_text()
