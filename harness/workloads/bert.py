"""BERT on SQuAD v1.1: the official MLPerf BERT-Large interface, model and data built in.

``bert-large`` is the MLPerf model (24 layers, hidden 1024); ``bert-tiny`` is the same
architecture at 2 layers and hidden 128, for tests and quick demos, and is never presented
as BERT-Large. Both take the official files: model.onnx, dev-v1.1.json and vocab.txt.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from backends.base import Batch
from harness.accuracy import Accuracy
from harness.cache import build_once, cache_dir, reusable, source_digest
from harness.datasets import squad_eval, squad_features, synthetic_squad, wordpiece
from harness.datasets.squad import (
    DEV_FILE,
    Example,
    SquadSet,
    read_squad,
    resolve_dev_file,
    write_copies,
)
from harness.datasets.squad_features import MAX_SEQ_LENGTH, Features, cached_features
from harness.datasets.wordpiece import VOCAB_FILE, WordPiece, load_wordpiece, read_vocab
from harness.errors import UserError
from harness.models import bert as builder
from harness.models import pruning
from harness.models import recipe as recipe_module
from harness.models.check import TensorSpec, read_interface
from harness.models.recipe import Recipe
from harness.workloads.base import DataSource, Progress, Workload, WorkloadData, repeat_note

MODEL_SEED = 0
DATA_SEED = 0
LABEL_BATCH = 8
DATASET_SIZE = 10833  # features of the SQuAD v1.1 dev set (also LoadGen's sample count)
INPUTS = (builder.INPUT_IDS, builder.INPUT_MASK, builder.SEGMENT_IDS)


def builtin_model(config: builder.BertConfig, progress: Progress, recipe: Recipe | None) -> Path:
    """The synthetic model, built once; with ``recipe``, the pruned reference."""
    digest = source_digest(builder, synthetic_squad, pruning, recipe_module)
    tag = f"-{recipe.tag}" if recipe else ""
    path = cache_dir("models") / f"{config.name}-seed{MODEL_SEED}{tag}-{digest}.onnx"

    def build(partial: Path) -> None:
        what = f", {recipe.describe()}" if recipe else ""
        progress(f"building the synthetic {config.name} (seed {MODEL_SEED}{what}) into {path}")
        builder.build_bert(partial, config, seed=MODEL_SEED, recipe=recipe)

    return build_once(path, build, read_interface, progress)


def feature_rows(features: Features, indices: np.ndarray) -> Batch:
    """The model inputs of these features, in the features' compact types."""
    return {
        builder.INPUT_IDS: features.input_ids[indices],
        builder.INPUT_MASK: features.input_mask[indices],
        builder.SEGMENT_IDS: features.segment_ids[indices],
    }


def to_model_input(rows: Batch) -> Batch:
    """The model's int64 inputs."""
    return {name: values.astype(np.int64) for name, values in rows.items()}


def responses(outputs: Batch) -> np.ndarray:
    """float32 [384, 2] per sample: start and end logits, as the official harness logs them."""
    stacked = np.stack([outputs[builder.START_LOGITS], outputs[builder.END_LOGITS]], axis=-1)
    return stacked.astype(np.float32, copy=False)


def fp32_answers(model_path: Path, progress: Progress) -> synthetic_squad.Labeller:
    """A labeller for synthetic data: the FP32 model's answer to each question."""

    def label(examples: tuple[Example, ...], vocab: Path) -> dict[str, tuple[str, int]]:
        from backends.onnxruntime import reference_runner

        run = reference_runner(model_path, "to answer the synthetic questions")
        tokens = load_wordpiece(vocab)
        features = squad_features.create_features(examples, tokens)
        logits: dict[int, np.ndarray] = {}
        for start in range(0, features.count, LABEL_BATCH):
            indices = np.arange(start, min(start + LABEL_BATCH, features.count))
            names = [builder.START_LOGITS, builder.END_LOGITS]
            outputs = run(names, to_model_input(feature_rows(features, indices)))
            rows = responses(dict(zip(names, outputs, strict=True)))
            logits.update(zip(indices.tolist(), rows, strict=True))
            done = indices[-1] + 1
            if done % (LABEL_BATCH * 16) == 0 or done == features.count:
                progress(f"{done} of {features.count} features answered by the FP32 model")
        answers = squad_eval.best_answers(examples, features, logits, tokens)
        return {
            qas_id: (a.text, a.start)
            for qas_id, a in answers.items()
            if a.start >= 0  # questions without a valid span are left out
        }

    return label


def builtin_dataset(model_path: Path, questions: int, progress: Progress) -> Path:
    digest = source_digest(synthetic_squad, wordpiece, squad_features, squad_eval)
    model_digest = hashlib.sha256(str(model_path.resolve()).encode()).hexdigest()[:8]
    name = f"squad-synth-{questions}-seed{DATA_SEED}-{digest}-{model_digest}"
    path = cache_dir("datasets") / name
    if not reusable(path, _check_squad_folder, progress):
        progress(
            f"generating {questions} synthetic SQuAD questions answered by the FP32 model "
            f"into {path}"
        )
        label = fp32_answers(model_path, progress)
        synthetic_squad.write_synthetic_squad(
            path, questions, DATA_SEED, label, model_path.name, progress
        )
    return path


def _check_squad_folder(folder: Path) -> None:
    read_squad(folder)
    read_vocab(folder / VOCAB_FILE)


class SquadData(WorkloadData):
    calibration_count = 32
    calibration_batch = 8

    def __init__(
        self,
        squad: SquadSet,
        vocab: Path,
        tokens: WordPiece,
        features: Features,
        repeated: str | None = None,
    ) -> None:
        self.squad = squad
        self.vocab = vocab
        self.tokens = tokens
        self.features = features
        self.repeated = repeated
        self.count = features.count
        self.synthetic = squad.synthetic is not None
        questions = len(squad.examples)
        if squad.synthetic:
            self.description = (
                f"synthetic SQuAD v1.1-layout set {squad.path}, {questions} questions, "
                f"{repeated or f'{self.count} features'}, "
                f"answers = {squad.synthetic.get('answers')} "
                "(accuracy means agreement with FP32)"
            )
        else:
            self.description = (
                f"SQuAD v1.1 {squad.path} with {vocab}, {questions} questions, "
                f"{self.count} features"
            )

    def fetch(self, indices: np.ndarray) -> Batch:
        return feature_rows(self.features, indices)

    def to_inputs(self, samples: Batch) -> Batch:
        return to_model_input(samples)

    def score(self, responses: dict[int, bytes]) -> Accuracy:
        if not responses:
            raise UserError("the accuracy log holds no responses")
        logits = {}
        for index, data in responses.items():
            values = np.frombuffer(data, np.float32)
            if values.size != MAX_SEQ_LENGTH * 2:
                raise UserError(
                    f"response for sample {index} holds {values.size} floats; "
                    f"expected {MAX_SEQ_LENGTH} x 2 start/end logits"
                )
            logits[index] = values.reshape(MAX_SEQ_LENGTH, 2)
        answers = squad_eval.best_answers(self.squad.examples, self.features, logits, self.tokens)
        scores = squad_eval.evaluate(
            self.squad.examples, {qas_id: a.text for qas_id, a in answers.items()}
        )
        line = json.dumps({"exact_match": scores["exact_match"], "f1": scores["f1"]})
        details = {**scores, "questions": len(self.squad.examples), "features": len(logits)}
        return Accuracy(scores["f1"], line, details)

    def write_official_files(self, target: Path) -> tuple[str, ...]:
        if self.repeated is None:
            return ()
        target.mkdir(exist_ok=True)
        ids = [example.qas_id for example in self.squad.examples]
        write_copies(self.squad.path, ids, target / DEV_FILE, self.repeated)
        shutil.copyfile(self.vocab, target / VOCAB_FILE)
        return DEV_FILE, VOCAB_FILE

    def _question_numbers(self) -> dict[str, int]:
        numbers: dict[str, int] = {}
        for number, example in enumerate(self.squad.examples):
            numbers.setdefault(example.qas_id, number)
        return numbers

    def calibration_problem(self, names: Sequence[str]) -> str | None:
        numbers = self._question_numbers()
        unknown = next((name for name in names if name not in numbers), None)
        return f"question id {unknown!r} is not in {self.squad.path}" if unknown else None

    def named_calibration(self, names: Sequence[str]) -> Sequence[Batch]:
        """The features of the questions named (qas ids, as in the official
        calibration/SQuAD-v1.1/bert_calibration_qas_ids.txt)."""
        numbers = self._question_numbers()
        chosen = [numbers[name] for name in names]
        rows = np.flatnonzero(np.isin(self.features.example_index, chosen))
        step = self.calibration_batch
        return [self.load(rows[i : i + step]) for i in range(0, len(rows), step)]


def repeat_to(squad: SquadSet, features: Features, total: int) -> tuple[SquadSet, Features]:
    """The set repeated until it has ``total`` features; copy k's questions get ids ending
    ``#k`` so that every copy is scored as questions of its own."""
    copies = -(-total // features.count)
    questions = len(squad.examples)
    examples = tuple(
        replace(example, qas_id=f"{example.qas_id}#{copy}")
        for copy in range(copies)
        for example in squad.examples
    )
    arrays = {
        name: np.resize(values, (total, *values.shape[1:]))
        for name, values in features.arrays().items()
    }
    arrays["example_index"] = np.concatenate(
        [features.example_index + copy * questions for copy in range(copies)]
    )[:total]
    kept = examples[: int(arrays["example_index"][-1]) + 1]  # features follow question order
    return replace(squad, examples=kept), Features(**arrays)


def _open_data(questions: int):
    def open_data(source: DataSource, model_path: Path, progress: Progress) -> SquadData:
        folder = source.path or builtin_dataset(model_path, questions, progress)
        dev_file = resolve_dev_file(folder)
        vocab = source.vocab or dev_file.parent / VOCAB_FILE
        if not vocab.is_file():
            raise UserError(
                f"vocabulary {vocab} not found; give the model's vocab.txt with --vocab-path"
            )
        squad = read_squad(dev_file, source.count)
        tokens = load_wordpiece(vocab)
        features = cached_features(squad, vocab, tokens, progress)
        note = None
        if source.full_size and source.path is None and features.count < DATASET_SIZE:
            note = repeat_note(features.count, DATASET_SIZE, "features")
            squad, features = repeat_to(squad, features, DATASET_SIZE)
        return SquadData(squad, vocab, tokens, features, note)

    return open_data


def _workload(config: builder.BertConfig, questions: int) -> Workload:
    return Workload(
        name=config.name,
        loadgen_key="bert",
        scenarios=("Offline", "Server", "SingleStream"),
        inputs=tuple(TensorSpec(name, "int64", (None, MAX_SEQ_LENGTH)) for name in INPUTS),
        outputs=(builder.START_LOGITS, builder.END_LOGITS),
        performance_sample_count=DATASET_SIZE,
        dataset_size=DATASET_SIZE,
        server_latency_ms=130.0,
        builtin_model=lambda progress, recipe: builtin_model(config, progress, recipe),
        open_data=_open_data(questions),
        responses=responses,
        official_calibration="calibration/SQuAD-v1.1/bert_calibration_qas_ids.txt",
        int8_activations="dynamic",
        uses_vocab=True,
        token_mask=builder.INPUT_MASK,
    )


# Built-in question counts: BERT-Large answers about one question in two seconds in FP32 here.
BERT_LARGE = _workload(builder.BERT_LARGE, questions=64)
BERT_TINY = _workload(builder.BERT_TINY, questions=1000)
