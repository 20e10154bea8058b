"""Offline: one huge query, cut into fixed-size batches and run by a pool of workers."""

from __future__ import annotations

import queue
import threading

import mlperf_loadgen as lg

from scenarios.base import ScenarioSUT


class OfflineSUT(ScenarioSUT):
    def start(self) -> None:
        self._batches: queue.SimpleQueue[list[lg.QuerySample] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"offline-worker-{i}", daemon=True)
            for i in range(self.options.workers)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        for _ in self._threads:
            self._batches.put(None)
        for thread in self._threads:
            thread.join()

    def issue_queries(self, samples: list[lg.QuerySample]) -> None:
        size = self.options.batch_size
        for start in range(0, len(samples), size):
            self._batches.put(samples[start : start + size])

    def _work(self) -> None:
        while (batch := self._batches.get()) is not None:
            self.run(batch)
