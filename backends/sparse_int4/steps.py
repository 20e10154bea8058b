"""What a plan of an ONNX graph is made of: the channel-major tensors native steps exchange, the
steps (kernel layers, native ops, ONNX Runtime segments), and the context the planner's
handlers see while they make them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort

from backends.sparse_int4 import kernel, packing
from backends.sparse_int4.graph import Graph
from backends.sparse_int4.layers import SparsityOptions, WeightStats


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


@dataclass
class Layer:
    """One weight-bearing node on the kernel (with what its epilogue took on), and its
    per-sample workload figures."""

    node: str
    op: str
    input: str
    output: str
    weight: packing.PackedWeight
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
class OneToOne:
    """A native step from one value to one, standing for the node that makes it."""

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
class Pool(OneToOne):
    """MaxPool, or the mean over an image's pixels (GlobalAveragePool, ReduceMean)."""

    sample: tuple[int, ...]
    image: bool  # the output is an image (keeps its 1 x 1 pixel) or rows
    window: kernel.ConvGeometry | None = None  # MaxPool's; None: the mean over every pixel


@dataclass
class Flatten(OneToOne):
    """A reshape of a 1 x 1 image to rows of its channels: no data moves."""


@dataclass
class LayerNorm(OneToOne):
    """LayerNormalization over the last axis (the channels of a channel-major tensor)."""

    scale: np.ndarray
    bias: np.ndarray
    epsilon: float
    sample: tuple[int, ...]


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
