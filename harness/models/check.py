"""Check that an ONNX file is readable and has the interface a workload needs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx.helper import tensor_dtype_to_np_dtype

from harness.errors import UserError


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name, e.g. "float32"
    shape: tuple[int | None, ...]  # None: any size (the batch dimension)

    def __str__(self) -> str:
        dims = ",".join("N" if d is None else str(d) for d in self.shape)
        return f"{self.name} {self.dtype} [{dims}]"


def _describe(value: onnx.ValueInfoProto) -> TensorSpec:
    tensor = value.type.tensor_type
    dtype = np.dtype(tensor_dtype_to_np_dtype(tensor.elem_type)).name
    shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
    return TensorSpec(value.name, dtype, shape)


def check_model(path: Path, inputs: tuple[TensorSpec, ...], outputs: tuple[str, ...]) -> None:
    """Raise UserError unless ``path`` is an ONNX model with these inputs and outputs."""
    if not path.is_file():
        raise UserError(f"model file {path} not found; give an ONNX file or omit --model-path")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf and onnx raise several unrelated types
        raise UserError(f"{path} is not a readable ONNX model ({type(exc).__name__})") from exc
    if not model.graph.node:
        raise UserError(f"{path} is not a readable ONNX model (it has no graph)")
    initializers = {init.name for init in model.graph.initializer}
    found = {v.name: _describe(v) for v in model.graph.input if v.name not in initializers}
    needed = ", ".join(str(spec) for spec in inputs)
    for spec in inputs:
        actual = found.get(spec.name)
        if actual is None:
            raise UserError(
                f"model {path} has no input {spec.name!r} (it has {', '.join(found) or 'none'}); "
                f"this workload needs {needed}"
            )
        fits = actual.dtype == spec.dtype and len(actual.shape) == len(spec.shape)
        fits = fits and all(
            want is None or have is None or want == have
            for want, have in zip(spec.shape, actual.shape, strict=False)
        )
        if not fits:
            raise UserError(f"model {path} input is {actual}; this workload needs {needed}")
    output_names = {v.name for v in model.graph.output}
    missing = [name for name in outputs if name not in output_names]
    if missing:
        raise UserError(f"model {path} has no output(s) {', '.join(missing)}")
