"""Real token counts of the built-in synthetic SQuAD set, without answering its questions.

Timing by real tokens needs only each feature's token count, not the FP32 model's answers, so
the built-in set's counts come from a larger draw of the same generator (more questions than
the labelled set holds, for a steadier mean), made once and cached.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from harness.cache import cache_dir, source_digest
from harness.datasets import squad_features, synthetic_squad, wordpiece
from harness.datasets.squad_features import MAX_SEQ_LENGTH

QUESTIONS = 4000
SEED = 0


def builtin_token_counts(progress) -> np.ndarray:
    """Real tokens of every feature of ``QUESTIONS`` synthetic questions (cached)."""
    digest = source_digest(synthetic_squad, wordpiece, squad_features)
    path = cache_dir("squad-lengths") / f"synthetic-{QUESTIONS}-seed{SEED}-{digest}.npy"
    if path.exists():
        return np.load(path)
    progress(f"counting the tokens of {QUESTIONS} synthetic SQuAD questions (cached)")
    vocab = synthetic_squad.synthetic_vocab()
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = Path(tmp) / wordpiece.VOCAB_FILE
        vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
        tokens = wordpiece.load_wordpiece(vocab_file)
    examples = synthetic_squad.synth_questions(QUESTIONS, SEED, vocab)
    features = squad_features.create_features(examples, tokens)
    counts = np.count_nonzero(features.input_mask, axis=1).astype(np.int16)
    partial = path.with_name(path.stem + ".partial.npy")
    np.save(partial, counts)
    partial.replace(path)
    return counts


def describe(counts: np.ndarray) -> str:
    return (
        f"the built-in synthetic SQuAD set ({len(counts)} features, lengths as SQuAD v1.1's "
        f"dev set; mean {counts.mean():.1f} of {MAX_SEQ_LENGTH})"
    )
