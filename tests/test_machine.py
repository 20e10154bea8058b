"""The machine's description: read once, from psutil and the OS's files, with fallbacks where
the files do not exist (another OS, a container without /proc or /sys)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import pytest

from harness import machine as machine_module
from harness.machine import machine


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch):
    """machine() read again, and again after the test (its answer is cached per process)."""
    machine.cache_clear()
    yield monkeypatch
    machine.cache_clear()


def test_this_machine_is_described(fresh) -> None:
    found = machine()
    assert found.cpu_model and found.logical_cpus == os.cpu_count()
    assert found.sockets >= 1 and 1 <= found.cores_per_socket * found.sockets <= found.logical_cpus
    assert found.memory_gib > 0 and found.operating_system


def test_without_the_os_files_the_platform_module_answers(fresh, tmp_path: Path) -> None:
    for name in ("CPUINFO", "CACHES", "OS_RELEASE"):
        fresh.setattr(machine_module, name, tmp_path / "missing")
    found = machine()
    assert found.cpu_model == (platform.processor() or platform.machine())
    assert found.sockets == 1 and found.caches == ""
    assert found.operating_system == platform.platform()


def test_sockets_and_caches_come_from_the_os_files(fresh, tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    blocks = [f"processor\t: {i}\nmodel name\t: Test CPU 9000\nphysical id\t: {i % 2}\n"
              for i in range(8)]  # fmt: skip
    cpuinfo.write_text("\n".join(blocks))
    caches = tmp_path / "cache"
    for index, (level, kind, size) in enumerate([("1", "Data", "48K"), ("2", "Unified", "2048K")]):
        folder = caches / f"index{index}"
        folder.mkdir(parents=True)
        for name, text in (("level", level), ("type", kind), ("size", size)):
            (folder / name).write_text(text + "\n")
    fresh.setattr(machine_module, "CPUINFO", cpuinfo)
    fresh.setattr(machine_module, "CACHES", caches)
    fresh.setattr(machine_module.psutil, "cpu_count", lambda logical=True: 8 if logical else 4)
    found = machine()
    assert found.cpu_model == "Test CPU 9000"
    assert (found.sockets, found.cores_per_socket, found.logical_cpus) == (2, 2, 8)
    assert found.caches == "L1d 48K, L2 2048K"
