"""Calibration lists: the named samples a backend calibrates on, checked up front and recorded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.datasets import imagenet
from harness.spec import RunSpec
from harness.workloads import get_workload
from harness.workloads.base import DataSource
from tests.conftest import run_cli
from tests.test_bad_input import assert_one_line_error, no_complete_run
from tests.test_runs import only_run

CALIBRATING = "tests.fakes:CalibratingBackend"


def image_names(dataset: Path) -> list[str]:
    return [line.split()[0] for line in (dataset / imagenet.VAL_MAP).read_text().splitlines()]


def calibration_run(tmp_path: Path, dataset: Path, listing: Path, *extra: str) -> list[str]:
    return ["run", "--backend", CALIBRATING, "--preset", "smoke", "--dataset-path",
            str(dataset), "--calibration-list", str(listing), "--runs-dir",
            str(tmp_path / "runs"), *extra]  # fmt: skip


def test_a_run_calibrates_on_the_listed_images_and_records_the_list(
    small_dataset, tmp_path, capsys
):
    names = image_names(small_dataset)
    listing = tmp_path / "cal_image_list.txt"
    # The last images lie beyond --dataset-count: a list names images of the folder, not of
    # the evaluation set.
    listing.write_text("\n".join([names[3], names[7], "", names[40]]) + "\n")
    args = calibration_run(tmp_path, small_dataset, listing, "--dataset-count", "16")
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    run = json.loads((only_run(tmp_path / "runs") / "run.json").read_text())
    assert run["calibration"]["samples"] == 3
    assert run["calibration"]["list"] == str(listing)
    assert len(run["calibration"]["sha256"]) == 64
    assert run["spec"]["calibration_list"] == str(listing)


def test_without_a_list_the_run_records_samples_of_the_evaluation_set(
    small_dataset, tmp_path, capsys
):
    args = ["run", "--backend", CALIBRATING, "--preset", "smoke", "--dataset-path",
            str(small_dataset), "--runs-dir", str(tmp_path / "runs")]  # fmt: skip
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    run = json.loads((only_run(tmp_path / "runs") / "run.json").read_text())
    assert run["calibration"] == {"samples": 48, "list": None, "sha256": None}


def test_a_backend_that_does_not_calibrate_records_none(small_dataset, tmp_path, capsys):
    args = ["run", "--backend", "tests.fakes:VettedBackend", "--preset", "smoke",
            "--dataset-path", str(small_dataset), "--runs-dir", str(tmp_path / "runs")]  # fmt: skip
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert json.loads((only_run(tmp_path / "runs") / "run.json").read_text())["calibration"] is None


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        (None, ["calibration list", "missing.txt", "cannot be read"]),
        ("\n \n", ["calibration list", "names no samples"]),
        ("ILSVRC2012_val_00000001.JPEG\nnot-there.JPEG\nalso-not.JPEG\n",
         ["calibration list", "image 'not-there.JPEG' is not in the dataset folder"]),
        ("../imagenet/ILSVRC2012_val_00000001.JPEG\n", ["is not in the dataset folder"]),
    ],
)  # fmt: skip
def test_bad_calibration_lists_end_in_one_line(small_dataset, tmp_path, capsys, content, needles):
    listing = tmp_path / "missing.txt"
    if content is not None:
        listing.write_text(content)
    code, _, err = run_cli(calibration_run(tmp_path, small_dataset, listing), capsys)
    line = assert_one_line_error(code, err, *needles)
    assert str(listing) in line
    no_complete_run(tmp_path / "runs")


def test_listed_images_are_preprocessed_as_the_dataset_s(small_dataset):
    workload = get_workload("resnet50")
    model = Path("unused")  # the dataset is given: no labelling model is needed
    data = workload.open_data(DataSource(small_dataset), model, lambda _: None)
    names = image_names(small_dataset)
    batches = data.calibration([names[5], names[2]])
    (inputs,) = (batch["input_tensor:0"] for batch in batches)
    np.testing.assert_array_equal(inputs, data.load(np.array([5, 2]))["input_tensor:0"])
    assert data.calibration_problem([names[1], "x.JPEG"]) == (
        f"image 'x.JPEG' is not in the dataset folder {small_dataset}"
    )


def test_a_squad_list_names_questions_whose_features_calibrate(squad_set):
    from harness.runner import prepare_model

    workload = get_workload("bert-tiny")
    data = workload.open_data(DataSource(squad_set), prepare_model(RunSpec(model="bert-tiny")),
                              lambda _: None)  # fmt: skip
    question = data.squad.examples[2].qas_id
    rows = np.flatnonzero(data.features.example_index == 2)
    (batch,) = data.calibration([question])
    for name, values in data.load(rows).items():
        np.testing.assert_array_equal(batch[name], values)
    assert data.calibration_problem([question, "nope"]) == (
        f"question id 'nope' is not in {data.squad.path}"
    )
