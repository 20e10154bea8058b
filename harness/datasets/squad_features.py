"""SQuAD questions -> BERT input features, exactly as MLPerf makes them, cached on disk.

Each question becomes one or more features of ``[CLS] query [SEP] context-window [SEP]``
padded to 384 tokens: the query is cut to 64 tokens and long contexts are covered by windows
that start every 128 tokens. For every context token a feature records which doc token it
came from and whether this window gives it the most context (answers are only taken there).
On the full dev-v1.1 set this yields 10,833 features.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.cache import cache_dir
from harness.datasets.squad import Example, SquadSet
from harness.datasets.wordpiece import WordPiece
from harness.errors import UserError

MAX_SEQ_LENGTH = 384
MAX_QUERY_LENGTH = 64
DOC_STRIDE = 128
FEATURES_VERSION = "mlperf-squad-v1"  # bump when the feature recipe changes


@dataclass(frozen=True)
class Features:
    input_ids: np.ndarray  # int32 [F, 384]
    input_mask: np.ndarray  # int8 [F, 384]
    segment_ids: np.ndarray  # int8 [F, 384]
    example_index: np.ndarray  # int32 [F]: the question each feature belongs to
    token_to_orig: np.ndarray  # int32 [F, 384]: doc token of each context token, else -1
    max_context: np.ndarray  # bool [F, 384]: this window is the token's best one

    @property
    def count(self) -> int:
        return len(self.example_index)

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def create_features(examples: Sequence[Example], wordpiece: WordPiece) -> Features:
    """All features of the questions, in question order."""
    tokenizer = wordpiece.tokenizer
    queries = tokenizer.encode_batch([e.question for e in examples], add_special_tokens=False)
    # Contexts are shared by several questions: tokenise each distinct one once.
    contexts = list(dict.fromkeys(e.doc_tokens for e in examples))
    encoded = tokenizer.encode_batch(
        [list(tokens) for tokens in contexts], is_pretokenized=True, add_special_tokens=False
    )
    pieces = {
        tokens: (np.asarray(enc.ids, np.int32), np.asarray(enc.word_ids, np.int32))
        for tokens, enc in zip(contexts, encoded, strict=True)
    }
    rows: list[tuple[np.ndarray, ...]] = []
    for number, (example, query) in enumerate(zip(examples, queries, strict=True)):
        doc_ids, doc_words = pieces[example.doc_tokens]
        rows.extend(_windows(number, query.ids[:MAX_QUERY_LENGTH], doc_ids, doc_words, wordpiece))
    if not rows:
        raise UserError("the questions yield no features (are all their contexts empty?)")
    return Features(*(np.stack(column) for column in zip(*rows, strict=True)))


def _windows(
    example: int, query: list[int], doc_ids: np.ndarray, doc_words: np.ndarray, wp: WordPiece
):
    """One feature row per context window: ids, mask, segments, example, doc map, max context."""
    if len(doc_ids) == 0:
        return  # an empty context gives no window, as in the MLPerf feature code
    budget = MAX_SEQ_LENGTH - len(query) - 3
    starts = [0]
    while starts[-1] + budget < len(doc_ids):
        starts.append(starts[-1] + min(budget, DOC_STRIDE))
    lengths = np.minimum(len(doc_ids) - np.asarray(starts), budget)
    best = _best_window(np.asarray(starts), lengths, len(doc_ids))
    offset = len(query) + 2  # context tokens start after [CLS] query [SEP]
    for index, (start, length) in enumerate(zip(starts, lengths, strict=True)):
        ids = np.zeros(MAX_SEQ_LENGTH, np.int32)
        used = offset + length + 1
        ids[:used] = [wp.cls_id, *query, wp.sep_id, *doc_ids[start : start + length], wp.sep_id]
        mask = np.zeros(MAX_SEQ_LENGTH, np.int8)
        mask[:used] = 1
        segments = np.zeros(MAX_SEQ_LENGTH, np.int8)
        segments[offset:used] = 1
        to_orig = np.full(MAX_SEQ_LENGTH, -1, np.int32)
        to_orig[offset : offset + length] = doc_words[start : start + length]
        max_context = np.zeros(MAX_SEQ_LENGTH, bool)
        max_context[offset : offset + length] = best[start : start + length] == index
        yield ids, mask, segments, np.int32(example), to_orig, max_context


def _best_window(starts: np.ndarray, lengths: np.ndarray, tokens: int) -> np.ndarray:
    """For each context token, the window where it has the most context on its shorter side
    (ties: the longer window, then the first), as the MLPerf feature code scores it."""
    position = np.arange(tokens)[None, :]
    left = position - starts[:, None]
    right = (starts + lengths - 1)[:, None] - position
    score = np.minimum(left, right) + 0.01 * lengths[:, None]
    score = np.where((left >= 0) & (right >= 0), score, -np.inf)
    return np.argmax(score, axis=0)  # the first of equal scores, as a strict '>' scan keeps


def _cache_key(squad: SquadSet, vocab: Path) -> str:
    digest = hashlib.sha256()
    for part in (squad.path.read_bytes(), vocab.read_bytes(), Path(__file__).read_bytes()):
        digest.update(hashlib.sha256(part).digest())
    params = f"{FEATURES_VERSION}|{MAX_SEQ_LENGTH}|{MAX_QUERY_LENGTH}|{DOC_STRIDE}"
    digest.update(f"{params}|{len(squad.examples)}".encode())
    return digest.hexdigest()[:20]


def cached_features(squad: SquadSet, vocab: Path, wordpiece: WordPiece, progress) -> Features:
    """Features from the on-disk cache (keyed by the files and the recipe), made once."""
    path = cache_dir("squad-features") / f"{_cache_key(squad, vocab)}.npz"
    if path.exists():
        try:
            with np.load(path) as stored:
                return Features(**{name: stored[name] for name in Features.__dataclass_fields__})
        except (OSError, ValueError, KeyError):
            progress(f"feature cache {path} is unreadable; making it again")
    progress(f"making SQuAD features for {len(squad.examples)} questions (cached for next runs)")
    features = create_features(squad.examples, wordpiece)
    partial = path.with_name(f".{path.stem}.partial-{os.getpid()}.npz")
    np.savez(partial, **features.arrays())
    os.replace(partial, path)
    return features
