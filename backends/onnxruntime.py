"""The dense baseline: ONNX Runtime on the CPU, fp32 or int8.

int8 comes in two recipes: static QDQ (activation ranges calibrated on dataset samples; best
for CNNs) and dynamic (activation ranges per batch at run time; best for transformers, where
Q/DQ nodes around every MatMul cost more than they save). The workload advises one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from backends.base import Backend, BackendOption, Batch, ModelHandle, batches_digest
from harness.accuracy import file_sha256
from harness.cache import cache_dir
from harness.errors import UserError

PRECISIONS = ("fp32", "int8")
QUANTIZATIONS = ("auto", "static", "dynamic")  # auto: the workload's advice
GRAPH_OPTIMIZATION = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
INT8_WEIGHTS = {
    "static": "per-channel symmetric weights, activations calibrated on dataset samples",
    "dynamic": "per-tensor weights of every MatMul, activations quantized per batch",
}
# Bump when a quantization recipe changes, so cached int8 models are rebuilt.
INT8_RECIPES = {"static": "qdq-u8s8-perchannel-minmax-v1", "dynamic": "dynamic-s8-matmul-v1"}
# Intra-op threads that spin while waiting for work hold their cores: on an idle machine a Server
# run's tail then matches the reference harness's (without: about twice as long), but where other
# work shares the cores it grows several times (benchmarks/results/server_reference.md). On, as
# ONNX Runtime has it; off for shared machines.
SPINNING = ("on", "off")
SPIN_KEY = "session.intra_op.allow_spinning"


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    open_division_only = ""
    declared_options = (
        BackendOption("precision", str, "Backend precision (onnxruntime: fp32 or int8).", label=""),
        BackendOption("threads", int, "Backend threads (default: all cores)."),
    )
    main_option = "precision"

    def __init__(
        self,
        precision: str = "fp32",
        threads: int = 0,
        graph_optimization: str = "all",
        quantization: str = "auto",
        spinning: str = "on",
    ) -> None:
        for option, value, choices in (
            ("precision", precision, PRECISIONS),
            ("graph optimization", graph_optimization, GRAPH_OPTIMIZATION),
            ("quantization", quantization, QUANTIZATIONS),
            ("spinning", spinning, SPINNING),
        ):
            if value not in choices:
                raise UserError(
                    f"onnxruntime backend: unknown {option} {value!r}; choose one of "
                    + ", ".join(choices)
                )
        if quantization != "auto" and precision != "int8":
            raise UserError("onnxruntime backend: quantization applies to --precision int8 only")
        self.precision = precision
        self.quantization = quantization
        self.threads = threads or (os.cpu_count() or 1)
        self.graph_optimization = graph_optimization
        self.spinning = spinning
        self._session: ort.InferenceSession | None = None
        self._outputs: list[str] = []
        self._session_options = ""  # as the loaded session holds them, for run.json

    def load(self, model: ModelHandle) -> None:
        if self.quantization == "auto":
            self.quantization = model.int8_activations
        path = quantize_int8(model, self.quantization) if self.precision == "int8" else model.path
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = GRAPH_OPTIMIZATION[self.graph_optimization]
        options.add_session_config_entry(SPIN_KEY, "1" if self.spinning == "on" else "0")
        self._session = cpu_session(path, options)
        self._outputs = list(model.output_names)
        held = self._session.get_session_options()
        self._session_options = (
            f"intra_op_num_threads={held.intra_op_num_threads}, "
            f"inter_op_num_threads={held.inter_op_num_threads}, "
            f"{SPIN_KEY}={held.get_session_config_entry(SPIN_KEY)}"
        )

    def predict(self, inputs: Batch) -> Batch:
        assert self._session is not None, "load() must be called before predict()"
        values = self._session.run(self._outputs, inputs)
        return dict(zip(self._outputs, values, strict=True))

    def describe(self) -> dict[str, str]:
        precision = self.precision
        if precision == "int8":
            precision += f" ({self.quantization} activations)"
        return {
            "backend": self.name,
            "precision": precision,
            "sparsity": "dense",
            "framework": f"onnxruntime {ort.__version__}",
            "device": f"CPU ({platform.machine()}, {self.threads} threads)",
            "session_options": self._session_options,
            "weight_data_types": self.precision,
            "weight_transformations": (
                f"ONNX Runtime int8 quantization, {INT8_WEIGHTS[self.quantization]}"
                if self.precision == "int8"
                else "none"
            ),
        }


def cpu_session(path: Path, options: ort.SessionOptions | None = None) -> ort.InferenceSession:
    """An ONNX Runtime CPU session; a model ORT cannot load is a UserError."""
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises several unrelated types for unreadable models
        raise UserError(f"onnxruntime cannot load {path}: {first_line(exc)}") from exc


def reference_runner(path: Path, purpose: str) -> Callable[[list[str], Batch], list[np.ndarray]]:
    """``session.run`` of an FP32 reference session for ``purpose`` (e.g. "to label the
    synthetic images"); a model ORT cannot load or run is a UserError saying so."""
    session = cpu_session(path)

    def run(outputs: list[str], feeds: Batch) -> list[np.ndarray]:
        try:
            return session.run(outputs, feeds)
        except Exception as exc:  # ORT raises several unrelated types
            raise UserError(f"onnxruntime cannot run {path} {purpose}: {first_line(exc)}") from exc

    return run


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def quantize_int8(model: ModelHandle, recipe: str) -> Path:
    """The int8 model for ``recipe`` (static or dynamic), cached per model file, recipe and
    calibration set; written atomically, so a crash never leaves a half-written cache entry."""
    batches = list(model.calibration()) if recipe == "static" else []
    if recipe == "static" and not batches:
        raise UserError(f"int8 quantization of {model.name} needs calibration samples; none given")
    digest = hashlib.sha256(file_sha256(model.path).encode())
    calibration = batches_digest(batches) if batches else ""
    digest.update(f"{INT8_RECIPES[recipe]}|{calibration}|{ort.__version__}".encode())
    target = cache_dir("int8") / f"{model.name}-{recipe}-{digest.hexdigest()[:16]}.onnx"
    if not target.exists():
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            quantized = Path(tmp) / "quantized.onnx"
            if recipe == "static":
                _quantize_static(model.path, batches, Path(tmp), quantized)
            else:
                _quantize_dynamic(model.path, quantized)
            os.replace(quantized, target)
    return target


def _quantize_dynamic(source: Path, target: Path) -> None:
    """s8 weights for every MatMul; activations quantized per batch by the kernels."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The quantizer logs advice to pre-process the graph, which only static QDQ needs.
    logging.disable(logging.WARNING)
    try:
        quantize_dynamic(
            str(source), str(target), op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8
        )
    finally:
        logging.disable(logging.NOTSET)


def _quantize_static(source: Path, batches: Sequence[Batch], tmp: Path, target: Path) -> None:
    """QDQ int8: u8 activations with ranges calibrated on ``batches``, s8 per-channel weights."""
    from onnxruntime.quantization import (  # imported lazily: slow and only needed for int8
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, data: Sequence[Batch]) -> None:
            self._items: Iterator[Batch] = iter(data)

        def get_next(self) -> Batch | None:
            return next(self._items, None)

    prepared = tmp / "prepared.onnx"
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    quantize_static(
        str(prepared),
        str(target),
        Reader(batches),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
