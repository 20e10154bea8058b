"""A backend replica: the actor a cluster runs per replica (wrapped by ``ray.remote``).

It loads its own copy of the samples LoadGen asks for, and runs the scenario's own SUT on its
backend, so that batching happens here as in one process; each message's responses go back
to the dispatcher as one reply, in the order of the sample ids it was sent.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

import numpy as np

from harness.inference import Description, LocalInference
from harness.models.check import ModelFile
from harness.spec import RunSpec
from harness.warmup import WarmUp
from harness.workloads import get_workload
from scenarios import ScenarioOptions, ScenarioSUT, check_responses, make_sut


class Message:
    """The samples of one message, filled in as their batches finish."""

    def __init__(self, count: int) -> None:
        self.rows: np.ndarray | None = None
        self.left = count
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._lock = threading.Lock()

    def put(self, positions: list[int], rows: np.ndarray) -> None:
        with self._lock:
            if self.rows is None:
                self.rows = np.empty((self.left, *rows.shape[1:]), rows.dtype)
            self.rows[positions] = rows
            self.left -= len(positions)
            if self.left == 0:
                self.done.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.done.set()


class ReplicaSample:
    """A sample as the scenario SUT sees it, with where its response goes."""

    __slots__ = ("id", "index", "message", "position")

    def __init__(self, id: int, index: int, message: Message, position: int) -> None:
        self.id = id
        self.index = index
        self.message = message
        self.position = position


class Replica:
    def __init__(self, number: int) -> None:
        self.number = number
        self._busy_s = 0.0
        self._batches = 0
        self._count_lock = threading.Lock()
        self._pending: set[Message] = set()
        self._pending_lock = threading.Lock()
        self._failure: BaseException | None = None
        self._sut: ScenarioSUT | None = None

    @contextmanager
    def _watch(self, what: str, kind: str) -> Iterator[None]:
        """Counts the backend's busy time (the run process's watchdog watches messages)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            if kind == "batch":
                with self._count_lock:
                    self._busy_s += time.perf_counter() - start
                    self._batches += 1

    def _fatal(self, exc: BaseException) -> NoReturn:
        """The backend failed: every waiting message fails with it, and so will later ones."""
        self._failure = exc
        with self._pending_lock:
            for message in self._pending:
                message.fail(exc)
        raise exc

    def setup(self, spec: RunSpec, model: ModelFile) -> dict[str, Any]:
        if not model.path.is_file():
            raise FileNotFoundError(
                f"model file {model.path} is not on this node: the model and data must be at "
                "the same paths on every node"
            )
        data = get_workload(spec.model).open_data(spec.data_source, model.path, lambda _: None)
        self._inference = LocalInference(spec, model, data, self._watch, self._fatal)
        return {"pid": os.getpid()}

    def describe(self) -> Description:
        return self._inference.describe()

    def load_samples(self, indices: Sequence[int]) -> None:
        self._inference.store.load_samples(indices)

    def unload_samples(self, indices: Sequence[int]) -> None:
        self._inference.store.unload_samples(indices)

    def warm_up(self, spec: RunSpec) -> WarmUp:
        return self._inference.warm_up(spec)

    def server_batch_times(self, spec: RunSpec) -> tuple[tuple[int, float], ...]:
        return self._inference.server_batch_times(spec)

    def start(self, scenario: str, options: ScenarioOptions) -> None:
        self._sut = make_sut(scenario, self._inference.infer, options, self._fatal, self._respond)
        self._sut.start()

    def start_measuring(self) -> None:
        with self._count_lock:
            self._busy_s, self._batches = 0.0, 0
        self._inference.start_measuring()

    def serve(self, ids: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run one message's samples through the scenario SUT; their responses, in order."""
        if self._failure is not None:
            raise self._failure
        message = Message(len(ids))
        with self._pending_lock:
            self._pending.add(message)
        try:
            samples = [
                ReplicaSample(int(i), int(x), message, k)
                for k, (i, x) in enumerate(zip(ids.tolist(), indices.tolist(), strict=True))
            ]
            self._sut.issue_queries(samples)
            message.done.wait()
        finally:
            with self._pending_lock:
                self._pending.discard(message)
        if message.error is not None:
            raise message.error
        return ids, message.rows

    def _respond(self, samples: Sequence[ReplicaSample], responses: np.ndarray) -> None:
        responses = check_responses(samples, responses)
        by_message: dict[Message, list[int]] = {}
        for row, sample in enumerate(samples):
            by_message.setdefault(sample.message, []).append(row)
        for message, rows in by_message.items():
            message.put([samples[row].position for row in rows], responses[rows])

    def finish(self) -> dict[str, Any]:
        """After the LoadGen test: the backend's report, its busy time, the Server timeline."""
        if self._sut is not None:
            self._sut.stop()
        timeline = self._sut.timeline if self._sut is not None else None
        return {
            "backend_report": self._inference.report(),
            "busy_s": round(self._busy_s, 3),
            "batches": self._batches,
            "timeline": timeline.rows if timeline is not None else None,
        }
