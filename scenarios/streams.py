"""SingleStream and MultiStream: LoadGen waits for each query, so it runs inline as one batch."""

from __future__ import annotations

from scenarios.base import Sample, ScenarioSUT


class StreamSUT(ScenarioSUT):
    """One query (1 sample in SingleStream, 8 in MultiStream) is one backend batch."""

    def issue_queries(self, samples: list[Sample]) -> None:
        self.run(samples)
