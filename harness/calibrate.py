"""``sparseperf calibrate``: fit a profile's one efficiency factor to a measured result.

The prediction of every scenario moves monotonically with the efficiency (the share of peak
MAC throughput the device reaches), so the factor is found by bisection; a measurement the
model cannot reach at any efficiency in (0, 1] is refused with the reason.
"""

from __future__ import annotations

from dataclasses import replace

from backends.simaccel.device import DeviceProfile
from harness.errors import UserError
from harness.predict import Prediction

LOWEST = 1e-3  # efficiencies below 0.1% of peak are not a device, but a misread measurement
STEPS = 40
UNITS = {"Offline": "samples/s", "Server": "queries/s", "SingleStream": "ms", "MultiStream": "ms"}


def fit_efficiency(prediction: Prediction, measured: float) -> DeviceProfile:
    """The profile with the efficiency at which the prediction equals ``measured`` (in the
    scenario's unit: samples/s, queries/s, or ms per query)."""
    scenario = prediction.request.scenario
    if not measured > 0:
        raise UserError(f"the measured result must be positive, got {measured}")
    faster = scenario in ("Offline", "Server")  # a higher figure is a faster device
    target = measured if faster else measured / 1e3

    def figure(efficiency: float) -> float:
        return prediction.with_profile(replace(profile, efficiency=efficiency)).figure()[0]

    def too_slow(value: float) -> bool:
        return value < target if faster else value > target

    profile, unit = prediction.profile, UNITS[scenario]
    for efficiency, reach in ((1.0, "even at full efficiency"), (LOWEST, "at 0.1% efficiency")):
        value = figure(efficiency)
        if too_slow(value) == (efficiency == 1.0):
            shown = value if faster else value * 1e3
            raise UserError(
                f"{profile.name} cannot give {measured:g} {unit} on {prediction.request.model} "
                f"{scenario}: the model predicts {shown:.5g} {unit} {reach} (memory, vector "
                "work or overheads bound it); check the measurement, the profile's peaks and "
                "bandwidth, or the density"
            )
    low, high = LOWEST, 1.0
    for _ in range(STEPS):
        middle = (low * high) ** 0.5
        if too_slow(figure(middle)):
            low = middle
        else:
            high = middle
    return replace(profile, efficiency=round(high, 4))
