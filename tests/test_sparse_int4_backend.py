"""The sparse-int4 graph executor and backend: kernel layers bit for bit the numpy reference,
the rest on ONNX Runtime, workload figures, bad models refused by name, and CLI runs."""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from backends.sparse_int4 import kernel
from backends.sparse_int4.executor import GraphExecutor
from backends.sparse_int4.layers import SparsityOptions
from backends.sparse_int4.reference import conv_output_side, reference_conv, reference_matmul
from backends.sparse_int4.steps import Segment
from backends.sparse_int4.vsquant import quantize_activations, quantize_weight
from harness.errors import UserError
from tests.conftest import run_cli

RNG = np.random.default_rng(11)
W1 = RNG.standard_normal((8, 3, 3, 3)).astype(np.float32)
B1 = RNG.standard_normal(8).astype(np.float32)
W2 = RNG.standard_normal((6, 8, 1, 1)).astype(np.float32)


def model(nodes, inputs, outputs, initializers) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def tensor(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def conv_relu_conv() -> onnx.ModelProto:
    return model(
        [
            helper.make_node(
                "Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1], strides=[2, 2]
            ),
            helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
            helper.make_node("Conv", ["r1", "w2"], ["y"], name="conv2"),
        ],
        [tensor("x", ["batch", 3, 9, 9])],
        [tensor("y", ["batch", 6, 5, 5])],
        [numpy_helper.from_array(a, n) for a, n in ((W1, "w1"), (B1, "b1"), (W2, "w2"))],
    )


def numpy_conv(x, w, bias=None, signed=True, gamma=None, residual=None, relu=False, **geometry):
    """A convolution of NCHW x by the numpy reference (one gamma per image, or ``gamma`` for
    all), back to NCHW."""
    b, c, h, wd = x.shape
    n, _, kh, kw = w.shape
    rows = x.transpose(0, 2, 3, 1).reshape(-1, c)
    qa = quantize_activations(rows, 16, signed=signed, group_rows=h * wd, gamma=gamma)
    qw = quantize_weight(w.transpose(0, 2, 3, 1).reshape(n, -1).T, 16, channels=c)
    strides, pads = geometry.get("strides", (1, 1)), geometry.get("pads", (0, 0, 0, 0))
    oh, ow = conv_output_side((h, wd), (kh, kw), strides, pads, (1, 1))
    if residual is not None:
        residual = residual.transpose(0, 2, 3, 1).reshape(-1, n)
    out = reference_conv(qa, qw, (h, wd), (kh, kw), strides, pads, bias=bias, residual=residual,
                         relu=relu)  # fmt: skip
    return out.reshape(b, oh, ow, n).transpose(0, 3, 1, 2)


def test_conv_layers_are_bit_identical_to_the_numpy_reference() -> None:
    executor = GraphExecutor(conv_relu_conv(), SparsityOptions(weight_clip="max"))
    x = RNG.standard_normal((2, 3, 9, 9)).astype(np.float32)
    first = numpy_conv(x, W1, B1, strides=(2, 2), pads=(1, 1, 1, 1), relu=True)
    expected = numpy_conv(first, W2, signed=False)
    got = executor.run({"x": x})["y"]
    assert got.tobytes() == np.ascontiguousarray(expected).tobytes()
    signs = [layer.signed for layer in executor.layers]
    assert signs == [True, False]  # the Relu output is quantized unsigned
    assert [layer.relu for layer in executor.layers] == [True, False]  # fused into the kernel


def bottleneck(downsample: bool = False) -> onnx.ModelProto:
    """conv0 -> Relu = h; conv1(h) -> Relu -> conv2 (3x3) + shortcut -> Relu: a ResNet block,
    whose shortcut is h or, with ``downsample``, a 1x1 projection of h."""
    weights = {
        "w0": RNG.standard_normal((16, 3, 3, 3)).astype(np.float32) / 4,
        "w1": RNG.standard_normal((8, 16, 1, 1)).astype(np.float32) / 4,
        "w2": RNG.standard_normal((16, 8, 3, 3)).astype(np.float32) / 8,
        "wd": RNG.standard_normal((16, 16, 1, 1)).astype(np.float32) / 4,
    }
    pad = {"pads": [1, 1, 1, 1]}
    projection = [helper.make_node("Conv", ["h", "wd"], ["d"], name="downsample")]
    return model(
        [
            helper.make_node("Conv", ["x", "w0"], ["c0"], name="conv0", **pad),
            helper.make_node("Relu", ["c0"], ["h"], name="relu0"),
            helper.make_node("Conv", ["h", "w1"], ["c1"], name="conv1"),
            helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
            helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", **pad),
            *(projection if downsample else []),
            helper.make_node("Add", ["d" if downsample else "h", "c2"], ["sum"], name="add"),
            helper.make_node("Relu", ["sum"], ["y"], name="relu2"),
        ],
        [tensor("x", ["batch", 3, 7, 6])],
        [tensor("y", ["batch", 16, 7, 6])],
        [numpy_helper.from_array(a, n) for n, a in weights.items() if downsample or n != "wd"],
    ), weights


@pytest.mark.parametrize("downsample", [False, True])
def test_calibrated_layers_write_the_next_layers_planes_bit_for_bit(downsample: bool) -> None:
    block, w = bottleneck(downsample)
    calibration = [{"x": RNG.standard_normal((3, 3, 7, 6)).astype(np.float32)}]
    executor = GraphExecutor(
        block, SparsityOptions(weight_clip="max"), calibration=lambda: calibration
    )
    assert set(executor.gammas) == {"x", "h", "r1"}  # every convolution input
    assert executor.layers[-1].residual == ("d" if downsample else "h")
    x = RNG.standard_normal((2, 3, 7, 6)).astype(np.float32)
    g = executor.gammas
    h = numpy_conv(x, w["w0"], gamma=g["x"], pads=(1, 1, 1, 1), relu=True)
    r1 = numpy_conv(h, w["w1"], signed=False, gamma=g["h"], relu=True)
    shortcut = numpy_conv(h, w["wd"], signed=False, gamma=g["h"]) if downsample else h
    shortcut = shortcut.astype(np.float16).astype(np.float32)  # kept as float16 for the Add
    expected = numpy_conv(r1, w["w2"], signed=False, gamma=g["r1"], pads=(1, 1, 1, 1),
                          residual=shortcut, relu=True)  # fmt: skip
    got = executor.run({"x": x})["y"]
    assert got.tobytes() == np.ascontiguousarray(expected).tobytes()
    # a gamma is the largest vector step seen in the calibration batches, over sq = 15
    assert g["x"] == pytest.approx(float(np.abs(calibration[0]["x"]).max()) / 7 / 15, rel=1e-6)


def transformer_block() -> onnx.ModelProto:
    wq = RNG.standard_normal((32, 32)).astype(np.float32) / 6
    w_up = RNG.standard_normal((32, 64)).astype(np.float32) / 6
    w_down = RNG.standard_normal((64, 32)).astype(np.float32) / 8
    b_up = RNG.standard_normal(64).astype(np.float32) / 10
    return model(
        [
            helper.make_node("MatMul", ["x", "wq"], ["q"], name="query"),
            helper.make_node("Transpose", ["q"], ["qt"], perm=[0, 2, 1], name="qt"),
            helper.make_node("MatMul", ["q", "qt"], ["scores"], name="scores"),
            helper.make_node("Softmax", ["scores"], ["probs"], axis=-1, name="softmax"),
            helper.make_node("MatMul", ["probs", "x"], ["context"], name="context"),
            helper.make_node("MatMul", ["context", "w_up"], ["up"], name="up"),
            helper.make_node("Add", ["up", "b_up"], ["up_b"], name="up_bias"),
            helper.make_node("Tanh", ["up_b"], ["act"], name="act"),
            helper.make_node("MatMul", ["act", "w_down"], ["down"], name="down"),
            helper.make_node("Add", ["down", "x"], ["y"], name="residual"),
        ],
        [tensor("x", ["batch", 10, 32])],
        [tensor("y", ["batch", 10, 32])],
        [
            numpy_helper.from_array(a, n)
            for a, n in ((wq, "wq"), (w_up, "w_up"), (w_down, "w_down"), (b_up, "b_up"))
        ],
    )


def test_transformer_block_tracks_float_and_reports_workload() -> None:
    block = transformer_block()
    x = RNG.standard_normal((3, 10, 32)).astype(np.float32)
    float_out = ort.InferenceSession(block.SerializeToString()).run(None, {"x": x})[0]
    executor = GraphExecutor(block, SparsityOptions())
    got = executor.run({"x": x})["y"]
    assert got.shape == float_out.shape
    sqnr = 10 * np.log10(np.sum(float_out**2) / np.sum((got - float_out) ** 2))
    assert sqnr > 15, sqnr
    assert [layer.node for layer in executor.layers] == ["query", "up", "down"]
    up = executor.layers[1]
    assert up.rows_per_sample == 10
    assert up.dense_macs == 10 * 32 * 64 == up.effective_macs
    pruned = GraphExecutor(block, SparsityOptions(density=0.25)).layers[1]
    assert pruned.effective_macs == pytest.approx(up.dense_macs / 4, rel=0.02)
    assert pruned.weight_bytes < 0.6 * up.weight_bytes  # positions and scales cost extra


def test_layers_reading_one_value_share_its_quantization(monkeypatch) -> None:
    weights = {name: RNG.standard_normal((32, 16)).astype(np.float32) for name in "qkv"}
    projections = model(
        [helper.make_node("MatMul", ["x", f"w{n}"], [n], name=n) for n in weights],
        [tensor("x", ["batch", 5, 32])],
        [tensor(n, ["batch", 5, 16]) for n in weights],
        [numpy_helper.from_array(w, f"w{n}") for n, w in weights.items()],
    )
    executor = GraphExecutor(projections, SparsityOptions(weight_clip="max"))
    calls = []
    quantize = kernel.quantize
    monkeypatch.setattr(kernel, "quantize", lambda *a, **k: calls.append(1) or quantize(*a, **k))
    x = RNG.standard_normal((2, 5, 32)).astype(np.float32)
    for _ in range(2):  # and again in the next run, from that run's input
        got = executor.run({"x": x})
        for name, w in weights.items():
            expected = reference_matmul(quantize_activations(x.reshape(10, 32), 16),
                                        quantize_weight(w, 16))  # fmt: skip
            assert got[name].tobytes() == expected.reshape(2, 5, 16).tobytes()
        x = x + 1
    assert len(calls) == 2


def test_onnx_runtime_segments_leave_the_cores_to_the_kernel() -> None:
    segments = [
        step
        for step in GraphExecutor(transformer_block(), SparsityOptions()).plan.steps
        if isinstance(step, Segment)
    ]
    assert len(segments) >= 2
    for segment in segments:  # a spinning ORT worker would compete with the next kernel layer
        options = segment.session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_pre_pruned_zeros_are_the_sparsity() -> None:
    block = transformer_block()
    for init in block.graph.initializer:
        if init.name == "w_up":
            w = numpy_helper.to_array(init).copy()
            w[np.abs(w) < np.quantile(np.abs(w), 0.75)] = 0
            init.CopyFrom(numpy_helper.from_array(w, "w_up"))
    layers = GraphExecutor(block, SparsityOptions()).layers
    assert layers[1].stats.density == pytest.approx(0.25, abs=0.01)
    assert layers[0].stats.density == 1.0


@pytest.mark.parametrize("density", [0, -0.5, 1.5])
def test_density_outside_the_unit_interval_is_refused(density: float) -> None:
    with pytest.raises(UserError, match=r"density must be in \(0, 1\]"):
        SparsityOptions(density=density)


def test_nm_pattern_that_does_not_divide_k_names_the_node() -> None:
    with pytest.raises(UserError, match=r"MatMul node 'query'.*K divisible by M.*K = 32"):
        GraphExecutor(transformer_block(), SparsityOptions(pattern="3:64"))


def test_unsupported_weight_op_names_op_and_node() -> None:
    bad = model(
        [helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="upsample")],
        [tensor("x", ["batch", 2, 4, 4])],
        [tensor("y", None)],
        [numpy_helper.from_array(np.ones((2, 2, 3, 3), np.float32), "w")],
    )
    with pytest.raises(UserError, match="ConvTranspose node 'upsample' is not supported"):
        GraphExecutor(bad, SparsityOptions())


def test_grouped_convolution_is_refused_by_name() -> None:
    bad = model(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="depthwise", group=2)],
        [tensor("x", ["batch", 2, 4, 4])],
        [tensor("y", None)],
        [numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w")],
    )
    with pytest.raises(UserError, match=r"Conv node 'depthwise'.*group = 2"):
        GraphExecutor(bad, SparsityOptions())


def test_integer_activations_are_refused_by_name() -> None:
    integer = model(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="proj")],
        [helper.make_tensor_value_info("x", TensorProto.INT32, ["batch", 16])],
        [tensor("y", None)],
        [numpy_helper.from_array(np.ones((16, 4), np.float32), "w")],
    )
    with pytest.raises(UserError, match=r"MatMul node 'proj' reads 'x' of type INT32"):
        GraphExecutor(integer, SparsityOptions())


def test_dynamic_shapes_beyond_the_batch_are_refused() -> None:
    dynamic = model(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="proj")],
        [tensor("x", ["batch", "sequence", 16])],
        [tensor("y", None)],
        [numpy_helper.from_array(np.ones((16, 4), np.float32), "w")],
    )
    with pytest.raises(UserError, match=r"MatMul node 'proj'.*dynamic dimension.*sequence"):
        GraphExecutor(dynamic, SparsityOptions())


def test_run_and_accuracy_from_the_cli(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    base = ["run", "--model", "bert-tiny", "--backend", "sparse-int4", "--preset", "smoke",
            "--dataset-count", "16", "--runs-dir", str(tmp_path)]  # fmt: skip
    flags = ["--density", "0.5", "--vector-size", "32", "--sparsity-pattern", "4x4"]
    code, out, err = run_cli([*base, *flags], capsys)
    assert code == 0, err
    assert "RESULT bert-tiny Offline sparse-int4-d0.5 performance" in out
    (folder,) = tmp_path.glob("*sparse-int4-d0.5_performance")
    described = (folder / "run.json").read_text()
    assert "weight density 0.5 (4x4" in described and "vectors of 32" in described
    code, out, err = run_cli([*base, "--mode", "accuracy", "--act-clip", "octav"], capsys)
    assert code == 0, err
    assert '"f1"' in out and "synthetic data" in out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--density", "2"], r"density must be in \(0, 1\]"),
        (["--vector-size", "24"], "vector size 24 is not supported"),
        (["--act-clip", "median"], "unknown activation clipping 'median'"),
        (["--sparsity-pattern", "2:4", "--density", "0.25"], "fixes the density at 0.5"),
        (["--sparsity-pattern", "4x8"], "pattern '4x8' is not understood; use .*'4x4'"),
    ],
)
def test_bad_sparse_flags_fail_in_one_line(capsys, tmp_path, flags, message) -> None:
    args = ["run", "--model", "bert-tiny", "--backend", "sparse-int4", "--preset", "smoke",
            "--runs-dir", str(tmp_path), *flags]  # fmt: skip
    code, _, err = run_cli(args, capsys)
    assert code != 0
    assert len(err.strip().splitlines()) == 1, err
    assert re.search(message, err), err


def test_inspect_prints_every_kernel_layer(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["inspect", "--model", "bert-tiny", "--density", "0.25"], capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith("| layer | op | K | N | rows/sample | density | bits/weight")
    assert len(lines) == 2 + 13 + 1  # header, 13 weight layers (2 x 6 + qa_outputs), total
    assert "0.2500" in lines[-1] and "weights stored in" in err


def test_sparsity_table_writes_markdown_and_csv(capsys, tmp_path) -> None:
    args = ["sparsity-table", "--model", "bert-tiny", "--dataset-count", "8",
            "--densities", "1,0.5", "--out", str(tmp_path / "table"),
            "--runs-dir", str(tmp_path / "runs")]  # fmt: skip
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    rows = (tmp_path / "table" / "table.csv").read_text().splitlines()
    assert rows[0].startswith("backend,density,accuracy,% of FP32")
    assert [row.split(",")[1] for row in rows[1:]] == ["fp32", "1", "0.5"]
    fp32 = float(rows[1].split(",")[2])
    assert fp32 == pytest.approx(100.0)  # synthetic answers are the FP32 predictions
    assert "Synthetic data" in (tmp_path / "table" / "table.md").read_text()


def test_sparsity_table_refuses_bad_densities(capsys, tmp_path) -> None:
    code, _, err = run_cli(
        ["sparsity-table", "--densities", "1,0", "--out", str(tmp_path / "t")], capsys
    )
    assert code != 0 and "every density must be in (0, 1]" in err


def test_bert_layers_run_natively_and_track_onnx_runtime(tmp_path, monkeypatch) -> None:
    from backends.sparse_int4 import native_steps, planner
    from harness.models.bert import BertConfig, build_bert

    path = tmp_path / "bert.onnx"
    build_bert(path, BertConfig("bert-test", 1, 64, 2, 128, vocab_size=500))
    block = onnx.load(str(path))
    ids = RNG.integers(1, 500, (2, 384)).astype(np.int64)
    mask = (np.arange(384)[None] < np.array([[384], [100]])).astype(np.int64)
    feeds = {"input_ids": ids, "input_mask": mask, "segment_ids": np.zeros_like(ids)}
    expected = ort.InferenceSession(block.SerializeToString()).run(None, feeds)
    native = GraphExecutor(block, SparsityOptions())
    kinds = [type(step).__name__ for step in native.plan.steps]
    assert kinds.count("Attention") == 1 and kinds.count("LayerNorm") == 3
    assert kinds.count("Segment") == 2  # the embeddings and mask before, the logits' split after
    assert [layer.gelu for layer in native.layers] == [False] * 4 + [True, False, False]
    got = native.run(feeds)
    sqnr = 10 * np.log10(
        np.sum(expected[0] ** 2) / np.sum((got["output_start_logits"] - expected[0]) ** 2)
    )
    assert sqnr > 12, sqnr  # W4A4 throughout, int8 attention
    # the int8 attention in place of ONNX Runtime's float attention changes little
    handlers = tuple(h for h in planner.HANDLERS if h is not native_steps.attention)
    monkeypatch.setattr(planner, "HANDLERS", handlers)
    floats = GraphExecutor(block, SparsityOptions()).run(feeds)["output_start_logits"]
    assert (
        10 * np.log10(np.sum(floats**2) / np.sum((got["output_start_logits"] - floats) ** 2)) > 20
    )
