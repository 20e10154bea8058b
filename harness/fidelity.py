"""Fidelity of the simulated devices: published results, calibration on one, the rest held out.

A results file (TOML, ``[[result]]`` entries: device, model, scenario, role, value,
accelerators, source, and for power entries system_watts) names for each device one
calibration result, its own ResNet-50 Offline figure. The device's efficiency is fitted to
that alone; every held-out result is then predicted with the device's submitted configuration
and no other change, and compared.
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from backends.simaccel.device import DeviceProfile
from harness.calibrate import fit_efficiency
from harness.errors import UserError
from harness.files import read_text
from harness.predict import PredictRequest, mean_load, prepare

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, from PyPI
    import tomli as tomllib

ROLES = ("calibration", "held-out", "power")
REQUIRED = ("device", "model", "scenario", "role", "value", "accelerators", "source")
OPTIONAL = ("system_watts", "note")


@dataclass(frozen=True)
class Published:
    device: str
    model: str
    scenario: str
    role: str
    value: float  # the system's figure
    accelerators: int
    source: str
    system_watts: float | None = None
    note: str = ""

    @property
    def per_device(self) -> float:
        return self.value / self.accelerators


@dataclass(frozen=True)
class Row:
    published: Published
    predicted: float  # per device; samples/J for power entries
    measured: float  # per device; samples/J (of the whole system) for power entries
    configuration: tuple[str, ...]

    @property
    def error(self) -> float:
        return self.predicted / self.measured - 1


def load_results(path: Path) -> list[Published]:
    """The entries of a results file; a missing, unknown or bad value names the entry."""
    try:
        data = tomllib.loads(read_text(path, "results file"))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"results file {path} is not valid TOML: {exc}") from exc
    entries = data.get("result")
    if not isinstance(entries, list) or not entries:
        raise UserError(f"results file {path} holds no [[result]] entries")
    results = [_entry(path, n, raw) for n, raw in enumerate(entries, 1)]
    for device in {r.device for r in results}:
        calibrations = [r for r in results if r.device == device and r.role == "calibration"]
        if len(calibrations) != 1 or (calibrations[0].model, calibrations[0].scenario) != (
            "resnet50",
            "Offline",
        ):
            raise UserError(
                f"results file {path}: {device} needs exactly one calibration entry, its "
                "ResNet-50 Offline result"
            )
    return results


def _entry(path: Path, number: int, raw: object) -> Published:
    where = f"results file {path}, result {number}"
    if not isinstance(raw, dict):
        raise UserError(f"{where} must be a table")
    missing = [key for key in REQUIRED if key not in raw]
    if missing:
        raise UserError(f"{where}: missing {', '.join(missing)}")
    unknown = sorted(set(raw) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}")
    if raw["role"] not in ROLES:
        raise UserError(f"{where}: role must be one of {', '.join(ROLES)}, got {raw['role']!r}")
    for key in ("value", "accelerators", *(("system_watts",) if "system_watts" in raw else ())):
        number_ = raw[key]
        if isinstance(number_, bool) or not isinstance(number_, (int, float)) or number_ <= 0:
            raise UserError(f"{where}: {key} must be a positive number, got {number_!r}")
    if raw["role"] == "power" and "system_watts" not in raw:
        raise UserError(f"{where}: a power entry needs system_watts")
    if not isinstance(raw["accelerators"], int):
        raise UserError(f"{where}: accelerators must be a whole number")
    return Published(**raw)


def calibrated(device: str, results: list[Published]) -> tuple[DeviceProfile, Published]:
    """The built-in profile with its efficiency fitted to its calibration entry alone."""
    (point,) = [r for r in results if r.device == device and r.role == "calibration"]
    prediction = prepare(PredictRequest(model="resnet50", device=device))
    return fit_efficiency(prediction, point.per_device), point


def evaluate(results: list[Published]) -> list[Row]:
    """Calibration, held-out and power rows, device by device, in the file's order."""
    rows = []
    for device in dict.fromkeys(r.device for r in results):
        profile, _ = calibrated(device, results)
        for item in (r for r in results if r.device == device):
            request = PredictRequest(model=item.model, device=device, scenario=item.scenario)
            prediction = prepare(request).with_profile(profile)
            if item.role == "power":
                model = prediction.model()
                batch = model.batch(mean_load(prediction.batch_size, prediction.ratios))
                rows.append(
                    Row(
                        item,
                        batch.samples / batch.joules,
                        item.value / item.system_watts,  # type: ignore[operator]
                        prediction.configuration,
                    )
                )
                continue
            rows.append(
                Row(item, prediction.figure()[0], item.per_device, prediction.configuration)
            )
    return rows


def median_error(rows: list[Row]) -> float:
    """Median |error| of the held-out throughput rows."""
    return statistics.median(abs(r.error) for r in rows if r.published.role == "held-out")
