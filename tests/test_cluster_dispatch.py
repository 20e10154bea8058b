"""The cluster's dispatcher, placement and warm-up arithmetic, without Ray: replicas are
thread pools that answer each sample with its index."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pytest

from harness.cluster import ReplicaFailed
from harness.cluster import dispatch as module
from harness.cluster.dispatch import MESSAGES_IN_FLIGHT, Dispatcher, ReplicaDied
from harness.cluster.placement import SLOTS_RESOURCE, place
from harness.errors import UserError
from harness.warmup import WarmUp, auto_settings
from scenarios import ScenarioOptions


@dataclass(frozen=True)
class Sample:
    id: int
    index: int


class FakeReplica:
    """Answers after ``delay_s``; records every message; dies (its futures fail) on request."""

    def __init__(self, number: int, delay_s: float = 0.002) -> None:
        self.number = number
        self.node = "10.0.0.1"
        self.died: str | None = None
        self.delay_s = delay_s
        self.messages: list[list[int]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.dead = threading.Event()
        self._pool = ThreadPoolExecutor(8)
        self._lock = threading.Lock()

    def serve(self, ids: np.ndarray, indices: np.ndarray) -> Future:
        with self._lock:
            self.messages.append(indices.tolist())
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        return self._pool.submit(self._answer, ids, indices)

    def _answer(self, ids: np.ndarray, indices: np.ndarray):
        time.sleep(self.delay_s)
        with self._lock:
            self.in_flight -= 1
        if self.dead.is_set():
            raise ReplicaDied("its process ended")
        return ids, indices.astype(np.float32)


class Fatal(Exception):
    pass


@pytest.fixture
def completed(monkeypatch) -> dict[int, float]:
    """What reached LoadGen: sample id -> response."""
    got: dict[int, float] = {}
    lock = threading.Lock()

    def complete(samples, responses):
        with lock:
            for sample, row in zip(samples, responses, strict=True):
                assert sample.id not in got, "a sample was answered twice"
                got[sample.id] = float(row)

    monkeypatch.setattr(module, "complete", complete)
    return got


def dispatcher(replicas, scenario="Server", batch=8, fatal=None) -> Dispatcher:
    def on_fatal(exc):
        if fatal is not None:
            fatal.append(exc)
        raise Fatal(str(exc))

    def watch(what, kind):
        return threading.Lock()  # any context manager

    return Dispatcher(
        replicas, scenario, ScenarioOptions(batch_size=batch), on_fatal, watch, lambda _: None, "b"
    )


def wait_for(condition, within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_server_queries_go_to_the_least_loaded_replica_within_the_caps(completed):
    replicas = [FakeReplica(1, delay_s=0.02), FakeReplica(2, delay_s=0.02)]
    sut = dispatcher(replicas)
    sut.start()
    queries = [[Sample(i, i % 48)] for i in range(600)]
    for query in queries:
        sut.issue_queries(query)
    wait_for(lambda: len(completed) == 600)
    sut.stop()
    assert completed == {i: float(i % 48) for i in range(600)}  # every response, by sample id
    for replica in replicas:
        assert replica.messages and replica.most_in_flight <= MESSAGES_IN_FLIGHT
        assert max(len(m) for m in replica.messages) <= sut.cap
    sizes = sorted(sum(len(m) for m in r.messages) for r in replicas)
    assert sizes[0] > 0.3 * 600  # both did a fair share
    assert [lane.samples for lane in sut.lanes] == [sum(map(len, r.messages)) for r in replicas]


def test_the_offline_query_is_cut_into_pieces_of_a_replicas_batches(completed):
    replicas = [FakeReplica(1), FakeReplica(2)]
    sut = dispatcher(replicas, scenario="Offline", batch=16)
    sut.start()
    sut.issue_queries([Sample(i, i) for i in range(1000)])
    wait_for(lambda: len(completed) == 1000)
    sut.stop()
    pieces = [m for r in replicas for m in r.messages]
    assert max(map(len, pieces)) == 16 and all(r.messages for r in replicas)
    assert sorted(i for piece in pieces for i in piece) == list(range(1000))


def test_stream_queries_are_never_cut_or_joined(completed):
    replicas = [FakeReplica(1), FakeReplica(2)]
    sut = dispatcher(replicas, scenario="MultiStream", batch=1)
    sut.start()
    for q in range(20):
        sut.issue_queries([Sample(8 * q + k, 8 * q + k) for k in range(8)])
        wait_for(lambda q=q: len(completed) == 8 * (q + 1))  # LoadGen waits for each
    sut.stop()
    assert all(len(m) == 8 for r in replicas for m in r.messages)


def test_a_dead_replicas_queries_go_to_a_live_one(completed):
    dying, live = FakeReplica(1, delay_s=0.05), FakeReplica(2, delay_s=0.05)
    dying.dead.set()
    sut = dispatcher([dying, live])
    sut.start()
    for i in range(40):
        sut.issue_queries([Sample(i, i)])
    wait_for(lambda: len(completed) == 40)
    sut.stop()
    assert dying.died == "its process ended" and sut.counts.resent > 0
    assert completed == {i: float(i) for i in range(40)}
    assert sut.lanes[0].samples == 0


def test_with_no_live_replica_left_the_run_fails_naming_it(completed):
    replica = FakeReplica(3)
    replica.dead.set()
    fatal: list[BaseException] = []
    sut = dispatcher([replica], fatal=fatal)
    sut.start()
    sut.issue_queries([Sample(0, 0)])
    wait_for(lambda: fatal)
    sut.stop()
    assert isinstance(fatal[0], ReplicaFailed)
    assert "replica 3 (node 10.0.0.1) died" in str(fatal[0]) and not completed


def test_a_replica_that_raises_fails_the_run():
    class Raising(FakeReplica):
        def _answer(self, ids, indices):
            raise RuntimeError("device lost")

    fatal: list[BaseException] = []
    sut = dispatcher([Raising(1)], fatal=fatal)
    sut.start()
    sut.issue_queries([Sample(0, 0)])
    wait_for(lambda: fatal)
    sut.stop()
    assert (
        str(fatal[0]) == "backend b failed on replica 1 (node 10.0.0.1): RuntimeError: device lost"
    )


def node(name: str, cpus: float, slots: int | None = None) -> dict:
    resources = {"CPU": cpus, **({SLOTS_RESOURCE: slots} if slots else {})}
    return {"NodeID": name, "Resources": resources}


def test_placement_one_replica_per_node_or_per_slot():
    head, a, b = node("head", 0), node("a", 8), node("b", 8)
    assert [n["NodeID"] for n in place([head, a, b], None)] == ["a", "b"]
    assert [n["NodeID"] for n in place([head, a, b], 3)] == ["a", "b", "a"]
    assert [n["NodeID"] for n in place([node("local", 2, slots=3)], None)] == ["local"] * 3
    with pytest.raises(UserError, match="no live node with CPUs"):
        place([head], None)


def test_warm_up_rates_add_up_over_replicas_and_latency_takes_the_fastest():
    two = [WarmUp(rate=100.0), WarmUp(rate=50.0)]
    assert auto_settings("Offline", two) == {"target_qps": "157.5"}
    assert auto_settings("Server", two) == {"target_qps": "75"}
    streams = [WarmUp(fastest_s=0.004), WarmUp(fastest_s=0.002)]
    assert auto_settings("SingleStream", streams) == {"target_latency": "1.5"}
