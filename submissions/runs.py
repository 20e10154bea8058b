"""Run folders as a submission sees them: which benchmark, scenario and role each one plays,
and which system it ran on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness import runfolder
from harness.calibration_list import Calibration
from harness.errors import UserError
from harness.files import read_json_object
from harness.results import read_detail_log
from harness.settings import COMPLIANT_PRESETS

LOG_FILES = ("mlperf_log_summary.txt", "mlperf_log_detail.txt")
# Further files a finished run holds, by role (compliance runs are audited performance runs).
ROLE_FILES = {
    "performance": (),
    "accuracy": ("mlperf_log_accuracy.json", "accuracy.txt"),
    "TEST01": ("mlperf_log_accuracy.json",),
    "TEST04": (),
}


@dataclass(frozen=True)
class RunRecord:
    folder: Path
    run: dict  # run.json
    result: dict  # result.json

    @property
    def spec(self) -> dict:
        return self.run["spec"]

    @property
    def model(self) -> str:
        return self.spec["model"]

    @property
    def model_label(self) -> str:
        """The model as run: its name, or a built-in pruned reference's (resnet50-d0.125-1x4)."""
        return (self.run.get("model") or {}).get("label") or self.model

    @property
    def model_note(self) -> str:
        """How the model was pruned ("" for a dense model)."""
        return (self.run.get("model") or {}).get("note") or ""

    @property
    def scenario(self) -> str:
        return self.spec["scenario"]

    @property
    def role(self) -> str:
        return self.spec.get("compliance") or self.spec["mode"]

    @property
    def compliant_preset(self) -> bool:
        return self.spec["preset"] in COMPLIANT_PRESETS

    @property
    def valid(self) -> bool:
        return self.result.get("validity") == "VALID"

    @property
    def preset_shortfall(self) -> bool:
        """INVALID only for want of the duration or query count a short preset cuts: the
        latency constraint itself was met."""
        if self.valid or self.compliant_preset:
            return False
        values, errors, _ = read_detail_log(self.folder / "mlperf_log_detail.txt")
        return not errors and values.get("result_perf_constraints_met") is not False

    @property
    def closed_usable(self) -> bool:
        """A performance run the closed division may take (a rehearsal's shortfalls aside)."""
        return self.valid or self.preset_shortfall

    @property
    def calibration(self) -> Calibration | None:
        """What the backend calibrated on (None: it did not calibrate)."""
        body = self.run.get("calibration")
        return Calibration(**body) if body else None

    @property
    def synthetic(self) -> bool:
        return bool(self.result.get("synthetic_data"))

    @property
    def system(self) -> dict:
        """What makes two runs the same system under test: host, backend and its options."""
        host = self.run["host"]
        cluster = self.run.get("cluster")  # a cluster run: how many nodes and replicas
        return {
            "cpu": host.get("cpu"),
            "cores": host.get("cores"),
            "memory_gib": host.get("memory_gib"),
            "backend": self.spec["backend"],
            "backend_options": self.spec.get("backend_options", {}),
            "framework": self.run["backend"].get("framework"),
            "cluster": cluster
            and {"nodes": cluster["nodes"], "replicas": len(cluster["replicas"])},
        }


def read_run(folder: Path) -> RunRecord:
    """A finished run folder; anything else is an error that says what is wrong with it."""
    if not folder.is_dir():
        raise UserError(f"run folder {folder} does not exist")
    kind = runfolder.state(folder)
    if kind != runfolder.PUBLISHED:
        why = {
            runfolder.RUNNING: "it is still in progress",
            runfolder.ABANDONED: runfolder.ABANDONED_REASON,
            runfolder.FAILED: "the run failed",
        }[kind]
        raise UserError(f"{folder} is not a complete run: {why}")
    for name in ("result.json", "run.json"):
        if not (folder / name).is_file():
            raise UserError(f"{folder} is not a complete run folder: {name} is missing")
    result = read_json_object(folder / "result.json", "run record")
    run = read_json_object(folder / "run.json", "run record")
    if result.get("status") != "complete":
        raise UserError(f"{folder} is not a complete run (status {result.get('status')!r})")
    needed = {"spec", "host", "backend", "division"}
    if not needed <= set(run) or "preset" not in run.get("spec", {}):
        raise UserError(
            f"{folder} was written by an older sparseperf without the records a submission "
            "needs; run it again"
        )
    record = RunRecord(folder, run, result)
    files = LOG_FILES + ROLE_FILES[record.role]
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise UserError(f"{folder} lacks {', '.join(missing)}; it is not a complete run")
    return record
