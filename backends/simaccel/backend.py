"""The simaccel backend: LoadGen runs in real time against a modelled device.

Each batch is timed by the device model (``TimingModel``) on a ``DeviceClock`` that follows
the monotonic clock: the batch's transfer starts when it arrives and the link is free, its
compute when the device is free, and ``predict`` returns at the modelled end of its compute.
LoadGen therefore measures what the device would show under the harness's batching policy.
Outputs come from a functional model run meanwhile (the sparse-int4 numerics when weights are
pruned or the device computes in int4, ONNX Runtime int8 or fp32 otherwise), or with
``functional="off"`` are zeros, which only performance runs accept.

When the host cannot keep up (a functional model slower than the device, or Python slower
than its batches), responses leave after their modelled time; that lateness is measured and a
run whose responses were late by more than 5% of the device's busy time is marked host-bound.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from backends.base import Backend, BackendOption, Batch, ModelHandle
from backends.simaccel.profiles import resolve_profile
from backends.simaccel.timing import (
    DeviceClock,
    Options,
    TimingModel,
    density_warning,
    token_load,
)
from backends.simaccel.workload import model_work
from backends.sparse_int4.sparsity import UNSTRUCTURED
from harness.errors import UserError
from harness.models.check import read_interface

HOST_BOUND_SHARE = 0.05  # lateness beyond this share of busy time marks a run host-bound
TOKENS = ("padded", "real")
FUNCTIONAL = ("on", "off")


class SimAccelBackend(Backend):
    name = "simaccel"
    open_division_only = "a simulated device: its times are modelled, not measured"
    simulated = True
    declared_options = (
        BackendOption("device", str, "simaccel: built-in device, e.g. moffett-s30.", label=""),
        BackendOption(
            "device_file", Path, "simaccel: a TOML device profile instead of --device.", label=""
        ),
        BackendOption("precision", str, "Device compute type.", label=""),
        BackendOption("density", float, "Weight density.", label="d"),
        BackendOption("sparsity_pattern", str, "unstructured or N:M such as 2:4."),
        BackendOption(
            "tokens",
            str,
            "simaccel, BERT: work per sample from its real token count (real) or the padded "
            "384 (padded, the default).",
        ),
        BackendOption(
            "functional",
            str,
            "simaccel: on (outputs from the device's numerics) or off (timing only; "
            "performance mode only).",
        ),
    )
    main_option = "device"

    def __init__(
        self,
        device: str | None = None,
        device_file: Path | None = None,
        precision: str | None = None,
        density: float | None = None,
        sparsity_pattern: str | None = None,
        tokens: str = "padded",
        functional: str = "on",
        vector_size: int = 16,
        act_clip: str = "max",
        threads: int = 0,
    ) -> None:
        self.profile = resolve_profile(device, device_file)
        dtype = precision or self.profile.default_dtype()
        self.profile.check_dtype(dtype)
        for option, value, choices in (
            ("tokens", tokens, TOKENS),
            ("functional", functional, FUNCTIONAL),
        ):
            if value not in choices:
                raise UserError(f"simaccel: {option} must be {' or '.join(choices)}, got {value!r}")
        # Without a pattern: a pruned model file's own (from its record), else unstructured.
        self._pattern = sparsity_pattern
        self.options = Options(
            dtype, None if density is None else float(density), sparsity_pattern or UNSTRUCTURED
        )
        self.tokens = tokens
        self.functional = _functional_model(
            functional, self.options, vector_size, act_clip, threads
        )
        self.timing_only = self.functional is None
        self.warning = density_warning(self.profile, self.options)
        self._model_sparsity = ""  # a pruned model file's record, as it describes itself
        self._model: TimingModel | None = None
        self._mask = ""
        self._outputs: dict[str, tuple[tuple[int, ...], str]] = {}
        self._clock = DeviceClock()
        self._lock = threading.Lock()
        self.start_measuring()

    def load(self, model: ModelHandle) -> None:
        pruning = read_interface(model.path).pruning
        if self.options.density is None and pruning is not None:
            # The model's zeros are timed in the pattern they were pruned in.
            self.options = replace(self.options, pattern=self._pattern or pruning.pattern)
            self.warning = density_warning(
                self.profile, replace(self.options, density=pruning.density)
            )
            self._model_sparsity = pruning.describe()
        work = model_work(model.path)
        self._model = TimingModel(work, self.profile, self.options)
        self._outputs = {name: work.outputs[name] for name in model.output_names}
        if self.tokens == "real":
            if not (model.token_mask and work.tokens):
                raise UserError(f"simaccel: tokens=real needs a token model; {model.name} is not")
            self._mask = model.token_mask
            self._length = work.tokens
        if self.functional is not None:
            self.functional.load(model)
        self._clock = DeviceClock()
        self._origin = time.monotonic()

    def start_measuring(self) -> None:
        with self._lock:
            self._stats = dict.fromkeys(("batches", "samples"), 0)
            self._stats.update(dict.fromkeys(("busy_s", "late_s", "joules", "max_late_s"), 0.0))

    def inputs_read(self) -> frozenset[str] | None:
        if self.functional is not None:
            return None
        return frozenset({self._mask} - {""})

    def predict(self, inputs: Batch) -> Batch:
        assert self._model is not None, "load() must be called before predict()"
        arrived = time.monotonic() - self._origin
        samples = len(next(iter(inputs.values())))
        if self._mask:
            ratios = np.count_nonzero(inputs[self._mask], axis=1) / self._length
        else:
            ratios = np.ones(samples)
        timing = self._model.batch(token_load(ratios))
        with self._lock:
            start, done = self._clock.finish(arrived, timing)
        if self.functional is not None:
            outputs = self.functional.predict(inputs)
        else:
            outputs = {
                name: np.zeros((samples, *dims), dtype=dtype)
                for name, (dims, dtype) in self._outputs.items()
            }
        wait = done - (time.monotonic() - self._origin)
        if wait > 0:
            time.sleep(wait)
        late = max(0.0, time.monotonic() - self._origin - done)
        with self._lock:
            stats = self._stats
            stats["batches"] += 1
            stats["samples"] += samples
            stats["busy_s"] += done - start
            stats["late_s"] += late
            stats["joules"] += timing.joules
            stats["max_late_s"] = max(stats["max_late_s"], late)
        return outputs

    def report(self) -> dict[str, Any]:
        with self._lock:
            stats = dict(self._stats)
        busy = stats["busy_s"]
        host_bound = busy > 0 and stats["late_s"] > HOST_BOUND_SHARE * busy
        warnings = [self.warning] if self.warning else []
        if host_bound:
            warnings.append(
                f"HOST-BOUND: responses left {stats['late_s']:.3g} s after their modelled "
                f"times in all (device busy {busy:.3g} s); the host, not {self.profile.name}, "
                "set these numbers"
            )
        return {
            "simulated_device": self.profile.name,
            "host_bound": host_bound,
            "warning": "; ".join(warnings),
            **stats,
            "modelled_samples_per_joule": stats["samples"] / stats["joules"]
            if stats["joules"]
            else None,
        }

    def describe(self) -> dict[str, str]:
        density = self.options.density
        functional = self.functional.describe() if self.functional is not None else None
        return {
            "backend": self.name,
            "precision": self.options.dtype,
            "sparsity": f"weight density {density:g} ({self.options.pattern})"
            if density is not None and density < 1
            else f"as in the model{': ' + self._model_sparsity if self._model_sparsity else ''}",
            "framework": "sparseperf simaccel timing model"
            + (f", outputs from {functional['backend']}" if functional else ", timing only"),
            "device": f"{self.profile.name} (simulated: {self.profile.description})",
            # The modelled device, for system descriptions.
            "device_model": self.profile.description,
            "device_clock": f"{self.profile.clock_ghz:g} GHz",
            "device_memory_bandwidth": f"{self.profile.memory_bandwidth_gbs:g} GB/s",
            "device_on_chip_memory": f"{self.profile.on_chip_memory_mb:g} MB",
            "device_host_link": f"{self.profile.host_link_gbs:g} GB/s",
            "bert_tokens": self.tokens,
            "functional_model": functional["precision"] if functional else "off",
            "weight_data_types": self.options.dtype,
            "weight_transformations": functional["weight_transformations"]
            if functional
            else f"{self.options.dtype} quantization modelled, not performed",
        }


def _functional_model(
    functional: str, options: Options, vector_size: int, act_clip: str, threads: int
) -> Backend | None:
    """The numerics the device's outputs come from (None: timing only)."""
    if functional == "off":
        return None
    pruned = options.density is not None and options.density < 1
    if pruned or options.dtype == "int4":
        from backends.sparse_int4.backend import SparseInt4Backend

        return SparseInt4Backend(
            options.density, options.pattern, vector_size, act_clip, threads=threads
        )
    from backends.onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend("int8" if options.dtype == "int8" else "fp32", threads=threads)
