"""The dense baseline: ONNX Runtime on the CPU, fp32 or int8 (static QDQ, calibrated)."""

from __future__ import annotations

import hashlib
import os
import platform
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import onnxruntime as ort

from backends.base import Backend, Batch, ModelHandle
from harness.cache import cache_dir
from harness.errors import UserError

PRECISIONS = ("fp32", "int8")
GRAPH_OPTIMIZATION = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
# Bump when the quantization recipe changes, so cached int8 models are rebuilt.
INT8_RECIPE = "qdq-u8s8-perchannel-minmax-v1"


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(
        self, precision: str = "fp32", threads: int = 0, graph_optimization: str = "all"
    ) -> None:
        if precision not in PRECISIONS:
            raise UserError(
                f"onnxruntime backend: unknown precision {precision!r}; choose one of "
                + ", ".join(PRECISIONS)
            )
        if graph_optimization not in GRAPH_OPTIMIZATION:
            raise UserError(
                f"onnxruntime backend: unknown graph optimization {graph_optimization!r}; "
                "choose one of " + ", ".join(GRAPH_OPTIMIZATION)
            )
        self.precision = precision
        self.threads = threads or (os.cpu_count() or 1)
        self.graph_optimization = graph_optimization
        self._session: ort.InferenceSession | None = None
        self._outputs: list[str] = []

    def load(self, model: ModelHandle) -> None:
        path = quantize_int8(model) if self.precision == "int8" else model.path
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = GRAPH_OPTIMIZATION[self.graph_optimization]
        try:
            self._session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises several unrelated types for unreadable models
            raise UserError(f"onnxruntime cannot load {path}: {first_line(exc)}") from exc
        self._outputs = list(model.output_names)

    def predict(self, inputs: Batch) -> Batch:
        assert self._session is not None, "load() must be called before predict()"
        values = self._session.run(self._outputs, inputs)
        return dict(zip(self._outputs, values, strict=True))

    def describe(self) -> dict[str, str]:
        return {
            "backend": self.name,
            "precision": self.precision,
            "sparsity": "dense",
            "framework": f"onnxruntime {ort.__version__}",
            "device": f"CPU ({platform.machine()}, {self.threads} threads)",
        }


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def quantize_int8(model: ModelHandle) -> Path:
    """Static QDQ int8 (u8 activations, s8 per-channel weights), cached per model + calibration."""
    digest = hashlib.sha256()
    with model.path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    digest.update(f"{INT8_RECIPE}|{model.calibration_key}|{ort.__version__}".encode())
    target = cache_dir("int8") / f"{model.name}-{digest.hexdigest()[:16]}.onnx"
    if target.exists():
        return target

    batches = list(model.calibration())
    if not batches:
        raise UserError(f"int8 quantization of {model.name} needs calibration samples; none given")
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

    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quantized = Path(tmp) / "quantized.onnx"
        quant_pre_process(str(model.path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(quantized),
            Reader(batches),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        os.replace(quantized, target)  # atomic: a crash never leaves a half-written cache entry
    return target
