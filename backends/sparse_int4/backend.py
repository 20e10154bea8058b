"""The sparse-int4 backend: pruned, VS-Quant INT4 weights on the project's own CPU kernel."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import onnx
import onnxruntime as ort

from backends.base import Backend, BackendOption, Batch, ModelHandle
from backends.sparse_int4 import kernel
from backends.sparse_int4.executor import GraphExecutor
from backends.sparse_int4.layers import SparsityOptions
from backends.sparse_int4.steps import Layer
from harness.errors import UserError


class SparseInt4Backend(Backend):
    name = "sparse-int4"
    open_division_only = "its weights are pruned and re-quantized to INT4, without retraining"
    declared_options = (
        BackendOption(
            "density",
            float,
            "sparse-int4: fraction of weights kept, in (0, 1] (default: the model's zeros).",
            label="d",
        ),
        BackendOption(
            "sparsity_pattern",
            str,
            "sparse-int4: 1x4 (default; whole blocks of 4 input channels), 4x4 (the same "
            "blocks kept by quads of output channels: faster), 16x4 (by groups of 16: AMX "
            "tiles, the fastest where the CPU has AMX), unstructured, or N:M such as 2:4 or 1:8.",
        ),
        BackendOption("vector_size", int, "sparse-int4: VS-Quant vector, 16/32/64."),
        BackendOption("act_clip", str, "sparse-int4: activation clip, max or octav."),
    )
    main_option = "density"

    def __init__(
        self,
        density: float | None = None,
        sparsity_pattern: str = "1x4",
        vector_size: int = 16,
        act_clip: str = "max",
        weight_clip: str = "auto",
        threads: int = 0,
        kernel_path: str = "auto",
    ) -> None:
        if kernel_path != "auto" and kernel_path not in kernel.PATHS:
            raise UserError(
                f"sparse-int4: kernel path {kernel_path!r} does not run on this CPU; it runs "
                + ", ".join(kernel.PATHS)
            )
        self.options = SparsityOptions(
            None if density is None else float(density),
            str(sparsity_pattern),
            int(vector_size),
            str(act_clip),
            str(weight_clip),
        )
        self.threads = threads or kernel.default_threads()
        self.path = kernel.PATHS[0] if kernel_path == "auto" else kernel_path
        self.executor: GraphExecutor | None = None
        self._outputs: tuple[str, ...] = ()

    def load(self, model: ModelHandle) -> None:
        self.executor = GraphExecutor(
            _read(model.path), self.options, self.threads, self.path, progress=_progress,
            calibration=model.calibration,
        )  # fmt: skip
        self._outputs = model.output_names

    def inspect(self, path: Path) -> list[Layer]:
        """The model's kernel layers as this backend would prepare them."""
        return GraphExecutor(_read(path), self.options, self.threads, self.path).layers

    def predict(self, inputs: Batch) -> Batch:
        assert self.executor is not None, "load() must be called before predict()"
        values = self.executor.run(inputs)
        return {name: values[name] for name in self._outputs}

    def describe(self) -> dict[str, str]:
        density = self.options.target_density
        if self.executor is not None:
            stats = [layer.stats for layer in self.executor.layers]
            kept = sum(s.density * s.k * s.n for s in stats)
            density = kept / max(1, sum(s.k * s.n for s in stats))
        sparsity = (
            f"weight density {density:.4g} ({self.options.pattern}, magnitude pruning "
            "without retraining)"
            if density is not None and density < 1
            else "dense"
        )
        gammas = "calibrated per tensor" if self.executor and self.executor.gammas else "per image"
        return {
            "backend": self.name,
            "precision": (
                f"int4 VS-Quant (vectors of {self.options.vector_size}; convolution inputs' "
                f"gamma {gammas}, MatMul inputs' per token)"
            ),
            "sparsity": sparsity,
            "clipping": f"weights {self.options.weight_clip}, activations {self.options.act_clip}",
            "framework": f"sparseperf kernel ({self.path}) + onnxruntime {ort.__version__}",
            "device": f"CPU ({platform.machine()}, {self.threads} threads)",
            "weight_data_types": "int4 (4-bit values, 4-bit per-vector scales, fp32 per channel)",
            "weight_transformations": (
                f"{sparsity}; VS-Quant INT4 per-vector quantization (vectors of "
                f"{self.options.vector_size} along K), {self.options.weight_clip} weight clipping"
            ),
        }


def _read(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf raises several types for unreadable files
        raise UserError(f"cannot read {path} as an ONNX model: {exc}") from exc


def _progress(message: str) -> None:
    print(f"sparse-int4: {message}", file=sys.stderr, flush=True)
