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
    assert work.float_input_elements == 3 * 224 * 224 and work.other_input_bytes == 0
    assert work.tokens == 0 and work.outputs["ArgMax:0"] == ((), "int64")
    gemms = [layer for layer in layers if layer.weights]
    assert len(gemms) == 54  # 53 convolutions and the classifier
    assert sum(layer.macs for layer in gemms) == 4_089_186_304
    stem = gemms[0]  # a convolution reads its input, not the 49x larger im2col of it
    assert stem.in_elements == 3 * 224 * 224 and stem.out_elements == 64 * 112 * 112
    assert all(layer.token_power == 0 for layer in layers)
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
    assert "t" not in work  # transposes are folded into the GEMMs' addressing


def test_token_models_record_how_each_layer_grows_with_length(tmp_path: Path):
    tokens, hidden = 6, 4
    embedding = np.ones((10, hidden), dtype=np.float32)
    weight = np.ones((hidden, hidden), dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "ids"], ["x"], name="embed"),
            helper.make_node("MatMul", ["x", "w"], ["y"], name="dense"),
            helper.make_node("Transpose", ["y"], ["yt"], perm=[0, 2, 1]),
            helper.make_node("MatMul", ["y", "yt"], ["scores"], name="scores"),
            helper.make_node("Softmax", ["scores"], ["probs"], axis=-1, name="softmax"),
            helper.make_node("MatMul", ["probs", "y"], ["out"], name="context"),
        ],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", tokens])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", tokens, hidden])],
        [numpy_helper.from_array(embedding, "table"), numpy_helper.from_array(weight, "w")],
    )
    path = tmp_path / "tokens.onnx"
    onnx.save(helper.make_model(graph), path)
    work = model_work(path)
    powers = {layer.name: layer.token_power for layer in work.layers}
    assert work.tokens == tokens and work.other_input_bytes == tokens * 8
    assert powers == {"embed": 1, "dense": 1, "scores": 2, "softmax": 2, "context": 2}
    assert work.outputs == {"out": ((tokens, hidden), "float32")}
