"""The handler that makes kernel layers: a Conv, Gemm or MatMul with constant weights, with what
follows it alone fused into the kernel's epilogue (a bias Add, a residual Add, a Relu, BERT's
GELU), and the checks that refuse weight nodes the kernel cannot run, by name."""

from __future__ import annotations

import math

import numpy as np
import onnx

from backends.sparse_int4 import kernel
from backends.sparse_int4.graph import Graph, attributes, label, other_input
from backends.sparse_int4.layers import prepare
from backends.sparse_int4.steps import Context, Layer
from harness.errors import UserError

KERNEL_OPS = ("Conv", "Gemm", "MatMul")
# Ops that carry weights the kernel cannot take: refused by name rather than run in float.
UNSUPPORTED_WEIGHT_OPS = frozenset(
    {"ConvTranspose", "ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul",
     "LSTM", "GRU", "RNN", "DynamicQuantizeLSTM", "MatMulNBits"}
)  # fmt: skip
FLOAT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE})


def is_kernel_node(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> bool:
    return (
        node.op_type in KERNEL_OPS
        and len(node.input) > 1
        and node.input[1] in initializers
        and len(initializers[node.input[1]].dims) in ((4,) if node.op_type == "Conv" else (2,))
    )


def refuse_unsupported(node: onnx.NodeProto, graph: Graph) -> None:
    initializers = graph.initializers
    if node.op_type in UNSUPPORTED_WEIGHT_OPS:
        raise UserError(
            f"{label(node)} is not supported by the sparse-int4 backend (it runs float Conv, "
            "Gemm and MatMul weights); give it the float model"
        )
    if node.op_type not in KERNEL_OPS:
        return
    constant = [name in initializers for name in node.input[:2]]
    if node.op_type == "Conv" and not constant[1]:
        raise UserError(
            f"{label(node)} takes its weight from another op; the backend needs constant weights"
        )
    if constant[0] or (constant[1] and not is_kernel_node(node, initializers)):
        raise UserError(
            f"{label(node)} is not supported by the sparse-int4 backend: its constant operand is "
            "not a 2-D MatMul/Gemm weight on the right or a 2-D convolution's 4-D weight"
        )
    if not constant[1]:
        return  # activation x activation (attention): ONNX Runtime runs it
    attrs = attributes(node)
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
            f"{label(node)} is not supported by the sparse-int4 backend: " + "; ".join(problems)
        )


def gemm_geometry(
    node: onnx.NodeProto, weight_dims: tuple[int, ...], types: dict[str, onnx.TypeProto]
) -> tuple[int, int, int, kernel.ConvGeometry | None]:
    """(GEMM rows per sample, K, N, conv geometry) of a weight-bearing node, from shapes only:
    rows are output pixels for Conv, tokens for MatMul/Gemm."""
    name = label(node)
    attrs = attributes(node)
    if node.op_type == "Conv":
        n, c, kh, kw = weight_dims
        pads = tuple(attrs.get("pads", (0, 0, 0, 0)))
        strides, dilations = attrs.get("strides", (1, 1)), attrs.get("dilations", (1, 1))
        conv = kernel.ConvGeometry(
            (kh, kw),
            (strides[0], strides[1]),
            (pads[0], pads[1], pads[2], pads[3]),
            (dilations[0], dilations[1]),
        )
        shape = _static_shape(node.output[0], types, name)
        return math.prod(shape[2:]), kh * kw * c, n, conv
    k, n = reversed(weight_dims) if attrs.get("transB", 0) else weight_dims
    shape = _static_shape(node.input[0], types, name)
    if shape[-1] != k:
        raise UserError(f"{name}: input has {shape[-1]} features, weight expects {k}")
    return math.prod(shape[1:-1]), k, n, None


def _static_shape(name: str, types: dict[str, onnx.TypeProto], node_label: str) -> list[int]:
    if name not in types or not types[name].tensor_type.HasField("shape"):
        raise UserError(
            f"{node_label}: the shape of {name!r} cannot be inferred; the sparse-int4 backend "
            "needs static shapes (apart from the batch); fix them, e.g. with onnxruntime's "
            "make_dynamic_shape_fixed tool"
        )
    dims = types[name].tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
    unknown = [d.dim_param or "?" for d in list(dims)[1:] if not d.HasField("dim_value")]
    if unknown or len(shape) < 2:
        raise UserError(
            f"{node_label}: input {name!r} has dynamic dimension(s) "
            f"{', '.join(unknown) or 'rank'} beyond the batch; the sparse-int4 backend needs "
            "static shapes (fix them, e.g. with onnxruntime's make_dynamic_shape_fixed tool)"
        )
    return shape


def kernel_layer(node: onnx.NodeProto, context: Context) -> Layer | None:
    graph = context.graph
    if not is_kernel_node(node, graph.initializers):
        return None
    elem_type = graph.elem_type(node.input[0])
    if elem_type and elem_type not in FLOAT_TYPES:  # 0: not inferred, left to ONNX's checks
        raise UserError(
            f"{label(node)} reads {node.input[0]!r} of type "
            f"{onnx.TensorProto.DataType.Name(elem_type)}; the sparse-int4 backend quantizes "
            "float activations only"
        )
    weight = graph.constants[node.input[1]].astype(np.float32)
    bias = None
    if len(node.input) > 2 and node.input[2]:
        bias = graph.constants[node.input[2]].astype(np.float32).reshape(-1)
    rows, _, n, conv = gemm_geometry(node, weight.shape, graph.types)
    if conv is not None:
        w_kn = weight.transpose(0, 2, 3, 1).reshape(n, -1).T  # K order (kh, kw, c)
        channels = weight.shape[1]
    else:
        w_kn = weight.T if attributes(node).get("transB", 0) else weight
        channels = None
    # What follows the node alone joins its epilogue: bias, then a residual, then a ReLU.
    output, residual, relu = node.output[0], "", False
    taken = [output]
    follower = context.follower(output)
    if bias is None and conv is None and follower is not None and follower.op_type == "Add":
        other = other_input(follower, output)
        constant = graph.constant(other)
        if constant is not None and constant.size == n and constant.shape[-1:] == (n,):
            bias, output = constant.astype(np.float32).reshape(-1), follower.output[0]
            taken.append(output)
            follower = context.follower(output)
    gelu_nodes = _gelu_after(output, context)
    if gelu_nodes:
        output = gelu_nodes[-1]
        taken.extend(gelu_nodes)
        follower = context.follower(output)
    if follower is not None and follower.op_type == "Add":
        other = other_input(follower, output)
        if graph.constant(other) is None and graph.shape(other) == graph.shape(output):
            residual, output = other, follower.output[0]
            taken.append(output)
            follower = context.follower(output)
    if follower is not None and follower.op_type == "Relu":
        relu, output = True, follower.output[0]
        taken.append(output)
    try:
        packed, stats = prepare(w_kn, bias, context.options, channels)
    except UserError as exc:
        raise UserError(f"{label(node)}: {exc}") from exc
    sample = tuple(graph.static_shape(node.output[0], label(node))[1:])
    side = tuple(graph.static_shape(node.input[0], label(node))[2:4]) if conv else (1, 1)
    return Layer(
        node=node.name or node.output[0],
        op=node.op_type,
        input=node.input[0],
        output=output,
        weight=packed,
        stats=stats,
        rows_per_sample=rows,
        signed=node.input[0] not in context.nonnegative,
        sample=sample,
        conv=conv,
        side=(side[0], side[1]),
        residual=residual,
        relu=relu,
        gelu=bool(gelu_nodes),
        taken=tuple(taken),
    )


def _gelu_after(name: str, context: Context) -> list[str]:
    """The outputs of the five nodes of BERT's GELU on ``name`` (x · 0.5 · (1 + erf(x / √2)),
    as Div, Erf, Add, Mul, Mul), when nothing else reads them; else []."""
    graph = context.graph
    readers = graph.readers.get(name, [])
    if name in graph.outputs or len(readers) != 2:
        return []

    def constant_is(node: onnx.NodeProto, other: str, value: float) -> bool:
        c = graph.constant(other_input(node, other))
        return c is not None and c.size == 1 and abs(float(c) - value) <= 1e-6 * abs(value)

    div = next((n for n in readers if n.op_type == "Div" and n.input[0] == name), None)
    if div is None or not constant_is(div, name, math.sqrt(2)):
        return []
    erf = context.follower(div.output[0])
    add = erf and erf.op_type == "Erf" and context.follower(erf.output[0])
    if not add or add.op_type != "Add" or not constant_is(add, erf.output[0], 1.0):
        return []
    mul = context.follower(add.output[0])
    if mul is None or mul.op_type != "Mul" or mul not in readers:
        return []
    half = context.follower(mul.output[0])
    if half is None or half.op_type != "Mul" or not constant_is(half, mul.output[0], 0.5):
        return []
    return [node.output[0] for node in (div, erf, add, mul, half)]
