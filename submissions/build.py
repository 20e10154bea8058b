"""Assemble run folders into an MLPerf Inference v6.1 submission tree.

The tree is written under a hidden staging name and renamed into place when complete, so a
failed or interrupted build never leaves a tree that looks finished.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness import provenance
from harness.accuracy import hash_line, read_responses
from harness.errors import UserError
from harness.results import read_detail_log
from harness.spec import RunSpec
from harness.workloads import get_workload
from harness.workloads.base import WorkloadData
from submissions import compliance, rules
from submissions.accuracy_log import write_truncated
from submissions.admission import admit
from submissions.commands import run_command
from submissions.runs import LOG_FILES, RunRecord, read_run
from submissions.system import describe_system, read_user_file

ACCURACY_LOG = "mlperf_log_accuracy.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
SOURCE_PACKAGES = ("harness", "backends", "scenarios", "submissions")


@dataclass(frozen=True)
class BuildRequest:
    submitter: str
    system: str  # the system under test's name: systems/<system>.json, results/<system>/
    division: str
    out: Path
    runs: tuple[Path, ...]
    system_file: Path | None = None


@dataclass
class BuildReport:
    root: Path  # <out>/<division>/<submitter>
    scenarios: list[str]
    problems: list[str] = field(default_factory=list)  # what the official checker will reject


def _check_request(request: BuildRequest) -> dict[str, str]:
    for what, name in (("submitter", request.submitter), ("system", request.system)):
        if not _NAME.match(name):
            raise UserError(
                f"{what} name {name!r} must be letters, digits and . _ + - (it names folders)"
            )
    if request.division not in rules.DIVISIONS:
        raise UserError(
            f"unknown division {request.division!r}; choose {' or '.join(rules.DIVISIONS)}"
        )
    if request.out.exists():
        raise UserError(f"output folder {request.out} already exists; choose a new one")
    if not request.runs:
        raise UserError("no run folders given")
    return read_user_file(request.system_file) if request.system_file else {}


def _group(records: list[RunRecord]) -> dict[str, dict[str, RunRecord]]:
    """scenario -> role -> run; two runs in one role is an error."""
    models = sorted({f"{r.model_label} ({Path(r.run['model_file']).name})" for r in records})
    if len(models) > 1:
        raise UserError(
            f"the run folders hold runs of several models ({', '.join(models)}); "
            "build one tree per model"
        )
    systems: dict[str, RunRecord] = {}
    for record in records:
        systems.setdefault(json.dumps(record.system, sort_keys=True), record)
    if len(systems) > 1:
        first, second = list(systems.values())[:2]
        raise UserError(
            f"the run folders come from different systems: {first.folder} ran "
            f"{_system_text(first)}, {second.folder} ran {_system_text(second)}"
        )
    groups: dict[str, dict[str, RunRecord]] = {}
    for record in records:
        roles = groups.setdefault(record.scenario, {})
        if record.role in roles:
            raise UserError(
                f"two {record.scenario} {record.role} runs given: {roles[record.role].folder} "
                f"and {record.folder}; give one"
            )
        roles[record.role] = record
    return groups


def _system_text(record: RunRecord) -> str:
    system = record.system
    options = ", ".join(f"{k}={v}" for k, v in sorted(system["backend_options"].items()))
    return f"{system['backend']}({options}) on {system['cpu']} x{system['cores']}"


def _check_rules(
    request: BuildRequest,
    groups: dict[str, dict[str, RunRecord]],
    system_type: str,
    report: BuildReport,
) -> None:
    any_run = next(iter(next(iter(groups.values())).values()))
    bench = rules.benchmark(any_run.model)
    tests = compliance.tests_for(bench.loadgen_key)
    closed = request.division in rules.STRICT_DIVISIONS  # network: closed rules and more
    open_only = any_run.run["division"]["open_only"]
    if closed and open_only:
        raise UserError(
            f"{any_run.spec['backend']} results may only go to the open division: {open_only}"
        )
    required = bench.required_scenarios(system_type)
    missing = [s for s in required if s not in groups]
    if closed and missing:
        raise UserError(
            f"a {request.division} {bench.folder} submission on a {system_type!r} system needs the "
            f"{', '.join(missing)} scenario(s) too"
        )
    extra = sorted(s for s in groups if s not in required)
    if closed and extra:
        raise UserError(
            f"a {request.division} {bench.folder} submission on a {system_type!r} system takes "
            f"only {', '.join(required)}; leave out the {', '.join(extra)} run(s)"
        )
    for scenario, roles in sorted(groups.items()):
        for role in ("performance", "accuracy"):
            if role not in roles:
                raise UserError(
                    f"{bench.folder} {scenario} has no {role} run; run: sparseperf run "
                    f"--model {any_run.model} --scenario {scenario} --mode {role} ..."
                )
        for record in roles.values():
            report.problems += admit(record, closed)
        missing = [t for t in tests if t not in roles]
        if closed and missing:
            raise UserError(
                f"{bench.folder} {scenario} lacks compliance run(s) {', '.join(missing)}; run: "
                f"sparseperf run --compliance {missing[0]} ... (or sparseperf submission run)"
            )
        for record in roles.values():
            if not record.compliant_preset:
                report.problems.append(
                    f"{scenario} {record.role}: preset {record.spec['preset']} is shorter than "
                    "the official durations and counts"
                )
                break


def build(request: BuildRequest, say: Callable[[str], None] = lambda _: None) -> BuildReport:
    user_system = _check_request(request)
    records = [read_run(Path(folder)) for folder in request.runs]
    for record in records:
        problem = rules.division_problem(request.division, "cluster" in record.run)
        if problem:
            raise UserError(f"{record.folder}: {problem}")
    groups = _group(records)
    report = BuildReport(request.out / request.division / request.submitter, sorted(groups))
    any_run = records[0]
    system = describe_system(
        division=request.division,
        submitter=request.submitter,
        system_name=request.system,
        backend=any_run.run["backend"],
        user=user_system,
        simulated=bool(any_run.run["division"]["simulated"]),
        cluster=any_run.run.get("cluster"),
    )
    _check_rules(request, groups, system["system_type"], report)

    staging = request.out.parent / f".{request.out.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        request.out.parent.mkdir(parents=True, exist_ok=True)
        root = staging / request.division / request.submitter
        (root / "systems").mkdir(parents=True)
        _write_json(root / "systems" / f"{request.system}.json", system)
        (root / "calibration.md").write_text(_calibration_doc(groups))
        _write_sources(root / "src")
        bench = rules.benchmark(any_run.model)
        for scenario, roles in sorted(groups.items()):
            say(f"adding {bench.folder} {scenario}")
            folder = root / "results" / request.system / bench.folder / scenario
            _write_scenario(folder, roles, request, report)
        os.rename(staging, request.out)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):
            raise UserError(
                f"cannot write the submission tree {request.out}: {exc.strerror or exc}; "
                "choose a writable --out with free space"
            ) from None
        raise
    return report


def _write_json(path: Path, body: dict) -> None:
    path.write_text(json.dumps(body, indent=2) + "\n")


def _copy_logs(run: RunRecord, target: Path) -> None:
    target.mkdir(parents=True)
    for name in LOG_FILES:
        shutil.copyfile(run.folder / name, target / name)


def _write_sources(target: Path) -> None:
    """The harness source that produced the results (src/ must exist in a submission)."""
    target.mkdir()
    here = Path(__file__).resolve().parent.parent
    for package in SOURCE_PACKAGES:
        for path in sorted((here / package).rglob("*")):
            if path.suffix in (".py", ".c", ".h") and "__pycache__" not in path.parts:
                destination = target / "sparseperf" / path.relative_to(here)
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, destination)
    versions = provenance.versions()
    (target / "README.md").write_text(
        "# sparseperf\n\n"
        f"The harness that produced these results: sparseperf {versions['sparseperf']}, "
        f"git {provenance.git_sha()}; LoadGen {versions['mlcommons-loadgen']}. Its source "
        "is in `sparseperf/`.\n"
    )


def _measurements(run: RunRecord) -> dict[str, str]:
    workload = get_workload(run.model)
    backend = run.run["backend"]
    transformations = backend.get("weight_transformations", "")
    if run.model_note:  # the model's own pruning comes first, then what the backend did
        done = "" if transformations == "none" else f"; then {transformations}"
        transformations = f"model {run.model_note}{done}"
    return {
        "input_data_types": ", ".join(sorted({t.dtype for t in workload.inputs})),
        "retraining": "no",
        "starting_weights_filename": Path(run.run["model_file"]).name,
        "weight_data_types": backend.get("weight_data_types", ""),
        "weight_transformations": transformations,
        "calibration_list": _calibration_text(run),
    }


def _calibration_text(run: RunRecord) -> str:
    calibration = run.calibration
    return f"calibrated on {calibration.describe()}" if calibration else "not calibrated"


def _calibration_doc(groups: dict[str, dict[str, RunRecord]]) -> str:
    """calibration.md, which the rules ask of a submission: what each run calibrated on."""
    lines = ["# Calibration", ""]
    for scenario, roles in sorted(groups.items()):
        performance = roles["performance"]
        backend = performance.run["backend"]
        lines += [
            f"## {performance.model_label} {scenario}",
            "",
            f"{backend.get('backend')} {backend.get('precision')}; weights: "
            f"{backend.get('weight_transformations')}.",
            "",
            *(f"- {role}: {_calibration_text(run)}" for role, run in sorted(roles.items())),
            "",
        ]
    return "\n".join(lines)


def _readme(
    roles: dict[str, RunRecord], request: BuildRequest, changes: dict[str, list[str]]
) -> str:
    """How the scenario's runs were made; ``changes`` are each compliance run's settings that
    differ from the performance run's."""
    performance = roles["performance"]
    lines = [
        f"# {performance.model} {performance.scenario} on {request.system}",
        "",
        f"Backend: {performance.run['backend'].get('backend')}, "
        f"{performance.run['backend'].get('precision')}, weights "
        f"{performance.run['backend'].get('sparsity')}.",
        f"Model: {Path(performance.run['model_file']).name}"
        + (f", {performance.model_note}" if performance.model_note else "")
        + ".",
        f"Data: {performance.run['dataset']}.",
        *_simulated_note(performance),
        "",
        "Install sparseperf (`pip install .` in its source folder) and run, from this folder:",
        "",
        "```sh",
    ]
    for role, record in sorted(roles.items(), key=lambda item: item[0] != "performance"):
        conf = "user.conf" if role != "accuracy" else None
        lines.append(f"# {role}")
        lines.append(run_command(record.spec, conf))
    lines += [
        "```",
        "",
        "Performance and compliance runs take their settings from `user.conf` here (the "
        "recorded values of the performance run). Then assemble the tree with "
        "`sparseperf submission build` and check it with `sparseperf submission check`.",
        "",
    ]
    accuracy = roles["accuracy"]
    if accuracy.result.get("official_dataset"):
        files = ", ".join(
            str(accuracy.folder / name) for name in accuracy.result["official_dataset"]
        )
        lines += [
            f"For the official accuracy script: the full log is {accuracy.folder / ACCURACY_LOG}, "
            f"the dataset files that index it (the synthetic set repeated) are {files}.",
            "",
        ]
    for test, changed in sorted(changes.items()):
        audit = "; ".join(compliance.audit_config(test).splitlines()[1:])
        if changed:
            ran = f"settings other than this user.conf: {'; '.join(changed)}"
        else:
            ran = "this user.conf unchanged"
        lines.append(f"{test} ran with {ran}, plus its audit.config (`{audit}`).")
    return "\n".join(lines) + ("\n" if changes else "")


def _simulated_note(run: RunRecord) -> list[str]:
    if not run.run["division"]["simulated"]:
        return []
    device = run.run["backend"].get("device_model") or run.run["backend"].get("device")
    return [
        f"Device: {device}, simulated: every time here is modelled by sparseperf's timing "
        "model, not measured on the device."
    ]


def _write_scenario(
    folder: Path, roles: dict[str, RunRecord], request: BuildRequest, report: BuildReport
) -> None:
    performance, accuracy = roles["performance"], roles["accuracy"]
    _copy_logs(performance, folder / "performance" / "run_1")
    _copy_logs(accuracy, folder / "accuracy")
    write_truncated(accuracy.folder / ACCURACY_LOG, folder / "accuracy" / ACCURACY_LOG)
    shutil.copyfile(accuracy.folder / "accuracy.txt", folder / "accuracy" / "accuracy.txt")
    shutil.copyfile(performance.folder / "user.conf", folder / "user.conf")
    _write_json(folder / "measurements.json", _measurements(performance))
    tests = [test for test in ("TEST01", "TEST04") if test in roles]
    changes = {test: _changed_settings(test, performance, roles[test]) for test in tests}
    (folder / "README.md").write_text(_readme(roles, request, changes))
    for test in tests:
        if changes[test]:
            report.problems.append(
                f"{performance.scenario} {test} ran with settings other than the performance "
                f"run's ({'; '.join(changes[test])}); the official procedure runs the "
                "submission's own settings"
            )
        verdicts = _write_test(folder / test, test, roles)
        report.problems += [
            f"{performance.scenario} {test} {name}: {verdict.report.splitlines()[-1]}"
            for name, verdict in verdicts.items()
            if not verdict.passed
        ]


def _changed_settings(test: str, performance: RunRecord, audited: RunRecord) -> list[str]:
    reference, compared = (
        read_detail_log(run.folder / "mlperf_log_detail.txt")[0] for run in (performance, audited)
    )
    return compliance.changed_settings(test, reference, compared)


def _write_test(
    folder: Path, test: str, roles: dict[str, RunRecord]
) -> dict[str, compliance.Verdict]:
    audited, performance = roles[test], roles["performance"]
    _copy_logs(audited, folder / "performance" / "run_1")
    verdicts = {
        "performance": compliance.verify_performance(test, performance.result, audited.result)
    }
    (folder / "verify_performance.txt").write_text(verdicts["performance"].report)
    if test == "TEST01":
        verdicts["accuracy"] = _verify_test01(folder, roles["accuracy"], audited)
    return verdicts


def _verify_test01(folder: Path, accuracy: RunRecord, audited: RunRecord) -> compliance.Verdict:
    workload = get_workload(audited.model)
    full_log = audited.folder / ACCURACY_LOG
    verdict = compliance.verify_responses(
        accuracy.folder / ACCURACY_LOG, full_log, workload.response_dtype
    )
    (folder / "verify_accuracy.txt").write_text(verdict.report)
    target = folder / "accuracy"
    target.mkdir()
    write_truncated(full_log, target / ACCURACY_LOG)
    if verdict.passed:
        (target / "accuracy.txt").write_text(hash_line(full_log) + "\n")
        return verdict
    # Responses differ (a non-deterministic system): the rules then compare the accuracy of
    # the logged responses with the accuracy run's on the same samples.
    data = _open_data(accuracy)
    logged = read_responses(full_log)
    reference = read_responses(accuracy.folder / ACCURACY_LOG)
    baseline = data.score({index: reference[index] for index in logged if index in reference})
    measured = data.score(logged)
    (target / "baseline_accuracy.txt").write_text(baseline.line + "\n")
    (target / "compliance_accuracy.txt").write_text(measured.line + "\n")
    (target / "accuracy.txt").write_text(f"{measured.line}\n{hash_line(full_log)}\n")
    allowed = rules.benchmark(audited.model).accuracy_delta_percent
    return compliance.verify_accuracy_delta(baseline.value, measured.value, allowed)


def _open_data(run: RunRecord) -> WorkloadData:
    """The dataset a run used, to score responses again."""
    source = RunSpec.from_json(run.spec).data_source
    return get_workload(run.model).open_data(source, Path(run.run["model_file"]), lambda _: None)
