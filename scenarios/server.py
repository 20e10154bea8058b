"""Server: queries arrive one by one (Poisson); workers batch whatever is waiting.

A worker takes the oldest waiting sample and then whatever else is already queued, up to the
batch size, waiting at most ``server_batch_timeout_ms`` from the first sample for more. The
default timeout of 0 never delays a sample to fill a batch, which keeps tail latency under the
bound; batches still grow on their own when load is high.
"""

from __future__ import annotations

import queue
import time

import mlperf_loadgen as lg

from scenarios.base import WorkerPoolSUT


class ServerSUT(WorkerPoolSUT):
    def issue_queries(self, samples: list[lg.QuerySample]) -> None:
        for sample in samples:
            self._queue.put(sample)

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
            self.run(batch)
            if stopping:
                return
