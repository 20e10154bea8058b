"""What this machine is, for run.json, tuned-value keys, benchmarks and the submission system
description: one reading, in one place. psutil gives the core counts, memory and clock on every
OS. The CPU's model name, sockets and caches have no psutil call: they come from Linux's own
files where those exist, else from the platform module (or stay unknown)."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import psutil

CPUINFO = Path("/proc/cpuinfo")
CACHES = Path("/sys/devices/system/cpu/cpu0/cache")
OS_RELEASE = Path("/etc/os-release")


@dataclass(frozen=True)
class Machine:
    cpu_model: str
    sockets: int
    cores_per_socket: int  # physical cores
    logical_cpus: int
    max_mhz: float | None  # None where the OS does not say
    caches: str  # per core, e.g. 'L1d 32K, L1i 32K, L2 512K, L3 32768K'; "" where unknown
    memory_gib: float
    operating_system: str  # e.g. 'Ubuntu 24.04 LTS, kernel 6.8.0'


@cache
def machine() -> Machine:
    """This machine, read once per process."""
    cpus = _cpuinfo()
    logical = psutil.cpu_count(logical=True) or 1
    sockets = len({cpu.get("physical id") for cpu in cpus}) or 1
    physical = psutil.cpu_count(logical=False) or logical
    try:  # some platforms and containers have no frequency to report
        frequency = psutil.cpu_freq()
    except (OSError, NotImplementedError):
        frequency = None
    mhz = (frequency.max or frequency.current) if frequency else 0.0
    return Machine(
        cpu_model=(cpus[0].get("model name") if cpus else "")
        or platform.processor()
        or platform.machine(),
        sockets=sockets,
        cores_per_socket=max(1, physical // sockets),
        logical_cpus=logical,
        max_mhz=mhz or None,
        caches=_caches(),
        memory_gib=round(psutil.virtual_memory().total / 2**30, 1),
        operating_system=_operating_system(),
    )


def _cpuinfo() -> list[dict[str, str]]:
    """One dict per logical CPU from /proc/cpuinfo (empty where it does not exist)."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return []
    cpus = []
    for block in text.strip().split("\n\n"):
        fields = (line.partition(":") for line in block.splitlines())
        cpus.append({key.strip(): value.strip() for key, _, value in fields})
    return cpus


def _caches() -> str:
    parts = []
    for index in sorted(CACHES.glob("index*")):
        try:
            level, kind, size = (
                (index / name).read_text().strip() for name in ("level", "type", "size")
            )
        except OSError:
            continue
        suffix = {"Data": "d", "Instruction": "i"}.get(kind, "")
        parts.append(f"L{level}{suffix} {size}")
    return ", ".join(parts)


def _operating_system() -> str:
    try:
        for line in OS_RELEASE.read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return f"{line.split('=', 1)[1].strip(chr(34))}, kernel {platform.release()}"
    except OSError:
        pass
    return platform.platform()
