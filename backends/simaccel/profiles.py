"""Device profiles for the simulated accelerator by name: a built-in one (``builtin.py``), or a
user profile from a TOML file, validated field by field.

A profile states rates in the units of its field names (GHz, GB/s, MB, W, µs, pJ). In a TOML
file a value may also be a string with its unit ("1.76 GHz", "2 TB/s", "40 MiB"), converted
here; a unit of the wrong kind is an error.
"""

from __future__ import annotations

import re
import sys
from dataclasses import MISSING, asdict, fields
from pathlib import Path

import tomli_w

from backends.simaccel.builtin import BUILTIN
from backends.simaccel.device import DTYPES, SPARSITY_KINDS, DeviceProfile
from backends.simaccel.submitted import parse_submitted, submitted_table
from harness.errors import UserError
from harness.files import read_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, from PyPI
    import tomli as tomllib

# Unit strings accepted in TOML files, by the unit of the field they may fill.
_UNITS = {
    "GHz": {"Hz": 1e-9, "kHz": 1e-6, "MHz": 1e-3, "GHz": 1.0},
    "GB/s": {"MB/s": 1e-3, "GB/s": 1.0, "TB/s": 1e3, "MiB/s": 2**20 / 1e9, "GiB/s": 2**30 / 1e9},
    "MB": {
        "KB": 1e-3,
        "MB": 1.0,
        "GB": 1e3,
        "KiB": 2**10 / 1e6,
        "MiB": 2**20 / 1e6,
        "GiB": 2**30 / 1e6,
    },
    "GFLOP/s": {"GFLOP/s": 1.0, "TFLOP/s": 1e3, "GOP/s": 1.0, "TOP/s": 1e3},
    "W": {"mW": 1e-3, "W": 1.0, "kW": 1e3},
    "us": {"ns": 1e-3, "us": 1.0, "µs": 1.0, "ms": 1e3, "s": 1e6},
    "pJ": {"fJ": 1e-3, "pJ": 1.0, "nJ": 1e3},
}
_FIELD_UNITS = {
    "clock_ghz": "GHz",
    "memory_bandwidth_gbs": "GB/s",
    "host_link_gbs": "GB/s",
    "on_chip_memory_mb": "MB",
    "vector_gflops": "GFLOP/s",
    "tdp_w": "W",
    "layer_overhead_us": "us",
    "launch_overhead_us": "us",
    "energy_pj_per_mac": "pJ",
    "energy_pj_per_byte": "pJ",
}
_QUANTITY = re.compile(r"^\s*([0-9.eE+-]+)\s*([A-Za-zµ/]+)\s*$")
_REQUIRED = tuple(
    f.name for f in fields(DeviceProfile) if f.default is MISSING and f.default_factory is MISSING
)
_FRACTIONS = ("sparse_efficiency", "efficiency")


def get_profile(name: str) -> DeviceProfile:
    try:
        return BUILTIN[name]
    except KeyError:
        raise UserError(
            f"unknown device {name!r}; choose one of {', '.join(BUILTIN)} or give --device-file"
        ) from None


def resolve_profile(device: str | None, device_file: Path | str | None) -> DeviceProfile:
    """The profile a command names: a built-in device or a TOML file, exactly one of them."""
    if (device is None) == (device_file is None):
        raise UserError("give one of --device NAME or --device-file FILE")
    return load_profile_file(Path(device_file)) if device_file else get_profile(str(device))


def load_profile_file(path: Path) -> DeviceProfile:
    """A user profile from TOML: unknown keys, missing fields, bad units or values are errors
    that name the file and the field."""
    text = read_text(path, "device file")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"device file {path} is not valid TOML: {exc}") from exc
    known = {f.name for f in fields(DeviceProfile)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(
            f"device file {path}: unknown key(s) {', '.join(unknown)}; "
            f"known keys: {', '.join(sorted(known))}"
        )
    missing = [name for name in _REQUIRED if name not in data]
    if missing:
        raise UserError(f"device file {path}: missing field(s) {', '.join(missing)}")
    values = {key: _value(path, key, raw) for key, raw in data.items()}
    profile = DeviceProfile(**values)
    profile.check_submitted(f"device file {path}: ")
    return profile


def _value(path: Path, key: str, raw: object) -> object:
    where = f"device file {path}: {key}"
    if key in ("name", "description"):
        if not isinstance(raw, str) or not raw:
            raise UserError(f"{where} must be non-empty text")
        return raw
    if key == "calibrated_on":
        if not isinstance(raw, str):
            raise UserError(f"{where} must be text")
        return raw
    if key == "submitted":
        return parse_submitted(where, raw)
    if key == "references":
        if not isinstance(raw, list) or not all(isinstance(r, str) for r in raw):
            raise UserError(f"{where} must be a list of text")
        return tuple(raw)
    if key == "sparsity":
        if raw not in SPARSITY_KINDS:
            raise UserError(f"{where} must be one of {', '.join(SPARSITY_KINDS)}, got {raw!r}")
        return raw
    if key == "macs_per_cycle":
        if not isinstance(raw, dict) or not raw:
            raise UserError(f"{where} must be a table of dtype = MACs per cycle, e.g. int8 = 512")
        bad = sorted(set(raw) - set(DTYPES))
        if bad:
            raise UserError(f"{where}: unknown dtype(s) {', '.join(bad)}; use {', '.join(DTYPES)}")
        return {dtype: _positive(f"{where}.{dtype}", value) for dtype, value in raw.items()}
    number = _quantity(where, raw, _FIELD_UNITS.get(key))
    value = _positive(where, number)
    if key in _FRACTIONS and value > 1:
        raise UserError(f"{where} is a fraction of peak: in (0, 1], got {value}")
    if key == "max_sparse_speedup" and value < 1:
        raise UserError(f"{where} must be at least 1, got {value}")
    return value


def _quantity(where: str, raw: object, unit: str | None) -> object:
    """A number, or (for fields with a unit) a string such as "1.76 GHz" in that unit's kind."""
    if not isinstance(raw, str):
        return raw
    match = _QUANTITY.match(raw)
    if unit is None or match is None:
        raise UserError(f"{where} must be a number, got {raw!r}")
    number, given = match.groups()
    scale = _UNITS[unit].get(given)
    if scale is None:
        raise UserError(
            f"{where}: unit {given!r} is not a {unit} unit; use one of {', '.join(_UNITS[unit])}"
        )
    return float(number) * scale


def _positive(where: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{where} must be a number, got {value!r}")
    if not value > 0:
        raise UserError(f"{where} must be positive, got {value}")
    return float(value)


def write_profile_file(profile: DeviceProfile, path: Path) -> None:
    """Save a profile as TOML that ``load_profile_file`` reads back to the same profile."""
    body = {key: value for key, value in asdict(profile).items() if value is not None}
    body["references"] = list(profile.references)
    body["submitted"] = submitted_table(profile.submitted)
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text(tomli_w.dumps(body))
        partial.replace(path)
    except OSError as exc:
        raise UserError(f"cannot write device file {path}: {exc.strerror}") from exc
