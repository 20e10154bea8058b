"""How the built-in synthetic references stand up to quantization: agreement with their FP32
outputs, beside the FP32 decisions' margins.

For each model and reference (the dense built-in model and the ones pruned when built, e.g.
1/8 in the 1x4 pattern), on that reference's own built-in data set, labelled by its own FP32
outputs: the accuracy (= agreement with FP32) of ONNX Runtime int8 and of sparse-int4 W4A4
(vectors of 16; weight clipping "auto": Octav on dense weights, max on pruned ones), scored
exactly as an accuracy run scores them; and the FP32 margins: top-1 minus top-2 logit per image
for ResNet-50, per feature for BERT's start and end logits (over the whole sequence).

    python benchmarks/synthetic_references.py [--models resnet50,bert-tiny] [--count N]
                                              [--densities 1,0.125] [--pattern 1x4]
                                              [--threads 2]

Numbers measured with this script are in ``benchmarks/results/synthetic_references.md``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from backends.base import Batch
from backends.onnxruntime import OnnxRuntimeBackend, reference_runner
from backends.sparse_int4.backend import SparseInt4Backend
from harness.console import say
from harness.models import bert as bert_builder
from harness.models import resnet50 as resnet_builder
from harness.models.recipe import builtin_recipe
from harness.workloads import get_workload
from harness.workloads.base import DataSource, Workload, WorkloadData

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
BATCH = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="resnet50,bert-tiny")
    parser.add_argument("--count", type=int, default=None, help="First N samples of each set.")
    parser.add_argument("--densities", default="1,0.125", help="1 is the dense built-in model.")
    parser.add_argument("--pattern", default="1x4")
    parser.add_argument("--threads", type=int, default=0, help="0: all cores.")
    args = parser.parse_args()
    print("| model | reference | samples | FP32 margin p10 / p25 / p50 / p75 / p90 | "
          "onnxruntime int8 | sparse-int4 W4A4 |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name in args.models.split(","):
        workload = get_workload(name.strip())
        for density in (float(d) for d in args.densities.split(",")):
            recipe = builtin_recipe(density, args.pattern) if density < 1 else None
            model = workload.builtin_model(say, recipe)
            data = workload.open_data(DataSource(count=args.count), model, say)
            handle = workload.model_handle(model, data.calibration)
            margins = fp32_margins(workload, data, model)
            scores = []
            for backend in (
                OnnxRuntimeBackend("int8", threads=args.threads),
                SparseInt4Backend(vector_size=16, threads=args.threads),
            ):
                start = time.perf_counter()
                backend.load(handle)
                scores.append(score(workload, data, backend.predict))
                say(f"{name} {backend.describe()['precision']}: {scores[-1]:.2f} "
                    f"({time.perf_counter() - start:.0f} s)")  # fmt: skip
            reference = recipe.describe() if recipe else "dense"
            print(f"| {workload.name} | {reference} | {data.count} | "
                  f"{' / '.join(f'{m:.2f}' for m in margins)} | {scores[0]:.2f} | "
                  f"{scores[1]:.2f} |", flush=True)  # fmt: skip


def batches(data: WorkloadData) -> list[np.ndarray]:
    return [np.arange(i, min(i + BATCH, data.count)) for i in range(0, data.count, BATCH)]


def score(workload: Workload, data: WorkloadData, predict: Callable[[Batch], Batch]) -> float:
    """The accuracy an accuracy run would report: responses of every sample, scored."""
    responses = {}
    for indices in batches(data):
        rows = workload.responses(predict(data.load(indices)))
        responses.update(zip(indices.tolist(), (row.tobytes() for row in rows), strict=True))
    return data.score(responses).value


def fp32_margins(workload: Workload, data: WorkloadData, model) -> np.ndarray:
    """Quantiles of top-1 minus top-2 logit of the FP32 model over the data set (for BERT, of
    each feature's start and end logits)."""
    run = reference_runner(model, "to measure margins")
    margins = []
    for indices in batches(data):
        inputs = data.load(indices)
        if workload.name == "resnet50":
            (probabilities,) = run([resnet_builder.SOFTMAX_OUTPUT], inputs)
            logits = np.log(np.maximum(probabilities.astype(np.float64), 1e-300))
        else:
            outputs = run([bert_builder.START_LOGITS, bert_builder.END_LOGITS], inputs)
            logits = np.concatenate(outputs).astype(np.float64)
        ranked = np.sort(logits, axis=1)
        margins.append(ranked[:, -1] - ranked[:, -2])
    return np.quantile(np.concatenate(margins), QUANTILES)


if __name__ == "__main__":
    main()
