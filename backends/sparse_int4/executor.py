"""Runs a plan (``planner.build_plan``) of an ONNX graph: kernel layers on the sparse-int4
kernel, native steps in numpy and the kernel's native passes, ONNX Runtime segments for the rest.

Native steps work on channel-major tensors (``steps.Channels``), the layout the kernel writes, so
a network of kernel layers never transposes. With calibrated gammas a layer writes its output
straight into the planes of the convolutions that read it.

Shapes must be static apart from the batch dimension: per-layer workload figures (MACs, bytes)
are per sample, and the simulated accelerator consumes them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from backends.sparse_int4 import kernel, passes, vsquant
from backends.sparse_int4.graph import Graph
from backends.sparse_int4.layers import SparsityOptions
from backends.sparse_int4.planner import build_plan
from backends.sparse_int4.steps import (
    Attention,
    Channels,
    Layer,
    LayerNorm,
    Plan,
    Pool,
    Segment,
    to_channels,
    to_onnx,
)


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
        self.plan = build_plan(Graph(model), options, self.threads, progress)
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
                passes.layer_norm(
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
        passes.attention(
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
        passes.max_pool(x.data, x.batch, x.side, step.window, out=out, threads=self.threads)
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
