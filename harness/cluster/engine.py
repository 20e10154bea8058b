"""A run's inference on the replicas of a Ray cluster, as the LoadGen process drives it: Ray
actors (``replica.Replica``) placed on the cluster's nodes, and the dispatcher in front of
them. Imported only by the run process of a cluster run."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import mlperf_loadgen as lg
import numpy as np
import ray
from ray.exceptions import RayActorError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from harness.cache import CACHE_ENV, cache_root
from harness.cluster import Connection, ReplicaFailed
from harness.cluster.dispatch import MESSAGES_IN_FLIGHT, Dispatcher, ReplicaDied, Reply
from harness.cluster.placement import place
from harness.cluster.replica import Replica
from harness.errors import UserError
from harness.inference import Description
from harness.models.check import ModelFile
from harness.spec import RunSpec
from harness.warmup import WarmUp
from harness.watchdog import Heartbeat
from scenarios import FatalFn, ScenarioOptions
from scenarios.timeline import Timeline

CONNECT_TIMEOUT_S = 30.0
CONTROL_CALLS = 4  # actor threads beyond the messages: loading samples, reports
SOURCE_ROOT = Path(__file__).resolve().parents[2]  # where harness/, backends/... are


class RayReplica:
    """One replica actor as the dispatcher and the engine see it."""

    def __init__(self, number: int, actor: Any, node: str) -> None:
        self.number = number
        self.actor = actor
        self.node = node
        self.pid: int | None = None
        self.died: str | None = None

    @property
    def name(self) -> str:
        return f"replica {self.number} (node {self.node})"

    def serve(self, ids: np.ndarray, indices: np.ndarray) -> Future[Reply]:
        out: Future[Reply] = Future()
        ref = self.actor.serve.remote(ids, indices)
        ref.future().add_done_callback(partial(_settle, out))
        return out


def _settle(out: Future, done: Future) -> None:
    error = done.exception()
    if error is None:
        out.set_result(done.result())
    else:
        out.set_exception(_cause(error))


def _cause(error: BaseException) -> BaseException:
    """The replica's own exception, or ReplicaDied when its process is gone."""
    if isinstance(error, RayActorError):
        return ReplicaDied("its process ended")
    if isinstance(error, RayTaskError) and error.cause is not None:
        return error.cause
    return error


def replica_env() -> dict[str, str]:
    """What replica processes need of this one's environment: sparseperf's source and any
    plug-in backend's (PYTHONPATH), the same caches."""
    paths = [str(SOURCE_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths)), CACHE_ENV: str(cache_root())}


def connect(address: str) -> None:
    """Connect this process to the cluster as its driver, or fail within CONNECT_TIMEOUT_S
    (Ray retries for minutes when something else answers at the address)."""
    failure: list[BaseException] = []
    done = threading.Event()

    def attempt() -> None:
        try:
            ray.init(
                address=address,
                log_to_driver=False,
                logging_level=logging.ERROR,  # its warnings are not the run's
                runtime_env={"env_vars": replica_env()},
            )
        except BaseException as exc:
            failure.append(exc)
        finally:
            done.set()

    threading.Thread(target=attempt, name="ray-connect", daemon=True).start()
    if not done.wait(CONNECT_TIMEOUT_S):
        raise UserError(
            f"{address} did not answer as a Ray cluster within {CONNECT_TIMEOUT_S:g} s "
            "(is it the address `ray start --head` printed?)"
        )
    if failure:
        lines = str(failure[0]).strip().splitlines() or [type(failure[0]).__name__]
        raise UserError(f"cannot join the Ray cluster at {address}: {lines[0]}")


class ClusterEngine:
    def __init__(
        self,
        spec: RunSpec,
        model: ModelFile,
        connection: Connection,
        heartbeat: Heartbeat,
        on_fatal: Callable[[BaseException], NoReturn],
        say: Callable[[str], None],
    ) -> None:
        self.label = spec.backend_label
        self.connection = connection
        self._watch = heartbeat.busy
        self._on_fatal = on_fatal
        self._say = say
        self._dispatcher: Dispatcher | None = None
        self._finished: dict[int, dict[str, Any]] | None = None
        with self._watch("the run process while connecting to the Ray cluster", "harness"):
            connect(connection.address)
        nodes = [node for node in ray.nodes() if node["Alive"]]
        placement = place(nodes, spec.replicas)
        self.nodes = len({node["NodeID"] for node in placement})
        say(
            f"cluster {connection.address}: {len(placement)} replica(s) of {self.label} on "
            f"{self.nodes} of its {len(nodes)} node(s)"
        )
        remote = ray.remote(Replica)
        self.replicas = [
            RayReplica(
                number,
                remote.options(
                    num_cpus=0,  # the backend's own threads decide what it uses
                    max_restarts=0,
                    max_concurrency=MESSAGES_IN_FLIGHT + CONTROL_CALLS,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
                ).remote(number),
                node["NodeManagerAddress"],
            )
            for number, node in enumerate(placement, start=1)
        ]
        setup = self._on_all("load()", "backend", lambda r: r.actor.setup.remote(spec, model))
        for replica, info in setup:
            replica.pid = info["pid"]

    @property
    def live(self) -> list[RayReplica]:
        return [replica for replica in self.replicas if replica.died is None]

    def _on_all(
        self, what: str, kind: str, call: Callable[[RayReplica], Any]
    ) -> list[tuple[RayReplica, Any]]:
        """``call`` every live replica and wait for all. A dead one is left out (the run goes
        on while one lives); one that raises ends the run as its backend would in one process."""
        started = [(replica, call(replica)) for replica in self.live]
        results = []
        with self._watch(f"backend {self.label} on the cluster's replicas in {what}", kind):
            for replica, ref in started:
                try:
                    results.append((replica, ray.get(ref)))
                except RayActorError:
                    replica.died = "its process ended"
                    if not self.live:
                        line = f"{replica.name} died in {what} and no live replica is left"
                        self._on_fatal(ReplicaFailed(line))
                    self._say(f"warning: {replica.name} died in {what}")
                except RayTaskError as error:
                    cause = _cause(error)
                    if isinstance(cause, UserError):
                        raise UserError(f"{replica.name}: {cause}") from None
                    line = f"backend {self.label} failed on {replica.name}: "
                    self._on_fatal(ReplicaFailed(f"{line}{type(cause).__name__}: {cause}"))
        return results

    def warm_up(self, spec: RunSpec) -> list[WarmUp]:
        done = self._on_all("the warm-up", "backend", lambda r: r.actor.warm_up.remote(spec))
        return [measured for _, measured in done]

    def server_batch_times(self, spec: RunSpec) -> tuple[tuple[int, float], ...]:
        """The first replica's: every replica's SUT sizes its batches by them."""
        done = self._on_all(
            "the Server batch timing", "backend", lambda r: r.actor.server_batch_times.remote(spec)
        )
        return done[0][1]

    def load_samples(self, indices: Sequence[int]) -> None:
        shared = ray.put(np.asarray(indices, np.int64))
        self._on_all("load_samples()", "harness", lambda r: r.actor.load_samples.remote(shared))

    def unload_samples(self, indices: Sequence[int]) -> None:
        shared = ray.put(np.asarray(indices, np.int64))
        self._on_all("unload_samples()", "harness", lambda r: r.actor.unload_samples.remote(shared))

    def sut(self, scenario: str, options: ScenarioOptions, on_fatal: FatalFn) -> Dispatcher:
        self._on_all("start", "backend", lambda r: r.actor.start.remote(scenario, options))
        self._dispatcher = Dispatcher(
            self.live, scenario, options, on_fatal, self._watch, self._say, self.label
        )
        return self._dispatcher

    @property
    def name(self) -> str:
        """The SUT's name in LoadGen's logs: the network division requires "Network SUT"."""
        return f"sparseperf Network SUT ({len(self.replicas)} replicas, Ray {ray.__version__})"

    def construct(self, sut: Dispatcher) -> int:
        return lg.ConstructQDL(sut.issue_queries, sut.flush_queries, lambda: self.name)

    def destroy(self, handle: int) -> None:
        lg.DestroyQDL(handle)

    def start_measuring(self) -> None:
        self._on_all("start_measuring()", "backend", lambda r: r.actor.start_measuring.remote())

    def _finish(self) -> dict[int, dict[str, Any]]:
        """Each live replica's end-of-run counts, once; the dispatcher gets the replicas'
        Server timelines merged (times on each replica's own clock)."""
        if self._finished is None:
            done = self._on_all("report()", "backend", lambda r: r.actor.finish.remote())
            self._finished = {replica.number: stats for replica, stats in done}
            timelines = [
                s["timeline"] for s in self._finished.values() if s["timeline"] is not None
            ]
            if self._dispatcher is not None and timelines:
                rows = [tuple(row) for timeline in timelines for row in timeline]
                self._dispatcher.timeline = Timeline(rows=rows)
        return self._finished

    def report(self) -> dict[str, Any]:
        """The first replica's report, or the first that warns."""
        reports = [stats["backend_report"] for stats in self._finish().values()]
        return next((r for r in reports if r.get("warning")), reports[0] if reports else {})

    def describe(self) -> Description:
        return self._on_all("describe()", "backend", lambda r: r.actor.describe.remote())[0][1]

    def record(self) -> dict[str, Any]:
        finished = self._finish()
        lanes = {lane.replica.number: lane for lane in self._dispatcher.lanes}
        replicas = []
        for replica in self.replicas:
            lane = lanes.get(replica.number)
            stats = finished.get(replica.number, {})
            replicas.append(
                {
                    "replica": replica.number,
                    "node": replica.node,
                    "pid": replica.pid,
                    "queries": lane.queries if lane else 0,
                    "samples": lane.samples if lane else 0,
                    "messages": lane.messages if lane else 0,
                    "busy_s": stats.get("busy_s"),
                    "batches": stats.get("batches"),
                    "died": replica.died,
                }
            )
        per_node: dict[str, int] = {}
        for replica in self.replicas:
            per_node[replica.node] = per_node.get(replica.node, 0) + 1
        trips = np.asarray(self._dispatcher.counts.round_trips_ms or [0.0])
        return {
            "address": self.connection.address,
            "local": self.connection.local,
            "ray_version": ray.__version__,
            "sut_name": self.name,
            "nodes": len(per_node),
            "replicas_per_node": per_node,
            "replicas": replicas,
            "replicas_served": sum(1 for r in replicas if r["samples"]),
            "dispatch": {
                "in_flight_cap_samples": self._dispatcher.cap,
                "messages_in_flight": MESSAGES_IN_FLIGHT,
                "resent_samples": self._dispatcher.counts.resent,
                "round_trip_ms": {
                    f"p{q:g}": round(float(np.percentile(trips, q)), 3) for q in (50, 99)
                },
            },
        }

    def close(self) -> None:
        ray.shutdown()  # the replicas end with this driver
