"""Plug-in backends for tests, loaded by the harness as ``tests.fakes:Class``."""

from __future__ import annotations

import time

import numpy as np

from backends.base import Backend, Batch, ModelHandle


class InstantBackend(Backend):
    """Answers every ResNet-50 sample with class 1 (label 0) at once: exercises the harness."""

    name = "instant"

    def load(self, model: ModelHandle) -> None:
        self._input, self._output = model.input_names[0], model.output_names[0]

    def predict(self, inputs: Batch) -> Batch:
        return {self._output: np.ones(len(inputs[self._input]), dtype=np.int64)}

    def describe(self) -> dict[str, str]:
        return {"backend": self.name, "precision": "none", "sparsity": "dense"}


class FailingBackend(InstantBackend):
    """Works for two batches, then raises, as a crashing accelerator driver would."""

    name = "failing"

    def load(self, model: ModelHandle) -> None:
        super().load(model)
        self._calls = 0

    def predict(self, inputs: Batch) -> Batch:
        self._calls += 1
        if self._calls > 2:
            raise RuntimeError("device lost")
        return super().predict(inputs)


class VettedBackend(InstantBackend):
    """A 1 ms-per-batch backend as if it ran the reference model unchanged: allowed in the
    closed division, so that whole submissions can be rehearsed in seconds."""

    name = "vetted"
    open_division_only = ""

    def predict(self, inputs: Batch) -> Batch:
        time.sleep(0.001)
        return super().predict(inputs)

    def describe(self) -> dict[str, str]:
        return {
            **super().describe(),
            "framework": "tests",
            "weight_data_types": "fp32",
            "weight_transformations": "none",
        }


class FixedTimeBackend(InstantBackend):
    """Takes ``service_ms`` per batch whatever its size (the sleep releases the GIL, as a
    device would): a backend whose Server capacity is known in advance."""

    name = "fixed-time"

    def __init__(self, service_ms: float = 5.0) -> None:
        self._service_s = service_ms / 1000

    def predict(self, inputs: Batch) -> Batch:
        time.sleep(self._service_s)
        return super().predict(inputs)
