"""Server latency: a run keeps each query's times (server_timeline.csv) and their percentiles in
result.json, so a user can see where the tail comes from; batches are sized by the backend's
measured batch times, in runs and in simulate() alike; onnxruntime's threads stop spinning on
request and run.json records its session options; tune refuses at once a backend whose lone
query misses the bound, and ends its search within its time cap."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from backends.base import ModelHandle
from backends.onnxruntime import OnnxRuntimeBackend
from harness.errors import UserError
from harness.models import resnet50 as builder
from harness.spec import RunSpec
from harness.tune import MAX_PROBES, Budget, Probe, planned_s, tune
from scenarios import ScenarioOptions
from scenarios.server import batch_for, batch_time, poisson_arrivals, simulate
from scenarios.timeline import COLUMNS, Timeline, summary
from tests.conftest import run_cli
from tests.test_bad_input import assert_one_line_error
from tests.test_runs import only_run

SERVICE_MS = 5.0


def test_timeline_summary_splits_each_query_into_its_stages() -> None:
    timeline = Timeline()
    ms = 1_000_000
    timeline.add([0, 1 * ms], 2 * ms, 7 * ms, 8 * ms)  # two queries, one batch
    timeline.add([10 * ms], 10 * ms, 15 * ms, 15 * ms)
    table = timeline.table()
    assert table.shape == (3, len(COLUMNS)) and table[:, 4].tolist() == [2, 2, 1]
    stages = summary(table)
    assert stages["samples"] == 3 and stages["mean_batch"] == pytest.approx(5 / 3)
    assert stages["backend"]["p50_ms"] == 5.0
    assert stages["queued"]["p50_ms"] == 1.0  # spans 2, 1, 0 ms
    assert stages["total"]["p50_ms"] == 7.0  # spans 8, 7, 5 ms
    assert stages["backend_single"] == {"p50_ms": 5.0, "p90_ms": 5.0, "p99_ms": 5.0}
    assert summary(Timeline().table()) == {"samples": 0}


def server_run(dataset, tmp_path, capture, batch_size: int) -> tuple[str, str]:
    """(stdout, stderr) of a smoke Server run at 40 queries/s of SERVICE_MS per batch."""
    conf = tmp_path / "user.conf"
    conf.write_text("*.Server.target_qps = 40\n")
    code, out, err = run_cli(
        ["run", "--scenario", "Server", "--backend", "tests.fakes:FixedTimeBackend",
         "-o", f"service_ms={SERVICE_MS}", "--batch-size", str(batch_size), "--preset", "smoke",
         "--user-conf", str(conf), "--dataset-path", str(dataset),
         "--runs-dir", str(tmp_path / "runs")], capture,
    )  # fmt: skip
    assert code == 0, err
    return out, err


def test_a_server_run_writes_every_query_s_times(small_dataset, tmp_path, capsys) -> None:
    server_run(small_dataset, tmp_path, capsys, batch_size=1)
    folder = only_run(tmp_path / "runs")
    with (folder / "server_timeline.csv").open() as file:
        reader = csv.reader(file)
        assert tuple(next(reader)) == COLUMNS
        rows = np.array([[int(v) for v in row] for row in reader])
    result = json.loads((folder / "result.json").read_text())
    assert len(rows) == result["query_count"] == result["server_timeline"]["samples"]
    issued, started, inferred, completed = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    assert (np.diff(issued) >= 0).all() and issued[0] == 0
    assert (started >= issued).all() and (completed >= inferred).all()
    assert (inferred - started >= SERVICE_MS * 1e6).all()  # the backend sleeps that long
    assert (rows[:, 4] == 1).all()
    stages = result["server_timeline"]
    assert stages["backend"]["p50_ms"] >= SERVICE_MS
    assert stages["total"]["p99_ms"] >= stages["backend"]["p99_ms"]
    assert stages["backend_single"]["p50_ms"] >= SERVICE_MS
    assert result["latency_bound_ms"] == 15.0  # ResNet-50's Server bound


GAINS = ((1, 0.006), (8, 0.020), (16, 0.036))  # per-sample time falls with the batch
NO_GAIN = ((1, 0.006), (16, 0.096))  # a batch takes as long as its samples one by one


def test_batch_times_are_linear_between_the_measured_sizes() -> None:
    assert [round(batch_time(GAINS, b) * 1e3, 6) for b in (1, 4, 8, 12, 20)] == [6, 12, 20, 28, 44]
    assert batch_time(((4, 0.008),), 2) == 0.004  # one size: proportional


def test_a_free_worker_takes_its_share_and_batches_only_where_that_gains() -> None:
    greedy = ScenarioOptions(batch_size=16)
    assert batch_for(greedy, waiting=40, idle=3) == 16  # no batch times: as many as it may
    gains = ScenarioOptions(batch_size=16, batch_times=GAINS)
    assert batch_for(gains, waiting=40, idle=1) == 16
    assert batch_for(gains, waiting=12, idle=3) == 4  # two idle workers take the other 8
    none = ScenarioOptions(batch_size=16, batch_times=NO_GAIN)
    assert batch_for(none, waiting=12, idle=1) == 1
    assert batch_for(gains, waiting=0, idle=1) == 1
    waits = ScenarioOptions(batch_size=16, server_batch_timeout_ms=2.0, batch_times=GAINS)
    assert batch_for(waits, waiting=3, idle=3) == 16  # it waits to fill the batch size


def test_simulate_sizes_batches_as_runs_do() -> None:
    arrivals = poisson_arrivals(300, 5000, seed=3)
    for times, expect_single in ((NO_GAIN, True), (GAINS, False)):
        sizes: list[int] = []

        def serve(dispatch: float, samples: int, times=times, sizes=sizes) -> float:
            sizes.append(samples)
            return dispatch + batch_time(times, samples)

        latencies = simulate(arrivals, ScenarioOptions(16, 2, batch_times=times), serve)
        assert len(latencies) == sum(sizes) == len(arrivals) and (latencies > 0).all()
        assert (max(sizes) == 1) == expect_single
    # without a gain, samples one by one end sooner than batches that make them wait together
    batches = simulate(arrivals, ScenarioOptions(16, 1), lambda d, n: d + batch_time(NO_GAIN, n))
    singles = simulate(
        arrivals,
        ScenarioOptions(16, 1, batch_times=NO_GAIN),
        lambda d, n: d + batch_time(NO_GAIN, n),
    )
    assert np.mean(singles) < np.mean(batches)


def test_a_server_run_sizes_batches_by_measured_times(small_dataset, tmp_path, capfd) -> None:
    out, err = server_run(small_dataset, tmp_path, capfd, batch_size=4)
    run = json.loads((only_run(tmp_path / "runs") / "run.json").read_text())
    times = run["server_batch_times_ms"]
    assert list(times) == ["1", "2", "4"] and min(times.values()) >= SERVICE_MS
    assert "Server batches sized by the measured batch times" in out + err


def test_server_runs_can_stop_onnxruntime_threads_spinning_and_record_it(
    small_dataset, tmp_path, capsys
) -> None:
    """Spinning intra-op threads hold cores that other work on a shared machine needs: a Server
    run's tail grew several times with them there (benchmarks/results/server_reference.md)."""
    conf = tmp_path / "user.conf"
    conf.write_text(
        "*.Server.target_qps = 10\n*.Server.min_query_count = 10\n*.Server.min_duration = 1000\n"
    )
    code, _, err = run_cli(
        ["run", "--scenario", "Server", "--threads", "2", "--batch-size", "1", "--preset",
         "smoke", "--user-conf", str(conf), "--dataset-path", str(small_dataset),
         "--runs-dir", str(tmp_path / "runs"), "-o", "spinning=off"], capsys,
    )  # fmt: skip
    assert code == 0, err
    run = json.loads((only_run(tmp_path / "runs") / "run.json").read_text())
    assert run["backend"]["session_options"] == (
        "intra_op_num_threads=2, inter_op_num_threads=1, session.intra_op.allow_spinning=0"
    )


def test_onnxruntime_spins_by_default_and_refuses_a_bad_spinning_value(builtin_model) -> None:
    backend = OnnxRuntimeBackend(threads=1)
    backend.load(ModelHandle(builtin_model, "resnet50", (builder.INPUT_NAME,),
                             (builder.ARGMAX_OUTPUT,)))  # fmt: skip
    assert backend.describe()["session_options"].endswith("allow_spinning=1")
    with pytest.raises(UserError, match="unknown spinning '1'; choose one of on, off"):
        OnnxRuntimeBackend(spinning="1")


def test_tune_says_at_once_when_one_query_alone_misses_the_bound(small_dataset, tmp_path, capfd):
    # 40 ms per query against ResNet-50's 15 ms bound: one probe, then a one-line refusal.
    args = ["tune", "--scenario", "Server", "--backend", "tests.fakes:FixedTimeBackend",
            "-o", "service_ms=40", "--batch-size", "1", "--dataset-path", str(small_dataset),
            "--runs-dir", str(tmp_path / "runs")]  # fmt: skip
    code, _, err = run_cli(args, capfd)
    assert_one_line_error(code, err, "one query alone takes", "over the 15 ms Server latency")
    probes = [p for p in (tmp_path / "runs" / "tune").iterdir() if p.is_dir()]
    assert len(probes) == 1


class FakeSearch:
    """A prober whose Server runs are VALID at ``valid_up_to`` queries/s or below (never, for
    None), and a clock that each probe moves on by as long as LoadGen would run it."""

    def __init__(self, valid_up_to: float | None, alone_ms: float = 5.0) -> None:
        self.valid_up_to = valid_up_to
        self.alone_ms = alone_ms
        self.now = 0.0
        self.rates: list[float] = []

    def clock(self) -> float:
        return self.now

    def probe(self, spec: RunSpec, values: dict[str, str]) -> Probe:
        if spec.scenario == "SingleStream":
            self.now += 2.0
            return Probe(self.alone_ms, True, None, p99_ms=self.alone_ms)
        qps = float(values.get("target_qps", 100))  # 100: the warm-up's estimate
        self.now += planned_s(spec, qps)
        self.rates.append(qps)
        valid = self.valid_up_to is not None and qps <= self.valid_up_to
        return Probe(qps, valid, qps, () if valid else ("latency constraint not met",), 20.0)


def search(fake: FakeSearch, seconds: float, said: list[str]):
    spec = RunSpec(scenario="Server", backend="tests.fakes:InstantBackend")
    return tune(spec, fake.probe, said.append, None, Budget(seconds, fake.clock))


def test_tune_stops_at_its_time_cap_when_no_rate_is_valid() -> None:
    fake, said = FakeSearch(valid_up_to=None), []
    with pytest.raises(UserError) as caught:
        search(fake, 600, said)
    message = str(caught.value)
    assert message.startswith("tune stopped at its 10-minute cap (--max-time) after 419 s: a probe")
    assert "at 1.562 queries/s would take about 424 s more" in message
    assert "no rate down to 3.125 queries/s was VALID" in message
    assert fake.rates == [100, 50, 25, 12.5, 6.25, 3.125]  # each probe twice as long
    assert fake.now <= 600  # no probe ran past the cap
    assert (
        said[0] == "searching for the highest VALID Server rate within a 10-minute cap (--max-time)"
    )


def test_the_halving_ends_after_its_probes_without_a_cap() -> None:
    fake = FakeSearch(valid_up_to=None)
    with pytest.raises(UserError, match=r"no VALID Server rate down to [\d.]+ queries/s in 8"):
        search(fake, 1e9, [])
    assert len(fake.rates) == MAX_PROBES - 2


def test_a_cap_reached_in_the_bisection_says_what_was_found() -> None:
    fake = FakeSearch(valid_up_to=7)
    with pytest.raises(UserError) as caught:
        search(fake, 300, [])
    assert fake.rates[-2:] == [6.25, pytest.approx(8.839, abs=1e-3)]
    assert str(caught.value).endswith(
        "smoke probes found 6.25 queries/s VALID (not confirmed): set *.Server.target_qps = "
        "6.25 in a --user-conf, or raise --max-time"
    )


def test_tune_finds_and_confirms_a_rate_within_its_cap() -> None:
    fake = FakeSearch(valid_up_to=7)
    tuned = search(fake, 1e9, [])
    assert 7 / 1.1 <= float(tuned.values["target_qps"]) <= 7
    assert fake.rates[-1] == float(tuned.values["target_qps"])  # the confirmation


def test_tune_s_cap_is_checked_before_the_first_server_probe(small_dataset, tmp_path, capfd):
    # A 3-second cap: the lone-query probe alone takes longer than the first Server probe
    # would have left.
    args = ["tune", "--scenario", "Server", "--backend", "tests.fakes:FixedTimeBackend",
            "-o", "service_ms=5", "--batch-size", "1", "--dataset-path", str(small_dataset),
            "--runs-dir", str(tmp_path / "runs"), "--max-time", "0.05"]  # fmt: skip
    code, _, err = run_cli(args, capfd)
    assert_one_line_error(code, err, "tune stopped at its 0.05-minute cap (--max-time)",
                          "the first Server probe")  # fmt: skip
    assert "within a 0.05-minute cap" in err
    probes = [p for p in (tmp_path / "runs" / "tune").iterdir() if p.is_dir()]
    assert len(probes) == 1


def test_tune_refuses_a_cap_that_is_not_positive(tmp_path, capsys):
    code, _, err = run_cli(["tune", "--max-time", "0", "--runs-dir", str(tmp_path)], capsys)
    assert_one_line_error(code, err, "--max-time must be positive")
