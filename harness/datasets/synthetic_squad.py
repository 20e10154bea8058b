"""Synthetic SQuAD v1.1: a BERT-sized vocab.txt and seeded questions over pseudo-English text.

The vocabulary has the official layout (``[PAD]``, 99 unused slots, ``[UNK] [CLS] [SEP] [MASK]``,
single characters, then whole words and ``##`` continuations) and the official size, so the
built-in model and the official one read the same ids. The text mixes frequent and rare words,
capitals, punctuation, numbers and words that WordPiece must split; question and context
lengths follow SQuAD v1.1's dev set (see ``QUESTION_LOG_WORDS``), so a few contexts are longer
than one 384-token window. Gold answers are filled in by the caller from the FP32 model's
predictions, so accuracy on this data means agreement with FP32.

Each context holds one answer-like span: a word from the vocabulary's answer-start block, up
to ``MAX_SPAN_GAP`` ordinary words, and a word from its answer-end block (the last ids of the
vocabulary; ordinary text and questions never use them). The built-in model's embeddings
point these words along its QA head (``harness.models.bert``), so it finds the span the way a
trained model finds an answer, by a clear margin, rather than by small differences between
random scores that rounding could flip.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from harness.datasets.squad import DEV_FILE, Example, split_context, write_squad
from harness.datasets.staging import staged_folder
from harness.datasets.wordpiece import VOCAB_FILE
from harness.errors import UserError

VOCAB_SIZE = 30522
_CONSONANTS = "bcdfghjklmnprstvwz"
_VOWELS = "aeiou"
_SYLLABLES = [c + v for c in _CONSONANTS for v in _VOWELS] + [
    c + v + e for c in _CONSONANTS for v in _VOWELS for e in "nrst"
]
# Frequent English words lead the word list, so they are also the most frequent in the text.
_ENGLISH = (
    "the of and to in is was for on as by with he it at from his an were are which this be "
    "or has had not their first one its new after who they have her she two been other when "
    "there all what where how during into over most than year many also"
)
_VOCAB_SEED = 20_260_001  # the vocabulary is fixed: one seed for every synthetic set
PARAGRAPHS_PER_ARTICLE = 5
ANSWER_WORDS = 512  # words in each of the answer-start and answer-end blocks
END_WORD_IDS = range(VOCAB_SIZE - ANSWER_WORDS, VOCAB_SIZE)
START_WORD_IDS = range(VOCAB_SIZE - 2 * ANSWER_WORDS, VOCAB_SIZE - ANSWER_WORDS)
MAX_SPAN_GAP = 8  # ordinary words between a span's start and end words
# Lengths follow SQuAD v1.1's dev set, so that work per real token (simaccel's --tokens real)
# is the real set's. Question words and the spread of context words: log-normal fits to the
# 1,407 questions of 5 of the dev set's 48 articles in a public copy of the official
# dev-v1.1.json (github.com/VinACE/san_mrc): mean 10.55 question words (log-sd 0.365),
# context log-sd 0.447. The context scale is set so that a feature holds 46% real tokens:
# "for SQuAD-v1.1, padding accounts for 54% of the total input tokens when the max sequence
# length is 384" (openreview.net/forum?id=3nzKUh9a4M), 177 of 384 (this vocabulary splits
# words as often as the real one only roughly, hence the scale in tokens, not words). The
# log-normal tail then puts about 2.5% of questions past one window, as the dev set's 10,570
# questions make 10,833 features.
QUESTION_LOG_WORDS = (2.289, 0.365)  # mean and sd of log(words per question)
CONTEXT_LOG_WORDS = (4.60, 0.447)  # mean and sd of log(words per context)


def synthetic_vocab() -> list[str]:
    """The vocabulary, one token per id."""
    head = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = sorted(set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~0123456789abcdefghijklmnopqrstuvwxyz"))
    tokens = head + chars + [f"##{c}" for c in chars if c.isalnum()] + _ENGLISH.split()
    tokens += [f"##{s}" for s in _SYLLABLES]
    rng = np.random.default_rng(_VOCAB_SEED)
    seen = set(tokens)
    while len(tokens) < VOCAB_SIZE:
        word = "".join(rng.choice(_SYLLABLES, size=rng.integers(1, 4)))
        if word not in seen:
            seen.add(word)
            tokens.append(word)
    return tokens


class _TextMaker:
    """Seeded pseudo-English: Zipf-distributed vocabulary words with some rare compounds."""

    def __init__(self, vocab: list[str], seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        answer_ids = range(START_WORD_IDS.start, END_WORD_IDS.stop)
        self.words = [t for i, t in enumerate(vocab) if t.isalpha() and len(t) > 1
                      and i not in answer_ids]  # fmt: skip
        self.starts = [vocab[i] for i in START_WORD_IDS]
        self.ends = [vocab[i] for i in END_WORD_IDS]
        self.cumulative = np.cumsum(1.0 / np.arange(1, len(self.words) + 1) ** 1.05)

    def word(self) -> str:
        rng = self.rng
        draw = rng.random()
        if draw < 0.02:
            return str(rng.integers(1, 3000))
        rank = np.searchsorted(self.cumulative, rng.random() * self.cumulative[-1], side="right")
        word = self.words[min(rank, len(self.words) - 1)]
        if draw < 0.10:  # a word outside the vocabulary: WordPiece splits it into pieces
            word += "".join(rng.choice(_SYLLABLES, size=rng.integers(1, 3)))
        return word

    def sentence(self) -> str:
        words = [self.word() for _ in range(self.rng.integers(5, 18))]
        words[0] = words[0].capitalize()
        for i in range(1, len(words) - 1):
            if self.rng.random() < 0.06:
                words[i] += ","
            elif self.rng.random() < 0.05:
                words[i] = words[i].capitalize()
        return " ".join(words) + self.rng.choice([".", ".", ".", "!", ";"])

    def length(self, log_words: tuple[float, float], least: int) -> int:
        return max(least, round(float(np.exp(self.rng.normal(*log_words)))))

    def context(self) -> str:
        target = self.length(CONTEXT_LOG_WORDS, 20)
        sentences: list[str] = []
        while sum(s.count(" ") + 1 for s in sentences) < target:
            sentences.append(self.sentence())
        sentences.insert(int(self.rng.integers(len(sentences) + 1)), self.span())
        return " ".join(sentences)

    def span(self) -> str:
        """An answer-like phrase: a start word, a few ordinary words, an end word."""
        inner = [self.word() for _ in range(self.rng.integers(0, MAX_SPAN_GAP + 1))]
        words = [str(self.rng.choice(self.starts)), *inner, str(self.rng.choice(self.ends))]
        return " ".join(words) + "."

    def question(self, context: str) -> str:
        marked = {*self.starts, *self.ends}
        words = [w for w in context.split() if w.strip(".,!;").lower() not in marked]
        count = min(len(words), self.length(QUESTION_LOG_WORDS, 3) - 1)  # and the lead word
        picks = self.rng.choice(len(words), size=count)
        lead = self.rng.choice(["What", "Who", "When", "Which", "How", "Where"])
        return f"{lead} {' '.join(words[i].strip('.,!;') for i in sorted(picks))}?"


def synth_questions(count: int, seed: int, vocab: list[str]) -> tuple[Example, ...]:
    """``count`` unanswered questions, 1-5 per context, in article order."""
    maker = _TextMaker(vocab, seed)
    examples: list[Example] = []
    while True:
        context = maker.context()
        tokens, starts = split_context(context)
        for _ in range(maker.rng.integers(1, 6)):
            qas_id = f"synthetic-{seed}-{len(examples):06d}"
            examples.append(Example(qas_id, maker.question(context), context, tokens, starts, ()))
            if len(examples) == count:
                return tuple(examples)


def squad_articles(examples: list[Example], answers: list[tuple[str, int]]) -> list[dict]:
    """The dev-v1.1 ``data`` list: articles of paragraphs of questions with one answer each."""
    paragraphs: list[dict] = []
    for example, (text, start) in zip(examples, answers, strict=True):
        if not paragraphs or paragraphs[-1]["context"] != example.context:
            paragraphs.append({"context": example.context, "qas": []})
        answer = {"answer_start": start, "text": text}
        question = {"answers": [answer], "question": example.question, "id": example.qas_id}
        paragraphs[-1]["qas"].append(question)
    size = PARAGRAPHS_PER_ARTICLE
    return [
        {"title": f"Synthetic article {n + 1}", "paragraphs": paragraphs[i : i + size]}
        for n, i in enumerate(range(0, len(paragraphs), size))
    ]


# Labels a question set: qas_id -> (answer text, character offset) for the questions that
# the reference model answers with a span of their context.
Labeller = Callable[[tuple[Example, ...], Path], dict[str, tuple[str, int]]]


def write_synthetic_squad(
    out: Path, count: int, seed: int, label: Labeller, model_name: str, progress
) -> Path:
    """Write ``vocab.txt`` and ``dev-v1.1.json`` with ``count`` questions into the new folder
    ``out``, which appears only when complete."""
    if count < 1:
        raise UserError(f"--count must be at least 1, got {count}")
    with staged_folder(out) as partial:
        vocab = synthetic_vocab()
        (partial / VOCAB_FILE).write_text("\n".join(vocab) + "\n", encoding="utf-8")
        # A few spare questions: the reference model may find no valid span for some.
        candidates = synth_questions(count + count // 10 + 8, seed, vocab)
        answers = label(candidates, partial / VOCAB_FILE)
        kept = [e for e in candidates if e.qas_id in answers][:count]
        if len(kept) < count:
            raise UserError(
                f"the reference model answered only {len(kept)} of {count} questions with a "
                "span of their context; is it a SQuAD model?"
            )
        note = {
            "generator": "sparseperf data synth squad",
            "seed": seed,
            "answers": f"FP32 predictions of {model_name}",
        }
        articles = squad_articles(kept, [answers[e.qas_id] for e in kept])
        write_squad(partial / DEV_FILE, articles, note)
    progress(f"wrote {count} synthetic questions, {DEV_FILE} and {VOCAB_FILE} to {out}")
    return out
