"""SQuAD v1.1 files (``dev-v1.1.json``): read with checks, split contexts as MLPerf does, write.

A question is one example; its context is split into whitespace-separated "doc tokens", the
units that predicted answers are mapped back to.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UserError
from harness.files import read_json

DEV_FILE = "dev-v1.1.json"
# The whitespace that separates doc tokens in the MLPerf feature code (U+202F included).
_WHITESPACE = frozenset(" \t\r\n\u202f")


@dataclass(frozen=True)
class Example:
    qas_id: str
    question: str
    context: str
    doc_tokens: tuple[str, ...]
    token_starts: tuple[int, ...]  # character offset of each doc token in the context
    answers: tuple[str, ...]  # gold answer texts


@dataclass(frozen=True)
class SquadSet:
    path: Path
    examples: tuple[Example, ...]
    synthetic: dict | None  # the generator's note for synthetic sets, None for real data


def split_context(context: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Whitespace-separated doc tokens and the character offset where each starts."""
    tokens: list[str] = []
    starts: list[int] = []
    previous_is_space = True
    for offset, char in enumerate(context):
        if char in _WHITESPACE:
            previous_is_space = True
            continue
        if previous_is_space:
            tokens.append(char)
            starts.append(offset)
        else:
            tokens[-1] += char
        previous_is_space = False
    return tuple(tokens), tuple(starts)


def resolve_dev_file(path: Path) -> Path:
    """The SQuAD JSON: ``path`` itself, or dev-v1.1.json inside the folder ``path``."""
    if path.is_dir():
        path = path / DEV_FILE
    if not path.is_file():
        raise UserError(
            f"SQuAD file {path} not found; give dev-v1.1.json or the folder holding it "
            "(make a synthetic set with: sparseperf data synth squad)"
        )
    return path


def read_squad(path: Path, count: int | None = None) -> SquadSet:
    """Read and check a SQuAD v1.1 file; ``count`` keeps only its first questions."""
    path = resolve_dev_file(path)
    document = read_json(path, "SQuAD file")
    examples: list[Example] = []
    splits: dict[str, tuple[tuple[str, ...], tuple[int, ...]]] = {}
    for where, context, qa in _questions(document, path):
        if context not in splits:  # several questions share a context
            splits[context] = split_context(context)
        tokens, starts = splits[context]
        answers = []
        for number, answer in enumerate(qa["answers"]):
            place = f"{where}.answers[{number}]"
            text = _field(answer, "text", str, place)
            start = _field(answer, "answer_start", int, place)
            if not 0 <= start <= len(context) - len(text) or text not in context:
                raise UserError(
                    f"{path}: {place} ({text[:40]!r} at {start}) is not inside its context"
                )
            answers.append(text)
        examples.append(Example(qa["id"], qa["question"], context, tokens, starts, tuple(answers)))
    if not examples:
        raise UserError(f"{path} holds no questions")
    if count is not None:
        if count > len(examples):
            raise UserError(f"dataset count {count} out of range: {path} has {len(examples)}")
        examples = examples[:count]
    synthetic = document.get("synthetic") if isinstance(document, dict) else None
    return SquadSet(path, tuple(examples), synthetic if isinstance(synthetic, dict) else None)


def _field(parent: dict, key: str, kind: type, where: str):
    value = parent.get(key) if isinstance(parent, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise UserError(
            f"not a SQuAD v1.1 file: {where} needs {key!r} as {kind.__name__} "
            f"(found {type(value).__name__})"
        )
    return value


def _questions(document: object, path: Path):
    """(location, context, qa) for every question, checking the v1.1 shape on the way."""
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise UserError(f"{path} is not a SQuAD v1.1 file: it needs a top-level 'data' list")
    for a, article in enumerate(document["data"]):
        for p, paragraph in enumerate(_field(article, "paragraphs", list, f"data[{a}]")):
            where = f"data[{a}].paragraphs[{p}]"
            context = _field(paragraph, "context", str, where)
            for q, qa in enumerate(_field(paragraph, "qas", list, where)):
                place = f"{where}.qas[{q}]"
                for key, kind in (("id", str), ("question", str), ("answers", list)):
                    _field(qa, key, kind, place)
                yield place, context, qa


def write_squad(path: Path, articles: list[dict], synthetic: dict) -> None:
    """Write a dev-v1.1-format file atomically; ``synthetic`` says how it was made."""
    document = {"version": "1.1", "synthetic": synthetic, "data": articles}
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    partial.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    os.replace(partial, path)


def write_copies(source: Path, qas_ids: Sequence[str], target: Path, note: str) -> None:
    """A dev-v1.1 file of ``source``'s questions under ``qas_ids`` ("<id>#<copy>"), in that
    order, in their paragraphs as in the source: a repeated set in the file the official
    accuracy script reads."""
    document = read_json(source, "SQuAD file")
    places = {}
    for a, article in enumerate(document["data"]):
        for p, paragraph in enumerate(article["paragraphs"]):
            for qa in paragraph["qas"]:
                places.setdefault(qa["id"], (a, p, qa))
    articles: list[dict] = []
    last = None
    for qas_id in qas_ids:
        copy = qas_id.rpartition("#")[2]
        a, p, qa = places[qas_id.rpartition("#")[0]]
        if last is None or last[:2] != (copy, a):
            title = document["data"][a].get("title", "")
            articles.append({"title": f"{title} #{copy}", "paragraphs": []})
        if last != (copy, a, p):
            context = document["data"][a]["paragraphs"][p]["context"]
            articles[-1]["paragraphs"].append({"context": context, "qas": []})
        articles[-1]["paragraphs"][-1]["qas"].append({**qa, "id": qas_id})
        last = (copy, a, p)
    synthetic = document.get("synthetic") if isinstance(document.get("synthetic"), dict) else {}
    write_squad(target, articles, {**synthetic, "repeated": note})
