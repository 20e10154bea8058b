"""Server: queries arrive one by one (Poisson); workers batch whatever is waiting.

A free worker takes the oldest waiting sample and then whatever else is already queued, up to
the batch size, waiting at most ``server_batch_timeout_ms`` from the first sample for more. The
default timeout of 0 never delays a sample to fill a batch. Given the backend's measured batch
times (``batch_times``), a batch leaves a share of the queue to each other idle worker and
grows only where that serves more samples per second (``batch_for``): no sample then waits
behind a batch while a worker is free, or in a batch that gains nothing.
"""

from __future__ import annotations

import bisect
import functools
import heapq
import queue
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from scenarios.base import Sample, ScenarioOptions, WorkerPoolSUT
from scenarios.timeline import Timeline

GAIN = 0.99  # a batch must cut the time per sample by 1% (not by measurement noise)


def batch_time(times: Sequence[tuple[int, float]], samples: int) -> float:
    """Seconds for a batch of ``samples``, linear between (and along the last two of) the
    measured sizes; one measured size: proportional (batching assumed to gain nothing)."""
    sizes = [size for size, _ in times]
    if len(times) == 1:
        return times[0][1] * samples / times[0][0]
    i = min(max(bisect.bisect_left(sizes, samples), 1), len(times) - 1)
    (s0, t0), (s1, t1) = times[i - 1], times[i]
    return t0 + (t1 - t0) * (samples - s0) / (s1 - s0)


def batch_for(options: ScenarioOptions, waiting: int, idle: int) -> int:
    """How many samples a free worker's batch may take, ``waiting`` queued and ``idle`` workers
    free with this one: the batch size, unless batch times were measured and the worker does
    not wait to fill its batch (no timeout); then no more than its share of the queue when
    other workers are idle (they take the rest at once), and of that the batch that serves the
    most samples per second, if it beats one by one (by ``GAIN``: a batch that gains nothing
    only delays its first samples)."""
    if not options.batch_times or options.server_batch_timeout_ms > 0:
        return options.batch_size
    most = min(waiting, options.batch_size, -(-waiting // max(idle, 1)))
    return _fastest(options.batch_times, options.batch_size)[max(most, 1)]


@functools.lru_cache(maxsize=64)
def _fastest(times: tuple[tuple[int, float], ...], largest: int) -> tuple[int, ...]:
    """For each cap m, the batch of at most m samples with the least time per sample (the
    largest of equals), or 1 when it does not beat one by one by ``GAIN``: made once, as
    simulate() asks for every batch of a long run."""
    per_sample = [batch_time(times, b) / b for b in range(1, largest + 1)]
    fastest, best = [1], 1
    for m in range(1, largest + 1):
        if per_sample[m - 1] <= per_sample[best - 1]:
            best = m
        fastest.append(best if per_sample[best - 1] < GAIN * per_sample[0] else 1)
    return tuple(fastest)


class ServerSUT(WorkerPoolSUT):
    def start(self) -> None:
        self.timeline = Timeline()
        self._idle = 0  # workers waiting for a query
        self._idle_lock = threading.Lock()
        super().start()

    def issue_queries(self, samples: list[Sample]) -> None:
        issued = time.monotonic_ns()
        for sample in samples:
            self._queue.put((sample, issued))

    def _next(self) -> tuple[tuple[Sample, int] | None, int]:
        """The next queued item, and how many workers were idle with this one."""
        with self._idle_lock:
            self._idle += 1
        item = self._queue.get()
        with self._idle_lock:
            self._idle -= 1
            return item, self._idle + 1

    def _work(self) -> None:
        timeout = self.options.server_batch_timeout_ms / 1000
        while True:
            first, idle = self._next()
            if first is None:
                return
            limit = batch_for(self.options, 1 + self._queue.qsize(), idle)
            batch = [first]
            deadline = time.monotonic() + timeout
            stopping = False
            while len(batch) < limit:
                remaining = deadline - time.monotonic()
                try:
                    item = (
                        self._queue.get(timeout=remaining)
                        if remaining > 0
                        else self._queue.get_nowait()
                    )
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            started = time.monotonic_ns()
            inferred = self.run([sample for sample, _ in batch])
            done = time.monotonic_ns()
            self.timeline.add([issued for _, issued in batch], started, inferred, done)
            if stopping:
                return


def simulate(
    arrivals: Sequence[float], options: ScenarioOptions, serve: Callable[[float, int], float]
) -> np.ndarray:
    """Each query's latency under the policy above, in modelled time rather than threads:
    ``serve(dispatch_time, samples)`` says when a batch dispatched then is done (the worker
    is busy until it is). With several workers, the one free first takes the next batch."""
    timeout = options.server_batch_timeout_ms / 1000
    free = [0.0] * options.workers
    times = np.asarray(arrivals, dtype=np.float64)
    latencies = np.empty(len(arrivals))
    first = 0
    while first < len(arrivals):
        start = max(heapq.heappop(free), arrivals[first])
        waiting = bisect.bisect_right(arrivals, start, first) - first
        idle = 1 + sum(1 for t in free if t <= start)
        limit = batch_for(options, waiting, idle)
        deadline = start + timeout
        end = bisect.bisect_right(arrivals, deadline, first, min(first + limit, len(arrivals)))
        dispatch = max(start, arrivals[end - 1]) if end - first == limit else deadline
        done = serve(dispatch, end - first)
        latencies[first:end] = done - times[first:end]
        heapq.heappush(free, done)
        first = end
    return latencies


def poisson_arrivals(qps: float, count: int, seed: int = 0) -> list[float]:
    """Arrival times of ``count`` queries at a mean rate ``qps``, as LoadGen's Server issues."""
    gaps = np.random.default_rng(seed).exponential(1 / qps, count)
    return np.cumsum(gaps).tolist()
