"""Pruned models as workloads: ``sparseperf prune`` round trips, every backend runs a pruned file,
built-in pruned references labelled by their own FP32 outputs, and bad input refused in one
line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from backends.base import ModelHandle
from backends.onnxruntime import OnnxRuntimeBackend
from backends.simaccel.backend import SimAccelBackend
from backends.sparse_int4.backend import SparseInt4Backend
from backends.sparse_int4.sparsity import prune
from harness.datasets import synthetic_images
from harness.models import resnet50 as builder
from harness.models.pruning import METADATA_KEY, checked_record, to_kn, weight_layers
from harness.models.recipe import builtin_recipe
from harness.predict import PredictRequest, prepare
from harness.workloads import resnet50 as workload
from harness.workloads.base import DataSource
from tests.conftest import run_cli
from tests.test_bad_input import assert_one_line_error, run_args, tiny_model

DENSITY = 0.125


@pytest.fixture(scope="session")
def pruned_file(builtin_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pruned") / "pruned.onnx"
    from harness.cli import main

    main(["prune", "--model-path", str(builtin_model), "--density", str(DENSITY),
          "--keep-dense", "first", "--out", str(out)])  # fmt: skip
    return out


def weights(path: Path) -> dict[str, np.ndarray]:
    model = onnx.load(str(path))
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


# --- round trip ---------------------------------------------------------------------------------


def test_prune_writes_the_zeros_sparse_int4_would_make_and_records_them(
    builtin_model: Path, pruned_file: Path
) -> None:
    dense, pruned = weights(builtin_model), weights(pruned_file)
    model = onnx.load(str(pruned_file))
    record = checked_record(model, "pruned")
    assert record is not None
    assert (record.density, record.pattern, record.keep_dense) == (DENSITY, "1x4", ("first",))
    assert record.source == builtin_model.name
    layers = {layer.weight: layer for layer in record.layers}
    assert len(layers) == 54  # 53 convolutions and the classifier
    for node, name in weight_layers(model):
        if name == "conv1.weight":  # kept dense
            np.testing.assert_array_equal(pruned[name], dense[name])
            assert not layers[name].pruned and layers[name].kept == dense[name].size
            continue
        trans_b = node.op_type == "Gemm"
        channels = dense[name].shape[1] if node.op_type == "Conv" else None
        mask = prune(to_kn(dense[name], node.op_type, trans_b), DENSITY, "1x4", channels)
        kept_kn = to_kn(pruned[name], node.op_type, trans_b)
        np.testing.assert_array_equal(kept_kn, np.where(mask, to_kn(dense[name], node.op_type,
                                                                     trans_b), 0))  # fmt: skip
        assert layers[name].pruned and layers[name].kept == int(np.count_nonzero(kept_kn))
        assert layers[name].kept == pytest.approx(DENSITY * dense[name].size, rel=0.05)


def test_prune_prints_each_layer_with_its_kept_count(builtin_model, tmp_path, capsys) -> None:
    out = tmp_path / "unstructured.onnx"
    code, stdout, _ = run_cli(
        ["prune", "--model-path", str(builtin_model), "--density", "0.5", "--sparsity-pattern",
         "unstructured", "--keep-dense", "first,last", "--out", str(out)], capsys
    )  # fmt: skip
    assert code == 0
    record = checked_record(onnx.load(str(out)), "out")
    lines = stdout.splitlines()
    for layer in record.layers:
        (line,) = [line for line in lines if line.split()[0] == layer.node]
        assert line.split()[1:3] == [str(layer.weights), str(layer.kept)]
        assert ("kept dense" in line) == (not layer.pruned)
    assert "54 weight-bearing layers (52 pruned)" in stdout
    assert "pruned to 0.5 (pattern unstructured, first and last layers dense)" in stdout
    assert [layer.node for layer in record.layers if not layer.pruned] == ["conv1", "fc"]


# --- every backend runs the pruned file ---------------------------------------------------------


def handle(path: Path, batches: list) -> ModelHandle:
    return ModelHandle(path, "resnet50", (builder.INPUT_NAME,), (builder.ARGMAX_OUTPUT,),
                       calibration=lambda: batches)  # fmt: skip


@pytest.fixture(scope="session")
def images(small_dataset: Path) -> dict[str, np.ndarray]:
    data = workload.open_data(DataSource(small_dataset, 4), Path(), lambda _: None)
    return data.load(np.arange(4))


def test_sparse_int4_uses_the_files_zeros_as_its_own_pruning_would(
    builtin_model: Path, images: dict[str, np.ndarray], tmp_path: Path
) -> None:
    # The file pruned by the CLI in 4x4 (no layer kept dense), run without --density, computes
    # what the dense model pruned at load time computes, bit for bit, packed by quads both ways.
    out = tmp_path / "all.onnx"
    from harness.cli import main

    main(["prune", "--model-path", str(builtin_model), "--density", str(DENSITY),
          "--sparsity-pattern", "4x4", "--out", str(out)])  # fmt: skip
    logits = {}
    for path, density in ((out, None), (builtin_model, DENSITY)):
        backend = SparseInt4Backend(density=density, sparsity_pattern="4x4", threads=1)
        backend.load(handle(path, [images]))
        logits[density] = backend.executor.run(images)[builder.SOFTMAX_OUTPUT]
        assert "weight density 0.1" in backend.describe()["sparsity"]
        assert all(layer.weight.owners == 4 for layer in backend.executor.plan.layers[1:])
    np.testing.assert_array_equal(logits[None], logits[DENSITY])


def test_onnxruntime_computes_over_the_zeros(pruned_file: Path, images) -> None:
    import onnxruntime as ort

    backend = OnnxRuntimeBackend("fp32", threads=1)
    backend.load(handle(pruned_file, [images]))
    session = ort.InferenceSession(str(pruned_file), providers=["CPUExecutionProvider"])
    expected = session.run([builder.ARGMAX_OUTPUT], images)[0]
    np.testing.assert_array_equal(backend.predict(images)[builder.ARGMAX_OUTPUT], expected)


def test_simaccel_times_the_zeros_its_device_can_exploit(
    builtin_model: Path, pruned_file: Path, tmp_path: Path
) -> None:
    def rate(path: Path, device: str) -> float:
        return prepare(PredictRequest(model_path=path, device=device)).figure()[0]

    # Moffett skips any zeros; the A100 only 2:4 ones: the 1x4 file is timed as dense there (its
    # smaller weight reads aside).
    assert rate(pruned_file, "moffett-s30") > 2 * rate(builtin_model, "moffett-s30")
    assert rate(pruned_file, "a100-sxm") == pytest.approx(rate(builtin_model, "a100-sxm"), rel=0.05)
    two_four = tmp_path / "2of4.onnx"
    from harness.cli import main

    main(["prune", "--model-path", str(builtin_model), "--density", "0.5", "--sparsity-pattern",
          "2:4", "--keep-dense", "first", "--out", str(two_four)])  # fmt: skip
    assert rate(two_four, "a100-sxm") > 1.2 * rate(builtin_model, "a100-sxm")
    backend = SimAccelBackend(device="a100-sxm", functional="off")
    backend.load(handle(pruned_file, []))
    assert "1x4" in backend.warning and "timed as dense" in backend.warning
    assert backend.describe()["sparsity"].startswith("as in the model: pruned to 0.125")


def test_a_run_on_a_pruned_file_says_so(pruned_file, small_dataset, tmp_path, capsys) -> None:
    code, out, err = run_cli(
        run_args(tmp_path, "--model-path", str(pruned_file), "--dataset-path", str(small_dataset),
                 "--dataset-count", "8", "--mode", "accuracy"), capsys
    )  # fmt: skip
    assert code == 0, err
    assert "pruned model from pruned.onnx: pruned to 0.125 (pattern 1x4, first layer dense)" in out
    (folder,) = (tmp_path / "runs").iterdir()
    run = json.loads((folder / "run.json").read_text())
    assert run["model"]["label"] == "resnet50"
    assert run["model"]["pruning"]["density"] == DENSITY
    assert "not the reference model" in run["division"]["open_only"]


# --- built-in pruned references -----------------------------------------------------------------


@pytest.mark.usefixtures("small_builds")
def test_a_builtin_pruned_reference_is_labelled_by_its_own_fp32_outputs() -> None:
    import onnxruntime as ort

    recipe = builtin_recipe(DENSITY, "1x4")
    path = workload.builtin_model(lambda _: None, recipe)
    assert path != workload.builtin_model(lambda _: None, None)  # a model of its own
    record = checked_record(onnx.load(str(path)), "reference")
    assert record is not None and record.recipe == recipe
    assert [layer.node for layer in record.layers if not layer.pruned] == ["conv1", "fc"]
    data = workload.open_data(DataSource(), path, lambda _: None)
    assert data.count == 24 and path.name in data.description
    inputs = data.load(np.arange(data.count))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    fp32 = session.run([builder.ARGMAX_OUTPUT], inputs)[0]
    np.testing.assert_array_equal(data.labels, fp32 - 1)
    # Recalibrated when built: the pruned network still tells the classes apart.
    classes = builder.class_labels(8)[synthetic_images.image_classes(24, workload.DATA_SEED)]
    assert np.mean(fp32 == classes) >= 0.8


def test_reference_names_are_the_same_in_labels_commands_and_rows() -> None:
    from harness.compare.rows import failed_row
    from harness.spec import RunSpec
    from submissions.commands import run_command

    spec = RunSpec(model_density=0.5, model_pattern="2:4")
    assert spec.model_label == "resnet50-d0.5-2.4"
    assert failed_row(spec, "x", None)["model"] == "resnet50-d0.5-2.4"
    command = run_command(spec.to_json())
    assert "--model-density 0.5 --model-pattern 2:4" in command


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("density", ["0", "1.5", "-0.1"])
def test_density_outside_0_1_is_refused(density, builtin_model, tmp_path, capsys) -> None:
    out = tmp_path / "out.onnx"
    code, _, err = run_cli(["prune", "--model-path", str(builtin_model), "--density", density,
                            "--out", str(out)], capsys)  # fmt: skip
    assert_one_line_error(code, err, "density must be in (0, 1]")
    assert not out.exists()
    code, _, err = run_cli(run_args(tmp_path, "--model-density", density), capsys)
    assert_one_line_error(code, err, "density must be in (0, 1]")


def test_a_pattern_that_does_not_fit_a_layer_names_it(builtin_model, tmp_path, capsys) -> None:
    out = tmp_path / "out.onnx"
    code, _, err = run_cli(["prune", "--model-path", str(builtin_model), "--density", "0.5",
                            "--sparsity-pattern", "2:4", "--out", str(out)], capsys)  # fmt: skip
    assert_one_line_error(code, err, "layer conv1", "K = 147")
    assert not out.exists() and not list(tmp_path.iterdir())


def test_an_existing_output_is_never_touched(builtin_model, tmp_path, capsys) -> None:
    out = tmp_path / "out.onnx"
    out.write_text("mine")
    code, _, err = run_cli(["prune", "--model-path", str(builtin_model), "--density", "0.5",
                            "--out", str(out)], capsys)  # fmt: skip
    assert_one_line_error(code, err, "already exists")
    assert out.read_text() == "mine"


def test_a_model_without_weight_bearing_layers_is_refused(tmp_path, capsys) -> None:
    from onnx import TensorProto

    model = tiny_model(tmp_path / "none.onnx", "input_tensor:0", TensorProto.FLOAT,
                       ["N", 3, 224, 224])  # fmt: skip
    code, _, err = run_cli(["prune", "--model-path", str(model), "--density", "0.5",
                            "--out", str(tmp_path / "out.onnx")], capsys)  # fmt: skip
    assert_one_line_error(code, err, "no weight-bearing layers")
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("damage", ["filled", "garbage"])
def test_a_record_that_disagrees_with_the_zeros_is_refused(
    damage, pruned_file, small_dataset, tmp_path, capsys
) -> None:
    model = onnx.load(str(pruned_file))
    if damage == "filled":  # a zero filled in after pruning, the record left as it was
        init = next(i for i in model.graph.initializer if i.name == "layer2.0.conv2.weight")
        value = numpy_helper.to_array(init).copy()
        value.flat[np.flatnonzero(value == 0)[0]] = 0.5
        init.CopyFrom(numpy_helper.from_array(value, init.name))
        needles = ("disagrees with its zeros", "layer2.0.conv2")
    else:
        next(p for p in model.metadata_props if p.key == METADATA_KEY).value = "{not json"
        needles = ("not a pruning record",)
    damaged = tmp_path / "damaged.onnx"
    onnx.save(model, str(damaged))
    code, _, err = run_cli(run_args(tmp_path, "--model-path", str(damaged), "--dataset-path",
                                    str(small_dataset)), capsys)  # fmt: skip
    assert_one_line_error(code, err, *needles)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model-pattern", "2:4"], "--model-pattern needs --model-density"),
        (["--model-density", "0.5", "--model-path", "x.onnx"], "sparseperf prune"),
        (["--model-density", "0.25", "--model-pattern", "2:4"], "fixes the density at 0.5"),
        (["--model-density", "0.5", "--model-pattern", "3x3"], "not understood"),
    ],
)
def test_bad_reference_flags(args, needle, tmp_path, capsys) -> None:
    code, _, err = run_cli(run_args(tmp_path, *args), capsys)
    assert_one_line_error(code, err, needle)


def test_compare_takes_one_model_file_for_one_model(pruned_file, tmp_path, capsys) -> None:
    code, _, err = run_cli(["compare", "--models", "resnet50,bert-tiny", "--model-path",
                            str(pruned_file), "--out", str(tmp_path / "out")], capsys)  # fmt: skip
    assert_one_line_error(code, err, "one model file")
