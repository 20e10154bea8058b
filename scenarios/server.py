"""Server: queries arrive one by one (Poisson); workers batch whatever is waiting.

A worker takes the oldest waiting sample and then whatever else is already queued, up to the
batch size, waiting at most ``server_batch_timeout_ms`` from the first sample for more. The
default timeout of 0 never delays a sample to fill a batch, which keeps tail latency under the
bound; batches still grow on their own when load is high.
"""

from __future__ import annotations

import queue
import threading
import time

import mlperf_loadgen as lg

from scenarios.base import ScenarioSUT


class ServerSUT(ScenarioSUT):
    def start(self) -> None:
        self._waiting: queue.SimpleQueue[lg.QuerySample | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"server-worker-{i}", daemon=True)
            for i in range(self.options.workers)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        for _ in self._threads:
            self._waiting.put(None)
        for thread in self._threads:
            thread.join()

    def issue_queries(self, samples: list[lg.QuerySample]) -> None:
        for sample in samples:
            self._waiting.put(sample)

    def _work(self) -> None:
        timeout = self.options.server_batch_timeout_ms / 1000
        while (first := self._waiting.get()) is not None:
            batch = [first]
            deadline = time.monotonic() + timeout
            stopping = False
            while len(batch) < self.options.batch_size:
                remaining = deadline - time.monotonic()
                try:
                    item = (
                        self._waiting.get(timeout=remaining)
                        if remaining > 0
                        else self._waiting.get_nowait()
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
