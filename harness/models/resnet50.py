"""ResNet-50 v1.5 as an ONNX inference graph with the official MLPerf tensor names.

The convolutions' weights are random but calibrated: a numpy forward pass over a small batch of
images folds a per-channel normalisation into every convolution (as trained BatchNorm would be
folded), so each channel stays informative with depth. The classifier is fitted, not drawn: the
synthetic images come in classes (``harness.datasets.synthetic_images``), and each class's row
of the classifier points from the mean feature to the pooled features of that class's
prototype, with the bias that makes the layer a nearest-class-centre rule. An image then wins
its class by the distance between class centres, which is large against the spread of one
class's images and against int8 or int4 rounding: decisions with trained-like margins. The 256
classes sit on labels spread over the 1000; the others, and the background class 0, never win.

Built with a pruning ``Recipe``, each weight is pruned (magnitude, in the recipe's pattern)
before its layer's normalisation is measured, so the pruned network is recalibrated, not just
thinned, and the classifier is fitted to the pruned network's features; the file carries the
recipe and its kept counts (``harness.models.pruning``). The result stands in for the official
``resnet50_v1.onnx``: same interface, same compute.
"""

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from harness.datasets import synthetic_images
from harness.datasets.imagenet_preprocess import CROP, preprocess, to_model_input
from harness.errors import UserError
from harness.models.pruning import PruningRecord, layer_records, prune_weight, write_record
from harness.models.recipe import Recipe

INPUT_NAME = "input_tensor:0"
ARGMAX_OUTPUT = "ArgMax:0"
SOFTMAX_OUTPUT = "softmax_tensor:0"
NUM_CLASSES = 1001  # class 0 is "background", as in the official TensorFlow-exported model
OPSET = 17
IR_VERSION = 8  # the IR that opset 17 shipped with; loads in every onnxruntime >= 1.18

STEM_WIDTH = 64
STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # width, blocks, stride
EXPANSION = 4
FEATURES = STAGES[-1][0] * EXPANSION
# Seed offset for the internal calibration images: a stream distinct from evaluation seeds 0, 1, ...
CALIBRATION_SEED_OFFSET = 1_000_003
CALIBRATION_COUNT = 32
# Pre-ReLU channels get mean 1, unit spread: mostly in the linear regime. Centred ReLU layers
# rescaled to unit variance amplify small perturbations ~1.2x each, which compounds over 50 layers
# into top-1 flips under tiny input noise or int8 rounding.
PRE_RELU_MEAN = 1.0
# A channel's spread is measured between these quantiles (as for a unit Gaussian), not by its std:
# heavy-tailed channels then cannot stretch the per-tensor range an int8 quantiser has to cover.
TAIL_QUANTILE = 0.001
TAIL_Z = 3.090232  # standard normal quantile at 1 - TAIL_QUANTILE
STAT_ROWS = 1 << 14  # at most this many positions per channel go into the quantiles
# Residual branches enter each sum at 0.15x the shortcut, so the sum grows little with depth and
# rounding noise picked up in the branches stays small in the running features.
RESIDUAL_GAIN = 0.15
# Binomial blur of the random 7x7 stem filters: smooth like trained ones, so they respond to image
# structure rather than to pixel-level noise such as the input's int8 rounding.
STEM_BLUR = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
# Logits are scaled so that a prototype beats the runner-up class by this much (the median
# over prototypes; an image, less like its prototype, by less): trained-like confidence.
PROTOTYPE_MARGIN = 8.0
OTHER_ROW_NORM = 0.1  # rows of classes without a prototype, against a prototype's row
FIRST_LAYER, LAST_LAYER = "conv1", "fc"  # what a recipe's "first" and "last" keep dense
FEATURES_OUTPUT = "flatten"
PROTOTYPE_BATCH = 32
CHUNK_ROWS = 1 << 17  # im2col rows per matmul: bounds the temporary to a few tens of MB


def build_resnet50(
    path: Path,
    seed: int = 0,
    calibration: np.ndarray | None = None,
    prototypes: np.ndarray | None = None,
    recipe: Recipe | None = None,
) -> None:
    """Write a calibrated random ResNet-50 v1.5 to ``path`` (same arguments -> identical bytes),
    pruned by ``recipe`` if one is given.

    ``calibration`` and ``prototypes`` are float32 batches [N, 3, 224, 224] as made by
    ``to_model_input``: the images the normalisation is measured on (by default 32 synthetic
    images from a seed stream no evaluation run uses) and one image per class that the
    classifier is fitted to (by default every synthetic class's prototype).
    """
    if calibration is None:
        images = synthetic_images.synth_images(CALIBRATION_COUNT, seed + CALIBRATION_SEED_OFFSET)
        calibration = _model_input(images)
    if prototypes is None:
        classes = range(synthetic_images.CLASSES)
        prototypes = _model_input(synthetic_images.prototype(c) for c in classes)
    for what, batch, least in (("calibration", calibration, 2), ("prototype", prototypes, 2)):
        if batch.ndim != 4 or batch.shape[1:] != (3, CROP, CROP) or len(batch) < least:
            raise UserError(
                f"{what} images must be a float32 array [N>={least}, 3, {CROP}, {CROP}], "
                f"got shape {batch.shape}"
            )
    if len(prototypes) > NUM_CLASSES - 1:
        raise UserError(f"at most {NUM_CLASSES - 1} prototype images, got {len(prototypes)}")
    builder = _Builder(np.random.default_rng(seed), recipe)
    # The numpy pass runs channels-last so that every convolution is a plain matmul.
    builder.network(np.ascontiguousarray(calibration.astype(np.float32).transpose(0, 2, 3, 1)))
    builder.classifier(builder.features(prototypes.astype(np.float32)))
    model = builder.model()
    if recipe is not None:
        source = f"built-in synthetic ResNet-50 (seed {seed}), pruned when built and recalibrated"
        layers = layer_records(model, builder.pruned)
        write_record(model, PruningRecord(recipe.density, recipe.pattern, recipe.keep_dense,
                                          source, layers))  # fmt: skip
    onnx.save(model, path)


def class_labels(count: int) -> np.ndarray:
    """The model classes (1..1000; 0 is background) of ``count`` prototype classes, spread
    evenly over the labels."""
    return 1 + np.arange(count) * (NUM_CLASSES - 1) // count


def _model_input(images: Iterable[np.ndarray]) -> np.ndarray:
    return to_model_input(np.stack([preprocess(Image.fromarray(image)) for image in images]))


class _Builder:
    """Emits the graph and, alongside, runs it in numpy on the calibration batch."""

    def __init__(self, rng: np.random.Generator, recipe: Recipe | None) -> None:
        self.rng = rng
        self.recipe = recipe
        dense = set(recipe.keep_dense) if recipe else set()
        self.dense = {name for end, name in (("first", FIRST_LAYER), ("last", LAST_LAYER))
                      if end in dense}  # fmt: skip
        self.pruned: set[str] = set()  # the weights the recipe pruned
        self.nodes: list[onnx.NodeProto] = []
        self.weights: list[onnx.TensorProto] = []

    def network(self, x: np.ndarray) -> None:
        name, x = self.conv(
            "conv1", INPUT_NAME, x, STEM_WIDTH, kernel=7, stride=2, shift=PRE_RELU_MEAN, smooth=True
        )
        name, x = self.relu("conv1", name, x)
        name, x = self.maxpool("pool1", name, x)
        for stage, (width, blocks, stride) in enumerate(STAGES, start=1):
            for block in range(blocks):
                prefix = f"layer{stage}.{block}"
                name, x = self.bottleneck(prefix, name, x, width, stride if block == 0 else 1)
        self.nodes.append(helper.make_node("GlobalAveragePool", [name], ["pool5"], name="pool5"))
        self.nodes.append(
            helper.make_node("Flatten", ["pool5"], [FEATURES_OUTPUT], name=FEATURES_OUTPUT)
        )

    def bottleneck(
        self, prefix: str, name: str, x: np.ndarray, width: int, stride: int
    ) -> tuple[str, np.ndarray]:
        branch, h = self.conv(
            f"{prefix}.conv1", name, x, width, kernel=1, stride=1, shift=PRE_RELU_MEAN
        )
        branch, h = self.relu(f"{prefix}.conv1", branch, h)
        # v1.5: the stride sits on the 3x3 convolution, not on the first 1x1.
        branch, h = self.conv(
            f"{prefix}.conv2", branch, h, width, kernel=3, stride=stride, shift=PRE_RELU_MEAN
        )
        branch, h = self.relu(f"{prefix}.conv2", branch, h)
        branch, h = self.conv(
            f"{prefix}.conv3", branch, h, width * EXPANSION, kernel=1, stride=1, gain=RESIDUAL_GAIN
        )
        if stride != 1 or x.shape[-1] != width * EXPANSION:
            name, x = self.conv(
                f"{prefix}.downsample", name, x, width * EXPANSION, kernel=1, stride=stride
            )
        total = f"{prefix}.add"
        self.nodes.append(helper.make_node("Add", [name, branch], [total], name=total))
        return self.relu(prefix, total, x + h)

    def conv(
        self,
        prefix: str,
        name: str,
        x: np.ndarray,
        out_channels: int,
        kernel: int,
        stride: int,
        gain: float = 1.0,
        shift: float = 0.0,
        smooth: bool = False,
    ) -> tuple[str, np.ndarray]:
        """A convolution whose channels have mean ``shift`` and spread ``gain`` on calibration."""
        in_channels = x.shape[-1]
        fan_in = in_channels * kernel * kernel
        weight = self.rng.standard_normal((out_channels, in_channels, kernel, kernel))
        if smooth:
            blur = _blur_matrix(kernel)
            weight = np.einsum("ij,ocjk,lk->ocil", blur, weight, blur)
        weight = self.prune(prefix, weight, "Conv")
        weight *= np.sqrt(2.0 / fan_in)  # He init: only keeps the raw pass in a sane range
        raw = _conv_nhwc(x, weight.astype(np.float32), kernel, stride)
        flat = raw.reshape(-1, out_channels)
        mean = flat.mean(axis=0, dtype=np.float64)
        scale = gain * 2.0 * TAIL_Z / np.maximum(_tail_spread(flat), 1e-6)
        weight *= scale[:, None, None, None]
        bias = shift - mean * scale
        raw *= scale.astype(np.float32)
        raw += bias.astype(np.float32)
        pad = kernel // 2
        self.nodes.append(
            helper.make_node(
                "Conv",
                [
                    name,
                    self.weight(f"{prefix}.weight", weight),
                    self.weight(f"{prefix}.bias", bias),
                ],
                [f"{prefix}.out"],
                name=prefix,
                kernel_shape=[kernel, kernel],
                strides=[stride, stride],
                pads=[pad] * 4,
            )
        )
        return f"{prefix}.out", raw

    def relu(self, prefix: str, name: str, x: np.ndarray) -> tuple[str, np.ndarray]:
        out = f"{prefix}.relu"
        self.nodes.append(helper.make_node("Relu", [name], [out], name=out))
        return out, np.maximum(x, 0.0)

    def maxpool(self, prefix: str, name: str, x: np.ndarray) -> tuple[str, np.ndarray]:
        self.nodes.append(
            helper.make_node(
                "MaxPool",
                [name],
                [prefix],
                name=prefix,
                kernel_shape=[3, 3],
                strides=[2, 2],
                pads=[1, 1, 1, 1],
            )
        )
        # Inputs are post-ReLU (>= 0), so zero padding equals the -inf padding ONNX uses.
        padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2))
        return prefix, windows[:, ::2, ::2].max(axis=(-2, -1))

    def prune(self, layer: str, weight: np.ndarray, op: str) -> np.ndarray:
        """The layer's weight as the recipe prunes it (unchanged without one, or kept dense)."""
        if self.recipe is None or layer in self.dense:
            return weight
        self.pruned.add(f"{layer}.weight")
        return prune_weight(weight, op, self.recipe, layer, trans_b=op == "Gemm")

    def features(self, images: np.ndarray) -> np.ndarray:
        """float64 [N, 2048]: the pooled features of ``images``, by ONNX Runtime on the graph so
        far (the numpy pass's cost per image is several times higher)."""
        graph = helper.make_graph(
            self.nodes,
            "resnet50_v1.5_features",
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, CROP, CROP])],
            [helper.make_tensor_value_info(FEATURES_OUTPUT, TensorProto.FLOAT, ["N", FEATURES])],
            initializer=self.weights,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  ir_version=IR_VERSION)  # fmt: skip
        session = ort.InferenceSession(model.SerializeToString(),
                                       providers=["CPUExecutionProvider"])  # fmt: skip
        parts = [
            session.run([FEATURES_OUTPUT], {INPUT_NAME: images[i : i + PROTOTYPE_BATCH]})[0]
            for i in range(0, len(images), PROTOTYPE_BATCH)
        ]
        return np.concatenate(parts).astype(np.float64)

    def classifier(self, centres: np.ndarray) -> None:
        """A nearest-class-centre rule over the pooled features: class k's logit is
        (|f - mean|^2 - |f - centre_k|^2) / 2, scaled, which is linear in f. Classes without a
        prototype (and background) get small random rows and a bias that puts them below
        every prototype's winning logit: they never win, and the layer has no zero rows."""
        mean = centres.mean(axis=0)
        rows = centres - mean
        classes = class_labels(len(centres))
        others = np.ones(NUM_CLASSES, bool)
        others[classes] = False
        weight = self.rng.standard_normal((NUM_CLASSES, FEATURES))
        weight *= OTHER_ROW_NORM * np.linalg.norm(rows, axis=1).mean() / np.sqrt(FEATURES)
        weight[classes] = rows
        weight = self.prune(LAST_LAYER, weight, "Gemm")
        kept = weight[classes]
        # With the class's own (possibly pruned) row: its centre scores (row . (centre - mean)) / 2.
        bias = np.zeros(NUM_CLASSES)
        bias[classes] = -(kept @ mean + 0.5 * np.einsum("kf,kf->k", kept, rows))
        logits = centres @ weight.T + bias
        ranked = np.sort(logits[:, classes], axis=1)
        scale = PROTOTYPE_MARGIN / np.median(ranked[:, -1] - ranked[:, -2])
        # Twice the margin below the weakest winner: far from winning, close enough not to widen
        # the range an int8 or int4 quantizer of the logits must cover.
        lowest_top = ranked[:, -1].min() - 2 * PROTOTYPE_MARGIN / scale
        bias[others] = lowest_top - logits[:, others].max(axis=0)
        weight *= scale
        bias *= scale
        self.nodes.append(
            helper.make_node(
                "Gemm",
                [FEATURES_OUTPUT, self.weight("fc.weight", weight), self.weight("fc.bias", bias)],
                ["logits"],
                name="fc",
                transB=1,
            )
        )
        self.nodes.append(
            helper.make_node("Softmax", ["logits"], [SOFTMAX_OUTPUT], name="softmax", axis=1)
        )
        self.nodes.append(
            helper.make_node(
                "ArgMax", ["logits"], [ARGMAX_OUTPUT], name="argmax", axis=1, keepdims=0
            )
        )

    def weight(self, name: str, value: np.ndarray) -> str:
        self.weights.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def model(self) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            "resnet50_v1.5",
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, CROP, CROP])],
            [
                helper.make_tensor_value_info(ARGMAX_OUTPUT, TensorProto.INT64, ["N"]),
                helper.make_tensor_value_info(
                    SOFTMAX_OUTPUT, TensorProto.FLOAT, ["N", NUM_CLASSES]
                ),
            ],
            initializer=self.weights,
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="sparseperf",
            ir_version=IR_VERSION,
        )
        onnx.checker.check_model(model, full_check=True)
        return model


def _tail_spread(flat: np.ndarray) -> np.ndarray:
    """Per column of [positions, channels]: the distance between the two tail quantiles."""
    # Channel-major copy: partitioning along contiguous rows is several times faster.
    sample = np.ascontiguousarray(flat[:: -(-len(flat) // STAT_ROWS)].T)
    low = int(TAIL_QUANTILE * (sample.shape[1] - 1))
    high = sample.shape[1] - 1 - low
    ordered = np.partition(sample, [low, high], axis=1)
    return ordered[:, high].astype(np.float64) - ordered[:, low]


def _blur_matrix(size: int) -> np.ndarray:
    """[size, size] matrix applying STEM_BLUR along one axis with zero borders ('same' size)."""
    half = len(STEM_BLUR) // 2
    offsets = np.arange(size)[None, :] - np.arange(size)[:, None] + half
    inside = (offsets >= 0) & (offsets < len(STEM_BLUR))
    return np.where(inside, STEM_BLUR[np.clip(offsets, 0, len(STEM_BLUR) - 1)], 0.0)


def _conv_nhwc(x: np.ndarray, weight: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    """Convolution of channels-last ``x`` with ONNX-layout ``weight`` [O, C, k, k], 'same' pads."""
    pad = kernel // 2
    if pad:
        x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    # Window axes come last, so each im2col row is ordered (C, kh, kw) like the weight.
    windows = np.lib.stride_tricks.sliding_window_view(x, (kernel, kernel), axis=(1, 2))
    windows = windows[:, ::stride, ::stride]
    count, height, width = windows.shape[:3]
    matrix = weight.reshape(len(weight), -1).T
    out = np.empty((count, height, width, len(weight)), dtype=np.float32)
    images_per_chunk = max(1, CHUNK_ROWS // (height * width))
    for start in range(0, count, images_per_chunk):
        chunk = windows[start : start + images_per_chunk]
        product = chunk.reshape(-1, matrix.shape[0]) @ matrix
        out[start : start + len(chunk)] = product.reshape(len(chunk), height, width, -1)
    return out
