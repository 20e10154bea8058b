"""The uncased BERT WordPiece tokenizer from a ``vocab.txt``, on the ``tokenizers`` library.

Normalisation and pre-tokenisation are BERT's basic tokenizer (clean control characters,
split CJK characters and punctuation, lower-case, strip accents), then greedy longest-match
WordPiece with ``##`` continuations and [UNK] for words longer than 100 characters.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from harness.errors import UserError
from harness.files import read_text

VOCAB_FILE = "vocab.txt"
SPECIAL_TOKENS = ("[UNK]", "[CLS]", "[SEP]")


@dataclass(frozen=True)
class WordPiece:
    tokenizer: Tokenizer
    tokens: tuple[str, ...]  # id -> token
    cls_id: int
    sep_id: int

    def basic_tokens(self, text: str) -> list[str]:
        """BERT's basic tokenisation (no WordPiece split), as answer alignment needs it."""
        normalized = self.tokenizer.normalizer.normalize_str(text)
        return [piece for piece, _ in self.tokenizer.pre_tokenizer.pre_tokenize_str(normalized)]


def read_vocab(path: Path) -> dict[str, int]:
    """token -> id, one token per line (a repeated token keeps its last id, as BERT does)."""
    if not path.is_file():
        raise UserError(f"vocabulary {path} not found; give the model's vocab.txt")
    lines = read_text(path, "vocabulary").splitlines()
    vocab = {line.strip(): number for number, line in enumerate(lines)}
    vocab.pop("", None)
    if not vocab:
        raise UserError(f"vocabulary {path} is empty; give the model's vocab.txt")
    missing = [token for token in SPECIAL_TOKENS if token not in vocab]
    if missing:
        raise UserError(f"vocabulary {path} lacks the special token(s) {', '.join(missing)}")
    return vocab


def load_wordpiece(path: Path) -> WordPiece:
    vocab = read_vocab(path)
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokens = [""] * (max(vocab.values()) + 1)
    for token, number in vocab.items():
        tokens[number] = token
    return WordPiece(tokenizer, tuple(tokens), vocab["[CLS]"], vocab["[SEP]"])
