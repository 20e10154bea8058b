"""One backend loaded with its model, serving batches of the samples LoadGen asked for: what
a run process runs on its own, and what each replica of a cluster runs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

from backends import create_backend
from backends.base import Batch
from harness.calibration_list import Calibration, check_calibration_list
from harness.errors import UserError
from harness.models.check import ModelFile
from harness.outputs import check_outputs
from harness.qsl import SampleStore
from harness.spec import RunSpec
from harness.warmup import WarmUp, measure, server_batch_times
from harness.workloads import get_workload
from harness.workloads.base import WorkloadData

# Watches a call: (what it is, for a watchdog's message; its kind: harness, backend, batch).
Watch = Callable[[str, str], AbstractContextManager[None]]


@dataclass(frozen=True)
class Description:
    """What run.json records of a backend, and what decides the divisions it may enter."""

    backend: dict[str, str]  # Backend.describe()
    open_division_only: str
    simulated: bool
    calibration: dict[str, Any] | None  # what the backend calibrated on, if it did


class LocalInference:
    """Creates and loads the backend (a failing load() goes to ``on_fatal``; a UserError is
    raised), then infers batches of loaded samples into the workload's response rows."""

    def __init__(
        self,
        spec: RunSpec,
        model: ModelFile,
        data: WorkloadData,
        watch: Watch,
        on_fatal: Callable[[BaseException], NoReturn],
    ) -> None:
        self.workload = get_workload(spec.model)
        self.label = spec.backend_label
        self.phase = "the warm-up"
        self._model = model
        self._watch = watch
        with self._call("its constructor"):
            self.backend = create_backend(spec.backend, spec.backend_options)
        listed = spec.calibration_list
        names = check_calibration_list(listed, data) if listed else ()
        self._calibrated: list[Calibration] = []  # what the backend drew, if it calibrated

        def calibration() -> Sequence[Batch]:
            batches = data.calibration(names)
            samples = sum(len(next(iter(batch.values()))) for batch in batches)
            self._calibrated.append(Calibration.of(listed, samples))
            return batches

        handle = self.workload.model_handle(model.path, calibration)
        with self._call("load()"):
            try:
                self.backend.load(handle)
            except UserError:
                raise
            except Exception as exc:
                on_fatal(exc)
        with self._call("inputs_read()"):
            self._reads = self.backend.inputs_read()
        self.store = SampleStore(data.count, data.fetch, data.to_inputs)

    def _call(self, what: str) -> AbstractContextManager[None]:
        """A watched backend call that is not a batch."""
        return self._watch(f"backend {self.label} in {what}", "backend")

    def infer(self, indices: Sequence[int]) -> np.ndarray:
        with self._watch(f"backend {self.label} in predict() during {self.phase}", "batch"):
            batch = self.backend.predict(self.store.batch(indices, self._reads))
        return self.workload.responses(check_outputs(batch, self._model.outputs, len(indices)))

    def warm_up(self, spec: RunSpec) -> WarmUp:
        return measure(spec, self.infer, self.store)

    def server_batch_times(self, spec: RunSpec) -> tuple[tuple[int, float], ...]:
        return server_batch_times(spec, self.infer, self.store)

    def start_measuring(self) -> None:
        self.phase = "the LoadGen test"
        with self._call("start_measuring()"):
            self.backend.start_measuring()

    def report(self) -> dict[str, Any]:
        with self._call("report()"):
            return self.backend.report()

    def describe(self) -> Description:
        with self._call("describe()"):
            description = self.backend.describe()
        calibrated = self._calibrated[0].__dict__ if self._calibrated else None
        return Description(
            description, self.backend.open_division_only, self.backend.simulated, calibrated
        )
