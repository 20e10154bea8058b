"""The query dispatcher (MLPerf's QDL): the SUT LoadGen drives in a cluster run.

It sends each query's sample ids to a replica and hands the responses that come back, by sample
id, to LoadGen. It does not batch, cache, preprocess or infer: replicas hold their own loaded
samples and batch as the scenario does in one process. Queries wait in one queue, in issue
order, and go to the live replica with the least outstanding work (samples sent, not yet
answered) that has room: at most ``cap`` outstanding samples and ``MESSAGES_IN_FLIGHT`` messages
per replica. A message is one send: queries that waited while every replica was full travel
together, each still its own query (no query is ever held back to fill one); only the Offline
query, which holds the whole run, is cut into pieces of a replica's batches. When a replica dies,
its in-flight messages go back to the head of the queue for the others; with none left the run
fails. Ray-free: replicas are anything with ``serve`` returning a future.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

import numpy as np

from harness.cluster import ReplicaFailed
from scenarios import FatalFn, Sample, ScenarioOptions, complete
from scenarios.timeline import Timeline

MESSAGES_IN_FLIGHT = 2  # per replica: enough to keep it busy while responses travel back
# Outstanding samples per replica: at least two rounds of its batches, and enough that queries
# arriving fast travel several to a message rather than queue here.
CAP_FLOOR = 64
Reply = tuple[np.ndarray, np.ndarray]  # (sample ids, one response row per sample)


class ReplicaDied(Exception):
    """A replica's process ended (its future fails with this)."""


class Replica(Protocol):
    number: int
    node: str
    died: str | None  # why it is gone, once it is

    def serve(self, ids: np.ndarray, indices: np.ndarray) -> Future[Reply]: ...


@dataclass
class Lane:
    """One replica as the dispatcher keeps count of it."""

    replica: Replica
    outstanding: int = 0  # samples sent, not yet answered
    in_flight: int = 0  # messages
    queries: int = 0  # queries answered (pieces of the Offline query count one each)
    samples: int = 0
    messages: int = 0

    @property
    def died(self) -> str | None:
        return self.replica.died

    @property
    def name(self) -> str:
        return f"replica {self.replica.number} (node {self.replica.node})"


@dataclass
class Message:
    lane: Lane
    queries: list[list[Sample]]
    sent_ns: int = 0
    watch: AbstractContextManager[None] | None = None

    @property
    def samples(self) -> list[Sample]:
        return [sample for query in self.queries for sample in query]


@dataclass
class Counts:
    resent: int = 0  # samples sent again after their replica died
    round_trips_ms: list[float] = field(default_factory=list)


class Dispatcher:
    def __init__(
        self,
        replicas: Sequence[Replica],
        scenario: str,
        options: ScenarioOptions,
        on_fatal: FatalFn,
        watch: Callable[[str, str], AbstractContextManager[None]],
        say: Callable[[str], None],
        label: str,
    ) -> None:
        self.label = label
        self.lanes = [Lane(replica) for replica in replicas]
        self.piece = options.batch_size * options.workers  # one round of a replica's batches
        self.cap = max(2 * self.piece, CAP_FLOOR)
        self.split = scenario == "Offline"
        self.on_fatal = on_fatal
        self.watch = watch
        self.say = say
        self.counts = Counts()
        self.timeline: Timeline | None = None  # the replicas' own, merged when the run ends
        self._queue: deque[list[Sample]] = deque()
        self._head_start = 0  # how much of the head query has gone (the Offline query, in pieces)
        self._cond = threading.Condition()
        self._stopping = False
        self._completed = 0

    @property
    def completed_samples(self) -> int:
        return self._completed

    def start(self) -> None:
        self._sender = threading.Thread(target=self._send_loop, name="dispatcher", daemon=True)
        self._sender.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._sender.join()

    def issue_queries(self, samples: list[Sample]) -> None:
        with self._cond:
            self._queue.append(list(samples))
            self._cond.notify()

    def flush_queries(self) -> None:
        """Nothing is held back, so there is nothing to flush."""

    def _free_lane(self) -> Lane | None:
        """The live replica with the least outstanding work that has room."""
        free = [
            lane
            for lane in self.lanes
            if lane.died is None
            and lane.in_flight < MESSAGES_IN_FLIGHT
            and lane.outstanding < self.cap
        ]
        return min(free, key=lambda lane: (lane.outstanding, lane.in_flight), default=None)

    def _take(self, lane: Lane) -> Message:
        """The next message for ``lane``, from the head of the queue (lock held)."""
        room = self.cap - lane.outstanding
        queries: list[list[Sample]] = []
        if self.split:  # the head query's next piece (no copy of what remains)
            head, start = self._queue[0], self._head_start
            end = min(start + max(1, min(room, self.piece)), len(head))
            queries.append(head[start:end])
            self._head_start = end
            if end == len(head):
                self._queue.popleft()
                self._head_start = 0
        else:  # whole queries, as many as fit (at least one)
            taken = 0
            while self._queue and (not queries or taken + len(self._queue[0]) <= room):
                query = self._queue.popleft()
                queries.append(query)
                taken += len(query)
        message = Message(lane, queries)
        lane.outstanding += len(message.samples)
        lane.in_flight += 1
        return message

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not (self._queue and self._free_lane()):
                    self._cond.wait()
                if self._stopping:
                    return
                message = self._take(self._free_lane())
            self._send(message)

    def _send(self, message: Message) -> None:
        samples = message.samples
        ids = np.fromiter((s.id for s in samples), np.uint64, len(samples))
        indices = np.fromiter((s.index for s in samples), np.int64, len(samples))
        lane = message.lane
        message.watch = self.watch(f"the cluster's {lane.name} during the LoadGen test", "batch")
        message.watch.__enter__()
        message.sent_ns = time.monotonic_ns()
        lane.replica.serve(ids, indices).add_done_callback(partial(self._done, message))

    def _done(self, message: Message, future: Future[Reply]) -> None:
        """A message's reply (in whatever thread the future completes in)."""
        message.watch.__exit__(None, None, None)
        lane, samples = message.lane, message.samples
        error = future.exception()
        with self._cond:
            lane.outstanding -= len(samples)
            lane.in_flight -= 1
            self._cond.notify()
        if isinstance(error, ReplicaDied):
            self._resend(message, str(error))
            return
        if error is not None:
            line = f"backend {self.label} failed on {lane.name}: {type(error).__name__}: {error}"
            self.on_fatal(ReplicaFailed(line).with_traceback(error.__traceback__))
        ids, rows = future.result()
        expected = np.fromiter((s.id for s in samples), np.uint64, len(samples))
        if not np.array_equal(ids, expected):
            self.on_fatal(ReplicaFailed(f"{lane.name} answered other samples than it was sent"))
        try:
            complete(samples, rows)
        except BaseException as exc:  # LoadGen would wait forever for the missing responses
            self.on_fatal(ReplicaFailed(f"{lane.name} sent bad responses: {exc}"))
        with self._cond:
            lane.queries += len(message.queries)
            lane.samples += len(samples)
            lane.messages += 1
            self._completed += len(samples)
            self.counts.round_trips_ms.append((time.monotonic_ns() - message.sent_ns) / 1e6)

    def _resend(self, message: Message, reason: str) -> None:
        """Put a dead replica's message back at the head of the queue, or fail the run if no
        replica is left."""
        lane = message.lane
        with self._cond:
            first = lane.died is None
            if first:
                lane.replica.died = reason
            if self._head_start:  # the head query is in pieces: its rest becomes a query
                self._queue[0] = self._queue[0][self._head_start :]
                self._head_start = 0
            for query in reversed(message.queries):
                self._queue.appendleft(query)
            self.counts.resent += len(message.samples)
            live = [other for other in self.lanes if other.died is None]
            self._cond.notify()
        if not live:
            self.on_fatal(ReplicaFailed(f"{lane.name} died ({reason}) and no live replica is left"))
        if first:
            self.say(
                f"warning: {lane.name} died ({reason}); its in-flight queries go to the "
                f"{len(live)} live replica(s)"
            )
