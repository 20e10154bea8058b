"""From an ONNX graph to a plan: each handler in ``HANDLERS``, tried in order on every node not
yet taken, makes a native step of it (and what it fuses); the remaining nodes run on ONNX Runtime
in segments cut by "native depth": a value's depth counts the native steps on its longest path
from the inputs; the ORT nodes of depth d form one segment (one session, with ORT's own
fusions), run before the native steps of depth d + 1, which never wait for one another."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import onnx
import onnxruntime as ort
from onnx import helper

from backends.sparse_int4.graph import Graph
from backends.sparse_int4.kernel_layers import is_kernel_node, kernel_layer, refuse_unsupported
from backends.sparse_int4.layers import SparsityOptions
from backends.sparse_int4.native_steps import attention, flatten, layer_norm, pool
from backends.sparse_int4.steps import Context, Flatten, Layer, Native, Plan, Pool, Segment, Step
from harness.errors import UserError

# Ops whose output is >= 0 where their input is: what follows a ReLU stays unsigned (0..15).
SIGN_PRESERVING_OPS = frozenset(
    {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Flatten", "Reshape",
     "Identity", "Squeeze", "Unsqueeze", "Transpose", "ReduceMean"}
)  # fmt: skip


# Each makes a native step of a node (and what it fuses), or None; the first that does wins.
HANDLERS: tuple[Callable[[onnx.NodeProto, Context], Native | None], ...] = (
    kernel_layer,
    pool,
    flatten,
    layer_norm,
    attention,
)


def build_plan(
    graph: Graph, options: SparsityOptions, threads: int, progress: Callable[[str], None]
) -> Plan:
    """The graph's steps in run order, its weight layers pruned and quantized by ``options``
    (ONNX Runtime segments with ``threads`` threads); a weight node the kernel cannot run is a
    UserError naming it."""
    for node in graph.nodes:
        refuse_unsupported(node, graph)
    count = sum(is_kernel_node(node, graph.initializers) for node in graph.nodes)
    progress(f"pruning and quantizing {count} weight layers: {options.describe()}")
    natives: dict[int, Native] = {}  # by the index of the node that ends it
    context = Context(graph, options)
    index = {out: i for i, node in enumerate(graph.nodes) for out in node.output}
    for node in graph.nodes:
        if node.output[0] in context.taken:
            continue
        step = next((s for handler in HANDLERS if (s := handler(node, context))), None)
        if step is not None:
            natives[max(index[out] for out in step.outputs)] = step
            context.taken.update(step.taken)
            if _nonnegative_output(step, context.nonnegative):
                context.nonnegative.update(step.outputs)
        elif node.op_type == "Relu" or (
            node.op_type in SIGN_PRESERVING_OPS and node.input[0] in context.nonnegative
        ):
            context.nonnegative.add(node.output[0])
    return _order_steps(graph, natives, context.taken, threads)


def _nonnegative_output(step: Native, nonnegative: set[str]) -> bool:
    """Whether a step's output is >= 0: a ReLU'd layer, or pooling and reshapes of such."""
    if isinstance(step, Layer):
        return step.relu
    return isinstance(step, (Pool, Flatten)) and step.input in nonnegative


def _order_steps(graph: Graph, natives: dict[int, Native], taken: set[str], threads: int) -> Plan:
    depth = dict.fromkeys([*graph.inputs, *graph.constants], 0)
    node_depth: dict[int, int] = {}
    native_depth: dict[int, int] = {}
    for i, node in enumerate(graph.nodes):
        if i in natives:
            step = natives[i]
            d = max((depth.get(name, 0) for name in step.inputs), default=0) + 1
            native_depth[i] = d
            for out in step.outputs:
                depth[out] = d
        elif node.output[0] not in taken:
            d = max((depth.get(name, 0) for name in node.input if name), default=0)
            node_depth[i] = d
            for out in node.output:
                depth[out] = d
    later_uses = _latest_readers(graph, natives, node_depth, native_depth)
    graph_outputs = set(graph.outputs)
    steps: list[Step] = []
    for d in range(max([*node_depth.values(), *native_depth.values(), 0]) + 1):
        members = [graph.nodes[i] for i, nd in node_depth.items() if nd == d]
        if members:
            produced = {out for node in members for out in node.output}
            needed = _ordered(name for node in members for name in node.input if name)
            seg_inputs = [n for n in needed if n not in produced and n not in graph.initializers]
            seg_outputs = [
                out for out in _ordered(o for node in members for o in node.output)
                if out in graph_outputs or later_uses.get(out, -1) > d
            ]  # fmt: skip
            if seg_outputs:
                steps.append(_segment(graph, members, seg_inputs, seg_outputs, threads))
        steps.extend(step for i, step in sorted(natives.items()) if native_depth[i] == d + 1)
    return Plan(steps, graph.inputs, graph.outputs, _release(steps, graph.outputs))


def _latest_readers(
    graph: Graph,
    natives: dict[int, Native],
    node_depth: dict[int, int],
    native_depth: dict[int, int],
) -> dict[str, int]:
    """For each value, the depth of its latest reader. A native step reading a depth-d value
    has depth d + 1, so a segment exports what a native step reads, as it must."""
    latest: dict[str, int] = {}
    readers = [(graph.nodes[i].input, d) for i, d in node_depth.items()]
    readers += [(natives[i].inputs, d) for i, d in native_depth.items()]
    for names, d in readers:
        for name in names:
            if name:
                latest[name] = max(latest.get(name, -1), d)
    return latest


def _segment(
    graph: Graph,
    nodes: list[onnx.NodeProto],
    inputs: list[str],
    outputs: list[str],
    threads: int,
) -> Segment:
    used = {name for node in nodes for name in node.input}
    sub = helper.make_graph(
        nodes,
        "segment",
        [_value_info(name, graph) for name in inputs],
        [_value_info(name, graph) for name in outputs],
        [graph.initializers[name] for name in graph.initializers if name in used],
    )
    model = graph.model
    sub_model = helper.make_model(
        sub, opset_imports=model.opset_import, ir_version=model.ir_version
    )
    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = threads
    session_options.inter_op_num_threads = 1
    session_options.log_severity_level = 3
    # ORT's workers spin for a while after each run; on a machine with as many threads as cores
    # they would take the kernel's cores from it in the step that follows.
    session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(
        sub_model.SerializeToString(), session_options, providers=["CPUExecutionProvider"]
    )
    return Segment(inputs, outputs, session, len(nodes))


def _value_info(name: str, graph: Graph) -> onnx.ValueInfoProto:
    elem_type = graph.elem_type(name)
    if not elem_type:
        raise UserError(
            f"cannot infer the type of value {name!r}; the model needs shape information"
        )
    info = onnx.ValueInfoProto()
    info.name = name
    info.type.tensor_type.elem_type = elem_type
    return info


def _release(steps: list[Step], outputs: list[str]) -> list[list[str]]:
    """Values no later step reads, dropped after each step to bound memory."""
    last: dict[str, int] = {}
    for index, step in enumerate(steps):
        for name in step.inputs:
            last[name] = index
    release: list[list[str]] = [[] for _ in steps]
    for name, index in last.items():
        if name not in outputs:
            release[index].append(name)
    return release


def _ordered(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))
