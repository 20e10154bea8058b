"""What one sample asks of a device, layer by layer, read from the model's shapes alone.

Weight-bearing Conv/Gemm/MatMul nodes are GEMMs (MACs, weights, zeros already in the model),
as are activation x activation MatMuls (attention; no weights to prune); every other node is
vector work, counted as the elements it reads and writes. Reading a large model
(BERT-Large holds 1.3 GB of weights) takes seconds, so the figures are cached per model file.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper, shape_inference

from backends.sparse_int4.executor import gemm_geometry, is_kernel_node
from harness.cache import cache_dir
from harness.errors import UserError

CACHE_VERSION = "3"
_ITEM_BYTES = {
    TensorProto.FLOAT: 4,
    TensorProto.INT64: 8,
    TensorProto.INT32: 4,
    TensorProto.UINT8: 1,
    TensorProto.INT8: 1,
    TensorProto.FLOAT16: 2,
}
# Ops that only relabel data (no work on a device's vector unit).
LAYOUT_OPS = frozenset({"Constant", "Shape", "Reshape", "Flatten", "Squeeze", "Unsqueeze"})


@dataclass(frozen=True)
class LayerWork:
    name: str
    op: str
    macs: int  # dense multiply-accumulates per sample (0 for vector work)
    weights: int  # weight count (0 for vector work)
    weight_zeros: int  # weights that are already zero in the model
    in_elements: int  # activation elements read per sample
    out_elements: int  # elements written per sample

    @property
    def is_gemm(self) -> bool:
        return self.macs > 0


def _elements(name: str, types: dict[str, onnx.TypeProto]) -> int:
    """Elements per sample of a value (dims after the batch); 0 where the shape is unknown."""
    if name not in types or not types[name].tensor_type.HasField("shape"):
        return 0
    dims = [
        d.dim_value if d.HasField("dim_value") else 0 for d in types[name].tensor_type.shape.dim
    ]
    return math.prod(dims[1:]) if len(dims) > 1 else 1


def _last_dim(name: str, types: dict[str, onnx.TypeProto]) -> int:
    dims = types[name].tensor_type.shape.dim if name in types else []
    return dims[-1].dim_value if dims and dims[-1].HasField("dim_value") else 0


@dataclass(frozen=True)
class ModelWork:
    layers: tuple[LayerWork, ...]
    input_bytes: int  # bytes of model input per sample (sent over the host link)


def analyse(model: onnx.ModelProto) -> ModelWork:
    inferred = shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {v.name: v.type for v in (*graph.input, *graph.value_info, *graph.output)}
    initializers = {t.name: t for t in graph.initializer}
    layers = []
    for node in graph.node:
        name = node.name or node.output[0]
        if is_kernel_node(node, initializers):
            weight = numpy_helper.to_array(initializers[node.input[1]])
            rows, k, n, _ = gemm_geometry(node, tuple(weight.shape), types)
            layers.append(
                LayerWork(
                    name,
                    node.op_type,
                    macs=rows * k * n,
                    weights=k * n,
                    weight_zeros=int(np.count_nonzero(weight == 0)),
                    in_elements=rows * k,
                    out_elements=rows * n,
                )
            )
        elif node.op_type not in LAYOUT_OPS:
            inputs = sum(_elements(i, types) for i in node.input if i and i not in initializers)
            outputs = sum(_elements(o, types) for o in node.output)
            # Activation x activation products (attention) are GEMMs without weights.
            macs = outputs * _last_dim(node.input[0], types) if node.op_type == "MatMul" else 0
            layers.append(LayerWork(name, node.op_type, macs, 0, 0, inputs, outputs))
    input_bytes = sum(
        _elements(v.name, types) * _ITEM_BYTES.get(v.type.tensor_type.elem_type, 4)
        for v in graph.input
        if v.name not in initializers
    )
    return ModelWork(tuple(layers), input_bytes)


def model_work(path: Path) -> ModelWork:
    """The per-sample work of a model file, cached by the file's path, size and time."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{CACHE_VERSION}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    cached = cache_dir("simaccel-work") / f"{digest}.json"
    if cached.exists():
        body = json.loads(cached.read_text())
        layers = tuple(LayerWork(**row) for row in body["layers"])
        return ModelWork(layers, body["input_bytes"])
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises several types for unreadable files
        raise UserError(f"cannot read {path} as an ONNX model: {exc}") from exc
    work = analyse(model)
    partial = cached.with_suffix(".partial")
    partial.write_text(json.dumps(asdict(work)))
    partial.replace(cached)
    return work
