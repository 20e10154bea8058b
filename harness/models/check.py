"""Check that an ONNX file is readable and has the interface a workload needs."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx.helper import tensor_dtype_to_np_dtype

from harness.cache import cache_dir
from harness.errors import UserError
from harness.models.pruning import PruningRecord, checked_record

INTERFACE_VERSION = "1"  # bump when Interface or the checks change


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name, e.g. "float32"
    shape: tuple[int | None, ...]  # None: any size (the batch dimension)

    def __str__(self) -> str:
        dims = ",".join("N" if d is None else str(d) for d in self.shape)
        return f"{self.name} {self.dtype} [{dims}]"


@dataclass(frozen=True)
class Interface:
    """A model file's graph inputs (initializers excluded) and outputs, by name, and its
    pruning record, checked against its zeros (None: the file has none)."""

    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    pruning: PruningRecord | None = None


def _describe(value: onnx.ValueInfoProto) -> TensorSpec:
    tensor = value.type.tensor_type
    try:
        dtype = np.dtype(tensor_dtype_to_np_dtype(tensor.elem_type)).name
    except (KeyError, TypeError, ValueError):
        dtype = f"onnx type {tensor.elem_type}"
    shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
    return TensorSpec(value.name, dtype, shape)


def read_interface(path: Path) -> Interface:
    """The interface of an ONNX file (read once per file version, and remembered on disk:
    parsing BERT-Large takes seconds); unreadable files, and pruning records that disagree
    with the file's zeros, are a UserError."""
    if not path.is_file():
        raise UserError(f"model file {path} not found; give an ONNX file or omit --model-path")
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{INTERFACE_VERSION}"
    memo = cache_dir("interfaces") / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.pkl"
    try:
        return pickle.loads(memo.read_bytes())
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError):
        pass  # not remembered yet, or written by an older version: read the file
    interface = _interface(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    partial = memo.with_name(f"{memo.name}.partial-{os.getpid()}")
    partial.write_bytes(pickle.dumps(interface))
    partial.replace(memo)
    return interface


@functools.lru_cache(maxsize=8)
def _interface(path: str, size: int, mtime_ns: int) -> Interface:
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf and onnx raise several unrelated types
        raise UserError(f"{path} is not a readable ONNX model ({type(exc).__name__})") from exc
    if not model.graph.node:
        raise UserError(f"{path} is not a readable ONNX model (it has no graph)")
    initializers = {init.name for init in model.graph.initializer}
    return Interface(
        {v.name: _describe(v) for v in model.graph.input if v.name not in initializers},
        {v.name: _describe(v) for v in model.graph.output},
        checked_record(model, path),
    )


@dataclass(frozen=True)
class ModelFile:
    """The model a run uses, checked: its file, the outputs the workload reads, how it was
    pruned (None: it was not), and whether it is the user's file or the built-in one."""

    path: Path
    outputs: tuple[TensorSpec, ...]
    pruning: PruningRecord | None
    given: bool

    @property
    def note(self) -> str:
        """What results say about the model: "" for a dense model, else how it was pruned."""
        if self.pruning is None:
            return ""
        recipe = self.pruning.recipe.describe()
        return f"pruned model from {self.path.name}: {recipe}" if self.given else recipe

    @property
    def open_only(self) -> str:
        """Why results on this model may only enter the open division ("": they may not)."""
        return f"its model is not the reference model ({self.note})" if self.note else ""

    def record(self, label: str) -> dict[str, object]:
        """What run.json says about the model."""
        return {
            "file": str(self.path),
            "label": label,
            "note": self.note,
            "pruning": json.loads(self.pruning.to_json()) if self.pruning else None,
        }


def check_model(
    path: Path, inputs: tuple[TensorSpec, ...], outputs: tuple[str, ...]
) -> tuple[TensorSpec, ...]:
    """The model's declared ``outputs``; a UserError unless ``path`` is an ONNX model with
    these inputs and outputs."""
    interface = read_interface(path)
    found = interface.inputs
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
    missing = [name for name in outputs if name not in interface.outputs]
    if missing:
        raise UserError(f"model {path} has no output(s) {', '.join(missing)}")
    return tuple(interface.outputs[name] for name in outputs)
