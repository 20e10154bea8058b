"""Where a run's inference happens, as the LoadGen process sees it: in the process itself
(``LocalEngine``), or on a cluster's replicas (``harness.cluster.engine.ClusterEngine``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import mlperf_loadgen as lg

from harness.inference import Description, LocalInference
from harness.spec import RunSpec
from harness.warmup import WarmUp
from scenarios import FatalFn, ScenarioOptions, make_sut
from scenarios.timeline import Timeline


class LoadGenSUT(Protocol):
    """What LoadGen drives: a scenario SUT, or the cluster's dispatcher."""

    timeline: Timeline | None

    @property
    def completed_samples(self) -> int: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def issue_queries(self, samples: list[lg.QuerySample]) -> None: ...

    def flush_queries(self) -> None: ...


class Engine(Protocol):
    def warm_up(self, spec: RunSpec) -> list[WarmUp]: ...

    def server_batch_times(self, spec: RunSpec) -> tuple[tuple[int, float], ...]:
        """What sizes Server batches (see scenarios.server; none: greedy)."""

    def load_samples(self, indices: Sequence[int]) -> None: ...

    def unload_samples(self, indices: Sequence[int]) -> None: ...

    def sut(self, scenario: str, options: ScenarioOptions, on_fatal: FatalFn) -> LoadGenSUT: ...

    def construct(self, sut: LoadGenSUT) -> int:
        """The LoadGen handle of ``sut`` (ConstructSUT, or ConstructQDL for a dispatcher)."""

    def destroy(self, handle: int) -> None: ...

    def start_measuring(self) -> None: ...

    def report(self) -> dict[str, Any]:
        """The backend's report for result.json."""

    def describe(self) -> Description: ...

    def record(self) -> dict[str, Any] | None:
        """What run.json and result.json keep of the engine (None: nothing beyond the run)."""

    def close(self) -> None: ...


class LocalEngine:
    """Inference in the LoadGen process: the scenario SUT batches, the backend runs here."""

    def __init__(self, inference: LocalInference) -> None:
        self.inference = inference

    def warm_up(self, spec: RunSpec) -> list[WarmUp]:
        return [self.inference.warm_up(spec)]

    def server_batch_times(self, spec: RunSpec) -> tuple[tuple[int, float], ...]:
        return self.inference.server_batch_times(spec)

    def load_samples(self, indices: Sequence[int]) -> None:
        self.inference.store.load_samples(indices)

    def unload_samples(self, indices: Sequence[int]) -> None:
        self.inference.store.unload_samples(indices)

    def sut(self, scenario: str, options: ScenarioOptions, on_fatal: FatalFn) -> LoadGenSUT:
        return make_sut(scenario, self.inference.infer, options, on_fatal)

    def construct(self, sut: LoadGenSUT) -> int:
        return lg.ConstructSUT(sut.issue_queries, sut.flush_queries)

    def destroy(self, handle: int) -> None:
        lg.DestroySUT(handle)

    def start_measuring(self) -> None:
        self.inference.start_measuring()

    def report(self) -> dict[str, Any]:
        return self.inference.report()

    def describe(self) -> Description:
        return self.inference.describe()

    def record(self) -> dict[str, Any] | None:
        return None

    def close(self) -> None:
        pass
