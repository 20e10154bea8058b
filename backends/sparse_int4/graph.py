"""An ONNX graph as the executor plans over it: nodes in order, who produces and who reads each
value, constant initializers, and the statically known shapes."""

from __future__ import annotations

import math
from functools import cached_property

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from harness.errors import UserError


class Graph:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        graph = model.graph
        self.nodes = list(graph.node)
        self.initializers = {init.name: init for init in graph.initializer}
        inferred = shape_inference.infer_shapes(model, strict_mode=False)
        self.types = {
            info.name: info.type
            for info in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)
        }
        self.inputs = [i.name for i in graph.input if i.name not in self.initializers]
        self.outputs = [o.name for o in graph.output]
        self.producer = {out: node for node in self.nodes for out in node.output}
        self.readers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.nodes:
            for name in node.input:
                if name:
                    self.readers.setdefault(name, []).append(node)

    @cached_property
    def constants(self) -> dict[str, np.ndarray]:
        """Values known before any input: initializers and Constant nodes."""
        values = {name: numpy_helper.to_array(t) for name, t in self.initializers.items()}
        for node in self.nodes:
            if node.op_type == "Constant" and node.attribute:
                values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        return values

    def constant(self, name: str) -> np.ndarray | None:
        return self.constants.get(name)

    def sole_reader(self, name: str) -> onnx.NodeProto | None:
        """The one node reading ``name``, if exactly one does and it is no graph output."""
        readers = self.readers.get(name, [])
        if len(readers) != 1 or name in self.outputs:
            return None
        return readers[0]

    def shape(self, name: str) -> list[int] | None:
        """The value's dims (-1 for a symbolic one), or None when unknown."""
        if name in self.constants:
            return list(self.constants[name].shape)
        value = self.types.get(name)
        if value is None or not value.tensor_type.HasField("shape"):
            return None
        return [d.dim_value if d.HasField("dim_value") else -1 for d in value.tensor_type.shape.dim]

    def elem_type(self, name: str) -> int:
        value = self.types.get(name)
        return value.tensor_type.elem_type if value is not None else 0

    def static_shape(self, name: str, label: str) -> list[int]:
        """The value's dims, batch first; every dim after the batch must be a number."""
        shape = self.shape(name)
        if shape is None:
            raise UserError(
                f"{label}: the shape of {name!r} cannot be inferred; the sparse-int4 backend "
                "needs static shapes (apart from the batch); fix them, e.g. with onnxruntime's "
                "make_dynamic_shape_fixed tool"
            )
        dims = self.types[name].tensor_type.shape.dim if name in self.types else []
        unknown = [d.dim_param or "?" for d in list(dims)[1:] if not d.HasField("dim_value")]
        if unknown or len(shape) < 2:
            raise UserError(
                f"{label}: input {name!r} has dynamic dimension(s) {', '.join(unknown) or 'rank'} "
                "beyond the batch; the sparse-int4 backend needs static shapes (fix them, e.g. "
                "with onnxruntime's make_dynamic_shape_fixed tool)"
            )
        return shape

    def per_sample(self, name: str, label: str) -> int:
        """Elements per sample (everything after the batch dimension)."""
        return math.prod(self.static_shape(name, label)[1:])


def attributes(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def label(node: onnx.NodeProto) -> str:
    return f"{node.op_type} node {node.name or node.output[0]!r}"


def other_input(node: onnx.NodeProto, name: str) -> str:
    """The input of a two-input node that is not ``name``."""
    return node.input[1] if node.input[0] == name else node.input[0]
