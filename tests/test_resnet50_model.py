"""Built-in ResNet-50 v1.5: MLPerf interface, architecture and compute, reproducibility, and
predictions diverse and stable enough to stand in for the official model."""

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from PIL import Image

from harness.datasets.imagenet_preprocess import preprocess, to_model_input
from harness.datasets.synthetic_images import CLASSES, image_classes, synth_images
from harness.errors import UserError
from harness.models.resnet50 import (
    ARGMAX_OUTPUT,
    INPUT_NAME,
    NUM_CLASSES,
    SOFTMAX_OUTPUT,
    build_resnet50,
    class_labels,
)

BATCH = 50


@pytest.fixture(scope="session")
def model_path(builtin_model: Path) -> Path:
    return builtin_model  # build_resnet50(seed=0), cached


@pytest.fixture(scope="session")
def session(model_path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="session")
def graph(model_path: Path) -> onnx.ModelProto:
    return onnx.shape_inference.infer_shapes(onnx.load(model_path))


def synthetic_inputs(count: int, seed: int = 0) -> np.ndarray:
    crops = [preprocess(Image.fromarray(image)) for image in synth_images(count, seed)]
    return to_model_input(np.stack(crops))


def predict(session: ort.InferenceSession, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ArgMax and softmax outputs for ``inputs``, run in batches."""
    runs = [
        session.run([ARGMAX_OUTPUT, SOFTMAX_OUTPUT], {INPUT_NAME: inputs[i : i + BATCH]})
        for i in range(0, len(inputs), BATCH)
    ]
    return np.concatenate([r[0] for r in runs]), np.concatenate([r[1] for r in runs])


def noise_stability(session: ort.InferenceSession, inputs: np.ndarray, top1: np.ndarray) -> float:
    """Share of images whose top-1 survives Gaussian noise of 1% of the input std."""
    rng = np.random.default_rng(1234)
    noise = rng.standard_normal(inputs.shape, dtype=np.float32) * (0.01 * inputs.std())
    noisy_top1, _ = predict(session, inputs + noise)
    return float(np.mean(noisy_top1 == top1))


def check_diversity(top1: np.ndarray, min_classes: int, max_share: float) -> None:
    counts = Counter(top1.tolist())
    share = max(counts.values()) / len(top1)
    print(f"{len(top1)} images: {len(counts)} distinct classes, largest class share {share:.1%}")
    assert 0 not in counts, "background class predicted"
    assert len(counts) >= min_classes
    assert share <= max_share


# --- interface ----------------------------------------------------------------------------------


def test_inputs_and_outputs_carry_the_official_names_types_and_shapes(
    session: ort.InferenceSession,
) -> None:
    (image,) = session.get_inputs()
    assert image.name == INPUT_NAME
    assert image.type == "tensor(float)"
    assert image.shape[1:] == [3, 224, 224] and not isinstance(image.shape[0], int)
    outputs = {output.name: output for output in session.get_outputs()}
    assert set(outputs) == {ARGMAX_OUTPUT, SOFTMAX_OUTPUT}
    assert outputs[ARGMAX_OUTPUT].type == "tensor(int64)"
    assert len(outputs[ARGMAX_OUTPUT].shape) == 1
    assert outputs[SOFTMAX_OUTPUT].type == "tensor(float)"
    assert outputs[SOFTMAX_OUTPUT].shape[1:] == [NUM_CLASSES]


@pytest.mark.parametrize("batch", [1, 3])
def test_batch_size_is_dynamic(session: ort.InferenceSession, batch: int) -> None:
    top1, probabilities = predict(session, synthetic_inputs(batch, seed=42))
    assert top1.dtype == np.int64 and top1.shape == (batch,)
    assert probabilities.dtype == np.float32 and probabilities.shape == (batch, NUM_CLASSES)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-4)


def test_model_declares_opset_17_and_an_ir_version_onnxruntime_1_18_loads(
    graph: onnx.ModelProto,
) -> None:
    assert [(o.domain, o.version) for o in graph.opset_import] == [("", 17)]
    assert graph.ir_version <= 10


# --- architecture and compute -------------------------------------------------------------------


def attributes(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def test_layer_layout_is_resnet50_v1_5(graph: onnx.ModelProto) -> None:
    ops = Counter(node.op_type for node in graph.graph.node)
    assert ops["Conv"] == 53 and ops["Add"] == 16 and ops["MaxPool"] == 1
    assert ops["BatchNormalization"] == 0  # folded into the convolutions
    convs = [attributes(node) for node in graph.graph.node if node.op_type == "Conv"]
    layout = Counter((conv["kernel_shape"][0], conv["strides"][0]) for conv in convs)
    # v1.5 downsamples in the 3x3 convolution of the first block of stages 2-4.
    assert layout == {(7, 2): 1, (3, 2): 3, (1, 2): 3, (3, 1): 13, (1, 1): 33}
    (pool,) = [attributes(node) for node in graph.graph.node if node.op_type == "MaxPool"]
    assert pool == {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}


def test_compute_and_parameters_match_resnet50(graph: onnx.ModelProto) -> None:
    shapes = {
        info.name: [d.dim_value for d in info.type.tensor_type.shape.dim]
        for info in graph.graph.value_info
    }
    weights = {init.name: numpy_helper.to_array(init).shape for init in graph.graph.initializer}
    macs = 0
    for node in graph.graph.node:
        if node.op_type == "Conv":
            out_channels, in_channels, kh, kw = weights[node.input[1]]
            height, width = shapes[node.output[0]][2:]
            macs += height * width * out_channels * in_channels * kh * kw
        elif node.op_type in ("Gemm", "MatMul"):
            rows, cols = weights[node.input[1]]
            macs += rows * cols
    assert 4.0e9 <= macs <= 4.2e9
    parameters = sum(int(np.prod(shape)) for shape in weights.values())
    assert 25.4e6 <= parameters <= 25.7e6


# --- reproducibility ----------------------------------------------------------------------------


def test_a_seed_builds_one_file_and_other_seeds_other_weights(tmp_path: Path) -> None:
    calibration = synthetic_inputs(4, seed=99)
    paths = [tmp_path / f"{i}-seed{seed}.onnx" for i, seed in enumerate((1, 1, 2))]
    for path, seed in zip(paths, (1, 1, 2), strict=True):
        build_resnet50(path, seed=seed, calibration=calibration, prototypes=calibration)
    first, again, other = (path.read_bytes() for path in paths)
    assert first == again
    assert first != other


@pytest.mark.heavy
def test_same_seed_builds_a_byte_identical_file(model_path: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.onnx"
    build_resnet50(again, seed=0)  # the default calibration and prototypes: about 20 s
    assert again.read_bytes() == model_path.read_bytes()


@pytest.mark.parametrize("argument", ["calibration", "prototypes"])
def test_images_of_the_wrong_shape_are_rejected(tmp_path: Path, argument: str) -> None:
    with pytest.raises(UserError, match=argument.rstrip("s")):
        build_resnet50(tmp_path / "bad.onnx", **{argument: np.zeros((4, 224, 224, 3), np.float32)})


# --- prediction quality -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def evaluation_inputs() -> np.ndarray:
    return synthetic_inputs(200)


@pytest.fixture(scope="session")
def evaluation_outputs(
    session: ort.InferenceSession, evaluation_inputs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    return predict(session, evaluation_inputs)


def test_predictions_are_diverse_on_200_images(
    evaluation_outputs: tuple[np.ndarray, np.ndarray],
) -> None:
    top1, probabilities = evaluation_outputs
    np.testing.assert_array_equal(top1, probabilities.argmax(axis=1))
    check_diversity(top1, min_classes=60, max_share=0.08)


def test_top1_is_stable_under_small_input_noise(
    session: ort.InferenceSession,
    evaluation_inputs: np.ndarray,
    evaluation_outputs: tuple[np.ndarray, np.ndarray],
) -> None:
    # int8 runs are scored by agreement with fp32 top-1, so it must not flip on tiny changes.
    stability = noise_stability(session, evaluation_inputs[:100], evaluation_outputs[0][:100])
    print(f"top-1 unchanged under 1% input noise: {stability:.1%}")
    assert stability >= 0.95


def test_decisions_follow_the_image_classes_with_margins(
    evaluation_outputs: tuple[np.ndarray, np.ndarray],
) -> None:
    # The classifier is fitted to the classes' prototypes: an image wins its own class, by a
    # margin (top-1 minus top-2 logit) well above rounding noise.
    top1, probabilities = evaluation_outputs
    expected = class_labels(CLASSES)[image_classes(len(top1), seed=0)]
    assert np.mean(top1 == expected) >= 0.95
    log_p = np.sort(np.log(np.maximum(probabilities.astype(np.float64), 1e-300)), axis=1)
    margins = log_p[:, -1] - log_p[:, -2]
    print(f"margins: median {np.median(margins):.2f}, p10 {np.quantile(margins, 0.1):.2f}")
    assert np.median(margins) >= 2.0


@pytest.mark.heavy
def test_predictions_are_diverse_on_1000_images(session: ort.InferenceSession) -> None:
    inputs = synthetic_inputs(1000)
    top1, probabilities = predict(session, inputs)
    np.testing.assert_array_equal(top1, probabilities.argmax(axis=1))
    check_diversity(top1, min_classes=100, max_share=0.05)
    stability = noise_stability(session, inputs, top1)
    print(f"top-1 unchanged under 1% input noise: {stability:.1%}")
    assert stability >= 0.9
