"""The compiled sparse-int4 kernel against the numpy reference: bit for bit, on every path this
CPU runs (paths it cannot run are skipped with the reason), on ragged random shapes."""

from __future__ import annotations

import numpy as np
import pytest

from backends.sparse_int4 import kernel
from backends.sparse_int4.sparsity import prune
from backends.sparse_int4.vsquant import (
    activation_clip_scalars,
    quantize_activations,
    quantize_weight,
    reference_matmul,
)

PATHS = [
    pytest.param(
        path,
        marks=pytest.mark.skipif(
            path not in kernel.PATHS, reason=f"this CPU cannot run the {path} kernel path"
        ),
    )
    for path in kernel.ALL_PATHS
]


def random_case(rng: np.random.Generator, density: float, pattern: str = "unstructured"):
    m, k, n = (int(v) for v in rng.integers(1, (150, 300, 90)))
    vector = int(rng.choice([16, 32, 64]))
    signed = bool(rng.integers(0, 2))
    x = rng.standard_normal((m, k)).astype(np.float32) * rng.uniform(0.01, 10)
    if not signed:
        x = np.abs(x)
    w = rng.standard_normal((k, n)).astype(np.float32)
    w *= prune(w, density, pattern)
    return x, w, vector, signed


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("density", [1.0, 0.5, 0.125, 0.03])
def test_matmul_is_bit_identical_to_the_reference(path: str, density: float) -> None:
    rng = np.random.default_rng(int(density * 1000))
    for _ in range(6):
        x, w, vector, signed = random_case(rng, density)
        reference = reference_matmul(
            quantize_activations(x, vector, signed=signed), quantize_weight(w, vector)
        )
        a = kernel.quantize(x, vector, signed, path=path)
        for sparse in (False, True):
            packed = kernel.pack(quantize_weight(w, vector), sparse=sparse)
            for threads in (1, 2, 3):
                out = kernel.matmul(a, packed, threads=threads)
                assert out.tobytes() == reference.tobytes(), (x.shape, w.shape, sparse, threads)


@pytest.mark.parametrize("path", PATHS)
def test_bias_and_nchw_output_follow_the_reference_order(path: str) -> None:
    rng = np.random.default_rng(7)
    images, pixels, k, n = 3, 37, 50, 21
    x = rng.standard_normal((images * pixels, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    qw = quantize_weight(w, 16)
    reference = reference_matmul(quantize_activations(x, 16), qw) + bias  # float32 add
    expected = reference.reshape(images, pixels, n).transpose(0, 2, 1)
    for sparse in (False, True):
        packed = kernel.pack(qw, bias, sparse=sparse)
        out = kernel.matmul(kernel.quantize(x, 16, path=path), packed, pixels=pixels)
        assert out.shape == (images, n, pixels)
        assert out.tobytes() == np.ascontiguousarray(expected).tobytes()


@pytest.mark.parametrize("path", PATHS)
def test_quantize_matches_numpy_values_scales_and_gammas(path: str) -> None:
    rng = np.random.default_rng(3)
    for _ in range(10):
        x, _, vector, signed = random_case(rng, 1.0)
        x[0] = 0.0  # an all-zero row: gamma 0, values 0
        expected = kernel.from_reference(quantize_activations(x, vector, signed=signed), path)
        got = kernel.quantize(x, vector, signed, path=path, threads=2)
        assert np.array_equal(got.tiles, expected.tiles)  # padding rows and column zero too
        assert got.gamma.tobytes() == expected.gamma.tobytes()


@pytest.mark.parametrize("path", PATHS)
def test_quantize_with_octav_clip_scalars_matches_numpy(path: str) -> None:
    x = np.random.default_rng(4).laplace(size=(40, 100)).astype(np.float32)
    expected = kernel.from_reference(quantize_activations(x, 16, "octav"), path)
    got = kernel.quantize(x, 16, clip=activation_clip_scalars(x, 16), path=path)
    assert np.array_equal(got.tiles, expected.tiles)
    assert got.gamma.tobytes() == expected.gamma.tobytes()


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
    expected = kernel.from_reference(quantize_activations(x, 16), path)
    got = kernel.quantize(x, 16, path=path)
    assert got.folded()[0, :10].tolist() == [105, 0, 30, 30, 0, -30, -30, 90, -90, 45]  # q * 15
    assert np.array_equal(got.tiles, expected.tiles)


def numpy_im2col(x, kernel_size, strides, pads, dilations) -> np.ndarray:
    b, c, h, w = x.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel_size, strides, dilations
    padded = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    oh = (h + pads[0] + pads[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (w + pads[1] + pads[3] - dw * (kw - 1) - 1) // sw + 1
    rows = np.empty((b, oh, ow, kh, kw, c), np.float32)
    for ky in range(kh):
        for kx in range(kw):
            window = padded[:, :, ky * dh :, kx * dw :][:, :, : sh * oh : sh, : sw * ow : sw]
            rows[:, :, :, ky, kx, :] = window.transpose(0, 2, 3, 1)
    return rows.reshape(b * oh * ow, kh * kw * c)


@pytest.mark.parametrize(
    "geometry",
    [
        ((3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
        ((7, 7), (2, 2), (3, 3, 3, 3), (1, 1)),
        ((1, 1), (2, 2), (0, 0, 0, 0), (1, 1)),
        ((3, 2), (2, 1), (0, 1, 2, 0), (2, 1)),
    ],
)
def test_im2col_matches_numpy(geometry) -> None:
    x = np.random.default_rng(5).standard_normal((2, 5, 11, 9)).astype(np.float32)
    expected = numpy_im2col(x, *geometry)
    assert np.array_equal(kernel.im2col(x, *geometry, threads=2), expected)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    ("shape", "geometry", "vector"),
    [
        ((2, 5, 11, 9), ((3, 3), (1, 1), (1, 1, 1, 1), (1, 1)), 16),  # vectors span taps
        ((3, 3, 23, 19), ((7, 7), (2, 2), (3, 3, 3, 3), (1, 1)), 16),  # the ResNet stem
        ((2, 64, 12, 12), ((1, 1), (2, 2), (0, 0, 0, 0), (1, 1)), 32),
        ((1, 48, 16, 16), ((3, 3), (1, 1), (1, 1, 1, 1), (1, 1)), 16),  # contiguous row groups
        ((2, 5, 11, 9), ((3, 2), (2, 1), (0, 1, 2, 0), (2, 1)), 64),
    ],
)
def test_quantize_conv_is_quantize_of_im2col(path: str, shape, geometry, vector: int) -> None:
    x = np.random.default_rng(8).standard_normal(shape).astype(np.float32)
    x[0, :, :2] = 0.0  # rows whose windows hold only zeros and padding
    expected = kernel.from_reference(quantize_activations(numpy_im2col(x, *geometry), vector), path)
    for threads in (1, 3):
        got = kernel.quantize_conv(x, *geometry, vector, path=path, threads=threads)
        assert np.array_equal(got.tiles, expected.tiles)
        assert got.gamma.tobytes() == expected.gamma.tobytes()


def test_sparse_layout_pairs_kept_weights_within_blocks() -> None:
    rng = np.random.default_rng(6)
    k, n = 2 * kernel.BLOCK + 40, 2 * kernel.GROUP + 5  # a short last block and channel group
    w = rng.standard_normal((k, n)).astype(np.float32)
    qw = quantize_weight(w * prune(w, 0.125), 16)
    packed = kernel.pack(qw)
    assert packed.sparse
    kept = qw.q != 0
    blocks = np.add.reduceat(kept, np.arange(0, k, kernel.BLOCK), axis=0)  # [blocks, N]
    assert packed.multiply_adds == int(((blocks + 1) // 2).sum())  # two kept weights per entry
    columns = packed.entries[:, 0]
    assert ((columns & 0xFFFF) // kernel.BLOCK == (columns >> 16) // kernel.BLOCK).all()
    assert not kernel.pack(quantize_weight(w, 16)).sparse


def test_mismatched_activations_are_refused() -> None:
    from harness.errors import UserError

    w = kernel.pack(quantize_weight(np.ones((32, 4), np.float32), 16))
    with pytest.raises(UserError, match="do not fit"):
        kernel.matmul(kernel.quantize(np.ones((2, 48), np.float32), 16), w)


def test_sparse_layout_refuses_k_beyond_its_16_bit_columns() -> None:
    from harness.errors import UserError

    w = np.zeros((kernel.MAX_K + 2, 1), np.float32)
    w[::9] = 1.0
    with pytest.raises(UserError, match="too long for the sparse kernel"):
        kernel.pack(quantize_weight(w, 16), sparse=True)
