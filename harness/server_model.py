"""The Server scenario as LoadGen runs it, in modelled time.

LoadGen issues Poisson-distributed single-sample queries from one thread and judges the run
by its 99th-percentile latency over at least 270,336 queries (``min_query_count`` of every
published Server run, e.g. inference_results_v3.0/closed/NVIDIA/results/
DGX-H100_H100-SXM-80GBx1_TRT/resnet50/Server/performance/run_1/mlperf_log_summary.txt),
with early stopping: a run passes only if, at 99% confidence, fewer than 1% of all its
queries would exceed the bound. Each query costs the issuing thread a fixed time, measured
here: LoadGen with a trivial SUT stays valid up to about 200,000 queries/s on this project's
machine (5 us a query). The queries then go through the Server scenario's batching policy
(``scenarios.server.simulate``) onto the modelled device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from backends.simaccel.timing import BatchTime, DeviceClock
from scenarios import ScenarioOptions
from scenarios.server import poisson_arrivals, simulate

RUN_QUERIES = 270_336  # LoadGen's minimum Server query count
ISSUE_COST_S = 5e-6  # LoadGen's own cost per issued query, measured on this machine
PERCENTILE = 0.99
CONFIDENCE_Z = 2.326  # one-sided 99% normal quantile
SEARCH_STEPS = 12  # bisection steps: the rate is found to 1/4096 of the device's capacity


@dataclass(frozen=True)
class ServerPoint:
    qps: float  # the highest rate found that passes
    p99_s: float
    mean_batch: float


def allowed_over_bound(queries: int) -> int:
    """Queries that may exceed the latency bound in a run of ``queries``: the count below
    which a 1% exceedance rate is ruled out at 99% confidence (normal approximation of the
    binomial)."""
    q = 1 - PERCENTILE
    return max(0, math.floor(queries * q - CONFIDENCE_Z * math.sqrt(queries * q * (1 - q))))


def issued(arrivals: np.ndarray, cost_s: float) -> np.ndarray:
    """When one thread that spends ``cost_s`` on each query hands it on: the i-th query
    leaves at max(arrival_i, leave_{i-1}) + cost_s."""
    steps = cost_s * np.arange(1, len(arrivals) + 1)
    return steps + np.maximum.accumulate(arrivals - steps + cost_s)


def run(rate: float, service: list[BatchTime], options: ScenarioOptions, queries: int):
    """Latencies (from each query's scheduled time) and batch sizes of one modelled run."""
    scheduled = np.asarray(poisson_arrivals(rate, queries))
    handed = issued(scheduled, ISSUE_COST_S)
    clock = DeviceClock()
    batches: list[int] = []

    def serve(dispatch: float, samples: int) -> float:
        batches.append(samples)
        return clock.finish(dispatch, service[samples])[1]

    done = simulate(handed.tolist(), options, serve) + handed
    return done - scheduled, batches


def passes(latencies: np.ndarray, bound_s: float) -> bool:
    return int(np.count_nonzero(latencies > bound_s)) <= allowed_over_bound(len(latencies))


def capacity(
    service: list[BatchTime],
    options: ScenarioOptions,
    bound_s: float,
    ceiling: float,
    queries: int = RUN_QUERIES,
) -> ServerPoint:
    """Bisect the Poisson rate, up to ``ceiling`` (the device's steady capacity: no higher
    rate is sustainable), for the highest one whose run passes the bound."""
    best = ServerPoint(0.0, service[1].latency_s, 1.0)
    if service[1].latency_s > bound_s:
        return best
    low, high = 0.0, ceiling
    for _ in range(SEARCH_STEPS):
        rate = (low + high) / 2
        latencies, batches = run(rate, service, options, queries)
        if passes(latencies, bound_s):
            low = rate
            best = ServerPoint(
                rate, float(np.percentile(latencies, 100 * PERCENTILE)), float(np.mean(batches))
            )
        else:
            high = rate
    return best
