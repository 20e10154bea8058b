"""The compiled sparse-int4 kernel against the numpy reference: bit for bit, on every path this
CPU runs (paths it cannot run are skipped with the reason), on ragged random shapes, every
pruning pattern and thread count."""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from backends.sparse_int4 import _kernel, kernel, packing, passes
from backends.sparse_int4.attention import reference_attention
from backends.sparse_int4.octav import sqnr_db
from backends.sparse_int4.reference import (
    epilogue,
    erf,
    gelu_erf,
    integer_accumulators,
    layer_norm,
    reference_conv,
    reference_matmul,
)
from backends.sparse_int4.sparsity import prune
from backends.sparse_int4.vsquant import (
    activation_clip_scalars,
    quantize_activations,
    quantize_weight,
    vector_index,
)
from harness.errors import UserError

PATHS = [
    pytest.param(
        path,
        marks=pytest.mark.skipif(
            path not in kernel.PATHS, reason=f"this CPU cannot run the {path} kernel path"
        ),
    )
    for path in kernel.ALL_PATHS
]
PATTERNS = [(1.0, "unstructured"), (0.5, "1x4"), (0.125, "1x4"), (0.125, "unstructured"),
            (0.125, "1:8"), (0.03, "1x4"), (0.125, "4x4"), (0.5, "4x4"), (0.125, "16x4"),
            (0.5, "16x4")]  # fmt: skip


def channel_major(rows: np.ndarray) -> np.ndarray:
    """[M, C] rows -> the kernel's [C, M]."""
    return np.ascontiguousarray(rows.T)


def planes_of(a: kernel.Activations) -> np.ndarray:
    """int32 [rows, C]: the folded values a kernel's planes hold for each image pixel (the
    signed offset removed), padding and slack left out."""
    hs, ws = a.padded_side
    h, w = a.side
    top, left = a.pads[:2]
    planes = a.planes[:, : a.images * hs * ws].reshape(-1, a.images, hs, ws, 4)
    inside = planes[:, :, top : top + h, left : left + w]
    values = inside.transpose(1, 2, 3, 0, 4).reshape(a.images * h * w, -1)[:, : a.channels]
    return values.astype(np.int32) - (packing.SIGNED_OFFSET if a.signed else 0)


def random_case(rng: np.random.Generator, density: float, pattern: str):
    m, n = (int(v) for v in rng.integers(1, (300, 90)))
    n = n if rng.integers(0, 2) else 16 * -(-n // 16)  # whole groups of 16: the AMX tiles
    k = 4 * int(rng.integers(1, 80)) if pattern == "1:8" else int(rng.integers(1, 300))
    k = k - k % 8 + 8 if pattern == "1:8" else k
    vector = int(rng.choice([16, 32, 64]))
    signed = bool(rng.integers(0, 2))
    x = rng.standard_normal((m, k)).astype(np.float32) * rng.uniform(0.01, 10)
    if not signed:
        x = np.abs(x)
    w = rng.standard_normal((k, n)).astype(np.float32)
    w *= prune(w, density, pattern)
    return x, w, vector, signed


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("density", "pattern"), PATTERNS)
def test_matmul_is_bit_identical_to_the_reference(path: str, density: float, pattern: str) -> None:
    rng = np.random.default_rng(int(density * 1000) + len(pattern))
    for _ in range(4):
        x, w, vector, signed = random_case(rng, density, pattern)
        bias = rng.standard_normal(w.shape[1]).astype(np.float32)
        qw = quantize_weight(w, vector)
        reference = reference_matmul(quantize_activations(x, vector, signed=signed), qw, bias)
        a = kernel.quantize(channel_major(x), vector, signed, path=path, threads=2)
        for sparse in (False, True):
            packed = packing.pack(qw, bias, sparse=sparse)
            for threads in (1, 2, 3):
                out = kernel.matmul(a, packed, path=path, threads=threads)
                assert out.T.tobytes() == reference.tobytes(), (x.shape, w.shape, sparse, threads)


GEOMETRIES = [  # NCHW input, kernel, strides, pads, dilations, vector size
    ((2, 5, 11, 9), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 16),  # channels not a multiple of 4
    ((3, 3, 23, 19), (7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 16),  # the ResNet stem
    ((2, 64, 12, 12), (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 32),  # a strided downsample
    ((1, 48, 16, 16), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 16),
    ((2, 20, 11, 9), (3, 2), (2, 1), (0, 1, 2, 0), (2, 1), 64),  # asymmetric, dilated
    ((1, 8, 13, 14), (3, 3), (3, 3), (1, 1, 1, 1), (1, 1), 16),  # a stride past 2
    ((2, 24, 7, 7), (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 16),  # implicit and dilated
    ((3, 64, 10, 10), (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 16),
    ((1, 64, 9, 9), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 16),  # a tap's planes are one AMX run
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("shape", "size", "strides", "pads", "dilations", "vector"), GEOMETRIES)
def test_conv_is_bit_identical_to_the_reference(
    path: str, shape, size, strides, pads, dilations, vector: int
) -> None:
    rng = np.random.default_rng(sum(shape))
    b, c, h, w = shape
    geometry = kernel.ConvGeometry(size, strides, pads, dilations)
    oh, ow = geometry.output_side((h, w))
    x = rng.standard_normal(shape).astype(np.float32)
    x[0, :, :2] = 0.0  # windows that hold only zeros and padding
    n = int(rng.integers(3, 40)) if c % 2 else 32  # odd channels: ragged outputs too
    weight = rng.standard_normal((size[0] * size[1] * c, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    residual = rng.standard_normal((b * oh * ow, n)).astype(np.float32)
    for signed in (True, False):
        image = x if signed else np.abs(x)
        rows = image.transpose(0, 2, 3, 1).reshape(-1, c)
        qa = quantize_activations(rows, vector, signed=signed, group_rows=h * w)
        a = kernel.quantize(
            channel_major(rows), vector, signed, images=b, side=(h, w), pads=pads,
            reach=kernel.conv_reach(geometry, (h, w)), path=path, threads=2,
        )  # fmt: skip
        assert a.gamma.tobytes() == qa.gamma.tobytes()
        for density, pattern in (
            (1.0, "unstructured"),
            (0.25, "1x4"),
            (0.25, "4x4"),
            (0.25, "16x4"),
        ):
            qw = quantize_weight(weight * prune(weight, density, pattern, c), vector, channels=c)
            expected = reference_conv(
                qa, qw, (h, w), size, strides, pads, dilations, bias, residual, relu=True
            )
            for sparse in (False, True):
                packed = packing.pack(qw, bias, sparse=sparse)
                for threads in (1, 3):
                    out = kernel.conv(
                        a, packed, geometry, residual=channel_major(residual), relu=True,
                        path=path, threads=threads,
                    )  # fmt: skip
                    assert out.T.tobytes() == expected.tobytes(), (signed, density, sparse)


@pytest.mark.parametrize("path", PATHS)
def test_quantized_planes_hold_the_reference_values(path: str) -> None:
    rng = np.random.default_rng(3)
    for c, vector, pads in ((21, 16, (1, 1, 1, 1)), (64, 32, (0, 0, 0, 0)), (3, 16, (3, 3, 3, 3))):
        rows = rng.standard_normal((2 * 5 * 6, c)).astype(np.float32)
        rows[:30] = 0.0  # an all-zero image: gamma 0, every value 0
        for signed in (True, False):
            data = rows if signed else np.abs(rows)
            expected = quantize_activations(data, vector, signed=signed, group_rows=30)
            got = kernel.quantize(
                channel_major(data), vector, signed, images=2, side=(5, 6), pads=pads,
                path=path, threads=3,
            )  # fmt: skip
            assert got.gamma.tobytes() == expected.gamma.tobytes()
            assert np.array_equal(planes_of(got), expected.folded())
            offset = packing.SIGNED_OFFSET if signed else 0  # padding and slack hold zeros
            outside = np.ones(got.planes.shape, bool)
            hs, ws = got.padded_side
            view = outside[:, : 2 * hs * ws].reshape(-1, 2, hs, ws, 4)
            view[:, :, pads[0] : pads[0] + 5, pads[1] : pads[1] + 6, :] = False
            channel = np.arange(got.planes.shape[0] * 4).reshape(-1, 1, 4) < c
            assert (got.planes[outside & channel[:, :, :]] == offset).all()


@pytest.mark.parametrize("path", PATHS)
def test_tokens_octav_clips_and_static_gammas_follow_the_reference(path: str) -> None:
    x = np.random.default_rng(4).laplace(size=(40, 100)).astype(np.float32)
    clip = activation_clip_scalars(x, 16)
    got = kernel.quantize(channel_major(x), 16, clip=channel_major(clip), path=path)
    expected = quantize_activations(x, 16, "octav")
    assert np.array_equal(planes_of(got), expected.folded())
    assert got.gamma.tobytes() == expected.gamma.tobytes()
    gamma = float(np.abs(x).max()) / 7 / 15 * 0.5  # half the range: the largest vectors clip
    fixed = kernel.quantize(channel_major(x), 16, images=4, side=(2, 5), gamma=gamma, path=path)
    assert np.array_equal(
        planes_of(fixed), quantize_activations(x, 16, group_rows=10, gamma=gamma).folded()
    )


@pytest.mark.parametrize("path", PATHS)
def test_quantize_rounds_ties_to_even_and_clamps_like_numpy(path: str) -> None:
    # Row 0's step is exactly 1 (max 7), so its values sit on ties; row 1 spans 1e30.
    x = np.array(
        [
            [7, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 6.5, -6.5, 3.49],
            [1e30, -1e30, 3, 0, 0, 0, 0, 0, 0, 0],
        ],
        np.float32,
    )
    got = planes_of(kernel.quantize(channel_major(x), 16, path=path))
    assert got[0].tolist() == [105, 0, 30, 30, 0, -30, -30, 90, -90, 45]  # q * 15
    assert np.array_equal(got, quantize_activations(x, 16).folded())


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize(
    ("c", "density", "pattern"),
    [(20, 0.25, "1x4"), (64, 0.125, "16x4")],  # 16x4: whole groups of 16, on AMX tiles there
)
@pytest.mark.parametrize("side", [3, 1])  # 1: a bottleneck's last 1x1, with a float16 shortcut
def test_epilogue_writes_the_next_layers_planes_and_half_floats(
    path: str, relu: bool, c: int, density: float, pattern: str, side: int
) -> None:
    rng = np.random.default_rng(5)
    b, h, w, n = 2, 7, 9, 48
    geometry = kernel.ConvGeometry((side, side), pads=(side // 2,) * 4)  # 3x3: rows with gaps
    x = np.abs(rng.standard_normal((c, b * h * w)).astype(np.float32))
    residual = None if side == 3 else rng.standard_normal((n, b * h * w)).astype(np.float16)
    weight = rng.standard_normal((side * side * c, n)).astype(np.float32)
    qw = quantize_weight(weight * prune(weight, density, pattern, c), 16, channels=c)
    a = kernel.quantize(x, 16, False, images=b, side=(h, w), pads=geometry.pads,
                        reach=kernel.conv_reach(geometry, (h, w)))  # fmt: skip
    reader = kernel.ConvGeometry((3, 3), pads=(1, 1, 1, 1))
    for sparse in (False, True):
        packed = packing.pack(qw, rng.standard_normal(n).astype(np.float32), sparse=sparse)
        out = kernel.conv(a, packed, geometry, residual=residual, relu=relu, path=path, threads=2)
        if residual is not None:
            qa = quantize_activations(channel_major(x), 16, signed=False, group_rows=h * w)
            expected_out = reference_conv(
                qa, qw, (h, w), (1, 1), bias=packed.bias,
                residual=channel_major(residual.astype(np.float32)), relu=relu,
            )  # fmt: skip
            assert out.T.tobytes() == expected_out.tobytes()
        gamma = float(np.abs(out).max()) / 15 / 15 * 0.7  # some vectors clip
        target = kernel.planes_for(
            b, (h, w), n, 16, not relu, reader.pads, kernel.conv_reach(reader, (h, w)), gamma
        )
        half = np.empty(out.shape, np.float16)
        kernel.conv(a, packed, geometry, residual=residual, relu=relu, out=half, target=target,
                    path=path, threads=3)  # fmt: skip
        assert half.tobytes() == out.astype(np.float16).tobytes()
        expected = quantize_activations(
            channel_major(out), 16, signed=not relu, group_rows=h * w, gamma=gamma
        )
        assert np.array_equal(planes_of(target), expected.folded())
        again = kernel.quantize(
            out, 16, not relu, images=b, side=(h, w), pads=reader.pads,
            reach=kernel.conv_reach(reader, (h, w)), gamma=gamma, path=path,
        )  # fmt: skip
        assert np.array_equal(again.planes, target.planes)
        only = kernel.conv(a, packed, geometry, residual=residual, relu=relu, floats=False,
                           target=target, path=path)  # fmt: skip
        assert only is None and np.array_equal(again.planes, target.planes)


def test_pruned_weights_keep_only_their_blocks() -> None:
    rng = np.random.default_rng(6)
    c, n = 70, 37  # a tap's last block of 2 channels
    weight = rng.standard_normal((9 * c, n)).astype(np.float32)
    mask = prune(weight, 0.125, "1x4", c)
    packed = packing.pack(quantize_weight(weight * mask, 16, channels=c))
    assert packed.sparse and packed.planes == 9 * 18
    block_of = vector_index(9 * c, c, 4)  # blocks of 4 channels of a tap, the last of 2
    kept = np.zeros((len(np.unique(block_of)), n), int)
    np.add.at(kept, block_of, mask.astype(int))
    sizes = np.bincount(block_of)[:, None]
    assert ((kept == 0) | (kept == sizes)).all()  # whole blocks or none
    assert packed.kept_blocks == int((kept > 0).sum())
    assert packed.ptr[-1] == packed.kept_blocks
    assert np.array_equal(np.diff(packed.ptr), (kept > 0).sum(axis=0))  # per channel
    assert not packing.pack(quantize_weight(weight, 16, channels=c)).sparse


def test_quad_pruned_weights_share_each_blocks_activations() -> None:
    rng = np.random.default_rng(7)
    c, n = 70, 37  # a short last quad of 1 channel
    weight = rng.standard_normal((9 * c, n)).astype(np.float32)
    mask = prune(weight, 0.125, "4x4", c)
    packed = packing.pack(quantize_weight(weight * mask, 16, channels=c))
    assert packed.sparse and packed.owners == 4
    assert len(packed.ptr) == -(-n // 4) + 1 and len(packed.wv) == 4 * packed.ptr[-1]
    planes = 9 * 18
    assert packed.kept_blocks == 4 * packed.ptr[-1] <= 4 * -(-n // 4) * round(planes / 8)
    own = quantize_weight(weight * prune(weight, 0.125, "1x4", c), 16, channels=c)
    assert packing.pack(own).owners == 1  # channels that keep their own blocks stay one per channel


def test_groups_of_16_keep_blocks_together_in_runs_of_tile_rows() -> None:
    rng = np.random.default_rng(8)
    c, n = 70, 48
    weight = rng.standard_normal((9 * c, n)).astype(np.float32)
    qw = quantize_weight(weight * prune(weight, 0.125, "16x4", c), 16, channels=c)
    packed = packing.pack(qw)
    assert packed.owners == 16 and len(packed.ptr) == n // 16 + 1
    blocks = round(9 * 18 / 8)  # 20: a run of 16 and a short run of 4 per group
    assert np.array_equal(np.diff(packed.ptr), [blocks] * 3)
    planes = np.zeros((n, 9 * 18, 4), np.int8)  # the folded weights by channel and plane
    planes.reshape(n, 9, 72)[:, :, :c] = qw.folded().T.reshape(n, 9, c)
    first = packed.wv[: 16 * blocks].view(np.int8)
    run = first[: 16 * 16 * 4].reshape(16, 16, 4)  # [channel][block][4]
    assert np.array_equal(run, planes[:16, packed.idx[:16]])
    short = first[16 * 16 * 4 :].reshape(16, 4, 4)
    assert np.array_equal(short, planes[:16, packed.idx[16:20]])
    part = weight[:, :40]
    ragged = quantize_weight(part * prune(part, 0.125, "16x4", c), 16, channels=c)
    assert packing.pack(ragged).owners == 4  # not whole groups: quads (16x4 keeps quads too)


@pytest.mark.parametrize(
    ("side", "window"),
    [
        ((11, 9), kernel.ConvGeometry((3, 3), (2, 2), (1, 1, 1, 1))),  # ResNet's
        ((7, 8), kernel.ConvGeometry((2, 3), (1, 1), (0, 1, 1, 0))),
        ((12, 13), kernel.ConvGeometry((3, 2), (3, 3), (1, 0, 1, 1), (2, 2))),
    ],
)
def test_max_pool_equals_onnx_runtime(side: tuple[int, int], window: kernel.ConvGeometry) -> None:
    x = np.random.default_rng(7).standard_normal((2, 5, *side)).astype(np.float32)
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=list(window.kernel),
                            strides=list(window.strides), pads=list(window.pads),
                            dilations=list(window.dilations))  # fmt: skip
    graph = helper.make_graph(
        [node], "pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    expected = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    got = passes.max_pool(np.ascontiguousarray(x.transpose(1, 0, 2, 3).reshape(5, -1)), 2,
                          side, window, threads=2)  # fmt: skip
    oh, ow = window.output_side(side)
    assert np.array_equal(got.reshape(5, 2, oh, ow).transpose(1, 0, 2, 3), expected)


def test_mismatched_or_malformed_inputs_are_refused() -> None:
    w = packing.pack(quantize_weight(np.ones((32, 4), np.float32), 16))
    with pytest.raises(UserError, match="do not fit"):
        kernel.matmul(kernel.quantize(np.ones((48, 2), np.float32), 16), w)
    with pytest.raises(UserError, match="not 2 images"):
        kernel.quantize(np.ones((8, 10), np.float32), 16, images=2, side=(2, 2))
    with pytest.raises(ValueError, match="row map out of range"):
        _kernel.check_rows(np.array([0, 5, -1], np.int64), 5)
    with pytest.raises(ValueError, match="kept blocks out of range"):
        _kernel.check_blocks(np.array([0, 1], np.int32), np.array([7], np.uint16), 4, 1)


def test_k_that_could_overflow_the_accumulators_is_refused() -> None:
    w = np.zeros((4 * packing.LONGEST_PLANES + 4, 1), np.float32)
    w[::9] = 1.0
    with pytest.raises(UserError, match="too long for the kernel's int32 accumulators"):
        packing.pack(quantize_weight(w, 16))


def test_scales_wider_than_the_kernels_bytes_are_refused() -> None:
    w = np.random.default_rng(3).standard_normal((32, 4)).astype(np.float32)
    with pytest.raises(UserError, match="6-bit vector scales fold weights past 8 bits"):
        packing.pack(quantize_weight(w, 16, scale_bits=6))
    with pytest.raises(UserError, match="5-bit vector scales fold activations past a byte"):
        kernel.quantize(np.ones((32, 4), np.float32), 16, scale_bits=5)


@pytest.mark.parametrize("path", PATHS)
def test_gelu_epilogue_and_layer_norm_follow_their_definitions(path: str) -> None:
    rng = np.random.default_rng(8)
    x = rng.standard_normal((77, 96)).astype(np.float32)
    qa, qw = quantize_activations(x, 16), quantize_weight(rng.standard_normal((96, 40)), 16)
    bias = rng.standard_normal(40).astype(np.float32)
    residual = rng.standard_normal((77, 40)).astype(np.float32)
    acc = integer_accumulators(qa, qw)
    expected = epilogue(acc, qa.row_gamma, qw.gamma, bias, residual, gelu=True)
    a = kernel.quantize(channel_major(x), 16, path=path)
    for sparse in (False, True):
        packed = packing.pack(qw, bias, sparse=sparse)
        out = kernel.matmul(a, packed, residual=channel_major(residual), gelu=True, path=path)
        assert out.T.tobytes() == expected.tobytes()
    rows = rng.standard_normal((300, 64)).astype(np.float32) * 3 + 1
    scale, shift = (
        rng.standard_normal(64).astype(np.float32),
        rng.standard_normal(64).astype(np.float32),
    )
    got = passes.layer_norm(channel_major(rows), scale, shift, 1e-12, threads=3)
    assert got.tobytes() == layer_norm(channel_major(rows), scale, shift, 1e-12).tobytes()


def test_erf_and_gelu_are_accurate() -> None:
    x = np.linspace(-6, 6, 20001).astype(np.float32)
    exact = np.array([math.erf(v) for v in x.astype(np.float64)])
    assert np.abs(erf(x) - exact).max() < 1e-6
    gelu = np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(np.float64)])
    assert np.abs(gelu_erf(x) - gelu).max() < 2e-6


@pytest.mark.parametrize("path", PATHS)
def test_attention_is_bit_identical_to_its_definition(path: str) -> None:
    rng = np.random.default_rng(9)
    for heads, dim, batch, seq in ((2, 8, 2, 37), (3, 16, 1, 130)):
        q, k, v = (
            rng.standard_normal((heads * dim, batch * seq)).astype(np.float32) for _ in "qkv"
        )
        mask = np.where(rng.random((batch, seq)) < 0.2, -10000.0, 0.0).astype(np.float32)
        expected = reference_attention(q, k, v, mask, heads, batch, 1 / math.sqrt(dim))
        for threads in (1, 3):
            got = passes.attention(q, k, v, mask, heads, batch, 1 / math.sqrt(dim), path=path,
                                   threads=threads)  # fmt: skip
            assert got.tobytes() == expected.tobytes()


def test_int8_attention_tracks_float_attention() -> None:
    rng = np.random.default_rng(10)
    heads, dim, seq = 4, 64, 384
    q, k, v = (rng.standard_normal((heads * dim, seq)).astype(np.float32) for _ in "qkv")
    got = passes.attention(q, k, v, None, heads, 1, 1 / 8)
    expected = np.empty_like(got)
    for h in range(heads):
        part = slice(h * dim, (h + 1) * dim)
        scores = q[part].T.astype(np.float64) @ k[part] / 8
        p = np.exp(scores - scores.max(axis=1, keepdims=True))
        expected[part] = v[part] @ (p / p.sum(axis=1, keepdims=True)).T
    assert sqnr_db(expected, got) > 30  # measured 37 dB: 8-bit Q, K, V and probabilities


@pytest.mark.parametrize("path", PATHS)
def test_epilogue_quantizes_tokens_with_a_gamma_each(path: str) -> None:
    rng = np.random.default_rng(11)
    m, k, n = 300, 96, 70  # a short last tile, a ragged last vector of channels
    x = rng.standard_normal((k, m)).astype(np.float32)
    weight = rng.standard_normal((k, n)).astype(np.float32)
    qw = quantize_weight(weight * prune(weight, 0.25, "1x4"), 16)
    a = kernel.quantize(x, 16, path=path)
    for sparse in (False, True):
        packed = packing.pack(qw, rng.standard_normal(n).astype(np.float32), sparse=sparse)
        out = kernel.matmul(a, packed, gelu=True, path=path)
        expected = quantize_activations(channel_major(out), 32)
        for threads in (1, 3):
            target = kernel.planes_for(m, (1, 1), n, 32)  # no gamma: each token's own
            kernel.conv(a, packed, kernel.POINTWISE, gelu=True, floats=False, target=target,
                        path=path, threads=threads)  # fmt: skip
            assert target.gamma.tobytes() == expected.gamma.tobytes()
            assert np.array_equal(planes_of(target), expected.folded())


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("m", [8192, 8200])  # 8200: a ragged last tile, channels off the lines
def test_outputs_larger_than_the_caches_are_stored_past_them_unchanged(path: str, m: int) -> None:
    # 16 MB of floats, 8 MB of halves and 4 MB of planes: each past any core's L2, so each is
    # written with non-temporal stores (halves a whole line at a time where a channel's rows
    # allow), and must hold what the reference computes.
    rng = np.random.default_rng(13)
    k, n = 64, 512
    x = rng.standard_normal((m, k)).astype(np.float32)
    weight = rng.standard_normal((k, n)).astype(np.float32)
    qw = quantize_weight(weight * prune(weight, 0.25, "4x4"), 16)
    bias = rng.standard_normal(n).astype(np.float32)
    reference = reference_matmul(quantize_activations(x, 16, signed=True), qw, bias)
    a = kernel.quantize(channel_major(x), 16, True, path=path)
    packed = packing.pack(qw, bias)
    out = kernel.matmul(a, packed, path=path, threads=2)
    assert out.T.tobytes() == reference.tobytes()
    half = kernel.aligned_empty(out.shape, np.float16)
    target = kernel.planes_for(m, (1, 1), n, 16)
    kernel.conv(a, packed, kernel.POINTWISE, out=half, target=target, path=path, threads=2)
    assert half.tobytes() == out.astype(np.float16).tobytes()
    expected = quantize_activations(channel_major(out), 16)
    assert np.array_equal(planes_of(target), expected.folded())
