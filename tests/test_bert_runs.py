"""BERT end to end from the CLI: synthetic SQuAD, every BERT scenario, F1 accuracy, bad input.

The tiny variant (same architecture, 2 layers, hidden 128) keeps these fast; the full
BERT-Large run is marked heavy.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from harness.datasets.squad_features import MAX_SEQ_LENGTH
from tests.conftest import QUESTIONS, run_cli
from tests.test_bad_input import assert_one_line_error, no_complete_run
from tests.test_runs import only_run

ACCURACY_LINE = re.compile(r'\{"exact_match": ([\d.]+), "f1": ([\d.]+)\}')


def bert_args(tmp_path: Path, squad: Path, *extra: str) -> list[str]:
    return [
        "run",
        "--model",
        "bert-tiny",
        "--preset",
        "smoke",
        "--dataset-path",
        str(squad),
        "--runs-dir",
        str(tmp_path / "runs"),
        *extra,
    ]


def test_synthetic_squad_is_v11_with_fp32_answers(squad_set: Path) -> None:
    document = json.loads((squad_set / "dev-v1.1.json").read_text())
    assert document["version"] == "1.1"
    assert "FP32 predictions" in document["synthetic"]["answers"]
    qas = [
        (paragraph["context"], qa)
        for article in document["data"]
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    ]
    assert len(qas) == QUESTIONS
    for context, qa in qas:
        (answer,) = qa["answers"]
        start = answer["answer_start"]
        assert context[start : start + len(answer["text"])] == answer["text"]
    assert len((squad_set / "vocab.txt").read_text().splitlines()) == 30522


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_accuracy_mode_scores_f1(precision, squad_set, tmp_path, capsys):
    args = bert_args(tmp_path, squad_set, "--mode", "accuracy", "--precision", precision)
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    folder = only_run(tmp_path / "runs")
    log = folder / "mlperf_log_accuracy.json"
    entries = json.loads(log.read_text())
    result = json.loads((folder / "result.json").read_text())
    features = result["accuracy"]["features"]
    assert sorted(e["qsl_idx"] for e in entries) == list(range(features))
    assert features >= QUESTIONS
    # The official response layout: float32 [384, 2] start/end logits per feature.
    assert {len(bytes.fromhex(e["data"])) for e in entries} == {MAX_SEQ_LENGTH * 2 * 4}
    first, second = (folder / "accuracy.txt").read_text().splitlines()
    match = ACCURACY_LINE.fullmatch(first)
    assert match, first
    assert second == f"hash={hashlib.sha256(log.read_bytes()).hexdigest()}"
    f1 = float(match[2])
    # Gold answers are the FP32 model's: fp32 agrees exactly, dynamic int8 nearly.
    assert f1 == 100.0 if precision == "fp32" else f1 >= 80.0
    meta = json.loads((folder / "run.json").read_text())
    if precision == "int8":
        assert meta["backend"]["precision"] == "int8 (dynamic activations)"
    assert "synthetic SQuAD" in meta["dataset"]
    assert "bert-tiny" in out and "agreement with the FP32 reference" in out


@pytest.mark.parametrize("scenario", ["Offline", "Server", "SingleStream"])
def test_every_bert_scenario_runs(scenario, squad_set, tmp_path, capsys):
    code, out, err = run_cli(bert_args(tmp_path, squad_set, "--scenario", scenario), capsys)
    assert code == 0, err
    folder = only_run(tmp_path / "runs")
    assert f"_bert-tiny_{scenario}_onnxruntime_performance" in folder.name
    result = json.loads((folder / "result.json").read_text())
    assert result["status"] == "complete" and result["value"] > 0
    conf = (folder / "user.conf").read_text()
    assert f"bert.{scenario}.min_duration = 2000" in conf
    if scenario == "Server":  # BERT's own latency bound comes from mlperf.conf
        detail = (folder / "mlperf_log_detail.txt").read_text()
        assert '"key": "requested_server_target_latency_ns", "value": 130000000' in detail
    assert out.startswith(f"RESULT bert-tiny {scenario} onnxruntime performance:")


def test_multistream_is_refused(squad_set, tmp_path, capsys):
    code, _, err = run_cli(bert_args(tmp_path, squad_set, "--scenario", "MultiStream"), capsys)
    assert_one_line_error(code, err, "MultiStream is not defined for bert-tiny")
    assert not (tmp_path / "runs").exists()


def model_with_sequence(source: Path, target: Path, length: int) -> Path:
    """The model with its inputs declared [N, length]."""
    model = onnx.load(source)
    for value in model.graph.input:
        value.type.tensor_type.shape.dim[1].dim_value = length
    onnx.save(model, target)
    return target


@pytest.fixture(scope="module")
def tiny_model() -> Path:
    from harness.runner import prepare_model
    from harness.spec import RunSpec

    return prepare_model(RunSpec(model="bert-tiny"))


def test_sequence_length_mismatch(squad_set, tiny_model, tmp_path, capsys):
    model = model_with_sequence(tiny_model, tmp_path / "bert128.onnx", 128)
    code, _, err = run_cli(bert_args(tmp_path, squad_set, "--model-path", str(model)), capsys)
    assert_one_line_error(code, err, "input_ids int64 [N,128]", "needs input_ids int64 [N,384]")


def test_model_inputs_do_not_match(squad_set, builtin_model, tmp_path, capsys):
    code, _, err = run_cli(
        bert_args(tmp_path, squad_set, "--model-path", str(builtin_model)), capsys
    )
    assert_one_line_error(code, err, "has no input 'input_ids'")


@pytest.mark.parametrize(
    ("vocab", "needle"),
    [(None, "vocab.txt not found"), ("", "is empty"), ("hello\nworld\n", "lacks the special")],
)
def test_bad_vocabulary(vocab, needle, squad_set, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(squad_set / "dev-v1.1.json", data)
    if vocab is not None:
        (data / "vocab.txt").write_text(vocab)
    code, _, err = run_cli(bert_args(tmp_path, data), capsys)
    assert_one_line_error(code, err, needle)
    no_complete_run(tmp_path / "runs")


def test_answer_outside_its_context(squad_set, tmp_path, capsys):
    document = json.loads((squad_set / "dev-v1.1.json").read_text())
    document["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["text"] = "no such words here"
    bad = tmp_path / "dev.json"
    bad.write_text(json.dumps(document))
    args = bert_args(tmp_path, bad, "--vocab-path", str(squad_set / "vocab.txt"))
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, "qas[0].answers[0]", "is not inside its context")


def test_squad_file_not_v11_shaped(squad_set, tmp_path, capsys):
    bad = tmp_path / "dev.json"
    bad.write_text(json.dumps({"version": "2.0", "articles": []}))
    args = bert_args(tmp_path, bad, "--vocab-path", str(squad_set / "vocab.txt"))
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, "not a SQuAD v1.1 file")


def test_vocab_path_is_refused_for_resnet(tmp_path, capsys):
    args = ["run", "--vocab-path", str(tmp_path / "vocab.txt"), "--runs-dir", str(tmp_path)]
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, "resnet50 takes no vocabulary")


def test_synth_squad_refuses_existing_folder(squad_set, tmp_path, capsys):
    args = [
        "data",
        "synth",
        "squad",
        "--count",
        "2",
        "--model",
        "bert-tiny",
        "--out",
        str(squad_set),
    ]
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, "already exists")


@pytest.mark.heavy
def test_bert_large_offline_accuracy_and_performance(tmp_path, capsys):
    """The full model: built-in BERT-Large and its synthetic SQuAD set (minutes on 2 cores)."""
    runs = tmp_path / "runs"
    for mode in ("accuracy", "performance"):
        args = [
            "run",
            "--model",
            "bert-large",
            "--mode",
            mode,
            "--preset",
            "smoke",
            "--precision",
            "int8",
            "--runs-dir",
            str(runs),
        ]
        code, out, err = run_cli(args, capsys)
        assert code == 0, err
        assert out.startswith(f"RESULT bert-large Offline onnxruntime-int8 {mode}:")
    folders = sorted(p for p in runs.iterdir())
    accuracy = json.loads((folders[0] / "result.json").read_text())["accuracy"]
    assert accuracy["f1"] >= 90.0
    assert np.isfinite(json.loads((folders[1] / "result.json").read_text())["value"])
