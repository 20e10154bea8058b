"""``sparseperf prune``: write a pruned copy of a model, with its pruning record and a per-layer
summary. The copy appears under its name only when complete."""

from __future__ import annotations

import os
from pathlib import Path

import onnx

from harness.errors import UserError
from harness.models.pruning import PruningRecord, prune_model
from harness.models.recipe import Recipe


def check_output(out: Path) -> None:
    """Refuse an output that exists or whose folder does not: nothing is overwritten."""
    if out.exists():
        raise _exists(out)
    if not out.parent.is_dir():
        raise UserError(f"cannot write {out}: folder {out.parent} does not exist")


def _exists(out: Path) -> UserError:
    return UserError(f"{out} already exists; choose a new file (nothing is overwritten)")


def prune_file(source: Path, recipe: Recipe, out: Path, label: str) -> PruningRecord:
    """Prune ``source`` (a checked model file; ``label`` names it in the record) into ``out``."""
    check_output(out)
    try:
        model = onnx.load(str(source))
    except Exception as exc:  # protobuf and onnx raise several unrelated types
        raise UserError(f"{source} is not a readable ONNX model ({type(exc).__name__})") from exc
    record = prune_model(model, recipe, label)
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        onnx.save(model, str(partial))
        os.link(partial, out)  # fails if ``out`` appeared meanwhile: never overwritten
    except FileExistsError:
        raise _exists(out) from None
    finally:
        partial.unlink(missing_ok=True)
    return record


def summary_lines(record: PruningRecord) -> list[str]:
    """One line per layer (its kept weights and density), then the totals."""
    width = max(len(layer.node) for layer in record.layers)
    lines = [f"{'layer':<{width}}  {'weights':>10}  {'kept':>10}  density"]
    for layer in record.layers:
        density = f"{layer.kept / layer.weights:.4g}" + ("" if layer.pruned else " (kept dense)")
        lines.append(f"{layer.node:<{width}}  {layer.weights:>10}  {layer.kept:>10}  {density}")
    total = sum(layer.weights for layer in record.layers)
    kept = sum(layer.kept for layer in record.layers)
    pruned = sum(layer.pruned for layer in record.layers)
    lines.append(
        f"{len(record.layers)} weight-bearing layers ({pruned} pruned): {kept} of {total} "
        f"weights kept ({record.kept_fraction:.4g}); {record.recipe.describe()}"
    )
    return lines
