"""``sparseperf submission run``: every run a submission needs, then the tree.

Per scenario: the performance run, the accuracy run over the whole dataset, and (closed
division) the compliance runs, each in its own process with its audit.config in its own run
folder. Compliance runs repeat the performance run's recorded settings, except that Server
runs aim a little lower (as automation tools do), so that a run at the edge of the latency
bound does not fail its re-run by chance.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from harness.cluster import local_size
from harness.cluster.local import saved
from harness.errors import UserError
from harness.runner import run
from harness.settings import rounded
from harness.spec import RunSpec, validate
from submissions import compliance, rules
from submissions.build import BuildReport, BuildRequest, build
from submissions.runs import read_run
from submissions.system import describe_system, read_user_file

# Compliance runs' target_qps against the performance run's: a Server run a little below its
# rate stays within its latency bound; an Offline run that outpaces its target_qps (TEST04
# repeats one sample) would end short of the minimum duration, so it is given more samples.
COMPLIANCE_QPS = {"Server": 0.97, "Offline": 1.25}
_TARGET_QPS = re.compile(r"^(\S+\.(Server|Offline)\.target_qps) = (\S+)$", re.MULTILINE)


def compliance_conf(performance_conf: str) -> str:
    """The performance run's user.conf for its compliance runs, target_qps scaled."""

    def scale(match: re.Match[str]) -> str:
        value = float(match.group(3)) * COMPLIANCE_QPS[match.group(2)]
        return f"{match.group(1)} = {rounded(value)}"

    factors = ", ".join(f"{name} x {factor}" for name, factor in COMPLIANCE_QPS.items())
    return f"# compliance runs: target_qps {factors}\n" + _TARGET_QPS.sub(scale, performance_conf)


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
        folders.append(outcome.folder)
        if closed and not read_run(outcome.folder).closed_usable:
            reasons = "; ".join(outcome.result["invalid_reasons"])
            raise UserError(
                f"{outcome.folder} is INVALID ({reasons}); the closed division takes valid "
                "runs only. Nothing was built"
            )
        say(f"{scenario}: accuracy run")
        folders.append(run(replace(spec, mode="accuracy")).folder)
        if tests:
            conf = outcome.folder.parent / f"{outcome.folder.name}.compliance.conf"
            conf.write_text(compliance_conf((outcome.folder / "user.conf").read_text()))
            for test in tests:
                say(f"{scenario}: compliance run {test}")
                folders.append(run(replace(spec, compliance=test, user_conf=conf)).folder)
    return build(replace(request, runs=tuple(folders)), say)
