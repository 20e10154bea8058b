"""SQuAD v1.1 pieces: reading and checking files, WordPiece, features, answers and scores."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from harness.datasets.squad import Example, read_squad, split_context
from harness.datasets.squad_eval import (
    NO_ANSWER,
    align,
    best_answers,
    evaluate,
    exact_match,
    f1_score,
    normalize_answer,
)
from harness.datasets.squad_features import (
    DOC_STRIDE,
    MAX_QUERY_LENGTH,
    MAX_SEQ_LENGTH,
    create_features,
)
from harness.datasets.synthetic_squad import (
    END_WORD_IDS,
    MAX_SPAN_GAP,
    START_WORD_IDS,
    synth_questions,
    synthetic_vocab,
)
from harness.datasets.wordpiece import WordPiece, load_wordpiece
from harness.errors import UserError

SMALL_VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "steve", "smith", "'", "s", "un", "##aff",
    "##able", "hello", "world", ",", ".", "?", "who", "is", "a", "cat", "dog", "中", "国",
]  # fmt: skip


@pytest.fixture(scope="module")
def small_wordpiece(tmp_path_factory: pytest.TempPathFactory) -> WordPiece:
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(SMALL_VOCAB) + "\n")
    return load_wordpiece(path)


@pytest.fixture(scope="module")
def synthetic_wordpiece(tmp_path_factory: pytest.TempPathFactory) -> WordPiece:
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(synthetic_vocab()) + "\n")
    return load_wordpiece(path)


def example(context: str, question: str = "who is it?", answers: tuple[str, ...] = ()) -> Example:
    tokens, starts = split_context(context)
    return Example("q1", question, context, tokens, starts, answers)


# --- SQuAD v1.1 scoring ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("The Cat", "cat"),
        ("a  dog, an apple and the end.", "dog apple and end"),
        ("Theatre", "theatre"),  # an article only as a whole word
        ("  U.S.A.  ", "usa"),
        ("an", ""),
    ],
)
def test_normalize_answer(text: str, normalized: str) -> None:
    assert normalize_answer(text) == normalized


def test_f1_and_exact_match_by_hand() -> None:
    assert exact_match("The Denver Broncos", "denver broncos!") == 1.0
    assert exact_match("Denver", "Denver Broncos") == 0.0
    # 1 shared token of 1 predicted and 2 gold: precision 1, recall 1/2, F1 2/3.
    assert f1_score("Denver", "Denver Broncos") == pytest.approx(2 / 3)
    # Bags of words: a repeated token counts as often as it appears on both sides.
    assert f1_score("go go go", "go") == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))
    assert f1_score("the", "a") == 0.0  # both normalise to nothing


def test_evaluate_takes_the_best_gold_and_counts_unanswered_as_zero() -> None:
    questions = (
        Example("a", "q", "c", ("c",), (0,), ("Denver Broncos", "Broncos")),
        Example("b", "q", "c", ("c",), (0,), ("Carolina",)),
    )
    scores = evaluate(questions, {"a": "broncos"})
    assert scores == {"exact_match": 50.0, "f1": 50.0}


# --- reading files ----------------------------------------------------------------------------


def write_json(path: Path, body: object) -> Path:
    path.write_text(json.dumps(body))
    return path


def squad_document(context: str, answer: str, start: int) -> dict:
    qa = {"id": "x1", "question": "what?", "answers": [{"text": answer, "answer_start": start}]}
    paragraph = {"context": context, "qas": [qa]}
    return {"version": "1.1", "data": [{"title": "t", "paragraphs": [paragraph]}]}


def test_split_context_keeps_character_offsets() -> None:
    tokens, starts = split_context("  Steve\tSmith's\n cat\u202fsat ")
    assert tokens == ("Steve", "Smith's", "cat", "sat")
    assert starts == (2, 8, 17, 21)


def test_read_squad(tmp_path: Path) -> None:
    path = write_json(tmp_path / "dev-v1.1.json", squad_document("Steve Smith's cat", "cat", 14))
    squad = read_squad(tmp_path)  # the folder holding dev-v1.1.json
    (only,) = squad.examples
    assert only.qas_id == "x1" and only.answers == ("cat",)
    assert only.doc_tokens == ("Steve", "Smith's", "cat")
    assert squad.path == path and squad.synthetic is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([1, 2], "top-level 'data' list"),
        ({"data": [{"title": "t"}]}, "data[0] needs 'paragraphs'"),
        ({"data": [{"paragraphs": [{"context": "c"}]}]}, "paragraphs[0] needs 'qas'"),
        (
            {"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "1", "answers": []}]}]}]},
            "qas[0] needs 'question'",
        ),
        (squad_document("a short context", "elsewhere", 2), "is not inside its context"),
        (squad_document("a short context", "short", 400), "is not inside its context"),
        ({"data": []}, "holds no questions"),
    ],
)
def test_read_squad_refuses_bad_files(tmp_path: Path, body: object, message: str) -> None:
    path = write_json(tmp_path / "dev.json", body)
    with pytest.raises(UserError, match=re.escape(message)):
        read_squad(path)


def test_read_squad_refuses_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        read_squad(tmp_path / "nothing.json")
    (tmp_path / "broken.json").write_text('{"data": [')
    with pytest.raises(UserError, match="is not valid JSON"):
        read_squad(tmp_path / "broken.json")
    path = write_json(tmp_path / "dev.json", squad_document("a b c", "b", 2))
    with pytest.raises(UserError, match="dataset count 5 out of range"):
        read_squad(path, count=5)


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "not found"), ("", "is empty"), ("[PAD]\nhello\n", "lacks the special token")],
)
def test_vocabulary_errors(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "vocab.txt"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=message):
        load_wordpiece(path)


# --- WordPiece ---------------------------------------------------------------------------------


def pieces(wordpiece: WordPiece, text: str) -> list[str]:
    return wordpiece.tokenizer.encode(text, add_special_tokens=False).tokens


def test_wordpiece_is_bert_uncased(small_wordpiece: WordPiece) -> None:
    assert pieces(small_wordpiece, "Unaffable") == ["un", "##aff", "##able"]
    assert pieces(small_wordpiece, "Héllo,\tWORLD.") == ["hello", ",", "world", "."]
    assert pieces(small_wordpiece, "Steve Smith's") == ["steve", "smith", "'", "s"]
    assert pieces(small_wordpiece, "中国") == ["中", "国"]  # CJK characters stand alone
    assert pieces(small_wordpiece, "xylophone " + "a" * 101) == ["[UNK]", "[UNK]"]


# --- features -------------------------------------------------------------------------------


def reference_max_context(starts: list[int], lengths: list[int], window: int, at: int) -> bool:
    """The 'max context' rule written out as a plain scan, as the MLPerf feature code has it."""
    best_score, best_window = None, None
    for index, (start, length) in enumerate(zip(starts, lengths, strict=True)):
        end = start + length - 1
        if at < start or at > end:
            continue
        score = min(at - start, end - at) + 0.01 * length
        if best_score is None or score > best_score:
            best_score, best_window = score, index
    return best_window == window


def test_features_windows_and_maps(small_wordpiece: WordPiece) -> None:
    # 700 one-piece words and a three-piece one: 703 pieces, 317 per window, 128 apart.
    words = ["cat", "dog"] * 350 + ["unaffable"]
    question = "who is " + "the " * 100  # cut to 64 query tokens
    features = create_features([example(" ".join(words), question)], small_wordpiece)
    doc_pieces = 700 + 3
    budget = MAX_SEQ_LENGTH - MAX_QUERY_LENGTH - 3
    starts = [0, DOC_STRIDE, 2 * DOC_STRIDE, 3 * DOC_STRIDE, 4 * DOC_STRIDE]
    lengths = [min(budget, doc_pieces - s) for s in starts]
    assert budget == 317 and starts[-2] + budget < doc_pieces <= starts[-1] + budget
    assert features.count == len(starts)
    assert (features.example_index == 0).all()
    offset = MAX_QUERY_LENGTH + 2
    for window, (start, length) in enumerate(zip(starts, lengths, strict=True)):
        ids = features.input_ids[window]
        assert ids[0] == 2 and ids[offset - 1] == 3 and ids[offset + length] == 3  # CLS, SEPs
        assert features.input_mask[window].sum() == offset + length + 1
        assert (features.segment_ids[window][offset : offset + length + 1] == 1).all()
        assert features.segment_ids[window][:offset].sum() == 0
        mapped = features.token_to_orig[window]
        assert (mapped[:offset] == -1).all() and (mapped[offset + length :] == -1).all()
        positions = range(start, start + length)
        assert mapped[offset : offset + length].tolist() == [min(p, 700) for p in positions]
        expected = [reference_max_context(starts, lengths, window, p) for p in positions]
        assert features.max_context[window][offset : offset + length].tolist() == expected
    # The last word is split in two pieces that map back to the same word.
    last = features.token_to_orig[-1]
    assert last[last >= 0][-3:].tolist() == [700, 700, 700]


def test_features_of_synthetic_questions_are_consistent(synthetic_wordpiece: WordPiece) -> None:
    questions = synth_questions(1200, seed=3, vocab=synthetic_vocab())  # a few need 2 windows
    features = create_features(questions, synthetic_wordpiece)
    assert features.count > len(questions)  # some contexts need more than one window
    assert np.array_equal(np.unique(features.example_index), np.arange(len(questions)))
    encode = synthetic_wordpiece.tokenizer.encode
    for number, question in enumerate(questions):
        rows = np.flatnonzero(features.example_index == number)
        context = encode(list(question.doc_tokens), is_pretokenized=True, add_special_tokens=False)
        # Each context piece is the best-context one in exactly one window of its question.
        assert features.max_context[rows].sum() == len(context.ids)
        first = features.token_to_orig[rows[0]]
        assert first[first >= 0].tolist() == context.word_ids[: int((first >= 0).sum())]


def test_each_synthetic_context_holds_one_answer_span_that_questions_never_name() -> None:
    vocab = synthetic_vocab()
    starts = {vocab[i] for i in START_WORD_IDS}
    ends = {vocab[i] for i in END_WORD_IDS}
    for question in synth_questions(60, seed=4, vocab=vocab):
        words = [w.strip(".,!;").lower() for w in question.context.split()]
        opening = [i for i, w in enumerate(words) if w in starts]
        closing = [i for i, w in enumerate(words) if w in ends]
        assert len(opening) == len(closing) == 1
        assert 1 <= closing[0] - opening[0] <= MAX_SPAN_GAP + 1
        asked = {w.strip("?").lower() for w in question.question.split()}
        assert not asked & (starts | ends)


# --- answers ----------------------------------------------------------------------------------


def logits_for(span: tuple[int, int], extra: dict | None = None) -> np.ndarray:
    """Logits that favour ``span``, with (start, end) logits set at the ``extra`` positions."""
    values = np.full((MAX_SEQ_LENGTH, 2), -5.0, np.float32)
    values[span[0], 0] = values[span[1], 1] = 5.0
    for position, (start, end) in (extra or {}).items():
        values[position] = (start, end)
    return values


def test_best_answer_maps_back_to_context_text(small_wordpiece: WordPiece) -> None:
    question = example("Hello   Steve Smith's cat, a dog.", "who is steve?")
    features = create_features([question], small_wordpiece)
    offset = len(pieces(small_wordpiece, question.question)) + 2
    # Context pieces: hello steve smith ' s cat , a dog .  -> predict "steve smith"
    logits = {0: logits_for((offset + 1, offset + 2))}
    answer = best_answers((question,), features, logits, small_wordpiece)
    assert answer["q1"].text == "Steve Smith"  # not "Steve Smith's": aligned on characters
    assert answer["q1"].start == question.context.index("Steve")


def test_best_answer_skips_invalid_spans(small_wordpiece: WordPiece) -> None:
    question = example("hello cat dog world", "who is the cat?")
    features = create_features([question], small_wordpiece)
    offset = len(pieces(small_wordpiece, question.question)) + 2
    # The strongest spans are invalid: in the query, in the padding, end before start.
    invalid = {1: (9.0, 9.0), 300: (9.0, 9.0), offset + 3: (8.0, -9.0), offset: (-9.0, 8.0)}
    logits = logits_for((offset + 1, offset + 2), invalid)
    answer = best_answers((question,), features, {0: logits}, small_wordpiece)
    assert answer["q1"].text == "cat dog"
    # No valid span at all: the official placeholder answer.
    nothing = np.full((MAX_SEQ_LENGTH, 2), -5.0, np.float32)
    nothing[1] = nothing[300] = 9.0
    nothing[offset : offset + 4, 0] = -20.0  # context starts rank below 20 query/pad ones
    answer = best_answers((question,), features, {0: nothing}, small_wordpiece)
    assert answer["q1"].text == NO_ANSWER and answer["q1"].start == -1


def test_align_falls_back_to_the_original_text(small_wordpiece: WordPiece) -> None:
    assert align("smith", "Smith's", small_wordpiece) == (0, 5)
    assert align("jones", "Smith's", small_wordpiece) == (0, 7)


def test_synthetic_question_and_context_lengths_follow_the_squad_dev_set():
    from harness.datasets.synthetic_squad import synth_questions, synthetic_vocab

    examples = synth_questions(600, 0, synthetic_vocab())
    question_words = np.mean([len(e.question.split()) for e in examples])
    context_words = np.mean([len(e.doc_tokens) for e in examples])
    assert 9.5 < question_words < 11.5  # the dev set: 10.55
    assert 90 < context_words < 160
