"""How each LoadGen scenario turns queries into backend batches.

Scenarios see inference only as ``InferFn`` (sample indices -> response rows), so a new backend
or model needs no change here.
"""

from __future__ import annotations

from scenarios.base import (
    FatalFn,
    InferFn,
    RespondFn,
    Sample,
    ScenarioOptions,
    ScenarioSUT,
    check_responses,
    complete,
)
from scenarios.offline import OfflineSUT
from scenarios.server import ServerSUT
from scenarios.streams import StreamSUT

SCENARIOS: dict[str, type[ScenarioSUT]] = {
    "Offline": OfflineSUT,
    "Server": ServerSUT,
    "SingleStream": StreamSUT,
    "MultiStream": StreamSUT,
}

__all__ = [
    "SCENARIOS",
    "FatalFn",
    "InferFn",
    "RespondFn",
    "Sample",
    "ScenarioOptions",
    "ScenarioSUT",
    "check_responses",
    "complete",
    "make_sut",
]


def make_sut(
    scenario: str,
    infer: InferFn,
    options: ScenarioOptions,
    on_fatal: FatalFn,
    respond: RespondFn = complete,
) -> ScenarioSUT:
    """The SUT for a LoadGen scenario name (Offline, Server, SingleStream, MultiStream)."""
    return SCENARIOS[scenario](infer, options, on_fatal, respond)
