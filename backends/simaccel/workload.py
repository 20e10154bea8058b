"""What one sample asks of a device, layer by layer, read from the model's shapes alone.

Weight-bearing Conv/Gemm/MatMul nodes are GEMMs (MACs, weights, zeros already in the model),
as are activation x activation MatMuls (attention; no weights to prune); every other node is
vector work, counted as the elements it reads and writes. For token models (integer inputs of
shape [batch, L]) each layer also records how its work grows with a sample's token count:
not at all, linearly (per-token layers) or quadratically (attention scores), read from how
often L appears in its shapes. Reading a large model (BERT-Large holds 1.3 GB of weights)
takes seconds, so the figures are cached per model file.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

from backends.sparse_int4.kernel_layers import gemm_geometry, is_kernel_node
from harness.cache import cache_dir
from harness.errors import UserError

CACHE_VERSION = "4"
_ITEM_BYTES = {
    TensorProto.FLOAT: 4,
    TensorProto.INT64: 8,
    TensorProto.INT32: 4,
    TensorProto.UINT8: 1,
    TensorProto.INT8: 1,
    TensorProto.FLOAT16: 2,
}
# Ops that only relabel data; accelerators fold transposes into the GEMMs' addressing.
LAYOUT_OPS = frozenset(
    {"Constant", "Shape", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose"}
)


@dataclass(frozen=True)
class LayerWork:
    name: str
    op: str
    macs: int  # dense multiply-accumulates per sample (0 for vector work)
    weights: int  # weight count (0 for vector work)
    weight_zeros: int  # weights that are already zero in the model
    in_elements: int  # activation elements read per sample
    out_elements: int  # elements written per sample
    token_power: int = 0  # work per sample grows as (tokens / L) ** token_power


def _dims(name: str, types: dict[str, onnx.TypeProto]) -> list[int]:
    """A value's dims (0 where unknown); [] where its shape is unknown."""
    if name not in types or not types[name].tensor_type.HasField("shape"):
        return []
    return [
        d.dim_value if d.HasField("dim_value") else 0 for d in types[name].tensor_type.shape.dim
    ]


def _elements(name: str, types: dict[str, onnx.TypeProto]) -> int:
    """Elements per sample of a value (dims after the batch); 0 where the shape is unknown."""
    dims = _dims(name, types)
    return math.prod(dims[1:]) if len(dims) > 1 else int(bool(dims))


def _token_power(names: list[str], types: dict[str, onnx.TypeProto], tokens: int) -> int:
    """How many per-sample dims of the largest of these values are the token count."""
    if not tokens:
        return 0
    return max((_dims(n, types)[1:].count(tokens) for n in names), default=0)


@dataclass(frozen=True)
class ModelWork:
    layers: tuple[LayerWork, ...]
    float_input_elements: int  # per sample; sent in the device's compute type
    other_input_bytes: int  # per sample; integer inputs (token ids) are sent as they are
    tokens: int = 0  # L, the padded tokens per sample of a token model (0: not one)
    # Per output: dims after the batch and numpy dtype, for timing-only responses.
    outputs: dict[str, tuple[tuple[int, ...], str]] = field(default_factory=dict)


def _tokens(inputs: list[onnx.ValueInfoProto]) -> int:
    """L of a token model, whose inputs are all integer [batch, L] tensors; else 0."""
    shapes = set()
    for value in inputs:
        tensor = value.type.tensor_type
        if tensor.elem_type not in (TensorProto.INT64, TensorProto.INT32):
            return 0
        shapes.add(tuple(d.dim_value for d in tensor.shape.dim[1:]))
    if len(shapes) == 1:
        (shape,) = shapes
        if len(shape) == 1:
            return shape[0]
    return 0


def analyse(model: onnx.ModelProto) -> ModelWork:
    inferred = shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {v.name: v.type for v in (*graph.input, *graph.value_info, *graph.output)}
    initializers = {t.name: t for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    tokens = _tokens(inputs)
    layers = []
    for node in graph.node:
        if node.op_type in LAYOUT_OPS:
            continue
        name = node.name or node.output[0]
        values = [i for i in node.input if i and i not in initializers]
        power = _token_power([*values, *node.output], types, tokens)
        if is_kernel_node(node, initializers):
            weight = numpy_helper.to_array(initializers[node.input[1]])
            rows, k, n, _ = gemm_geometry(node, tuple(weight.shape), types)
            zeros = int(np.count_nonzero(weight == 0))
            reads = _elements(node.input[0], types)  # the input itself, not its im2col
            layers.append(
                LayerWork(name, node.op_type, rows * k * n, k * n, zeros, reads, rows * n, power)
            )
            continue
        reads = sum(_elements(i, types) for i in values)
        writes = sum(_elements(o, types) for o in node.output)
        # Activation x activation products (attention) are GEMMs without weights.
        inner = _dims(node.input[0], types)[-1:] if node.op_type == "MatMul" else [0]
        layers.append(LayerWork(name, node.op_type, writes * inner[0], 0, 0, reads, writes, power))
    floats = sum(
        _elements(v.name, types)
        for v in inputs
        if v.type.tensor_type.elem_type in (TensorProto.FLOAT, TensorProto.FLOAT16)
    )
    others = sum(
        _elements(v.name, types) * _ITEM_BYTES.get(v.type.tensor_type.elem_type, 4)
        for v in inputs
        if v.type.tensor_type.elem_type not in (TensorProto.FLOAT, TensorProto.FLOAT16)
    )
    outputs = {
        v.name: (
            tuple(_dims(v.name, types)[1:]),
            np.dtype(helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)).name,
        )
        for v in graph.output
    }
    return ModelWork(tuple(layers), floats, others, tokens, outputs)


def model_work(path: Path) -> ModelWork:
    """The per-sample work of a model file, cached by the file's path, size and time."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{CACHE_VERSION}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    cached = cache_dir("simaccel-work") / f"{digest}.json"
    if cached.exists():
        body = json.loads(cached.read_text())
        layers = tuple(LayerWork(**row) for row in body["layers"])
        outputs = {name: (tuple(dims), dtype) for name, (dims, dtype) in body["outputs"].items()}
        return ModelWork(**{**body, "layers": layers, "outputs": outputs})
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises several types for unreadable files
        raise UserError(f"cannot read {path} as an ONNX model: {exc}") from exc
    work = analyse(model)
    partial = cached.with_suffix(".partial")
    partial.write_text(json.dumps(asdict(work)))
    partial.replace(cached)
    return work
