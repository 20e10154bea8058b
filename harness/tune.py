"""``sparseperf tune``: the LoadGen settings a run should use, found by short probe runs (and
kept in the tuned-value store, harness/tuned.py).

Server: the highest VALID target QPS, bracketed by doubling or halving from the warm-up's
estimate, then bisected, then confirmed once at the run's own preset. SingleStream/MultiStream:
the expected latency, and Offline: the expected QPS, from one probe run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from harness.errors import UserError
from harness.files import read_text
from harness.runner import run
from harness.settings import EARLY_STOPPING_QUERIES, PRESETS, rounded
from harness.spec import RunSpec, user_values
from harness.tuned import Tuned
from harness.workloads import get_workload

MAX_PROBES = 10  # search probes, the confirmation run included
PRECISION = 1.1  # bisect until the VALID and INVALID rates are within 10%
PROBE_PRESET = "smoke"
MAX_MINUTES = 30.0  # the Server search's default time cap
# What LoadGen runs unless told otherwise: mlperf.conf's Server min_duration, its own
# min_query_count.
DEFAULT_MIN_DURATION_MS = 600000
DEFAULT_MIN_QUERIES = 100


@dataclass(frozen=True)
class Probe:
    value: float  # the run's metric: samples/s, queries/s or ms
    valid: bool
    target_qps: float | None
    reasons: tuple[str, ...] = ()  # why LoadGen found it INVALID
    p99_ms: float | None = None  # p99 latency of its queries


# Runs one probe: the spec (its preset: short probe or confirmation) and the user.conf
# values to force; returns what it measured.
Prober = Callable[[RunSpec, dict[str, str]], Probe]


@dataclass
class Budget:
    """The time cap of a whole search: a probe that would end past it is not started."""

    seconds: float
    clock: Callable[[], float] = time.monotonic
    started: float = field(init=False)

    def __post_init__(self) -> None:
        if not self.seconds > 0:
            raise UserError(f"--max-time must be positive, got {self.seconds / 60:g} minutes")
        self.started = self.clock()

    @property
    def cap(self) -> str:
        return f"{self.seconds / 60:g}-minute cap (--max-time)"

    def fits(self, planned_s: float) -> bool:
        return self.clock() - self.started + planned_s <= self.seconds

    def stop(self, what: str, planned_s: float, advice: str) -> UserError:
        spent = self.clock() - self.started
        return UserError(
            f"tune stopped at its {self.cap} after {spent:.0f} s: {what} would take about "
            f"{planned_s:.0f} s more; {advice}"
        )


def planned_s(spec: RunSpec, qps: float) -> float:
    """About how long a Server probe at ``qps`` runs: until both its minimum duration and its
    minimum query count are met (smoke probes run the queries early stopping needs)."""
    preset = PRESETS[spec.preset]["Server"]
    user = user_values(spec)
    duration_ms = float(
        user.get("min_duration", preset.get("min_duration", DEFAULT_MIN_DURATION_MS))
    )
    queries = preset.get("min_query_count", DEFAULT_MIN_QUERIES)
    if spec.preset == PROBE_PRESET:
        queries = EARLY_STOPPING_QUERIES["Server"]
    return max(duration_ms / 1000, float(user.get("min_query_count", queries)) / qps)


def tune(
    spec: RunSpec,
    probe: Prober,
    say: Callable[[str], None],
    start: float | None,
    budget: Budget,
) -> Tuned:
    """Probe runs use the smoke preset; the Server confirmation uses ``spec``'s own. ``start``
    is a Server rate to start from (a value stored earlier), else the warm-up's estimate; the
    Server search ends within ``budget``."""
    if spec.mode != "performance":
        raise UserError("tune finds performance settings; drop --mode accuracy")
    short = replace(spec, preset=PROBE_PRESET)
    if spec.scenario == "Server":
        say(f"searching for the highest VALID Server rate within a {budget.cap}")
        return _tune_server(spec, short, probe, say, start, budget)
    result = probe(short, {})
    if spec.scenario == "Offline":
        values = {"target_qps": rounded(result.value)}
        note = "Offline samples/s of one probe run"
    else:
        values = {"target_latency": rounded(result.value)}
        note = f"{spec.scenario} early-stopping latency of one probe run"
    return Tuned(values, _now(), 1, note)


def _tune_server(
    spec: RunSpec,
    short: RunSpec,
    probe: Prober,
    say: Callable[[str], None],
    start: float | None,
    budget: Budget,
) -> Tuned:
    """Bracket the highest VALID target QPS by doubling or halving, bisect it, confirm it; a
    probe that would end past the budget is not run."""
    probes = 0

    def valid_at(run: RunSpec, qps: float | None) -> tuple[bool, float]:
        nonlocal probes
        probes += 1
        result = probe(run, {} if qps is None else {"target_qps": rounded(qps)})
        qps = qps or result.target_qps or result.value
        verdict = "VALID" if result.valid else f"INVALID ({'; '.join(result.reasons)})"
        say(f"probe {probes} ({run.preset}): {qps:.4g} queries/s -> {verdict}")
        return result.valid, qps

    alone_ms = _refuse_a_missed_bound(spec, short, probe, say)
    # Without a start the run's warm-up picks half the lone-query rate: about this, or more.
    first = start or 0.5 / (alone_ms / 1000)
    if not budget.fits(planned_s(short, first)):
        raise budget.stop(
            f"the first Server probe, at about {first:.4g} queries/s",
            planned_s(short, first),
            "raise --max-time, or set a shorter min_duration / min_query_count in --user-conf",
        )
    valid, rate = valid_at(short, start)  # without a start: the warm-up's estimate
    low, high = (rate, None) if valid else (None, rate)
    # Bracket (halve or double), then bisect; two probes are kept for the confirmation and
    # one step down from it.
    while probes < MAX_PROBES - 2:
        if low is None:
            candidate = high / 2
        elif high is None:
            candidate = low * 2
        elif high / low > PRECISION:
            candidate = (low * high) ** 0.5
        else:
            break
        needed = planned_s(short, candidate)
        if not budget.fits(needed):
            found = (
                f"no rate down to {high:.4g} queries/s was VALID, so the backend cannot meet "
                "the latency bound here (try another --batch-size or --workers)"
                if low is None
                else _unconfirmed(low)
            )
            raise budget.stop(f"a probe at {candidate:.4g} queries/s", needed, found)
        if valid_at(short, candidate)[0]:
            low = candidate
        else:
            high = candidate
    if low is None:
        raise UserError(
            f"no VALID Server rate down to {high:.4g} queries/s in {probes} probes: the backend "
            "cannot meet the latency bound (try another --batch-size or --workers)"
        )
    for attempt in (low, low / PRECISION):  # a longer run may disagree: step down once
        needed = planned_s(spec, attempt)
        if not budget.fits(needed):
            what = f"confirming {attempt:.4g} queries/s at preset {spec.preset}"
            raise budget.stop(what, needed, _unconfirmed(low))
        if valid_at(spec, attempt)[0]:
            note = (
                f"highest VALID Server rate in smoke probes, bracketed and bisected to "
                f"{100 * (PRECISION - 1):.0f}%, confirmed at preset {spec.preset}"
            )
            return Tuned({"target_qps": rounded(attempt)}, _now(), probes, note)
    raise UserError(
        f"the rate found ({low:.4g} queries/s) was not VALID when confirmed at preset "
        f"{spec.preset}; the machine may be busy: tune again with --retune"
    )


def _unconfirmed(low: float) -> str:
    return (
        f"smoke probes found {low:.4g} queries/s VALID (not confirmed): set "
        f"*.Server.target_qps = {rounded(low)} in a --user-conf, or raise --max-time"
    )


def _refuse_a_missed_bound(
    spec: RunSpec, short: RunSpec, probe: Prober, say: Callable[[str], None]
) -> float:
    """One SingleStream probe (queries one at a time, a few seconds): if a query alone misses
    the Server latency bound at p99, no rate can be VALID, and the search would only find so
    after every probe. Returns that p99 (ms)."""
    default = get_workload(spec.model).server_latency_ms
    bound = float(user_values(spec).get("target_latency", default))
    alone = probe(replace(short, scenario="SingleStream"), {}).p99_ms
    say(f"probe 0 (SingleStream): one query alone takes {alone:.3g} ms at p99 "
        f"(Server bound {bound:g} ms)")  # fmt: skip
    if alone > bound:
        raise UserError(
            f"one query alone takes {alone:.3g} ms at p99 on this backend, over the {bound:g} ms "
            "Server latency bound: no rate can be VALID; try a faster backend or precision"
        )
    return alone


def loadgen_probe(probe_dir: Path) -> Prober:
    """Probes as ordinary runs in ``probe_dir``. Their user.conf is the user's, with the values
    to force added most specifically; smoke probes of Server and MultiStream also run the
    queries early stopping needs, unless the user's user.conf sets a count."""

    def probe(spec: RunSpec, values: dict[str, str]) -> Probe:
        key = get_workload(spec.model).loadgen_key
        lines = []
        if spec.preset == PROBE_PRESET and spec.scenario in EARLY_STOPPING_QUERIES:
            lines.append(f"*.*.min_query_count = {EARLY_STOPPING_QUERIES[spec.scenario]}")
        if spec.user_conf:
            lines.append(read_text(spec.user_conf, "user.conf"))
        lines += [f"{key}.{spec.scenario}.{k} = {v}" for k, v in values.items()]
        probe_dir.mkdir(parents=True, exist_ok=True)
        conf = probe_dir / "probe-user.conf"
        conf.write_text("\n".join(lines) + "\n")
        result = run(replace(spec, user_conf=conf, runs_dir=probe_dir)).result
        return Probe(
            result["value"],
            result["validity"] == "VALID",
            result.get("target_qps"),
            tuple(result["invalid_reasons"]),
            result["latency_ms"].get("99.00"),
        )

    return probe


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
