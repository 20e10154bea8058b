"""A synthetic set repeated to the official size writes, beside the accuracy log, the dataset
files the official accuracy scripts read: every QSL index of the log is in them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from harness.datasets import imagenet, squad_features
from harness.datasets.squad import read_squad
from harness.datasets.wordpiece import load_wordpiece
from harness.runner import prepare_model
from harness.spec import RunSpec
from harness.workloads import get_workload
from harness.workloads.base import DataSource
from harness.workloads.bert import SquadData, repeat_to
from harness.workloads.resnet50 import ImageNetData
from tests.conftest import run_cli
from tests.official import ENV, needs_copy, official_file, run_script
from tests.test_runs import only_run

TOTAL = 100  # QSL indices of the repeated ImageNet set (the small dataset has 48 images)
IMAGENET_SCRIPT = (
    "vision/classification_and_detection/tools/accuracy-imagenet.py",
    "retired_benchmarks/vision/classification_and_detection/tools/accuracy-imagenet.py",
)


def repeated_imagenet(dataset: Path, total: int) -> ImageNetData:
    folder = imagenet.open_imagenet(dataset)
    return ImageNetData(folder, imagenet.preprocessed_crops(folder), total)


def accuracy_log(path: Path, rows: dict[int, np.ndarray]) -> Path:
    entries = [{"seq_id": i, "qsl_idx": index, "data": row.tobytes().hex().upper()}
               for i, (index, row) in enumerate(rows.items())]  # fmt: skip
    path.write_text(json.dumps(entries))
    return path


def test_a_repeated_imagenet_set_writes_a_val_map_of_every_index(small_dataset, tmp_path):
    data = repeated_imagenet(small_dataset, TOTAL)
    assert data.write_official_files(tmp_path / "dataset") == ("val_map.txt",)
    lines = (tmp_path / "dataset" / "val_map.txt").read_text().splitlines()
    source = (small_dataset / "val_map.txt").read_text().splitlines()
    assert len(lines) == TOTAL and lines == [source[i % len(source)] for i in range(TOTAL)]
    assert [int(line.split()[1]) for line in lines] == data.labels.tolist()


def test_a_set_that_is_not_repeated_writes_nothing(small_dataset, tmp_path):
    data = repeated_imagenet(small_dataset, 48)
    assert data.write_official_files(tmp_path / "dataset") == ()
    assert not (tmp_path / "dataset").exists()


@needs_copy
def test_the_official_imagenet_script_scores_a_repeated_set_as_sparseperf(small_dataset, tmp_path):
    script = official_file(*IMAGENET_SCRIPT)
    data = repeated_imagenet(small_dataset, TOTAL)
    data.write_official_files(tmp_path / "dataset")
    answers = data.labels.astype(np.float32)
    answers[::7] += 1  # some wrong
    log = accuracy_log(tmp_path / "log.json", {i: answers[i : i + 1] for i in range(TOTAL)})
    responses = {i: answers[i : i + 1].tobytes() for i in range(TOTAL)}
    out = run_script(script, "--mlperf-accuracy-file", str(log),
                     "--imagenet-val-file", str(tmp_path / "dataset" / "val_map.txt"))  # fmt: skip
    assert data.score(responses).line in out.splitlines(), out


def repeated_squad(squad_set: Path, copies: float) -> SquadData:
    workload = get_workload("bert-tiny")
    model = prepare_model(RunSpec(model="bert-tiny"))
    base = workload.open_data(DataSource(squad_set), model, lambda _: None)
    total = int(base.features.count * copies)
    squad, features = repeat_to(base.squad, base.features, total)
    return SquadData(squad, base.vocab, base.tokens, features, f"repeated to {total}")


def test_a_repeated_squad_set_writes_the_questions_whose_features_are_the_qsl(squad_set, tmp_path):
    data = repeated_squad(squad_set, 2.5)  # the last copy ends within a question's features
    assert data.write_official_files(tmp_path / "dataset") == ("dev-v1.1.json", "vocab.txt")
    written = read_squad(tmp_path / "dataset" / "dev-v1.1.json")
    assert [(e.qas_id, e.question, e.context, e.answers) for e in written.examples] == [
        (e.qas_id, e.question, e.context, e.answers) for e in data.squad.examples
    ]
    tokens = load_wordpiece(tmp_path / "dataset" / "vocab.txt")
    features = squad_features.create_features(written.examples, tokens)
    assert features.count >= data.count  # the last question's features all
    for name, values in data.features.arrays().items():
        np.testing.assert_array_equal(features.arrays()[name][: data.count], values, name)


@needs_copy
def test_the_official_squad_script_reads_a_repeated_set(squad_set, tmp_path):
    script = official_file("language/bert/accuracy-squad.py")
    data = repeated_squad(squad_set, 2.5)
    data.write_official_files(tmp_path / "dataset")
    rng = np.random.default_rng(0)
    rows = {i: rng.standard_normal((384, 2)).astype(np.float32) for i in range(data.count)}
    log = accuracy_log(tmp_path / "log.json", rows)
    folder = tmp_path / "dataset"
    out = run_script(script, "--vocab_file", str(folder / "vocab.txt"),
                     "--val_data", str(folder / "dev-v1.1.json"), "--log_file", str(log),
                     "--out_file", str(tmp_path / "predictions.json"),
                     "--features_cache_file", str(tmp_path / "features.pickle"))  # fmt: skip
    line = data.score({i: row.tobytes() for i, row in rows.items()}).line
    official = [json.loads(text) for text in out.splitlines() if text.startswith('{"exact_match"')]
    assert official == [json.loads(line)], out


@pytest.mark.heavy
def test_a_valid_accuracy_run_on_synthetic_data_writes_its_val_map(tmp_path, capsys):
    """The built-in set repeated to 50,000 images (minutes when the set is not cached yet): the
    official script, given the run's own val_map.txt, scores its log as the run did."""
    args = ["run", "--mode", "accuracy", "--backend", "tests.fakes:LabelOnlyBackend",
            "--preset", "valid", "--runs-dir", str(tmp_path / "runs")]  # fmt: skip
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    folder = only_run(tmp_path / "runs")
    result = json.loads((folder / "result.json").read_text())
    assert result["official_dataset"] == ["dataset/val_map.txt"]
    val_map = folder / "dataset" / "val_map.txt"
    assert len(val_map.read_text().splitlines()) == 50000
    if os.environ.get(ENV):
        script = official_file(*IMAGENET_SCRIPT)
        out = run_script(script, "--mlperf-accuracy-file", str(folder / "mlperf_log_accuracy.json"),
                         "--imagenet-val-file", str(val_map))  # fmt: skip
        assert (folder / "accuracy.txt").read_text().splitlines()[0] in out.splitlines()
