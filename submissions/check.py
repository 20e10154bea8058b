"""``sparseperf submission check``: the v6.1 rules a tree must meet, each problem with its path.

Beyond the official checker it refuses INVALID performance runs: that checker matches
"Result is: VALID" only loosely and lets them through.
"""

from __future__ import annotations

import re
from pathlib import Path

from harness.errors import UserError
from harness.files import UnreadableFile, read_json_object, read_text
from harness.results import read_detail_log
from submissions import compliance, rules
from submissions.build import ACCURACY_LOG
from submissions.runs import LOG_FILES
from submissions.system import (
    MEANINGFUL_FIELDS,
    NETWORK_FIELDS,
    REQUIRED_FIELDS,
    STATUSES,
    SYSTEM_TYPES,
)

MEASUREMENT_FIELDS = (
    "input_data_types",
    "retraining",
    "starting_weights_filename",
    "weight_data_types",
    "weight_transformations",
)
SCENARIO_FILES = ("measurements.json", "user.conf", "README.md")
EARLY_STOPPING = ("SingleStream", "MultiStream", "Server")
AUDIT_VALUES = {
    "TEST01": {
        "effective_accuracy_log_rng_seed": compliance.TEST01_LOG_SEED,
        "effective_accuracy_log_sampling_target": compliance.TEST01_SAMPLES,
    },
    "TEST04": {
        "effective_performance_issue_same": True,
        "effective_performance_issue_same_index": 3,
    },
}
# Detail-log values compared as numbers.
NUMERIC_VALUES = (
    "effective_min_duration_ms",
    "effective_performance_sample_count",
    "effective_samples_per_query",
    "effective_target_latency_ns",
)
_HASH = re.compile(r"^hash=[0-9a-f]{64}$")
_FOLDERS = {b.folder: b for b in rules.BENCHMARKS.values()} | {
    "resnet": rules.BENCHMARKS["resnet50"]
}


class TreeCheck:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.results = 0
        self.division = ""

    def problem(self, path: Path, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def files(self, folder: Path, names: tuple[str, ...]) -> bool:
        missing = [
            n for n in names if not (folder / n).is_file() or not (folder / n).stat().st_size
        ]
        for name in missing:
            self.problem(folder / name, "missing or empty")
        return not missing

    def json_object(self, path: Path) -> dict | None:
        try:
            return read_json_object(path, "JSON file")
        except UnreadableFile as exc:
            self.problem(path, f"unreadable JSON: it {exc.problem}")
            return None

    def lines(self, path: Path) -> list[str]:
        """The lines of a text file; an unreadable one is a problem (and has no lines)."""
        try:
            return read_text(path, "text file").splitlines()
        except UnreadableFile as exc:
            self.problem(path, f"unreadable: it {exc.problem}")
            return []

    def system(self, path: Path, division: str, submitter: str) -> dict | None:
        body = self.json_object(path)
        if body is None:
            return None
        for key in REQUIRED_FIELDS:
            if key not in body:
                self.problem(path, f"field {key} is missing")
            elif key in MEANINGFUL_FIELDS and not body[key]:
                self.problem(path, f"field {key} must not be empty")
        if str(body.get("status", "")).lower() not in STATUSES:
            self.problem(path, f"status {body.get('status')!r} is not one of {', '.join(STATUSES)}")
        if body.get("system_type") not in SYSTEM_TYPES:
            self.problem(
                path,
                f"system_type {body.get('system_type')!r} cannot carry ResNet-50 or BERT "
                f"under {rules.VERSION}; use {' or '.join(SYSTEM_TYPES[:2])}",
            )
        network = str(body.get("is_network", "")).lower() == "true"
        if division == "network":
            for key in NETWORK_FIELDS:
                if key not in body:
                    self.problem(path, f"field {key} is missing (the network division needs it)")
            if not network:
                self.problem(path, f'is_network is {body.get("is_network")!r}, not "true"')
        elif division == "closed" and network:
            self.problem(path, 'is_network is "true": a network SUT goes to the network division')
        for key, expected in (("division", division), ("submitter", submitter)):
            if str(body.get(key, "")).lower() != expected.lower():
                self.problem(
                    path, f"{key} {body.get(key)!r} does not match the folder {expected!r}"
                )
        return body

    def detail_log(self, folder: Path, scenario: str) -> dict | None:
        """Checks every LoadGen run shares: no errors, official seeds; returns the values."""
        path = folder / "mlperf_log_detail.txt"
        try:
            values, errors, _ = read_detail_log(path)
        except UserError as exc:
            self.problem(path, str(exc))
            return None
        for error in errors:
            self.problem(path, f"LoadGen logged an error: {error}")
        for key in NUMERIC_VALUES:
            value = values.get(key)
            if key in values and (isinstance(value, bool) or not isinstance(value, (int, float))):
                self.problem(path, f"{key} is {value!r}, not a number")
                del values[key]
        for name, seed in rules.SEEDS.items():
            if values.get(f"effective_{name}") != seed:
                self.problem(path, f"{name} is {values.get(f'effective_{name}')}, expected {seed}")
        if values.get("effective_scenario") not in (None, scenario):
            self.problem(
                path, f"scenario {values.get('effective_scenario')} in a {scenario} folder"
            )
        name = str(values.get("sut_name", ""))
        if self.division == "network" and rules.NETWORK_SUT_NAME not in name:
            self.problem(path, f"SUT name {name!r} lacks {rules.NETWORK_SUT_NAME!r}")
        return values

    def performance(
        self, folder: Path, bench: rules.Benchmark, scenario: str, closed: bool
    ) -> dict | None:
        if not self.files(folder, LOG_FILES):
            return None
        values = self.detail_log(folder, scenario)
        if values is None:
            return None
        path = folder / "mlperf_log_detail.txt"
        duration = values.get("effective_min_duration_ms", 0)
        if duration < rules.MIN_DURATION_MS:
            self.problem(
                path, f"min_duration is {duration} ms; the rules need {rules.MIN_DURATION_MS}"
            )
        count = values.get("effective_performance_sample_count", 0)
        if count < bench.performance_sample_count:
            self.problem(
                path,
                f"performance_sample_count is {count}; the rules need "
                f"{bench.performance_sample_count}",
            )
        samples = values.get("effective_samples_per_query", 0)
        if closed and scenario == "Offline" and samples < bench.offline_min_samples:
            self.problem(
                path,
                f"the Offline query has {samples} samples; the rules need "
                f"{bench.offline_min_samples}",
            )
        if scenario in EARLY_STOPPING and values.get("early_stopping_met") is False:
            self.problem(path, "early stopping not met")
        bound = bench.workload.server_latency_ms
        if scenario == "Server" and values.get("effective_target_latency_ns", 0) > bound * 1e6:
            self.problem(path, f"Server target latency is above the {bound:g} ms bound")
        if values.get("result_validity") != "VALID":
            self.problem(
                path,
                f"result is {values.get('result_validity')}: an INVALID run is not a result "
                "(the official checker does not catch this)",
            )
        return values

    def accuracy(self, folder: Path, bench: rules.Benchmark, scenario: str, closed: bool) -> None:
        if not self.files(folder, (*LOG_FILES, ACCURACY_LOG, "accuracy.txt")):
            return
        values = self.detail_log(folder, scenario)
        total = values.get("qsl_reported_total_count") if values else None
        if values is not None and total != bench.dataset_size:
            self.problem(
                folder / "mlperf_log_detail.txt",
                f"the accuracy run covers {total} samples; the dataset has {bench.dataset_size}",
            )
        log = folder / ACCURACY_LOG
        if log.stat().st_size > rules.TRUNCATED_LOG_MAX_BYTES:
            self.problem(log, f"not truncated ({log.stat().st_size} bytes)")
        lines = self.lines(folder / "accuracy.txt")
        if not any(_HASH.match(line) for line in lines):
            self.problem(folder / "accuracy.txt", "no hash=<sha256> line")
        value = bench.accuracy_in(lines)
        if value is None:
            self.problem(folder / "accuracy.txt", "no accuracy line in the official format")
        elif closed and value < bench.accuracy_target:
            self.problem(
                folder / "accuracy.txt",
                f"accuracy {value:g} is below the target {bench.accuracy_target:.4f}",
            )

    def passed(self, path: Path) -> bool:
        return path.is_file() and "TEST PASS" in (s.strip() for s in self.lines(path))

    def compliance_test(
        self, folder: Path, test: str, bench: rules.Benchmark, scenario: str
    ) -> None:
        if not folder.is_dir():
            self.problem(folder, f"missing: the {self.division} division needs {test}")
            return
        values = self.performance(folder / "performance" / "run_1", bench, scenario, True)
        for key, expected in AUDIT_VALUES[test].items():
            if values is not None and values.get(key) != expected:
                self.problem(
                    folder / "performance" / "run_1" / "mlperf_log_detail.txt",
                    f"{key} is {values.get(key)}, so {test}'s audit.config was not applied",
                )
        if not self.passed(folder / "verify_performance.txt"):
            self.problem(folder / "verify_performance.txt", "missing or no TEST PASS line")
        if test == "TEST01" and not self.passed(folder / "verify_accuracy.txt"):
            self.test01_accuracy_delta(folder, bench)

    def test01_accuracy_delta(self, folder: Path, bench: rules.Benchmark) -> None:
        """Responses differ: the accuracy of the logged ones must be within the allowed delta."""
        accuracy = folder / "accuracy"
        names = (ACCURACY_LOG, "accuracy.txt", "baseline_accuracy.txt", "compliance_accuracy.txt")
        if not self.files(accuracy, names):
            self.problem(folder / "verify_accuracy.txt", "no TEST PASS line, and no accuracy files")
            return
        baseline, measured = (
            bench.accuracy_in(self.lines(accuracy / name)) or 0.0 for name in names[2:]
        )
        verdict = compliance.verify_accuracy_delta(baseline, measured, bench.accuracy_delta_percent)
        if not verdict.passed:
            self.problem(
                accuracy, verdict.report.splitlines()[-2] + ": " + verdict.report.splitlines()[-1]
            )

    def scenario(self, folder: Path, bench: rules.Benchmark, closed: bool) -> None:
        self.results += 1
        scenario = folder.name
        self.files(folder, SCENARIO_FILES)
        measurements = (
            self.json_object(folder / "measurements.json")
            if (folder / "measurements.json").is_file()
            else None
        )
        for key in MEASUREMENT_FIELDS:
            if measurements is not None and not measurements.get(key):
                self.problem(folder / "measurements.json", f"field {key} is missing or empty")
        self.performance(folder / "performance" / "run_1", bench, scenario, closed)
        self.accuracy(folder / "accuracy", bench, scenario, closed)
        if closed:
            for test in compliance.tests_for(bench.loadgen_key):
                self.compliance_test(folder / test, test, bench, scenario)

    def submitter(self, root: Path, division: str) -> None:
        self.division = division
        closed = division in rules.STRICT_DIVISIONS  # the network division: closed rules too
        systems = root / "systems"
        if not (root / "src").is_dir():
            self.problem(root / "src", "missing (the source code folder must exist)")
        documented = (root / "calibration.md", root / "documentation" / "calibration.md")
        if closed and not any(path.is_file() for path in documented):
            self.problem(
                root / "calibration.md", "missing (the closed division documents calibration)"
            )
        results = root / "results"
        if not results.is_dir():
            self.problem(results, "missing")
            return
        for sut in sorted(p for p in results.iterdir() if p.is_dir()):
            system_file = systems / f"{sut.name}.json"
            system = None
            if not system_file.is_file():
                self.problem(
                    system_file, f"missing: results/{sut.name} needs its system description"
                )
            else:
                system = self.system(system_file, division, root.name)
            for model in sorted(p for p in sut.iterdir() if p.is_dir()):
                bench = _FOLDERS.get(model.name)
                if bench is None:
                    self.problem(model, f"unknown benchmark folder; use {', '.join(_FOLDERS)}")
                    continue
                scenarios = {p.name for p in model.iterdir() if p.is_dir()}
                allowed, where = set(bench.workload.scenarios), ""
                if closed and system is not None:
                    system_type = str(system.get("system_type", "edge"))
                    allowed = set(bench.required_scenarios(system_type))
                    where = f" on a {division} {system_type!r} system"
                    for missing in sorted(allowed - scenarios):
                        self.problem(model / missing, f"missing: the {division} division needs it")
                for unknown in sorted(scenarios - allowed):
                    self.problem(
                        model / unknown, f"{unknown} is not a {bench.folder} scenario{where}"
                    )
                    scenarios.discard(unknown)
                for scenario in sorted(scenarios):
                    self.scenario(model / scenario, bench, closed)


def check_tree(tree: Path) -> tuple[list[str], int]:
    """(problems, result folders checked) of a submission tree."""
    if not tree.is_dir():
        raise UserError(f"submission tree {tree} does not exist")
    check = TreeCheck()
    divisions = [p for p in tree.iterdir() if p.is_dir() and p.name in rules.DIVISIONS]
    if not divisions:
        raise UserError(
            f"{tree} holds no closed/, open/ or network/ folder: is it a submission tree?"
        )
    for division in divisions:
        for submitter in sorted(p for p in division.iterdir() if p.is_dir()):
            check.submitter(submitter, division.name)
    return check.problems, check.results
