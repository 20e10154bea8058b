"""Magnitude pruning of a model's weight-bearing layers, and the record a pruned file carries.

Weight-bearing layers are the ones the sparse-int4 backend runs on its kernel (and simaccel
times as GEMMs): Conv nodes with a constant 4-D weight, Gemm and MatMul nodes with a constant
2-D weight on the right. Each weight is pruned as W [K, N] (K the reduction dimension, a
convolution's taps in (kh, kw, c) order) by ``backends.sparse_int4.sparsity.prune``, so a file
holds exactly the zeros sparse-int4 would make at load time, in the same patterns.

A pruned file says so in its metadata (``METADATA_KEY``, JSON): the density and pattern, which
layers were kept dense, where the weights came from, and every layer's kept (nonzero) weight
count. A record that does not match the file's zeros is refused, so a file that was changed
after pruning (say, fine-tuned until its zeros filled in) cannot pass for what it no longer is.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from backends.sparse_int4 import sparsity
from harness.errors import UserError
from harness.models.recipe import Recipe

METADATA_KEY = "sparseperf.pruning"
METHOD = "magnitude pruning, no retraining"


@dataclass(frozen=True)
class LayerRecord:
    node: str
    weight: str  # the initializer's name
    kept: int  # nonzero weights after pruning
    weights: int  # K x N
    pruned: bool  # False: kept dense by the recipe


@dataclass(frozen=True)
class PruningRecord:
    density: float
    pattern: str
    keep_dense: tuple[str, ...]
    source: str  # where the weights came from, e.g. a file name or the built-in model
    layers: tuple[LayerRecord, ...]
    method: str = METHOD

    @property
    def recipe(self) -> Recipe:
        return Recipe(self.density, self.pattern, self.keep_dense)

    @property
    def kept_fraction(self) -> float:
        """Nonzero weights over all weights of the weight-bearing layers, dense ones included."""
        return sum(x.kept for x in self.layers) / sum(x.weights for x in self.layers)

    def describe(self) -> str:
        return f"{self.recipe.describe()}; {self.kept_fraction:.4g} of all layer weights kept"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str) -> PruningRecord:
        try:
            body = json.loads(text)
            layers = tuple(LayerRecord(**layer) for layer in body.pop("layers"))
            record = cls(layers=layers, **{**body, "keep_dense": tuple(body["keep_dense"])})
            record.recipe  # noqa: B018 (checks density, pattern and keep_dense)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise UserError(f"{where}: its {METADATA_KEY} metadata is not a pruning record "
                            f"({type(exc).__name__}: {exc})") from None  # fmt: skip
        return record


def to_kn(weight: np.ndarray, op: str, trans_b: bool = False) -> np.ndarray:
    """A layer's weight as W [K, N]: a Conv's [O, C, kh, kw] with K in (kh, kw, c) order."""
    if op == "Conv":
        return weight.transpose(0, 2, 3, 1).reshape(len(weight), -1).T
    return weight.T if trans_b else weight


def prune_weight(
    weight: np.ndarray, op: str, recipe: Recipe, layer: str, trans_b: bool = False
) -> np.ndarray:
    """``weight`` (in its ONNX layout) with the pruned weights set to zero; a pattern that
    does not fit the layer is a UserError naming it."""
    channels = weight.shape[1] if op == "Conv" else None
    try:
        mask_kn = sparsity.prune(to_kn(weight, op, trans_b), recipe.density, recipe.pattern,
                                 channels)  # fmt: skip
    except UserError as exc:
        raise UserError(f"layer {layer}: {exc}") from None
    if op == "Conv":
        o, c, kh, kw = weight.shape
        mask = mask_kn.T.reshape(o, kh, kw, c).transpose(0, 3, 1, 2)
    else:
        mask = mask_kn.T if trans_b else mask_kn
    return np.where(mask, weight, np.zeros((), weight.dtype))


def weight_layers(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, str]]:
    """(node, weight initializer) of each weight-bearing layer in graph order; a weight that
    several nodes share is listed once, with its first reader."""
    initializers = {init.name: init for init in model.graph.initializer}
    seen: set[str] = set()
    from backends.sparse_int4.kernel_layers import is_kernel_node  # onnxruntime: when needed

    layers = []
    for node in model.graph.node:
        if is_kernel_node(node, initializers) and node.input[1] not in seen:
            seen.add(node.input[1])
            layers.append((node, node.input[1]))
    return layers


def prune_model(model: onnx.ModelProto, recipe: Recipe, source: str) -> PruningRecord:
    """Prune ``model``'s weight-bearing layers in place and record it in its metadata."""
    layers = weight_layers(model)
    if not layers:
        raise UserError(
            f"{source} has no weight-bearing layers (Conv, Gemm or MatMul with a constant "
            "weight) to prune"
        )
    if read_record(model, source) is not None:
        raise UserError(f"{source} is already pruned; prune the model it was made from")
    initializers = {init.name: init for init in model.graph.initializer}
    dense = dense_layers(len(layers), recipe)
    pruned = set()
    for index, (node, name) in enumerate(layers):
        if index in dense:
            continue
        weight = numpy_helper.to_array(initializers[name])
        weight = prune_weight(weight, node.op_type, recipe, node.name or name, _trans_b(node))
        initializers[name].CopyFrom(numpy_helper.from_array(weight, name))
        pruned.add(name)
    record = PruningRecord(recipe.density, recipe.pattern, recipe.keep_dense, source,
                           layer_records(model, pruned))  # fmt: skip
    write_record(model, record)
    return record


def layer_records(
    model: onnx.ModelProto, pruned: set[str] | None = None
) -> tuple[LayerRecord, ...]:
    """Each weight-bearing layer's nonzero count as the model holds it; ``pruned`` names the
    layers a recipe pruned (None: all)."""
    initializers = {init.name: init for init in model.graph.initializer}
    return tuple(
        LayerRecord(
            node.name or node.output[0],
            name,
            int(np.count_nonzero(numpy_helper.to_array(initializers[name]))),
            int(np.prod(initializers[name].dims)),
            pruned is None or name in pruned,
        )
        for node, name in weight_layers(model)
    )


def dense_layers(count: int, recipe: Recipe) -> set[int]:
    """Indices (of ``count`` layers in graph order) that ``recipe`` keeps dense."""
    ends = {"first": 0, "last": count - 1}
    return {ends[name] for name in recipe.keep_dense}


def _trans_b(node: onnx.NodeProto) -> bool:
    return any(a.name == "transB" and a.i for a in node.attribute)


def record_props(record: PruningRecord) -> list[onnx.StringStringEntryProto]:
    """The model metadata entries that hold ``record``."""
    return [onnx.StringStringEntryProto(key=METADATA_KEY, value=record.to_json())]


def write_record(model: onnx.ModelProto, record: PruningRecord) -> None:
    for prop in [p for p in model.metadata_props if p.key == METADATA_KEY]:
        model.metadata_props.remove(prop)
    model.metadata_props.extend(record_props(record))


def read_record(model: onnx.ModelProto, where: str) -> PruningRecord | None:
    """The model's pruning record (None: it has none)."""
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return PruningRecord.from_json(prop.value, where)
    return None


def checked_record(model: onnx.ModelProto, where: str) -> PruningRecord | None:
    """The pruning record, refused (UserError) unless it matches the model's zeros: the same
    weight-bearing layers, each with exactly its recorded nonzero count."""
    record = read_record(model, where)
    if record is None:
        return None
    recorded = {layer.weight: layer for layer in record.layers}
    actual = {layer.weight: layer for layer in layer_records(model)}
    if set(recorded) != set(actual):
        missing = sorted(set(recorded) ^ set(actual))
        raise UserError(
            f"{where}: its pruning record does not match the model: layer weight(s) "
            f"{', '.join(missing[:3])} are in one but not the other"
        )
    for name, layer in recorded.items():
        found = actual[name]
        if (found.kept, found.weights) != (layer.kept, layer.weights):
            raise UserError(
                f"{where}: its pruning record disagrees with its zeros: layer {layer.node} "
                f"should keep {layer.kept} of {layer.weights} weights but holds "
                f"{found.kept} nonzero of {found.weights} (was it changed after pruning?)"
            )
    return record
