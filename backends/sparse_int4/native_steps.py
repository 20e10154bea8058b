"""The handlers that make native steps: pooling, the reshapes that flatten a pooled image,
LayerNorm and BERT's attention, each from the ONNX nodes it stands for (None: not this
pattern)."""

from __future__ import annotations

import numpy as np
import onnx

from backends.sparse_int4 import kernel
from backends.sparse_int4.graph import Graph, attributes, other_input
from backends.sparse_int4.steps import Attention, Context, Flatten, LayerNorm, Pool


def pool(node: onnx.NodeProto, context: Context) -> Pool | None:
    if node.op_type not in ("GlobalAveragePool", "ReduceMean", "MaxPool"):
        return None
    graph = context.graph
    shape = graph.shape(node.input[0])
    out_shape = graph.shape(node.output[0])
    if shape is None or out_shape is None or len(shape) != 4 or -1 in shape[1:]:
        return None
    attrs = attributes(node)
    name = node.name or node.output[0]
    if node.op_type == "GlobalAveragePool":
        return Pool(name, node.input[0], node.output[0], tuple(out_shape[1:]), True)
    if node.op_type == "ReduceMean":
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1:
            value = graph.constant(node.input[1])
            axes = None if value is None else value.tolist()
        if axes is None or sorted(a % 4 for a in axes) != [2, 3]:
            return None
        keep = bool(attrs.get("keepdims", 1))
        return Pool(name, node.input[0], node.output[0], tuple(out_shape[1:]), keep)
    if node.op_type == "MaxPool" and len(node.output) == 1:
        kernel_shape = tuple(attrs.get("kernel_shape", ()))
        if len(kernel_shape) != 2 or attrs.get("ceil_mode", 0) or attrs.get("storage_order", 0):
            return None
        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID"):
            return None
        pads = tuple(attrs.get("pads", (0, 0, 0, 0)))
        strides, dilations = attrs.get("strides", (1, 1)), attrs.get("dilations", (1, 1))
        window = kernel.ConvGeometry(
            (kernel_shape[0], kernel_shape[1]), (strides[0], strides[1]),
            (pads[0], pads[1], pads[2], pads[3]), (dilations[0], dilations[1]),
        )  # fmt: skip
        return Pool(name, node.input[0], node.output[0], tuple(out_shape[1:]), True, window)
    return None


def flatten(node: onnx.NodeProto, context: Context) -> Flatten | None:
    """Flatten, Reshape or Squeeze of a [B, C, 1, 1] image to [B, C]."""
    graph = context.graph
    if node.op_type not in ("Flatten", "Reshape", "Squeeze"):
        return None
    shape, out_shape = graph.shape(node.input[0]), graph.shape(node.output[0])
    if shape is None or out_shape is None or len(shape) != 4 or shape[2:] != [1, 1]:
        return None
    if len(out_shape) != 2 or out_shape[1] != shape[1]:
        return None
    return Flatten(node.name or node.output[0], node.input[0], node.output[0])


def layer_norm(node: onnx.NodeProto, context: Context) -> LayerNorm | None:
    """LayerNormalization over the last axis with constant scale and bias."""
    if node.op_type != "LayerNormalization" or len(node.input) < 3 or len(node.output) != 1:
        return None
    graph = context.graph
    shape = graph.shape(node.input[0])
    scale, bias = graph.constant(node.input[1]), graph.constant(node.input[2])
    attrs = attributes(node)
    if shape is None or len(shape) < 2 or -1 in shape[1:] or scale is None or bias is None:
        return None
    if attrs.get("axis", -1) not in (-1, len(shape) - 1) or attrs.get("stash_type", 1) != 1:
        return None
    return LayerNorm(
        node.name or node.output[0], node.input[0], node.output[0],
        scale.astype(np.float32).reshape(-1), bias.astype(np.float32).reshape(-1),
        float(attrs.get("epsilon", 1e-5)), tuple(shape[1:]),
    )  # fmt: skip


def attention(node: onnx.NodeProto, context: Context) -> Attention | None:
    """From the scores MatMul: Q, K, V rows [B, S, H · D] split into heads (Reshape [0, 0, H, D]
    and Transpose to [B, H, S, D], K to [B, H, D, S]), MatMul, Mul by a scalar, Add a mask
    [B, 1, 1, S], Softmax over the keys, MatMul by V's heads, Transpose back, Reshape to
    [B, S, H · D]: BERT's attention as exported unfused."""
    graph = context.graph
    if node.op_type != "MatMul" or any(graph.constant(name) is not None for name in node.input):
        return None
    q = _heads_of(node.input[0], (0, 2, 1, 3), graph)
    k = _heads_of(node.input[1], (0, 2, 3, 1), graph)
    if q is None or k is None or q[1:3] != k[1:3]:
        return None
    chain, name = [node.output[0]], node.output[0]
    scale, mask = 1.0, ""
    follower = context.follower(name)
    if follower is not None and follower.op_type in ("Mul", "Div"):
        value = graph.constant(other_input(follower, name))
        if value is None or value.size != 1 or follower.input[0] != name:
            return None
        scale = float(value) if follower.op_type == "Mul" else 1.0 / float(value)
        name = follower.output[0]
        chain.append(name)
        follower = context.follower(name)
    if follower is not None and follower.op_type == "Add":
        mask = other_input(follower, name)
        shape = graph.shape(mask)
        if (
            graph.constant(mask) is not None
            or shape is None
            or len(shape) != 4
            or shape[1:3] != [1, 1]
        ):
            return None
        name = follower.output[0]
        chain.append(name)
        follower = context.follower(name)
    if follower is None or follower.op_type != "Softmax":
        return None
    if attributes(follower).get("axis", -1) not in (-1, 3):
        return None
    name = follower.output[0]
    chain.append(name)
    context_mm = context.follower(name)
    if context_mm is None or context_mm.op_type != "MatMul" or context_mm.input[0] != name:
        return None
    v = _heads_of(context_mm.input[1], (0, 2, 1, 3), graph)
    if v is None or v[1:3] != q[1:3]:
        return None
    chain.append(context_mm.output[0])
    back = context.follower(context_mm.output[0])
    if (
        back is None
        or back.op_type != "Transpose"
        or tuple(attributes(back).get("perm", ())) != (0, 2, 1, 3)
    ):
        return None
    merge = context.follower(back.output[0])
    if merge is None or merge.op_type != "Reshape":
        return None
    out_shape = graph.shape(merge.output[0])
    heads, dim = q[1:3]
    if out_shape is None or len(out_shape) != 3 or out_shape[2] != heads * dim or dim % 4:
        return None
    chain += [back.output[0], merge.output[0], *q[3], *k[3], *v[3]]
    return Attention(
        node.name or node.output[0], q[0], k[0], v[0], mask, merge.output[0], heads, scale,
        tuple(out_shape[1:]), tuple(chain),
    )  # fmt: skip


def _heads_of(
    name: str, perm: tuple[int, ...], graph: Graph
) -> tuple[str, int, int, list[str]] | None:
    """(rows value, heads, dim, the two outputs) when ``name`` is Transpose(perm) of a Reshape
    of rows [B, S, H · D] to [B, S, H, D] that nothing else reads."""
    transpose = graph.producer.get(name)
    if transpose is None or transpose.op_type != "Transpose":
        return None
    if (
        tuple(attributes(transpose).get("perm", ())) != perm
        or len(graph.readers.get(name, [])) != 1
    ):
        return None
    reshape = graph.producer.get(transpose.input[0])
    if (
        reshape is None
        or reshape.op_type != "Reshape"
        or graph.sole_reader(reshape.output[0]) is None
    ):
        return None
    split = graph.shape(reshape.output[0])
    rows = graph.shape(reshape.input[0])
    if split is None or rows is None or len(split) != 4 or len(rows) != 3 or -1 in split[2:]:
        return None
    if split[2] * split[3] != rows[2]:
        return None
    return reshape.input[0], split[2], split[3], [reshape.output[0], transpose.output[0]]
