"""Runs an ONNX graph with its weight-bearing Conv, Gemm and MatMul nodes on the sparse-int4
kernel, the ops around them natively, and whatever is left on ONNX Runtime.

Native steps work on channel-major tensors (``Channels``: float32 [C, rows], rows (image, y, x)
or tokens), the layout the kernel writes, so a network of kernel layers never transposes. Each
native step is one of the handlers in ``HANDLERS``, tried in order on every node not yet taken:

- a kernel layer takes the weight node and, fused into the kernel's epilogue, what follows it
  alone: a bias Add, a residual Add, a Relu (a ResNet bottleneck ends in one kernel call);
- pooling (MaxPool, GlobalAveragePool, ReduceMean over the image) and the reshapes that flatten
  a pooled image, natively, so ResNet-50 runs without ONNX Runtime up to its classifier.

The remaining nodes run on ONNX Runtime in segments cut by "native depth": a value's depth counts
the native steps on its longest path from the inputs; the ORT nodes of depth d form one segment
(one session, with ORT's own fusions), run before the native steps of depth d + 1, which never
wait for one another.

Shapes must be static apart from the batch dimension: per-layer workload figures (MACs, bytes)
are per sample, and the simulated accelerator consumes them.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from backends.sparse_int4 import kernel, vsquant
from backends.sparse_int4.graph import Graph, attributes, label
from backends.sparse_int4.layers import SparsityOptions, WeightStats, prepare
from harness.errors import UserError

KERNEL_OPS = ("Conv", "Gemm", "MatMul")
# Ops that carry weights the kernel cannot take: refused by name rather than run in float.
UNSUPPORTED_WEIGHT_OPS = frozenset(
    {"ConvTranspose", "ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul",
     "LSTM", "GRU", "RNN", "DynamicQuantizeLSTM", "MatMulNBits"}
)  # fmt: skip
FLOAT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE})
SIGN_PRESERVING_OPS = frozenset(
    {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Flatten", "Reshape",
     "Identity", "Squeeze", "Unsqueeze", "Transpose", "ReduceMean"}
)  # fmt: skip


# ------------------------------------------------------------------------------ tensors


@dataclass(frozen=True)
class Channels:
    """A tensor held channel-major: data float32 [C, batch · rows per sample]. ``sample`` is its
    ONNX shape without the batch: (C, H, W...) for an image (``image``), (..., C) for rows."""

    data: np.ndarray
    sample: tuple[int, ...]
    image: bool

    @property
    def batch(self) -> int:
        return self.data.shape[1] // max(1, self.rows_per_sample)

    @property
    def rows_per_sample(self) -> int:
        return math.prod(self.sample[1:] if self.image else self.sample[:-1])

    @property
    def side(self) -> tuple[int, int]:
        spatial = (*self.sample[1:], 1, 1)
        return spatial[0], spatial[1]

    def to_onnx(self) -> np.ndarray:
        c, b = self.data.shape[0], self.batch
        if self.image:
            return np.ascontiguousarray(
                self.data.reshape(c, b, -1).transpose(1, 0, 2).reshape(b, *self.sample)
            )
        return np.ascontiguousarray(self.data.T.reshape(b, *self.sample))


def to_channels(value: np.ndarray | Channels, image: bool) -> Channels:
    """The value channel-major (a copy of an ONNX array; a Channels value as it is)."""
    if isinstance(value, Channels):
        return value
    x = np.asarray(value, np.float32)
    b = x.shape[0]
    if image:
        data = x.reshape(b, x.shape[1], -1).transpose(1, 0, 2).reshape(x.shape[1], -1)
    else:
        data = x.reshape(-1, x.shape[-1]).T
    return Channels(np.ascontiguousarray(data), tuple(x.shape[1:]), image)


def to_onnx(value: np.ndarray | Channels) -> np.ndarray:
    return value.to_onnx() if isinstance(value, Channels) else value


# ------------------------------------------------------------------------------ steps


@dataclass
class Layer:
    """One weight-bearing node on the kernel (with what its epilogue took on), and its
    per-sample workload figures."""

    node: str
    op: str
    input: str
    output: str
    weight: kernel.PackedWeight
    stats: WeightStats
    rows_per_sample: int  # GEMM rows (M) per sample: output pixels for Conv, tokens for MatMul
    signed: bool  # unsigned 0..15 activations where the input is known non-negative
    sample: tuple[int, ...]  # the output's ONNX shape without the batch
    conv: kernel.ConvGeometry | None = None
    side: tuple[int, int] = (1, 1)  # a convolution's input H x W
    residual: str = ""  # a value added before the ReLU
    relu: bool = False
    gelu: bool = False  # BERT's GELU, after the bias
    taken: tuple[str, ...] = ()  # the outputs of the nodes it stands for

    @property
    def inputs(self) -> list[str]:
        return [self.input, *([self.residual] if self.residual else [])]

    @property
    def outputs(self) -> list[str]:
        return [self.output]

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
        """Bytes per sample in (4-bit values, 4-bit vector scales, a float32 gamma per sample)
        and out (float32)."""
        k, n, rows = self.stats.k, self.stats.n, self.rows_per_sample
        vectors = -(-k // self.weight.vector_size)
        return rows * (k // 2 + -(-vectors // 2)) + 4 + rows * n * 4


@dataclass
class Pool:
    """MaxPool, or the mean over an image's pixels (GlobalAveragePool, ReduceMean)."""

    node: str
    input: str
    output: str
    sample: tuple[int, ...]
    image: bool  # the output is an image (keeps its 1 x 1 pixel) or rows
    window: kernel.ConvGeometry | None = None  # MaxPool's; None: the mean over every pixel

    @property
    def inputs(self) -> list[str]:
        return [self.input]

    @property
    def outputs(self) -> list[str]:
        return [self.output]

    @property
    def taken(self) -> tuple[str, ...]:
        return (self.output,)


@dataclass
class Flatten:
    """A reshape of a 1 x 1 image to rows of its channels: no data moves."""

    node: str
    input: str
    output: str

    @property
    def inputs(self) -> list[str]:
        return [self.input]

    @property
    def outputs(self) -> list[str]:
        return [self.output]

    @property
    def taken(self) -> tuple[str, ...]:
        return (self.output,)


@dataclass
class LayerNorm:
    """LayerNormalization over the last axis (the channels of a channel-major tensor)."""

    node: str
    input: str
    output: str
    scale: np.ndarray
    bias: np.ndarray
    epsilon: float
    sample: tuple[int, ...]

    @property
    def inputs(self) -> list[str]:
        return [self.input]

    @property
    def outputs(self) -> list[str]:
        return [self.output]

    @property
    def taken(self) -> tuple[str, ...]:
        return (self.output,)


@dataclass
class Attention:
    """Scaled dot-product attention of rows Q, K, V [batch, seq, heads · dim] with an additive
    key mask [batch, 1, 1, seq], in int8 on the kernel's tiles (see attention.py)."""

    node: str
    q: str
    k: str
    v: str
    mask: str
    output: str
    heads: int
    scale: float
    sample: tuple[int, ...]
    taken: tuple[str, ...]

    @property
    def inputs(self) -> list[str]:
        return [self.q, self.k, self.v, *([self.mask] if self.mask else [])]

    @property
    def outputs(self) -> list[str]:
        return [self.output]


@dataclass
class Segment:
    """Consecutive non-native ops run as one ONNX Runtime session."""

    inputs: list[str]
    outputs: list[str]
    session: ort.InferenceSession
    ops: int


Native = Layer | Pool | Flatten | LayerNorm | Attention
Step = Native | Segment


@dataclass
class Plan:
    steps: list[Step]
    inputs: list[str]
    outputs: list[str]
    release: list[list[str]] = field(default_factory=list)  # values dead after each step

    @property
    def layers(self) -> list[Layer]:
        return [step for step in self.steps if isinstance(step, Layer)]

    @property
    def floats(self) -> set[str]:
        """Values read as floats by something other than a kernel layer quantizing its input:
        graph outputs, residuals, and whatever is not a kernel layer."""
        return self._float_reads() | {layer.residual for layer in self.layers if layer.residual}

    @property
    def halves(self) -> set[str]:
        """Kernel layers' outputs read as floats only as residuals: stored as float16, half the
        memory traffic of a ResNet's shortcuts (rounding error 2^-11, far below 4-bit steps)."""
        produced = {layer.output for layer in self.layers}
        residuals = {layer.residual for layer in self.layers if layer.residual}
        return (residuals & produced) - self._float_reads()

    def _float_reads(self) -> set[str]:
        """Graph outputs and what steps other than kernel layers read."""
        names = set(self.outputs)
        for step in self.steps:
            if not isinstance(step, Layer):
                names.update(step.inputs)
        return names


@dataclass(frozen=True)
class Form:
    """How a kernel layer reads its input: the quantization and the planes' layout."""

    vector_size: int
    signed: bool
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    reach: int = 0
    images: bool = True  # one gamma per image (a convolution) or per row (tokens)


class GraphExecutor:
    """Loads a model once (quantizing and packing its weights, and, given calibration batches,
    fixing every convolution input's gamma), then runs batches.

    With a calibrated gamma a layer writes its output straight into the planes of the
    convolutions that read it (the epilogue quantizes), and floats only where something else
    reads them; without, each convolution input is quantized at run time with one gamma per
    image."""

    def __init__(
        self,
        model: onnx.ModelProto,
        options: SparsityOptions,
        threads: int | None = None,
        path: str | None = None,
        progress: Callable[[str], None] | None = None,
        calibration: Callable[[], Sequence[dict[str, np.ndarray]]] = tuple,
    ) -> None:
        self.options = options
        self.threads = threads or kernel.default_threads()
        self.path = path or kernel.PATHS[0]
        progress = progress or (lambda _: None)
        self.plan = _build_plan(Graph(model), options, self.threads, progress)
        self.forms = {layer.node: _form(layer) for layer in self.plan.layers}
        self.readers = _kernel_readers(self.plan, self.forms)
        self.gammas: dict[str, float] = {}  # value -> its static gamma
        self._halves: set[str] = set()
        self._local = threading.local()  # per thread: planes and buffers reused across runs
        if options.act_clip == "max" and any(layer.conv for layer in self.layers):
            batches = calibration()  # drawn only when a convolution will use them
            if batches:
                samples = sum(len(next(iter(batch.values()))) for batch in batches)
                progress(f"calibrating the convolution inputs' gammas on {samples} samples")
                self.gammas = self._calibrate(batches)
        # float16 where floats serve only residuals: values no kernel layer reads (a
        # downsample's projection), or read by one form from the planes the producer writes (a
        # convolution quantizing from the floats would see them rounded)
        self._halves = {
            name
            for name in self.plan.halves
            if not self.readers.get(name) or (name in self.gammas and len(self.readers[name]) == 1)
        }

    @property
    def layers(self) -> list[Layer]:
        return self.plan.layers

    def run(
        self, feeds: dict[str, np.ndarray], timings: dict[str, float] | None = None
    ) -> dict[str, np.ndarray]:
        """Outputs for one batch; ``timings`` (if given) accumulates seconds spent in kernel
        layers, other native steps and ONNX Runtime segments, for time splits."""
        values = self._run(feeds, timings)
        return {name: np.array(to_onnx(values[name])) for name in self.plan.outputs}

    def _run(
        self,
        feeds: dict[str, np.ndarray],
        timings: dict[str, float] | None = None,
        observe: Callable[[str, Channels, Form], None] | None = None,
    ) -> dict[str, np.ndarray | Channels]:
        values: dict[str, np.ndarray | Channels] = dict(feeds)
        quantized: dict[tuple[str, Form], kernel.Activations] = {}  # inputs, once per form
        for step, dead in zip(self.plan.steps, self.plan.release, strict=True):
            start = time.perf_counter()
            if isinstance(step, Segment):
                feeds_in = {name: to_onnx(values[name]) for name in step.inputs}
                outputs = step.session.run(step.outputs, feeds_in)
                values.update(zip(step.outputs, outputs, strict=True))
            elif isinstance(step, Layer):
                output = self._run_layer(step, values, quantized, observe)
                if output is not None:
                    values[step.output] = output
            elif isinstance(step, Pool):
                values[step.output] = self._pool(step, to_channels(values[step.input], True))
            elif isinstance(step, Attention):
                values[step.output] = self._attention(step, values)
            elif isinstance(step, LayerNorm):
                x = to_channels(values[step.input], False)
                out = self._buffer(step.output, x.data.shape)
                kernel.layer_norm(
                    x.data, step.scale, step.bias, step.epsilon, out=out, threads=self.threads
                )
                values[step.output] = Channels(out, step.sample, False)
            else:
                x = to_channels(values[step.input], True)
                values[step.output] = Channels(x.data, (x.data.shape[0],), False)
            if timings is not None:
                part = {Segment: "segments", Layer: "kernel layers"}.get(type(step), "native ops")
                timings[part] = timings.get(part, 0.0) + time.perf_counter() - start
            for name in dead:
                values.pop(name, None)
                for key in [key for key in quantized if key[0] == name]:
                    del quantized[key]
        return values

    def _run_layer(
        self,
        layer: Layer,
        values: dict[str, np.ndarray | Channels],
        quantized: dict[tuple[str, Form], kernel.Activations],
        observe: Callable[[str, Channels, Form], None] | None = None,
    ) -> Channels | None:
        """The layer's float output, if anything reads it as floats. Layers reading one value
        in one form (a transformer's query, key and value projections; a ResNet block's first
        convolution and its downsample) share its quantization through ``quantized``; a layer
        whose output has a static gamma writes it into its readers' planes there too."""
        form = self.forms[layer.node]
        a = quantized.get((layer.input, form))
        if a is None:
            x = to_channels(values[layer.input], layer.conv is not None)
            if observe is not None:
                observe(layer.input, x, form)
            a = quantized[(layer.input, form)] = self._quantize(layer.input, x, form)
        residual = None
        if layer.residual:
            residual = to_channels(values[layer.residual], layer.conv is not None).data
        forms = self.readers.get(layer.output, {})
        target, floats = None, True
        first = next(iter(forms), None)
        if first is not None and self._fusable(layer, first):
            if first.images:
                side, images = (layer.sample[1], layer.sample[2]), a.images
            else:
                side, images = (1, 1), a.images  # tokens: the producer's rows
            target = self._planes(layer.output, first, images, side, layer.weight.n)
            quantized[(layer.output, first)] = target
            floats = len(forms) > 1 or layer.output in self.plan.floats
        out = None
        if floats:
            rows = a.images * layer.rows_per_sample if layer.conv else a.images  # tokens: images
            shape = (layer.weight.n, rows)
            out = self._buffer(layer.output, shape, layer.output in self._halves)
        kernel.conv(
            a, layer.weight, layer.conv or kernel.POINTWISE, residual=residual, relu=layer.relu,
            gelu=layer.gelu,
            floats=floats, out=out, target=target, path=self.path, threads=self.threads,
        )  # fmt: skip
        return None if out is None else Channels(out, layer.sample, layer.conv is not None)

    def _fusable(self, layer: Layer, form: Form) -> bool:
        """Whether the layer's epilogue can quantize its output for a reader of ``form``: into
        a convolution's planes with the value's static gamma, or a MatMul's with a gamma per
        token (a MatMul's rows are the reader's rows)."""
        if self.options.act_clip != "max":
            return False
        return layer.output in self.gammas if form.images else layer.conv is None

    def _quantize(self, name: str, x: Channels, form: Form) -> kernel.Activations:
        clip = None
        if self.options.act_clip == "octav":  # per-vector Octav scalars need the float rows
            clip = vsquant.activation_clip_scalars(x.data.T, form.vector_size, form.signed).T
        images = {"images": x.batch, "side": x.side} if form.images else {}
        return kernel.quantize(
            x.data, form.vector_size, form.signed, pads=form.pads, reach=form.reach,
            gamma=self.gammas.get(name) if form.images else None, clip=clip, path=self.path,
            threads=self.threads, **images,
        )  # fmt: skip

    def _attention(self, step: Attention, values: dict[str, np.ndarray | Channels]) -> Channels:
        q, k, v = (to_channels(values[name], False) for name in (step.q, step.k, step.v))
        mask = None
        if step.mask:
            mask = np.asarray(to_onnx(values[step.mask]), np.float32).reshape(q.batch, -1)
        out = self._buffer(step.output, q.data.shape)
        kernel.attention(
            q.data, k.data, v.data, mask, step.heads, q.batch, step.scale, out=out,
            path=self.path, threads=self.threads,
        )  # fmt: skip
        return Channels(out, step.sample, False)

    def _pool(self, step: Pool, x: Channels) -> Channels:
        c = x.data.shape[0]
        if step.window is None:
            mean = x.data.reshape(c, x.batch, -1).mean(axis=2, dtype=np.float32)
            return Channels(np.ascontiguousarray(mean), step.sample, step.image)
        oh, ow = step.window.output_side(x.side)
        out = self._buffer(step.output, (c, x.batch * oh * ow))
        kernel.max_pool(x.data, x.batch, x.side, step.window, out=out, threads=self.threads)
        return Channels(out, step.sample, True)

    def _planes(
        self, name: str, form: Form, images: int, side: tuple[int, int], channels: int
    ) -> kernel.Activations:
        """The planes a producer fills for ``form`` (made once per thread and batch size: their
        padding never changes)."""
        cache = self._cache("planes")
        key = (name, form, images)
        if key not in cache:
            cache[key] = kernel.planes_for(
                images, side, channels, form.vector_size, form.signed, form.pads, form.reach,
                self.gammas.get(name) if form.images else None,
            )  # fmt: skip
        return cache[key]

    def _buffer(self, name: str, shape: tuple[int, int], half: bool = False) -> np.ndarray:
        """A float output buffer, reused by the next run of this thread (no page faults)."""
        cache = self._cache("floats")
        if cache.get(name) is None or cache[name].shape != shape:
            cache[name] = kernel.aligned_empty(shape, np.float16 if half else np.float32)
        return cache[name]

    def _cache(self, kind: str) -> dict:
        if not hasattr(self._local, kind):
            setattr(self._local, kind, {})
        return getattr(self._local, kind)

    def _calibrate(self, batches: Sequence[dict[str, np.ndarray]]) -> dict[str, float]:
        """Each convolution input's static gamma: the largest per-vector step over the
        calibration batches (run with one gamma per image), over the largest integer scale."""
        steps: dict[str, float] = {}

        def observe(name: str, value: Channels, form: Form) -> None:
            if form.images:
                level = vsquant.SIGNED_LEVEL if form.signed else vsquant.UNSIGNED_LEVEL
                top = float(np.abs(value.data).max()) / level
                steps[name] = max(steps.get(name, 0.0), top)

        for batch in batches:
            self._run(batch, observe=observe)
        sq_max = 2**vsquant.SCALE_BITS - 1
        return {name: float(np.float32(step) / np.float32(sq_max)) for name, step in steps.items()}


def _form(layer: Layer) -> Form:
    if layer.conv is None:
        return Form(layer.weight.vector_size, layer.signed, images=False)
    reach = kernel.conv_reach(layer.conv, layer.side)
    return Form(layer.weight.vector_size, layer.signed, layer.conv.pads, reach)


def _kernel_readers(plan: Plan, forms: dict[str, Form]) -> dict[str, dict[Form, None]]:
    """For each kernel layer's output, the forms of the kernel layers that read it (ordered)."""
    produced = {layer.output for layer in plan.layers}
    readers: dict[str, dict[Form, None]] = {}
    for layer in plan.layers:
        if layer.input in produced:
            readers.setdefault(layer.input, {})[forms[layer.node]] = None
    return readers


# ------------------------------------------------------------------------------ planning


def _build_plan(
    graph: Graph, options: SparsityOptions, threads: int, progress: Callable[[str], None]
) -> Plan:
    for node in graph.nodes:
        _refuse_unsupported(node, graph)
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


@dataclass
class Context:
    """What handlers see while the plan is made."""

    graph: Graph
    options: SparsityOptions
    nonnegative: set[str] = field(default_factory=set)  # values known to be >= 0
    taken: set[str] = field(default_factory=set)  # outputs of nodes a native step stands for

    def follower(self, name: str) -> onnx.NodeProto | None:
        """The node alone reading ``name``, if no native step stands for it yet."""
        node = self.graph.sole_reader(name)
        return None if node is None or node.output[0] in self.taken else node


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


# ------------------------------------------------------------------------------ kernel layers


def is_kernel_node(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> bool:
    return (
        node.op_type in KERNEL_OPS
        and len(node.input) > 1
        and node.input[1] in initializers
        and len(initializers[node.input[1]].dims) in ((4,) if node.op_type == "Conv" else (2,))
    )


def _refuse_unsupported(node: onnx.NodeProto, graph: Graph) -> None:
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


def _kernel_layer(node: onnx.NodeProto, context: Context) -> Layer | None:
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
        other = _other_input(follower, output)
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
        other = _other_input(follower, output)
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


def _other_input(node: onnx.NodeProto, name: str) -> str:
    return node.input[1] if node.input[0] == name else node.input[0]


def _gelu_after(name: str, context: Context) -> list[str]:
    """The outputs of the five nodes of BERT's GELU on ``name`` (x · 0.5 · (1 + erf(x / √2)),
    as Div, Erf, Add, Mul, Mul), when nothing else reads them; else []."""
    graph = context.graph
    readers = graph.readers.get(name, [])
    if name in graph.outputs or len(readers) != 2:
        return []

    def constant_is(node: onnx.NodeProto, other: str, value: float) -> bool:
        c = graph.constant(_other_input(node, other))
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


# ------------------------------------------------------------------------------ pooling


def _pool(node: onnx.NodeProto, context: Context) -> Pool | None:
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


def _flatten(node: onnx.NodeProto, context: Context) -> Flatten | None:
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


def _layer_norm(node: onnx.NodeProto, context: Context) -> LayerNorm | None:
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


def _attention(node: onnx.NodeProto, context: Context) -> Attention | None:
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
        value = graph.constant(_other_input(follower, name))
        if value is None or value.size != 1 or follower.input[0] != name:
            return None
        scale = float(value) if follower.op_type == "Mul" else 1.0 / float(value)
        name = follower.output[0]
        chain.append(name)
        follower = context.follower(name)
    if follower is not None and follower.op_type == "Add":
        mask = _other_input(follower, name)
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


HANDLERS: tuple[Callable[[onnx.NodeProto, Context], Native | None], ...] = (
    _kernel_layer,
    _pool,
    _flatten,
    _layer_norm,
    _attention,
)
