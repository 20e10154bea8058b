"""sparse-int4 kernel and backend against ONNX Runtime int8, side by side in one run.

    python benchmarks/sparse_int4.py [--parts peak,gemm,resnet50,bert] [--repeats 5]

- peak: the register-only multiply-accumulate rate of this machine on all threads: the int16
  vpmaddwd + vpaddd pair the kernel uses, and the exact int8 sequence (vpmaddubsw, vpmaddwd by
  ones, vpaddd: the work of one VNNI vpdpbusd, which AVX2-only CPUs lack), the int8 peak.
- gemm: dense-equivalent TOPS (2·M·K·N / time) of ORT's MatMulInteger and of the kernel at
  densities 1 and 1/8 (unstructured and 1:8) on BERT-Large's FFN shape and ResNet-50 conv shapes
  (batch 8, rows quantized straight from the NCHW input), activation quantization included
  (and once without it, as ORT's MatMulInteger takes uint8 input), measured interleaved, each
  case after a short busy wait (see settle), and the median kept; with peak, density 1 as a
  share of the int8 peak.
- resnet50 / bert: end-to-end batches of the built-in models, onnxruntime int8 (static QDQ,
  dynamic for BERT) against sparse-int4 at the chosen density, with the sparse-int4 time split
  between kernel layers and ONNX Runtime segments.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from backends.sparse_int4 import _kernel, kernel
from backends.sparse_int4.executor import GraphExecutor
from backends.sparse_int4.layers import SparsityOptions
from backends.sparse_int4.sparsity import prune
from backends.sparse_int4.vsquant import quantize_weight

GEMM_SHAPES = {  # name: (NCHW input of a stride-1 "same" convolution, kernel side, N)
    "bert-large FFN 384x1024x4096": ((384, 1024, 1, 1), 1, 4096),  # rows: 384 one-pixel images
    "resnet50 layer1 3x3 (b8)": ((8, 64, 56, 56), 3, 64),
    "resnet50 layer2 3x3 (b8)": ((8, 128, 28, 28), 3, 128),
    "resnet50 layer3 3x3 (b8)": ((8, 256, 14, 14), 3, 256),
    "resnet50 layer4 3x3 (b8)": ((8, 512, 7, 7), 3, 512),
    "resnet50 layer2 1x1 expand (b8)": ((8, 128, 28, 28), 1, 512),
    "resnet50 layer3 1x1 reduce (b8)": ((8, 1024, 14, 14), 1, 256),
}


def median_time(function: Callable[[], object], repeats: int) -> float:
    settle()
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def settle(seconds: float = 0.1) -> None:
    """Busy-waits before a case is timed. ONNX Runtime's workers spin for some 50 ms after each
    run; on 2 cores that took a core from whatever ran next (the kernel right after ORT's
    MatMulInteger ran 1.7-2x slower). Sleeping instead would let the cores idle down, which
    slows the next case as well."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def session(model: onnx.ModelProto | str, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    data = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


PEAK_KINDS = {  # _kernel.peak kind: what it measures
    "int16 vpmaddwd+vpaddd (the kernel's instructions)": 0,
    "int8 exact u8 x s8 -> int32 (one VNNI vpdpbusd's work)": 1,
}


def peak(threads: int) -> dict[str, float]:
    """Register-only multiply-accumulate peaks in TOPS (2 ops per MAC) on ``threads``."""
    iterations = 50_000_000
    tops = {}
    for name, kind in PEAK_KINDS.items():
        _kernel.peak(kind, iterations // 10, threads)  # warm up the clocks
        start = time.perf_counter()
        macs = _kernel.peak(kind, iterations, threads)
        tops[name] = 2 * macs / (time.perf_counter() - start) / 1e12
        print(f"peak {name}: {tops[name]:.3f} TOPS on {threads} threads")
    return tops


def ort_matmul_integer(m: int, k: int, n: int, threads: int) -> Callable[[], object]:
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.integers(-100, 100, (k, n)).astype(np.int8), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w"], ["y"])],
        "gemm",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    s = session(model, threads)
    a = rng.integers(0, 255, (m, k)).astype(np.uint8)
    return lambda: s.run(None, {"a": a})


def gemm(threads: int, repeats: int, int8_peak: float | None) -> None:
    rng = np.random.default_rng(1)
    for name, (shape, side, n) in GEMM_SHAPES.items():
        x = np.abs(rng.standard_normal(shape).astype(np.float32))
        m, k = shape[0] * shape[2] * shape[3], shape[1] * side * side
        w = rng.standard_normal((k, n)).astype(np.float32)

        def quantize(x=x, side=side) -> kernel.Activations:  # conv rows straight from NCHW
            pads = (side // 2,) * 4
            return kernel.quantize_conv(x, (side, side), pads=pads, signed=False, threads=threads)

        cases: dict[str, Callable[[], object]] = {"ort int8": ort_matmul_integer(m, k, n, threads)}
        for label, density, pattern in (
            ("kernel d=1", 1.0, "unstructured"),
            ("kernel d=1/8", 0.125, "unstructured"),
            ("kernel d=1/8 1:8", 0.125, "1:8"),
        ):
            packed = kernel.pack(quantize_weight(w * prune(w, density, pattern), 16))

            def run(packed=packed, quantize=quantize) -> object:
                return kernel.matmul(quantize(), packed, threads=threads)

            cases[label] = run
        # ORT's MatMulInteger takes activations already in uint8: the same GEMM without the
        # kernel's per-vector activation quantization, for a like-for-like kernel comparison.
        a = quantize()
        sparse = kernel.pack(quantize_weight(w * prune(w, 0.125), 16))
        cases["GEMM only d=1/8"] = lambda a=a, w=sparse: kernel.matmul(a, w, threads=threads)
        times = {label: [] for label in cases}
        for _ in range(repeats):  # interleaved, so machine noise hits every case alike
            for label, function in cases.items():
                times[label].append(median_time(function, 1))
        tops = {label: 2 * m * k * n / statistics.median(t) / 1e12 for label, t in times.items()}
        cells = ", ".join(f"{label} {value:.3f}" for label, value in tops.items())
        print(f"{name}: TOPS {cells}")
        share = ""
        if int8_peak:
            share = f", d=1 at {tops['kernel d=1'] / int8_peak:.0%} of the int8 peak"
        print(
            f"  d=1/8 vs ort int8 {tops['kernel d=1/8'] / tops['ort int8']:.2f}x, "
            f"vs own d=1 {tops['kernel d=1/8'] / tops['kernel d=1']:.2f}x; 1:8 vs ort "
            f"{tops['kernel d=1/8 1:8'] / tops['ort int8']:.2f}x; GEMM only d=1/8 vs ort "
            f"{tops['GEMM only d=1/8'] / tops['ort int8']:.2f}x{share}"
        )


def end_to_end(model_name: str, density: float, threads: int, repeats: int) -> None:
    from backends.base import ModelHandle
    from backends.onnxruntime import quantize_int8
    from harness.runner import prepare_model
    from harness.spec import RunSpec
    from harness.workloads import get_workload

    spec = RunSpec(model=model_name)
    workload = get_workload(model_name)
    path = prepare_model(spec)
    data = workload.open_data(spec.data_source, path, lambda _: None)
    handle = ModelHandle(
        path, model_name, tuple(t.name for t in workload.inputs), workload.outputs,
        calibration=data.calibration, int8_activations=workload.int8_activations,
    )  # fmt: skip
    batch = data.load(np.arange(8 if model_name == "resnet50" else 4))
    dense = session(str(quantize_int8(handle, workload.int8_activations)), threads)
    sparse = GraphExecutor(onnx.load(str(path)), SparsityOptions(density), threads)
    split: dict[str, float] = {}
    times: dict[str, list[float]] = {"ort int8": [], "sparse-int4": []}
    for _ in range(repeats):
        times["ort int8"].append(median_time(lambda: dense.run(None, batch), 1))
        times["sparse-int4"].append(median_time(lambda: sparse.run(batch, split), 1))
    ort_s, ours = (statistics.median(times[k]) for k in ("ort int8", "sparse-int4"))
    share = {part: seconds / sum(split.values()) for part, seconds in split.items()}
    print(
        f"{model_name} batch {len(next(iter(batch.values())))}, density {density:g}: ort int8 "
        f"{ort_s * 1e3:.0f} ms, sparse-int4 {ours * 1e3:.0f} ms -> {ort_s / ours:.2f}x; "
        "sparse-int4 split " + ", ".join(f"{p} {v:.0%}" for p, v in share.items())
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="peak,gemm,resnet50")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--density", type=float, default=0.125)
    parser.add_argument("--threads", type=int, default=kernel.default_threads())
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    print(f"kernel paths on this CPU: {', '.join(kernel.PATHS)}; threads {args.threads}")
    peaks = peak(args.threads) if "peak" in parts else {}
    if "gemm" in parts:
        int8_peak = next((tops for name, tops in peaks.items() if name.startswith("int8")), None)
        gemm(args.threads, args.repeats, int8_peak)
    for model_name in ("resnet50", "bert-large", "bert-tiny"):
        if model_name in parts or (model_name == "bert-large" and "bert" in parts):
            end_to_end(model_name, args.density, args.threads, args.repeats)


if __name__ == "__main__":
    main()
