"""Server: queries arrive one by one (Poisson); workers batch whatever is waiting.

A worker takes the oldest waiting sample and then whatever else is already queued, up to the
batch size, waiting at most ``server_batch_timeout_ms`` from the first sample for more. The
default timeout of 0 never delays a sample to fill a batch, which keeps tail latency under the
bound; batches still grow on their own when load is high.
"""

from __future__ import annotations

import bisect
import heapq
import queue
import time
from collections.abc import Callable, Sequence

import mlperf_loadgen as lg
import numpy as np

from scenarios.base import ScenarioOptions, WorkerPoolSUT
from scenarios.timeline import Timeline


class ServerSUT(WorkerPoolSUT):
    def start(self) -> None:
        self.timeline = Timeline()
        super().start()

    def issue_queries(self, samples: list[lg.QuerySample]) -> None:
        issued = time.monotonic_ns()
        for sample in samples:
            self._queue.put((sample, issued))

    def _work(self) -> None:
        timeout = self.options.server_batch_timeout_ms / 1000
        while (first := self._queue.get()) is not None:
            batch = [first]
            deadline = time.monotonic() + timeout
            stopping = False
            while len(batch) < self.options.batch_size:
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
        deadline = start + timeout
        limit = min(first + options.batch_size, len(arrivals))
        end = bisect.bisect_right(arrivals, deadline, first, limit)  # arrived by the deadline
        full = end - first == options.batch_size
        dispatch = max(start, arrivals[end - 1]) if full else deadline
        done = serve(dispatch, end - first)
        latencies[first:end] = done - times[first:end]
        heapq.heappush(free, done)
        first = end
    return latencies


def poisson_arrivals(qps: float, count: int, seed: int = 0) -> list[float]:
    """Arrival times of ``count`` queries at a mean rate ``qps``, as LoadGen's Server issues."""
    gaps = np.random.default_rng(seed).exponential(1 / qps, count)
    return np.cumsum(gaps).tolist()
