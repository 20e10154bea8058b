"""Plug-in backends for tests, loaded by the harness as ``tests.fakes:Class``."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np

from backends.base import Backend, BackendOption, Batch, ModelHandle


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


class CalibratingBackend(VettedBackend):
    """A vetted backend that draws its calibration batches when loaded, as int8 ones do."""

    name = "calibrating"

    def load(self, model: ModelHandle) -> None:
        super().load(model)
        self.calibrated_on = sum(len(batch[self._input]) for batch in model.calibration())


class FixedTimeBackend(InstantBackend):
    """Takes ``service_ms`` per batch whatever its size (the sleep releases the GIL, as a
    device would): a backend whose Server capacity is known in advance."""

    name = "fixed-time"

    def __init__(self, service_ms: float = 5.0) -> None:
        self._service_s = service_ms / 1000

    def predict(self, inputs: Batch) -> Batch:
        time.sleep(self._service_s)
        return super().predict(inputs)


class StallingBackend(InstantBackend):
    """Never returns from load() (stall_in="load"), from its second warm-up batch
    ("warm-up"), or from its first batch of the LoadGen test ("test"): a hung device."""

    name = "stalling"

    def __init__(self, stall_in: str = "load") -> None:
        self._stall_in = stall_in
        self._calls = 0
        self._measuring = False

    def load(self, model: ModelHandle) -> None:
        if self._stall_in == "load":
            threading.Event().wait()
        super().load(model)

    def start_measuring(self) -> None:
        self._measuring = True

    def predict(self, inputs: Batch) -> Batch:
        self._calls += 1
        if (self._stall_in == "warm-up" and self._calls == 2) or (
            self._stall_in == "test" and self._measuring
        ):
            threading.Event().wait()
        return super().predict(inputs)


class RaisingBackend(InstantBackend):
    """A plug-in whose constructor fails, as one that finds no device would."""

    def __init__(self) -> None:
        raise RuntimeError("no device found")


class AbstractBackend(Backend):
    """A plug-in that forgot to implement predict()."""

    def load(self, model: ModelHandle) -> None:
        pass

    def describe(self) -> dict[str, str]:
        return {}


class WrongOutputBackend(InstantBackend):
    """Returns ResNet-50 outputs that the model does not declare: the wrong shape, the wrong
    type, or not the output asked for."""

    name = "wrong-output"

    def __init__(self, problem: str = "shape") -> None:
        self._problem = problem

    def predict(self, inputs: Batch) -> Batch:
        count = len(inputs[self._input])
        if self._problem == "shape":
            return {self._output: np.ones((count, 2), dtype=np.int64)}
        if self._problem == "dtype":
            return {self._output: np.ones(count, dtype=np.float32)}
        return {"something_else": np.ones(count, dtype=np.int64)}


class ExitingBackend(InstantBackend):
    """Ends its process with status 0 after the LoadGen test, before the run's result is
    written; with leave="empty" it first leaves an empty result.json, as a full disk does."""

    name = "exiting"

    def __init__(self, leave: str = "nothing") -> None:
        self._leave = leave

    def report(self) -> dict:
        if self._leave == "empty":
            Path("result.json").write_text("")  # the process works in its run folder
        os._exit(0)


class LabelOnlyBackend(InstantBackend):
    """Reads no inputs (answers class 1 whatever they hold): an accuracy run over the official
    dataset size costs the host no image data."""

    name = "label-only"

    def inputs_read(self) -> frozenset[str]:
        return frozenset()


class DeclaringBackend(InstantBackend):
    """Declares its options, as a plug-in may: its label, compare choice and rerun command
    follow from them."""

    name = "declaring"
    declared_options = (
        BackendOption("flavour", str, "What it computes.", label=""),
        BackendOption("scale", float, "How much of it.", label="x"),
        BackendOption("threads", int, "Its threads (the command line's --threads)."),
    )
    main_option = "flavour"

    def __init__(self, flavour: str = "plain", scale: float = 1.0, threads: int = 0) -> None:
        self.flavour, self.scale, self.threads = flavour, scale, threads
