"""Which runs a submission takes. ``build`` asks of every run it is given, and ``submission run``
of each run as soon as it ends, so that a run the tree would refuse stops the series at once."""

from __future__ import annotations

from harness.errors import UserError
from harness.workloads import get_workload
from submissions.runs import RunRecord

TIMED_ROLES = ("performance", "TEST01", "TEST04")  # runs whose times are results


def admit(record: RunRecord, closed: bool) -> list[str]:
    """Raise UserError, saying why and what to change, for a run the division refuses; return
    what the official checker will reject in one it takes."""
    problems = []
    if record.role == "performance" and not record.valid:
        why = "; ".join(record.result.get("invalid_reasons", [])) or "INVALID"
        if closed and not record.closed_usable:
            raise UserError(
                f"{record.folder} is INVALID ({why}); the closed division takes valid "
                "performance runs only"
            )
        problems.append(f"{record.scenario}: the performance run is INVALID ({why})")
    report = record.result.get("backend_report") or {}
    if record.role in TIMED_ROLES and report.get("host_bound"):
        device = report.get("simulated_device", "the simulated device")
        raise UserError(
            f"{record.folder} is HOST-BOUND: its responses left {report['late_s']:.3g} s after "
            f"their modelled times (device busy {report['busy_s']:.3g} s), so the host, not "
            f"{device}, set its numbers; a submission takes only runs the device model timed. "
            "Run it again with --functional off (a performance run needs no outputs) or on a "
            "faster host"
        )
    calibration = record.calibration
    if closed and calibration and calibration.list is None and not record.synthetic:
        official = get_workload(record.model).official_calibration
        raise UserError(
            f"{record.folder}: {record.spec['backend']} was calibrated on "
            f"{calibration.describe()}; the closed division requires the official calibration "
            f"list: run again with --calibration-list FILE ({official} in mlcommons/inference)"
        )
    return problems
