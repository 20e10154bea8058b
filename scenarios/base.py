"""What every scenario shares: running a batch, completing it to LoadGen, failing loudly."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn, Protocol

import mlperf_loadgen as lg
import numpy as np

from scenarios.timeline import Timeline

# Sample indices in, one response row per sample out (the official response layout).
InferFn = Callable[[Sequence[int]], np.ndarray]
# Called with the exception when inference fails; must not return (the run cannot go on).
FatalFn = Callable[[BaseException], NoReturn]


class Sample(Protocol):
    """A query sample as LoadGen issues it (``lg.QuerySample``), or as a cluster replica
    receives it from the dispatcher."""

    @property
    def id(self) -> int: ...

    @property
    def index(self) -> int: ...


# Hands a batch's responses (one row per sample, in order) to whoever waits for them.
RespondFn = Callable[[Sequence[Sample], np.ndarray], None]


def check_responses(samples: Sequence[Sample], responses: np.ndarray) -> np.ndarray:
    """The responses as one contiguous array, one row per sample (else RuntimeError)."""
    responses = np.ascontiguousarray(responses)
    if len(responses) != len(samples):
        raise RuntimeError(
            f"backend returned {len(responses)} responses for {len(samples)} samples"
        )
    return responses


def complete(samples: Sequence[Sample], responses: np.ndarray) -> None:
    """Hand responses to LoadGen (``QuerySamplesComplete``), one row per sample."""
    responses = check_responses(samples, responses)
    stride = responses.strides[0] if responses.ndim > 1 else responses.itemsize
    base = responses.ctypes.data
    lg.QuerySamplesComplete(
        [lg.QuerySampleResponse(s.id, base + i * stride, stride) for i, s in enumerate(samples)]
    )


@dataclass(frozen=True)
class ScenarioOptions:
    batch_size: int = 1  # Offline batch size; the largest dynamic batch in Server
    workers: int = 1  # threads pulling batches in Offline and Server
    server_batch_timeout_ms: float = 0.0  # how long Server waits to fill a batch; 0 = greedy
    # Server: the backend's measured seconds per batch, (samples, seconds) by size, which
    # batches are sized by (see server.batch_for); none: greedy up to the batch size
    batch_times: tuple[tuple[int, float], ...] = ()


class ScenarioSUT:
    """Base of the per-scenario SUTs. Subclasses implement ``issue_queries``. Responses go to
    LoadGen, or to ``respond`` where the SUT runs away from LoadGen (a cluster replica)."""

    def __init__(
        self,
        infer: InferFn,
        options: ScenarioOptions,
        on_fatal: FatalFn,
        respond: RespondFn = complete,
    ) -> None:
        self.infer = infer
        self.options = options
        self.on_fatal = on_fatal
        self.respond = respond
        self.timeline: Timeline | None = None  # per-query times, where the scenario keeps them
        self._completed = 0
        self._count_lock = threading.Lock()

    @property
    def completed_samples(self) -> int:
        return self._completed

    def start(self) -> None:
        """Start worker threads, if the scenario has any."""

    def stop(self) -> None:
        """Stop worker threads after LoadGen has finished the test."""

    def issue_queries(self, samples: list[Sample]) -> None:
        raise NotImplementedError

    def flush_queries(self) -> None:
        """Nothing is held back between queries, so there is nothing to flush."""

    def run(self, samples: Sequence[Sample]) -> int:
        """Infer one batch and hand its responses on; any failure ends the run.
        Returns when the backend returned its responses (``time.monotonic_ns``)."""
        try:
            responses = self.infer([s.index for s in samples])
            inferred = time.monotonic_ns()
            self.respond(samples, responses)
        except BaseException as exc:  # LoadGen would wait forever for the missing responses
            self.on_fatal(exc)
        with self._count_lock:
            self._completed += len(samples)
        return inferred


class WorkerPoolSUT(ScenarioSUT):
    """A scenario whose queries go through a queue to ``options.workers`` threads."""

    def start(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"{type(self).__name__}-{i}", daemon=True)
            for i in range(self.options.workers)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        for _ in self._threads:
            self._queue.put(None)  # one stop signal per worker
        for thread in self._threads:
            thread.join()

    def _work(self) -> None:
        """Take work from ``self._queue`` until a None arrives."""
        raise NotImplementedError
