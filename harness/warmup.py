"""The warm-up before a performance run: what one backend process does per call, and the LoadGen
expectations (QPS or latency) that follow for a run on one or several such processes."""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from harness.qsl import SampleStore
from harness.settings import rounded
from harness.spec import RunSpec
from scenarios import InferFn

WARMUP_SECONDS = {"smoke": 0.5, "short": 2.0, "valid": 5.0}
MULTISTREAM_SAMPLES = 8


@dataclass(frozen=True)
class WarmUp:
    """What one backend process did in its warm-up: Offline samples/s (its workers together),
    Server batch-1 queries/s, or the fastest stream query in seconds."""

    rate: float = 0.0
    fastest_s: float = 0.0


def warmup(infer: InferFn, store: SampleStore, batch: int, seconds: float) -> list[float]:
    """Seconds per call of ``infer`` on ``batch`` loaded samples (first call discarded)."""
    indices = list(range(min(store.count, max(batch, 64))))
    store.load_samples(indices)
    times: list[float] = []
    picks = [indices[(i * batch) % len(indices) :][:batch] for i in range(1000)]
    try:
        infer(picks[0])
        deadline = time.perf_counter() + seconds
        for pick in picks[1:]:
            start = time.perf_counter()
            infer(pick if len(pick) == batch else indices[:batch])
            times.append(time.perf_counter() - start)
            if time.perf_counter() > deadline and len(times) >= 2:
                break
    finally:
        store.unload_samples(indices)
    return times


def concurrent_rate(
    infer: InferFn, store: SampleStore, batch: int, workers: int, seconds: float
) -> float:
    """Samples/s of ``workers`` threads each calling ``infer`` on ``batch`` samples, as the
    Offline SUT's workers do (a backend that overlaps calls beats one call's time)."""
    indices = list(range(min(store.count, batch)))
    store.load_samples(indices)
    try:
        infer(indices)
        start = time.perf_counter()
        deadline = start + seconds

        def loop() -> int:
            calls = 0
            while calls < 2 or time.perf_counter() < deadline:
                infer(indices)
                calls += 1
            return calls

        with ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(loop) for _ in range(workers)]
            calls = sum(future.result() for future in futures)  # re-raises a backend error
        return calls * len(indices) / (time.perf_counter() - start)
    finally:
        store.unload_samples(indices)


def measure(spec: RunSpec, infer: InferFn, store: SampleStore) -> WarmUp:
    """One backend process's warm-up for ``spec``'s scenario."""
    seconds = WARMUP_SECONDS[spec.preset]
    if spec.scenario == "Offline":
        if spec.workers > 1:
            return WarmUp(
                rate=concurrent_rate(infer, store, spec.batch_size, spec.workers, seconds)
            )
        times = warmup(infer, store, spec.batch_size, seconds)
        return WarmUp(rate=spec.batch_size / float(np.median(times)))
    if spec.scenario == "Server":
        return WarmUp(rate=1 / float(np.median(warmup(infer, store, 1, seconds))))
    batch = 1 if spec.scenario == "SingleStream" else MULTISTREAM_SAMPLES
    return WarmUp(fastest_s=min(warmup(infer, store, batch, seconds)))


def server_batch_times(
    spec: RunSpec, infer: InferFn, store: SampleStore
) -> tuple[tuple[int, float], ...]:
    """The backend's median seconds per batch at 1, half and all of the batch size, for the
    Server policy to size batches by (nothing to measure at batch 1)."""
    if spec.scenario != "Server" or spec.mode != "performance" or spec.batch_size == 1:
        return ()
    seconds = WARMUP_SECONDS[spec.preset] / 3
    sizes = sorted({1, max(1, spec.batch_size // 2), spec.batch_size})
    return tuple((b, float(np.median(warmup(infer, store, b, seconds)))) for b in sizes)


def auto_settings(scenario: str, measured: Sequence[WarmUp]) -> dict[str, str]:
    """Expected QPS / latency for a run on the processes measured, so that valid runs neither
    end short of the minimum duration nor run out of pre-generated queries. Throughput adds
    up over processes (cluster replicas); a stream query runs on one, the fastest."""
    if scenario == "Offline":
        return {"target_qps": rounded(1.05 * sum(m.rate for m in measured))}
    if scenario == "Server":  # half the batch-1 rate: a starting point, not a limit
        return {"target_qps": rounded(0.5 * sum(m.rate for m in measured))}
    # LoadGen pre-generates min_duration / expected latency queries: err on the low side.
    fastest = min(m.fastest_s for m in measured)
    return {"target_latency": rounded(max(0.75 * 1000 * fastest, 1e-3))}
