"""From start/end logits to answer text, and the SQuAD v1.1 exact-match and F1 scores.

The answer of a question is its best valid span over all of its features: start among the 20
highest start logits, end among the 20 highest end logits, both in the context and the start
where its window gives it the most context, end not before start, at most 30 tokens, ranked by
start + end logit. The span's WordPiece text is then aligned back onto the original context
characters. Scores follow the SQuAD v1.1 evaluation: answers are lower-cased, stripped of
punctuation and articles and compared as bags of words, best over the gold answers.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass

import numpy as np

from harness.datasets.squad import Example
from harness.datasets.squad_features import Features
from harness.datasets.wordpiece import WordPiece

N_BEST = 20
MAX_ANSWER_LENGTH = 30
NO_ANSWER = "empty"  # what a question without any valid span answers


@dataclass(frozen=True)
class Answer:
    text: str
    start: int  # character offset in the context; -1 for NO_ANSWER


def best_answers(
    examples: tuple[Example, ...],
    features: Features,
    logits: dict[int, np.ndarray],
    wordpiece: WordPiece,
) -> dict[str, Answer]:
    """qas_id -> answer, from ``logits`` (feature index -> float32 [384, 2]) of any features;
    features without logits are skipped, as for partial logs."""
    best: dict[int, tuple[float, int, int, int]] = {}  # example -> (score, feature, start, end)
    for index in sorted(logits):
        span = _best_span(features, index, logits[index])
        example = int(features.example_index[index])
        if span is not None and (example not in best or span[0] > best[example][0]):
            best[example] = (span[0], index, span[1], span[2])
    answers = {}
    for number, example in enumerate(examples):
        if number in best:
            _, index, start, end = best[number]
            answers[example.qas_id] = _span_text(example, features, index, start, end, wordpiece)
        else:
            answers[example.qas_id] = Answer(NO_ANSWER, -1)
    return answers


def _best_span(features: Features, index: int, logits: np.ndarray):
    """(score, start, end) of the feature's best valid span, or None; ties go to the span
    met first when starts and ends are taken in logit order."""
    start_logits = logits[:, 0].astype(np.float64)
    end_logits = logits[:, 1].astype(np.float64)
    starts = np.argsort(-start_logits, kind="stable")[:N_BEST]
    ends = np.argsort(-end_logits, kind="stable")[:N_BEST]
    in_context = features.token_to_orig[index] >= 0
    s, e = starts[:, None], ends[None, :]
    valid = in_context[s] & features.max_context[index][s] & in_context[e]
    valid &= (e >= s) & (e - s + 1 <= MAX_ANSWER_LENGTH)
    if not valid.any():
        return None
    score = np.where(valid, start_logits[s] + end_logits[e], -np.inf)
    flat = int(np.argmax(score))
    return float(score.flat[flat]), int(starts[flat // len(ends)]), int(ends[flat % len(ends)])


def _span_text(
    example: Example, features: Features, index: int, start: int, end: int, wp: WordPiece
) -> Answer:
    pieces = [wp.tokens[i] for i in features.input_ids[index, start : end + 1]]
    predicted = " ".join(pieces).replace(" ##", "").replace("##", "")
    predicted = " ".join(predicted.split())
    first = int(features.token_to_orig[index, start])
    last = int(features.token_to_orig[index, end])
    original = " ".join(example.doc_tokens[first : last + 1])
    begin, stop = align(predicted, original, wp)
    return Answer(original[begin:stop], _context_position(example, first, begin))


def _context_position(example: Example, first: int, offset: int) -> int:
    """Context offset of character ``offset`` of the span that starts at doc token ``first``
    (the span's tokens joined by single spaces, whatever whitespace the context has)."""
    tokens = example.doc_tokens
    position, token = 0, first
    while token + 1 < len(tokens) and position + len(tokens[token]) < offset:
        position += len(tokens[token]) + 1
        token += 1
    return example.token_starts[token] + offset - position


def align(predicted: str, original: str, wp: WordPiece) -> tuple[int, int]:
    """Where the normalised ``predicted`` text sits in ``original`` (character range); the
    whole of ``original`` when the characters cannot be matched one to one."""
    basic = " ".join(wp.basic_tokens(original))
    found = basic.find(predicted)
    if found < 0:
        return 0, len(original)
    original_chars = [i for i, c in enumerate(original) if c != " "]
    basic_chars = {i: n for n, i in enumerate(j for j, c in enumerate(basic) if c != " ")}
    if len(original_chars) != len(basic_chars):
        return 0, len(original)
    first = basic_chars.get(found)
    last = basic_chars.get(found + len(predicted) - 1)
    if first is None or last is None:
        return 0, len(original)
    return original_chars[first], original_chars[last] + 1


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation, drop articles, collapse whitespace."""
    text = "".join(c for c in text.lower() if c not in _PUNCTUATION)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


_PUNCTUATION = frozenset(string.punctuation)


def f1_score(prediction: str, gold: str) -> float:
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    same = sum((Counter(predicted) & Counter(expected)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(expected)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def evaluate(examples: tuple[Example, ...], answers: dict[str, str]) -> dict[str, float]:
    """Exact match and F1 in percent over all questions; an unanswered one scores 0."""
    em = f1 = 0.0
    for example in examples:
        if example.qas_id in answers and example.answers:
            prediction = answers[example.qas_id]
            em += max(exact_match(prediction, gold) for gold in example.answers)
            f1 += max(f1_score(prediction, gold) for gold in example.answers)
    return {"exact_match": 100.0 * em / len(examples), "f1": 100.0 * f1 / len(examples)}
