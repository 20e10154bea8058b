"""Plug-in backends for tests, loaded by the harness as ``tests.fakes:Class``."""

from __future__ import annotations

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
