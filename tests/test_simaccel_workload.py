"""Per-sample work of a model for the simulated accelerator, from shapes alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from backends.simaccel.workload import model_work


def test_resnet50_work_matches_its_architecture(builtin_model):
    work = model_work(builtin_model)
    layers = work.layers
    assert work.input_bytes == 3 * 224 * 224 * 4
    gemms = [layer for layer in layers if layer.weights]
    assert len(gemms) == 54  # 53 convolutions and the classifier
    assert sum(layer.macs for layer in gemms) == 4_089_186_304
    assert any(layer.op == "Relu" and layer.out_elements for layer in layers)
    assert model_work(builtin_model) == work  # from the cache


def test_weight_zeros_and_attention_products_are_counted(tmp_path: Path):
    weight = np.arange(1, 65, dtype=np.float32).reshape(8, 8)
    weight[:, :6] = 0  # a pre-pruned weight: 48 of 64 zero
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["y"], name="dense"),
            helper.make_node("Transpose", ["y"], ["yt"], perm=[0, 2, 1], name="t"),
            helper.make_node("MatMul", ["y", "yt"], ["scores"], name="attention"),
            helper.make_node("Softmax", ["scores"], ["out"], axis=-1, name="softmax"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 4, 4])],
        [numpy_helper.from_array(weight, "w")],
    )
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph), path)
    work = {layer.name: layer for layer in model_work(path).layers}
    assert work["dense"].macs == 4 * 8 * 8 and work["dense"].weight_zeros == 48
    assert work["attention"].macs == 4 * 4 * 8 and work["attention"].weights == 0
    assert work["softmax"].macs == 0 and work["softmax"].out_elements == 16
