"""Runs an ONNX graph with its weight-bearing Conv, Gemm and MatMul nodes on the sparse-int4
kernel and every other op on ONNX Runtime.

The graph is cut into steps by "kernel depth": a value's depth counts the kernel layers on its
longest path from the inputs. Depth-d ops that are not kernel layers form one ONNX Runtime
segment (attention, LayerNorm, GELU, pooling, residual adds...), run as one session with ORT's
own fusions; then every kernel layer reading a depth-d value runs; then segment d + 1. Kernel
layers never wait for one another inside a step, and ORT never sees a weight the kernel owns.

Shapes must be static apart from the batch dimension: per-layer workload figures (MACs, bytes)
are per sample, and the simulated accelerator consumes them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper, shape_inference

from backends.sparse_int4 import kernel, vsquant
from backends.sparse_int4.layers import SparsityOptions, WeightStats, prepare
from harness.errors import UserError

KERNEL_OPS = ("Conv", "Gemm", "MatMul")
# Ops that carry weights the kernel cannot take: refused by name rather than run in float.
UNSUPPORTED_WEIGHT_OPS = frozenset(
    {"ConvTranspose", "ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul",
     "LSTM", "GRU", "RNN", "DynamicQuantizeLSTM", "MatMulNBits"}
)  # fmt: skip
NONNEGATIVE_OPS = frozenset({"Relu"})
SIGN_PRESERVING_OPS = frozenset(
    {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Flatten", "Reshape",
     "Identity", "Squeeze", "Unsqueeze", "Transpose"}
)  # fmt: skip


@dataclass(frozen=True)
class ConvGeometry:
    kernel: tuple[int, int]
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]
    dilations: tuple[int, int]


@dataclass
class Layer:
    """One weight-bearing node on the kernel, with its per-sample workload figures."""

    node: str
    op: str
    input: str
    output: str
    weight: kernel.PackedWeight
    stats: WeightStats
    rows_per_sample: int  # GEMM rows (M) per sample: pixels for Conv, tokens for MatMul
    signed: bool  # unsigned 0..15 activations where the input is known non-negative
    conv: ConvGeometry | None = None

    @property
    def dense_macs(self) -> int:
        """Multiply-accumulates per sample if nothing were pruned."""
        return self.rows_per_sample * self.stats.k * self.stats.n

    @property
    def effective_macs(self) -> int:
        """Multiply-accumulates per sample with kept weights only."""
        return round(self.dense_macs * self.stats.density)

    @property
    def weight_bytes(self) -> int:
        return self.stats.stored_bytes

    @property
    def activation_bytes(self) -> int:
        """Bytes per sample in (4-bit values, 4-bit vector scales, a float32 gamma per row)
        and out (float32)."""
        k, n, rows = self.stats.k, self.stats.n, self.rows_per_sample
        vectors = -(-k // self.weight.vector_size)
        return rows * (k // 2 + -(-vectors // 2) + 4) + rows * n * 4


@dataclass
class Segment:
    """Consecutive non-kernel ops run as one ONNX Runtime session."""

    inputs: list[str]
    outputs: list[str]
    session: ort.InferenceSession
    ops: int


@dataclass
class Plan:
    steps: list[Segment | Layer]
    inputs: list[str]
    outputs: list[str]
    release: list[list[str]] = field(default_factory=list)  # values dead after each step

    @property
    def layers(self) -> list[Layer]:
        return [step for step in self.steps if isinstance(step, Layer)]


class GraphExecutor:
    """Loads a model once (quantizing and packing its weights), then runs batches."""

    def __init__(
        self,
        model: onnx.ModelProto,
        options: SparsityOptions,
        threads: int | None = None,
        path: str | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.options = options
        self.threads = threads or kernel.default_threads()
        self.path = path or kernel.PATHS[0]
        self.plan = _build_plan(model, options, self.threads, progress or (lambda _: None))

    @property
    def layers(self) -> list[Layer]:
        return self.plan.layers

    def run(
        self, feeds: dict[str, np.ndarray], timings: dict[str, float] | None = None
    ) -> dict[str, np.ndarray]:
        """Outputs for one batch; ``timings`` (if given) accumulates seconds spent in kernel
        layers and in ONNX Runtime segments, for time splits."""
        values = dict(feeds)
        quantized: dict[tuple, kernel.Activations] = {}  # layer inputs since the last segment
        for step, dead in zip(self.plan.steps, self.plan.release, strict=True):
            start = time.perf_counter()
            if isinstance(step, Segment):
                quantized.clear()  # the layers after a segment read its new values
                results = step.session.run(
                    step.outputs, {name: values[name] for name in step.inputs}
                )
                values.update(zip(step.outputs, results, strict=True))
            else:
                values[step.output] = self._run_layer(step, values[step.input], quantized)
            if timings is not None:
                part = "segments" if isinstance(step, Segment) else "kernel layers"
                timings[part] = timings.get(part, 0.0) + time.perf_counter() - start
            for name in dead:
                values.pop(name, None)
        return {name: values[name] for name in self.plan.outputs}

    def _run_layer(
        self, layer: Layer, x: np.ndarray, quantized: dict[tuple, kernel.Activations]
    ) -> np.ndarray:
        """The layer's output; layers reading one value alike (a transformer's query, key and
        value projections) share its quantization through ``quantized``."""
        x = np.asarray(x, np.float32)
        key = (layer.input, layer.weight.vector_size, layer.signed, layer.conv)
        a = quantized.get(key)
        if a is None:
            a = quantized[key] = self._quantized_input(layer, x)
        if layer.conv is None:
            out = kernel.matmul(a, layer.weight, threads=self.threads)
            return out.reshape(*x.shape[:-1], layer.weight.n)
        pixels = len(a.gamma) // x.shape[0]
        out = kernel.matmul(a, layer.weight, pixels=pixels, threads=self.threads)
        g = layer.conv
        side = kernel.conv_output_side(x.shape[2:], g.kernel, g.strides, g.pads, g.dilations)
        return out.reshape(x.shape[0], layer.weight.n, *side)

    def _quantized_input(self, layer: Layer, x: np.ndarray) -> kernel.Activations:
        """The layer's input rows, quantized for the kernel: a convolution's straight from its
        NCHW input, unless Octav's clipping scalars need the float rows."""
        vector, signed, g = layer.weight.vector_size, layer.signed, layer.conv
        octav = self.options.act_clip == "octav"
        if g is not None and not octav:
            return kernel.quantize_conv(
                x, g.kernel, g.strides, g.pads, g.dilations, vector, signed,
                path=self.path, threads=self.threads,
            )  # fmt: skip
        if g is not None:
            rows = kernel.im2col(x, g.kernel, g.strides, g.pads, g.dilations, threads=self.threads)
        else:
            rows = x.reshape(-1, x.shape[-1])
        clip = vsquant.activation_clip_scalars(rows, vector, signed) if octav else None
        return kernel.quantize(rows, vector, signed, clip, path=self.path, threads=self.threads)


# ------------------------------------------------------------------------------ planning


def _build_plan(
    model: onnx.ModelProto, options: SparsityOptions, threads: int, progress: Callable[[str], None]
) -> Plan:
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    inferred = shape_inference.infer_shapes(model, strict_mode=False)
    types = {
        info.name: info.type
        for info in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)
    }
    producers = {out: node for node in graph.node for out in node.output}
    inputs = [i.name for i in graph.input if i.name not in initializers]
    depth = dict.fromkeys([*inputs, *initializers], 0)
    layers: dict[int, Layer] = {}
    node_depth: list[int] = []
    for node in graph.node:
        _refuse_unsupported(node, initializers)
    count = sum(is_kernel_node(node, initializers) for node in graph.node)
    progress(f"pruning and quantizing {count} weight layers: {options.describe()}")
    for index, node in enumerate(graph.node):
        d = max((depth.get(name, 0) for name in node.input if name), default=0)
        if is_kernel_node(node, initializers):
            layers[index] = _make_layer(node, initializers, types, producers, options)
            d += 1
        node_depth.append(d)
        for out in node.output:
            depth[out] = d
    steps = _order_steps(model, initializers, types, layers, node_depth, threads)
    outputs = [o.name for o in graph.output]
    return Plan(steps, inputs, outputs, _release(steps, outputs))


def _order_steps(
    model: onnx.ModelProto,
    initializers: dict[str, onnx.TensorProto],
    types: dict[str, onnx.TypeProto],
    layers: dict[int, Layer],
    node_depth: list[int],
    threads: int,
) -> list[Segment | Layer]:
    graph = model.graph
    later_uses = _latest_readers(graph, node_depth)
    graph_outputs = {o.name for o in graph.output}
    steps: list[Segment | Layer] = []
    for d in range(max(node_depth, default=0) + 1):
        members = [i for i, node in enumerate(graph.node) if node_depth[i] == d and i not in layers]
        if members:
            nodes = [graph.node[i] for i in members]
            produced = {out for node in nodes for out in node.output}
            needed = _ordered(name for node in nodes for name in node.input if name)
            seg_inputs = [n for n in needed if n not in produced and n not in initializers]
            seg_outputs = [
                out for out in _ordered(o for node in nodes for o in node.output)
                if out in graph_outputs or later_uses.get(out, -1) > d
            ]  # fmt: skip
            if seg_outputs:
                steps.append(
                    _segment(model, nodes, seg_inputs, seg_outputs, initializers, types, threads)
                )
        steps.extend(layer for i, layer in sorted(layers.items()) if node_depth[i] - 1 == d)
    return steps


def _latest_readers(graph: onnx.GraphProto, node_depth: list[int]) -> dict[str, int]:
    """For each value, the depth of its latest reader. A kernel layer reading a depth-d value
    has depth d + 1, so a segment exports what a kernel layer reads, as it must."""
    latest: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            if name:
                latest[name] = max(latest.get(name, -1), node_depth[i])
    return latest


def _segment(
    model: onnx.ModelProto,
    nodes: list[onnx.NodeProto],
    inputs: list[str],
    outputs: list[str],
    initializers: dict[str, onnx.TensorProto],
    types: dict[str, onnx.TypeProto],
    threads: int,
) -> Segment:
    used = {name for node in nodes for name in node.input}
    sub = helper.make_graph(
        nodes,
        "segment",
        [_value_info(name, types) for name in inputs],
        [_value_info(name, types) for name in outputs],
        [initializers[name] for name in initializers if name in used],
    )
    sub_model = helper.make_model(
        sub, opset_imports=model.opset_import, ir_version=model.ir_version
    )
    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = threads
    session_options.inter_op_num_threads = 1
    session_options.log_severity_level = 3
    # ORT's workers spin for a while after each run; on a machine with as many threads as cores
    # they would take the kernel's cores from it in the layer that follows.
    session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(
        sub_model.SerializeToString(), session_options, providers=["CPUExecutionProvider"]
    )
    return Segment(inputs, outputs, session, len(nodes))


def _value_info(name: str, types: dict[str, onnx.TypeProto]) -> onnx.ValueInfoProto:
    if name not in types or not types[name].tensor_type.elem_type:
        raise UserError(
            f"cannot infer the type of value {name!r}; the model needs shape information"
        )
    info = onnx.ValueInfoProto()
    info.name = name
    info.type.tensor_type.elem_type = types[name].tensor_type.elem_type
    return info


def _release(steps: list[Segment | Layer], outputs: list[str]) -> list[list[str]]:
    """Values no later step reads, dropped after each step to bound memory."""
    last: dict[str, int] = {}
    for index, step in enumerate(steps):
        reads = step.inputs if isinstance(step, Segment) else [step.input]
        for name in reads:
            last[name] = index
    release: list[list[str]] = [[] for _ in steps]
    for name, index in last.items():
        if name not in outputs:
            release[index].append(name)
    return release


def _ordered(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


# ------------------------------------------------------------------------------ kernel layers


def is_kernel_node(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> bool:
    return (
        node.op_type in KERNEL_OPS
        and len(node.input) > 1
        and node.input[1] in initializers
        and len(initializers[node.input[1]].dims) in ((4,) if node.op_type == "Conv" else (2,))
    )


def _refuse_unsupported(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> None:
    label = f"{node.op_type} node {node.name or node.output[0]!r}"
    if node.op_type in UNSUPPORTED_WEIGHT_OPS:
        raise UserError(
            f"{label} is not supported by the sparse-int4 backend (it runs float Conv, Gemm "
            "and MatMul weights); give it the float model"
        )
    if node.op_type not in KERNEL_OPS:
        return
    constant = [name in initializers for name in node.input[:2]]
    if node.op_type == "Conv" and not constant[1]:
        raise UserError(
            f"{label} takes its weight from another op; the backend needs constant weights"
        )
    if constant[0] or (constant[1] and not is_kernel_node(node, initializers)):
        raise UserError(
            f"{label} is not supported by the sparse-int4 backend: its constant operand is not a "
            "2-D MatMul/Gemm weight on the right or a 2-D convolution's 4-D weight"
        )
    if not constant[1]:
        return  # activation x activation (attention): ONNX Runtime runs it
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    problems = []
    if node.op_type == "Conv":
        if attrs.get("group", 1) != 1:
            problems.append(f"group = {attrs['group']} (grouped or depthwise convolution)")
        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID"):
            problems.append(f"auto_pad = {attrs['auto_pad'].decode()} (give explicit pads)")
    if node.op_type == "Gemm":
        if attrs.get("transA", 0):
            problems.append("transA = 1")
        if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            problems.append("alpha or beta other than 1")
        if len(node.input) > 2 and node.input[2] and node.input[2] not in initializers:
            problems.append("a bias C that is not a constant")
    if problems:
        raise UserError(
            f"{label} is not supported by the sparse-int4 backend: " + "; ".join(problems)
        )


def gemm_geometry(
    node: onnx.NodeProto, weight_dims: tuple[int, ...], types: dict[str, onnx.TypeProto]
) -> tuple[int, int, int, ConvGeometry | None]:
    """(GEMM rows per sample, K, N, conv geometry) of a weight-bearing node, from shapes only:
    rows are output pixels for Conv, tokens for MatMul/Gemm."""
    label = f"{node.op_type} node {node.name or node.output[0]!r}"
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Conv":
        n, c, kh, kw = weight_dims
        pads = attrs.get("pads", (0, 0, 0, 0))
        strides, dilations = attrs.get("strides", (1, 1)), attrs.get("dilations", (1, 1))
        conv = ConvGeometry(
            (kh, kw),
            (strides[0], strides[1]),
            (pads[0], pads[1], pads[2], pads[3]),
            (dilations[0], dilations[1]),
        )
        shape = _static_shape(node.output[0], types, label)
        return math.prod(shape[2:]), kh * kw * c, n, conv
    k, n = reversed(weight_dims) if attrs.get("transB", 0) else weight_dims
    shape = _static_shape(node.input[0], types, label)
    if shape[-1] != k:
        raise UserError(f"{label}: input has {shape[-1]} features, weight expects {k}")
    return math.prod(shape[1:-1]), k, n, None


def _make_layer(
    node: onnx.NodeProto,
    initializers: dict[str, onnx.TensorProto],
    types: dict[str, onnx.TypeProto],
    producers: dict[str, onnx.NodeProto],
    options: SparsityOptions,
) -> Layer:
    label = f"{node.op_type} node {node.name or node.output[0]!r}"
    weight = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float32)
    bias = None
    if len(node.input) > 2 and node.input[2]:
        bias = numpy_helper.to_array(initializers[node.input[2]]).astype(np.float32).reshape(-1)
    rows, _, _, conv = gemm_geometry(node, weight.shape, types)
    if conv is not None:
        n = weight.shape[0]
        w_kn = weight.transpose(0, 2, 3, 1).reshape(n, -1).T  # K order (kh, kw, c)
    else:
        transposed = any(a.name == "transB" and a.i for a in node.attribute)
        w_kn = weight.T if transposed else weight
    try:
        packed, stats = prepare(w_kn, bias, options)
    except UserError as exc:
        raise UserError(f"{label}: {exc}") from exc
    return Layer(
        node=node.name or node.output[0],
        op=node.op_type,
        input=node.input[0],
        output=node.output[0],
        weight=packed,
        stats=stats,
        rows_per_sample=rows,
        signed=not _nonnegative(node.input[0], producers),
        conv=conv,
    )


def _static_shape(name: str, types: dict[str, onnx.TypeProto], label: str) -> list[int]:
    """The value's dims, batch first; every dim after the batch must be a number."""
    if name not in types or not types[name].tensor_type.HasField("shape"):
        raise UserError(
            f"{label}: the shape of {name!r} cannot be inferred; the sparse-int4 backend needs "
            "static shapes (apart from the batch); fix them, e.g. with onnxruntime's "
            "make_dynamic_shape_fixed tool"
        )
    dims = types[name].tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
    unknown = [d.dim_param or "?" for d in list(dims)[1:] if not d.HasField("dim_value")]
    if unknown or len(shape) < 2:
        raise UserError(
            f"{label}: input {name!r} has dynamic dimension(s) {', '.join(unknown) or 'rank'} "
            "beyond the batch; the sparse-int4 backend needs static shapes (fix them, e.g. "
            "with onnxruntime's make_dynamic_shape_fixed tool)"
        )
    return shape


def _nonnegative(name: str, producers: dict[str, onnx.NodeProto]) -> bool:
    """True where ``name`` is a Relu output, possibly through pooling and reshaping."""
    node = producers.get(name)
    while node is not None and node.op_type in SIGN_PRESERVING_OPS:
        node = producers.get(node.input[0])
    return node is not None and node.op_type in NONNEGATIVE_OPS
