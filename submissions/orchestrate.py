"""``sparseperf submission run``: every run a submission needs, then the tree.

Per scenario: the performance run, the accuracy run over the whole dataset, and (closed
division) the compliance runs, each in its own process with its audit.config in its own run
folder. Compliance runs take the performance run's recorded user.conf unchanged, as the
official procedure does (the submission's settings plus audit.config); a re-run that falls
short is reported, and the user chooses what to do about it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from harness.cluster import local_size
from harness.cluster.local import saved
from harness.errors import UserError
from harness.runner import run
from harness.spec import RunSpec, validate
from submissions import compliance, rules
from submissions.admission import admit
from submissions.build import BuildReport, BuildRequest, build
from submissions.runs import read_run
from submissions.system import describe_system, read_user_file


def shortfall(scenario: str, test: str, result: dict) -> str | None:
    """What to tell the user when a compliance run with the submitted settings is INVALID."""
    if result["validity"] == "VALID":
        return None
    reasons = "; ".join(result["invalid_reasons"]) or result["validity"]
    return (
        f"warning: {scenario} {test} with the submitted settings is INVALID ({reasons}): its "
        "verification will say TEST FAIL and the official checker will reject the tree. Keep "
        "the tree as it is, or run the submission again with a --user-conf for every run "
        "(Server: a lower target_qps; Offline: a higher one); compliance runs may not change "
        "the settings"
    )


def preview_cluster(cluster: str | None) -> dict | None:
    """The cluster record a run on ``cluster`` will have, as far as the system description
    needs it before the runs: whether it is local (its network fields are then known)."""
    if cluster is None:
        return None
    running = saved()
    local = local_size(cluster) is not None or (running is not None and running.address == cluster)
    return {"local": local, "ray_version": "(from the runs)", "replicas": [], "nodes": 1}


def run_submission(
    base: RunSpec,
    request: BuildRequest,
    scenarios: tuple[str, ...] | None,
    say: Callable[[str], None],
) -> BuildReport:
    bench = rules.benchmark(base.model)
    closed = request.division in rules.STRICT_DIVISIONS
    tests = compliance.tests_for(bench.loadgen_key) if closed else ()
    problem = rules.division_problem(request.division, base.cluster is not None)
    if problem:
        raise UserError(problem)
    if request.out.exists():
        raise UserError(f"output folder {request.out} already exists; choose a new one")
    # The system description is checked again with the backend's details when the tree is
    # built; checking it now spares a failure after hours of runs.
    system = describe_system(
        division=request.division,
        submitter=request.submitter,
        system_name=request.system,
        backend={"framework": "(from the runs)"},
        user=read_user_file(request.system_file) if request.system_file else {},
        simulated=False,
        cluster=preview_cluster(base.cluster),
    )
    chosen = scenarios or bench.required_scenarios(system["system_type"])
    for scenario in chosen:  # every spec checked before the first run starts
        validate(replace(base, scenario=scenario))
    if not closed:
        say("open division: compliance tests are not required and are skipped")
    folders: list[Path] = []
    for scenario in chosen:
        spec = replace(base, scenario=scenario, mode="performance")
        say(f"{scenario}: performance run")
        outcome = run(spec)
        _admit(outcome.folder, closed)
        folders.append(outcome.folder)
        say(f"{scenario}: accuracy run")
        folders.append(run(replace(spec, mode="accuracy")).folder)
        for test in tests:
            say(f"{scenario}: compliance run {test} (the performance run's user.conf, unchanged)")
            audited = run(replace(spec, compliance=test, user_conf=outcome.folder / "user.conf"))
            _admit(audited.folder, closed)
            folders.append(audited.folder)
            warning = shortfall(scenario, test, audited.result)
            if warning:
                say(warning)
    return build(replace(request, runs=tuple(folders)), say)


def _admit(folder: Path, closed: bool) -> None:
    """Stop at a run the tree would refuse (its problems are reported when it is built)."""
    try:
        admit(read_run(folder), closed)
    except UserError as exc:
        raise UserError(f"{exc}. Nothing was built") from None
