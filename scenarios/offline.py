"""Offline: one huge query, cut into fixed-size batches and run by a pool of workers."""

from __future__ import annotations

from scenarios.base import Sample, WorkerPoolSUT


class OfflineSUT(WorkerPoolSUT):
    def issue_queries(self, samples: list[Sample]) -> None:
        size = self.options.batch_size
        for start in range(0, len(samples), size):
            self._queue.put(samples[start : start + size])

    def _work(self) -> None:
        while (batch := self._queue.get()) is not None:
            self.run(batch)
