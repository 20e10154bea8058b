"""Paths are the caller's: every path option given relative to the working directory works,
although the run process works in its run folder."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from backends.simaccel.profiles import get_profile, write_profile_file
from harness.spec import PATH_FIELDS, RunSpec
from tests.conftest import run_cli
from tests.test_runs import only_run


def test_every_path_field_of_a_run_is_resolved():
    typed = {f.name for f in dataclasses.fields(RunSpec) if "Path" in str(f.type)}
    assert typed == set(PATH_FIELDS)
    spec = RunSpec(
        dataset_path=dataclasses.replace(RunSpec()).runs_dir / "x",
        backend="simaccel",
        backend_options={"device_file": "dev.toml", "density": 0.5},
    ).resolved()
    assert all(getattr(spec, name) is None or getattr(spec, name).is_absolute()
               for name in PATH_FIELDS)  # fmt: skip
    assert spec.backend_options["device_file"].startswith("/")
    assert spec.backend_options["density"] == 0.5


def recorded_spec(runs):
    return json.loads((only_run(runs) / "run.json").read_text())["spec"]


def test_resnet50_paths_relative_to_the_caller(
    small_dataset, builtin_model, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(small_dataset, "my-imagenet")
    shutil.copyfile(builtin_model, "model.onnx")
    (tmp_path / "my.conf").write_text("*.*.min_query_count = 3\n")
    monkeypatch.setenv("SPARSEPERF_CACHE", "my-cache")  # relative too
    code, _, err = run_cli(
        ["run", "--preset", "smoke", "--backend", "tests.fakes:InstantBackend",
         "--dataset-path", "my-imagenet", "--model-path", "model.onnx", "--user-conf",
         "my.conf", "--runs-dir", "my-runs"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    spec = recorded_spec(tmp_path / "my-runs")
    for name, relative in [("dataset_path", "my-imagenet"), ("model_path", "model.onnx"),
                           ("user_conf", "my.conf"), ("runs_dir", "my-runs")]:  # fmt: skip
        assert spec[name] == str(tmp_path / relative)
    conf = (only_run(tmp_path / "my-runs") / "user.conf").read_text()
    assert "resnet50.Offline.min_query_count = 3" in conf
    # One cache, where the caller's SPARSEPERF_CACHE points, not inside the run folder.
    assert list((tmp_path / "my-cache" / "preprocessed").glob("*.npy"))
    assert not list(only_run(tmp_path / "my-runs").glob("my-cache"))


def test_bert_paths_relative_to_the_caller(squad_set, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shutil.copyfile(squad_set / "dev-v1.1.json", "dev.json")
    shutil.copyfile(squad_set / "vocab.txt", "words.txt")
    code, _, err = run_cli(
        ["run", "--model", "bert-tiny", "--preset", "smoke", "--dataset-path", "dev.json",
         "--vocab-path", "words.txt", "--runs-dir", "runs"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    spec = recorded_spec(tmp_path / "runs")
    assert spec["dataset_path"] == str(tmp_path / "dev.json")
    assert spec["vocab_path"] == str(tmp_path / "words.txt")


@pytest.mark.parametrize("how", ["flag", "option"])
def test_device_file_relative_to_the_caller(how, small_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_profile_file(get_profile("moffett-s30"), tmp_path / "dev.toml")
    device = ["--device-file", "dev.toml"] if how == "flag" else ["-o", "device_file=dev.toml"]
    code, _, err = run_cli(
        ["run", "--preset", "smoke", "--backend", "simaccel", *device, "--functional", "off",
         "--dataset-path", str(small_dataset), "--runs-dir", "runs"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert recorded_spec(tmp_path / "runs")["backend_options"]["device_file"] == str(
        tmp_path / "dev.toml"
    )
