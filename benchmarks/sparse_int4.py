"""sparse-int4 kernel and backend against ONNX Runtime int8, side by side in one run.

    python benchmarks/sparse_int4.py [--parts peak,gemm,resnet50,bert] [--repeats 5]
                                     [--path amx|avx512vnni|avxvnni|avx2|portable] [--threads N]

- peak: the register-only multiply-accumulate rate of each kernel path's instruction on all
  threads: tdpbsud on AMX tiles, vpdpbusd on zmm (AVX-512 VNNI) and ymm (AVX-VNNI), the int16
  vpmaddwd + vpaddd pair (AVX2, whose u8 x s8 products are exact only as int16 pairs).
- gemm: dense-equivalent TOPS (2·M·K·N / time) of ORT's MatMulInteger and of the kernel at
  density 1, and 1/8 in the 4x4 (fastest), 1x4, unstructured and 1:8 patterns, on BERT-Large's
  FFN shape and ResNet-50 convolution shapes (batch 8; stride-1 convolutions read the planes'
  shifted rows), the kernel's activation quantization included (and once without, as
  MatMulInteger is handed uint8), measured interleaved, each case after a short busy wait (see
  settle); with the peak, density 1 as a share of the path's instruction peak.
- resnet50 / bert: end-to-end batches of the built-in models (8 images, 4 sequences), onnxruntime
  int8 (static QDQ; dynamic for BERT) against sparse-int4 at 1/8 in the 4x4 and 1x4 patterns,
  with each backend's time split: sparse-int4 between kernel layers, its other native steps and
  ONNX Runtime segments; ONNX Runtime between its weight layers and the rest (its profiler).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from backends.sparse_int4 import _kernel, kernel, packing
from backends.sparse_int4.executor import GraphExecutor
from backends.sparse_int4.layers import SparsityOptions
from backends.sparse_int4.sparsity import prune
from backends.sparse_int4.vsquant import quantize_weight
from harness.machine import machine

GEMM_SHAPES = {  # name: (NCHW input of a "same" convolution, kernel side, stride, N)
    "bert-large FFN 384x1024x4096": ((384, 1024, 1, 1), 1, 1, 4096),  # rows: 384 tokens
    "resnet50 layer1 3x3 (b8)": ((8, 64, 56, 56), 3, 1, 64),
    "resnet50 layer2 3x3 (b8)": ((8, 128, 28, 28), 3, 1, 128),
    "resnet50 layer3 3x3 (b8)": ((8, 256, 14, 14), 3, 1, 256),
    "resnet50 layer4 3x3 (b8)": ((8, 512, 7, 7), 3, 1, 512),
    "resnet50 layer2 1x1 expand (b8)": ((8, 128, 28, 28), 1, 1, 512),
    "resnet50 layer3 1x1 reduce (b8)": ((8, 1024, 14, 14), 1, 1, 256),
}
CASES = (  # label, density, pattern
    ("kernel d=1", 1.0, "unstructured"),
    ("kernel d=1/8 16x4", 0.125, "16x4"),
    ("kernel d=1/8 4x4", 0.125, "4x4"),
    ("kernel d=1/8 1x4", 0.125, "1x4"),
    ("kernel d=1/8 unstructured", 0.125, "unstructured"),
    ("kernel d=1/8 1:8", 0.125, "1:8"),
)
FAST = "kernel d=1/8 16x4"  # the fast pattern (AMX tiles where the CPU has them, else as 4x4)
GEMM_ONLY = "GEMM only d=1/8 16x4"  # handed quantized activations, as MatMulInteger is uint8
PATTERNS = ("16x4", "4x4", "1x4")  # end to end at density 1/8
PEAKS = {  # kernel path: (_kernel.peak kind, its instruction)
    "amx": (3, "tdpbsud"),
    "avx512vnni": (2, "vpdpbusd zmm"),
    "avxvnni": (1, "vpdpbusd ymm"),
    "avx2": (0, "vpmaddwd + vpaddd ymm"),
}
# ONNX Runtime ops that multiply by a model's weights, for its time split.
ORT_WEIGHT_OPS = frozenset(
    {"QLinearConv", "QGemm", "QLinearMatMul", "MatMulInteger", "MatMulIntegerToFloat",
     "DynamicQuantizeMatMul", "ConvInteger", "Conv", "FusedConv", "Gemm", "FusedGemm"}
)  # fmt: skip


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
    run; on 2 cores that took a core from whatever ran next. Sleeping instead would let the
    cores idle down, which slows the next case as well."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def session(model: onnx.ModelProto | str, threads: int, profile: str = "") -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = profile
    data = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def peak(threads: int) -> dict[str, float]:
    """Register-only multiply-accumulate peaks in TOPS (2 ops per MAC) of each path here."""
    tops = {}
    for path, (kind, instruction) in PEAKS.items():
        if path not in kernel.PATHS:
            print(f"peak {instruction}: this CPU has no {path}")
            continue
        iterations = 20_000_000
        _kernel.peak(kind, iterations // 10, threads)  # warm up the clocks
        start = time.perf_counter()
        macs = _kernel.peak(kind, iterations, threads)
        tops[path] = 2 * macs / (time.perf_counter() - start) / 1e12
        print(f"peak {instruction} ({path}): {tops[path]:.3f} TOPS on {threads} threads")
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
    s = session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), threads)
    a = rng.integers(0, 255, (m, k)).astype(np.uint8)
    return lambda: s.run(None, {"a": a})


def gemm(threads: int, repeats: int, path: str, path_peak: float | None) -> None:
    rng = np.random.default_rng(1)
    for name, ((b, c, h, w), side, stride, n) in GEMM_SHAPES.items():
        tokens = side == 1 and h == 1
        geometry = kernel.ConvGeometry((side, side), (stride, stride), (side // 2,) * 4)
        oh, ow = geometry.output_side((h, w))
        m, k = b * oh * ow, c * side * side
        x = np.abs(rng.standard_normal((c, b * h * w)).astype(np.float32))  # post-ReLU
        images = {} if tokens else {"images": b, "side": (h, w), "pads": geometry.pads,
                                    "reach": kernel.conv_reach(geometry, (h, w))}  # fmt: skip

        def quantize(x=x, images=images) -> kernel.Activations:
            return kernel.quantize(x, 16, False, path=path, threads=threads, **images)

        weight = rng.standard_normal((k, n)).astype(np.float32)
        out = kernel.aligned_empty((n, m), np.float32)
        cases: dict[str, Callable[[], object]] = {"ort int8": ort_matmul_integer(m, k, n, threads)}
        packed = {}
        for label, density, pattern in CASES:
            mask = prune(weight, density, pattern, None if tokens else c)
            qw = quantize_weight(weight * mask, 16, channels=None if tokens else c)
            packed[label] = packing.pack(qw)

            def run(p=packed[label], quantize=quantize, g=geometry, out=out) -> object:
                return kernel.conv(quantize(), p, g, out=out, path=path, threads=threads)

            cases[label] = run
        a = quantize()
        cases[GEMM_ONLY] = lambda a=a, p=packed[FAST], g=geometry, out=out: kernel.conv(
            a, p, g, out=out, path=path, threads=threads
        )
        times: dict[str, list[float]] = {label: [] for label in cases}
        for _ in range(repeats):  # interleaved, so machine noise hits every case alike
            for label, function in cases.items():
                times[label].append(median_time(function, 1))
        tops = {label: 2 * m * k * n / statistics.median(t) / 1e12 for label, t in times.items()}
        print(f"{name}: TOPS " + ", ".join(f"{label} {v:.3f}" for label, v in tops.items()))
        share = (
            f", d=1 at {tops['kernel d=1'] / path_peak:.0%} of the {path} peak" if path_peak else ""
        )
        versus = ", ".join(
            f"{label.removeprefix('kernel ')} {tops[label] / tops['ort int8']:.2f}x"
            for label in (*(case[0] for case in CASES[1:]), GEMM_ONLY)
        )
        print(
            f"  vs ort int8: {versus}; {FAST.removeprefix('kernel ')} vs own d=1 "
            f"{tops[FAST] / tops['kernel d=1']:.2f}x{share}"
        )


def ort_split(path: str, feeds: dict[str, np.ndarray], threads: int) -> dict[str, float]:
    """Shares of ONNX Runtime's node time in weight layers and in the rest, from its profiler."""
    with tempfile.TemporaryDirectory() as folder:
        s = session(path, threads, profile=os.path.join(folder, "ort"))
        for _ in range(2):
            s.run(None, feeds)
        with open(s.end_profiling()) as file:
            events = json.load(file)
    times = {"weight layers": 0.0, "other ops": 0.0}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            kind = "weight layers" if event["args"]["op_name"] in ORT_WEIGHT_OPS else "other ops"
            times[kind] += event["dur"]
    total = sum(times.values()) or 1.0
    return {part: value / total for part, value in times.items()}


def end_to_end(model_name: str, threads: int, repeats: int, path: str) -> None:
    from backends.onnxruntime import quantize_int8
    from harness.runner import prepare_model
    from harness.spec import RunSpec
    from harness.workloads import get_workload

    spec = RunSpec(model=model_name)
    workload = get_workload(model_name)
    model_path = prepare_model(spec)
    data = workload.open_data(spec.data_source, model_path, lambda _: None)
    handle = workload.model_handle(model_path, data.calibration)
    batch = data.load(np.arange(8 if model_name == "resnet50" else 4))
    int8_path = str(quantize_int8(handle, workload.int8_activations))
    dense = session(int8_path, threads)
    model = onnx.load(str(model_path))
    sparse = {
        pattern: GraphExecutor(
            model, SparsityOptions(0.125, pattern), threads, path, calibration=data.calibration
        )
        for pattern in PATTERNS
    }
    splits: dict[str, dict[str, float]] = {pattern: {} for pattern in PATTERNS}
    times: dict[str, list[float]] = {"ort int8": [], **{pattern: [] for pattern in PATTERNS}}
    for _ in range(repeats):  # interleaved, so machine noise hits every case alike
        times["ort int8"].append(median_time(lambda: dense.run(None, batch), 1))
        for pattern, executor in sparse.items():
            split = splits[pattern]
            times[pattern].append(median_time(lambda e=executor, s=split: e.run(batch, s), 1))
    ort_s = statistics.median(times["ort int8"])
    ort_share = ort_split(int8_path, batch, threads)
    print(
        f"{model_name} batch {len(next(iter(batch.values())))}: ort int8 {ort_s * 1e3:.0f} ms, "
        "split " + ", ".join(f"{p} {v:.0%}" for p, v in ort_share.items())
    )
    for pattern in PATTERNS:
        ours, split = statistics.median(times[pattern]), splits[pattern]
        share = {part: seconds / sum(split.values()) for part, seconds in split.items()}
        print(
            f"  sparse-int4 d=1/8 {pattern}: {ours * 1e3:.0f} ms -> {ort_s / ours:.2f}x ort int8 "
            f"(best of {repeats}: {min(times['ort int8']) / min(times[pattern]):.2f}x); split "
            + ", ".join(f"{p} {v:.0%}" for p, v in share.items())
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="peak,gemm,resnet50,bert")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=kernel.default_threads())
    parser.add_argument("--path", default=kernel.PATHS[0], choices=kernel.PATHS)
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    print(
        f"CPU: {machine().cpu_model}; kernel paths here: {', '.join(kernel.PATHS)}; measuring "
        f"{args.path} on {args.threads} threads; onnxruntime {ort.__version__}"
    )
    peaks = peak(args.threads) if "peak" in parts else {}
    if "gemm" in parts:
        gemm(args.threads, args.repeats, args.path, peaks.get(args.path))
    for model_name in ("resnet50", "bert-large", "bert-tiny"):
        if model_name in parts or (model_name == "bert-large" and "bert" in parts):
            end_to_end(model_name, args.threads, args.repeats, args.path)


if __name__ == "__main__":
    main()
