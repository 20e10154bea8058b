"""Bad input ends in one clear line and a non-zero exit, and leaves no complete-looking run."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.conftest import run_cli


def assert_one_line_error(code: int, err: str, *needles: str) -> str:
    assert code != 0
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def no_complete_run(runs: Path) -> None:
    for folder in runs.glob("*") if runs.exists() else []:
        result = folder / "result.json"
        assert folder.name.endswith(".failed"), folder
        assert json.loads(result.read_text())["status"] == "failed"


def run_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["run", "--preset", "smoke", "--runs-dir", str(tmp_path / "runs"), *extra]


@pytest.mark.parametrize(
    ("flag", "value", "needle"),
    [
        ("--model", "resnet-50", "unknown model 'resnet-50'"),
        ("--scenario", "Ofline", "unknown scenario 'Ofline'"),
        ("--backend", "tensorrt", "unknown backend 'tensorrt'"),
        ("--backend", "nosuchmodule:Backend", "cannot import backend"),
        ("--preset", "quick", "unknown preset 'quick'"),
        ("--mode", "perf", "unknown mode 'perf'"),
        ("--precision", "fp8", "unknown precision 'fp8'"),
        ("--batch-size", "0", "batch size must be at least 1"),
        ("--backend-option", "colour=blue", "does not take option(s) colour"),
        ("--backend-option", "graph_optimization", "must look like KEY=VALUE"),
        ("--backend-option", "graph_optimization=max", "unknown graph optimization 'max'"),
    ],
)
def test_unknown_names(flag, value, needle, tmp_path, capsys):
    code, _, err = run_cli(run_args(tmp_path, flag, value), capsys)
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "runs").exists()


def test_missing_model_file(tmp_path, capsys):
    code, _, err = run_cli(run_args(tmp_path, "--model-path", str(tmp_path / "no.onnx")), capsys)
    assert_one_line_error(code, err, "no.onnx not found")


def test_corrupt_model_file(tmp_path, capsys):
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(os.urandom(4096))
    code, _, err = run_cli(run_args(tmp_path, "--model-path", str(bad)), capsys)
    assert_one_line_error(code, err, "not a readable ONNX model")


def tiny_model(path: Path, name: str, dtype: int, shape: list) -> Path:
    node = helper.make_node("Identity", [name], ["ArgMax:0"])
    graph = helper.make_graph(
        [node],
        "wrong",
        [helper.make_tensor_value_info(name, dtype, shape)],
        [helper.make_tensor_value_info("ArgMax:0", dtype, shape)],
    )
    onnx.save(helper.make_model(graph), path)
    return path


@pytest.mark.parametrize(
    ("name", "dtype", "shape", "needle"),
    [
        ("images", TensorProto.FLOAT, ["N", 3, 224, 224], "has no input 'input_tensor:0'"),
        ("input_tensor:0", TensorProto.FLOAT16, ["N", 3, 224, 224], "float16 [N,3,224,224]"),
        ("input_tensor:0", TensorProto.FLOAT, ["N", 224, 224, 3], "float32 [N,224,224,3]"),
    ],
)
def test_model_interface_mismatch(name, dtype, shape, needle, tmp_path, capsys):
    model = tiny_model(tmp_path / "wrong.onnx", name, dtype, shape)
    code, _, err = run_cli(run_args(tmp_path, "--model-path", str(model)), capsys)
    assert_one_line_error(code, err, needle, "input_tensor:0 float32 [N,3,224,224]")


def test_dataset_without_val_map(builtin_model, tmp_path, capsys):
    empty = tmp_path / "images"
    empty.mkdir()
    code, _, err = run_cli(run_args(tmp_path, "--dataset-path", str(empty)), capsys)
    assert_one_line_error(code, err, "no val_map.txt in", "sparseperf data synth imagenet")


def test_dataset_naming_missing_images(small_dataset, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(small_dataset, copy)
    (copy / "ILSVRC2012_val_00000007.JPEG").unlink()
    code, _, err = run_cli(run_args(tmp_path, "--dataset-path", str(copy)), capsys)
    assert_one_line_error(code, err, "1 image(s) listed", "ILSVRC2012_val_00000007.JPEG")


def test_corrupt_image(small_dataset, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(small_dataset, copy)
    (copy / "ILSVRC2012_val_00000003.JPEG").write_bytes(b"not a jpeg")
    code, _, err = run_cli(run_args(tmp_path, "--dataset-path", str(copy)), capsys)
    assert_one_line_error(code, err, "cannot decode image", "ILSVRC2012_val_00000003.JPEG")


def test_misspelt_user_conf_key(tmp_path, capsys):
    conf = tmp_path / "user.conf"
    conf.write_text("# tuned\nresnet50.Offline.target_qsp = 100\n")
    code, _, err = run_cli(run_args(tmp_path, "--user-conf", str(conf)), capsys)
    assert_one_line_error(code, err, "user.conf:2", "'target_qsp'")


def test_audit_config_in_working_directory_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "audit.config").write_text("*.*.mode = 2\n")
    code, _, err = run_cli(run_args(tmp_path), capsys)
    assert_one_line_error(code, err, "audit.config")


@pytest.mark.parametrize("scenario", ["Offline", "Server", "SingleStream"])
def test_backend_failing_mid_run_ends_the_run(scenario, small_dataset, tmp_path, capsys):
    code, _, err = run_cli(
        run_args(
            tmp_path,
            "--scenario",
            scenario,
            "--backend",
            "tests.fakes:FailingBackend",
            "--dataset-path",
            str(small_dataset),
            "--batch-size",
            "2",
        ),
        capsys,
    )
    line = assert_one_line_error(code, err, "backend FailingBackend failed", "device lost")
    assert "run failed; logs kept in" in line
    no_complete_run(tmp_path / "runs")
    (failed,) = (tmp_path / "runs").iterdir()
    assert "RuntimeError: device lost" in (failed / "error.log").read_text()


def test_synth_refuses_existing_folder(tmp_path, capsys):
    out = tmp_path / "exists"
    out.mkdir()
    code, _, err = run_cli(["data", "synth", "imagenet", "--count", "2", "--out", str(out)], capsys)
    assert_one_line_error(code, err, "already exists")
    assert list(out.iterdir()) == []


def test_val_map_label_out_of_range(small_dataset, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(small_dataset, copy)
    lines = (copy / "val_map.txt").read_text().splitlines()
    lines[4] = lines[4].split()[0] + " 1000"
    (copy / "val_map.txt").write_text("\n".join(lines) + "\n")
    code, _, err = run_cli(run_args(tmp_path, "--dataset-path", str(copy)), capsys)
    assert_one_line_error(code, err, "val_map.txt:5")


@pytest.mark.parametrize(
    ("flag", "value", "needle"),
    [
        ("--threads", "-1", "threads must be a whole number, 0 (all cores) or more"),
        ("--backend-option", "threads=-2", "threads must be a whole number"),
        ("--backend-option", "threads=two", "threads must be a whole number"),
        ("--backend-option", "graph_optimization=3", "option graph_optimization takes text"),
        ("--stall-timeout", "0", "stall timeout must be positive"),
        ("--server-batch-timeout-ms", "nan", "must not be negative"),
    ],
)
def test_bad_numbers(flag, value, needle, tmp_path, capsys):
    code, _, err = run_cli(run_args(tmp_path, flag, value), capsys)
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "runs").exists()


def test_user_conf_value_loadgen_would_drop_the_file_for(tmp_path, capsys):
    conf = tmp_path / "user.conf"
    conf.write_text("*.*.min_duration = 1_0\n")
    code, _, err = run_cli(run_args(tmp_path, "--user-conf", str(conf)), capsys)
    assert_one_line_error(code, err, "user.conf:1", "min_duration = '1_0' must be a whole number")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("backend", "needle"),
    [
        ("RaisingBackend", "could not be created: RuntimeError: no device found"),
        ("AbstractBackend", "cannot be used: it does not implement predict"),
    ],
)
def test_plug_in_that_cannot_be_made(backend, needle, tmp_path, capsys):
    code, _, err = run_cli(run_args(tmp_path, "--backend", f"tests.fakes:{backend}"), capsys)
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "runs").exists()


def test_model_onnxruntime_cannot_load_labelling_the_builtin_dataset(tmp_path, capsys):
    node = helper.make_node("NoSuchOp", ["input_tensor:0"], ["ArgMax:0"], domain="no.such")
    graph = helper.make_graph(
        [node],
        "unloadable",
        [helper.make_tensor_value_info("input_tensor:0", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("ArgMax:0", TensorProto.INT64, ["N"])],
    )
    model = tmp_path / "unloadable.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("no.such", 1)]), model)
    code, _, err = run_cli(run_args(tmp_path, "--model-path", str(model)), capsys)
    assert_one_line_error(code, err, "onnxruntime cannot load", "unloadable.onnx")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("problem", "needle"),
    [
        ("shape", "returned ArgMax:0 as int64 [2,2] for a batch of 2"),
        ("dtype", "returned ArgMax:0 as float32 [2] for a batch of 2"),
        ("missing", "returned no ArgMax:0 output"),
    ],
)
@pytest.mark.parametrize("mode", ["performance", "accuracy"])
def test_outputs_the_model_does_not_declare_fail_the_run(
    problem, needle, mode, small_dataset, tmp_path, capsys
):
    args = ["--backend", "tests.fakes:WrongOutputBackend", "-o", f"problem={problem}",
            "--dataset-path", str(small_dataset), "--batch-size", "2", "--mode", mode]  # fmt: skip
    code, _, err = run_cli(run_args(tmp_path, *args), capsys)
    assert_one_line_error(code, err, f"backend WrongOutputBackend {needle}", "int64 [N]")
    no_complete_run(tmp_path / "runs")


def test_non_finite_outputs_are_named():
    from harness.models.check import TensorSpec
    from harness.outputs import BadOutput, check_outputs

    spec = (TensorSpec("logits", "float32", (None, 4)),)
    good = {"logits": np.zeros((2, 4), np.float32)}
    assert check_outputs(good, spec, 2) is good
    with pytest.raises(BadOutput, match=r"non-finite values .* in logits"):
        check_outputs({"logits": np.array([[0, 1, np.nan, 2]] * 2, np.float32)}, spec, 2)
    with pytest.raises(BadOutput, match=r"as float32 \[3,4\] for a batch of 2"):
        check_outputs({"logits": np.zeros((3, 4), np.float32)}, spec, 2)


@pytest.mark.parametrize(
    ("leave", "needle"),
    [
        ("nothing", "before its result was complete (result.json says status 'running')"),
        ("empty", "result record"),
    ],
)
def test_a_run_process_that_exits_early_is_not_a_result(
    leave, needle, small_dataset, tmp_path, capsys
):
    args = ["--backend", "tests.fakes:ExitingBackend", "-o", f"leave={leave}",
            "--dataset-path", str(small_dataset)]  # fmt: skip
    code, _, err = run_cli(run_args(tmp_path, *args), capsys)
    assert_one_line_error(code, err, needle, "run failed")
    no_complete_run(tmp_path / "runs")


def test_a_failure_record_that_does_not_fit_leaves_no_result(tmp_path, monkeypatch):
    from harness import runfolder
    from harness.errors import UserError

    staging = runfolder.Staging(tmp_path / "runs", "run", {"model": "resnet50"})
    (staging.path / "result.json").write_text('{"status": "complete"}')  # as a run leaves it

    def full_disk(path, body):
        raise UserError(f"cannot write {path}: No space left on device")

    monkeypatch.setattr(runfolder, "write_json", full_disk)
    failed = staging.fail("backend failed")
    assert failed.name == "run.failed" and not (failed / "result.json").exists()
    assert runfolder.state(failed) == runfolder.FAILED


@pytest.mark.parametrize("entry", ["../outside.JPEG", "/etc/hostname", "a/../../b.JPEG"])
def test_val_map_entries_outside_the_dataset_folder(entry, small_dataset, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(small_dataset, copy)
    lines = (copy / "val_map.txt").read_text().splitlines()
    lines[2] = f"{entry} 3"
    (copy / "val_map.txt").write_text("\n".join(lines) + "\n")
    code, _, err = run_cli(run_args(tmp_path, "--dataset-path", str(copy)), capsys)
    assert_one_line_error(code, err, "val_map.txt:3", "outside the dataset folder")
