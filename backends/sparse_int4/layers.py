"""From one float weight to what the kernel runs and what reports show: prune, quantize, pack."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backends.sparse_int4 import packing, sparsity, vsquant
from backends.sparse_int4.octav import sqnr_db
from harness.errors import UserError

WEIGHT_CLIPS = ("auto", "max", "octav")


@dataclass(frozen=True)
class SparsityOptions:
    """How weights are pruned and quantized and how activations are clipped.

    ``density=None`` keeps the model's own zeros (a pre-pruned model brings its sparsity; a
    dense one stays dense), or takes N / M from an N:M pattern. ``weight_clip="auto"`` uses
    Octav on dense weights and max on pruned ones, whose vectors are mostly pruned zeros that
    would drag Octav's MSE-optimal scalar down onto the few weights that survive."""

    density: float | None = None
    pattern: str = sparsity.BLOCKS
    vector_size: int = 16
    act_clip: str = "max"
    weight_clip: str = "auto"

    def __post_init__(self) -> None:
        if self.density is not None and not 0 < self.density <= 1:
            raise UserError(f"density must be in (0, 1], not {self.density}")
        sparsity.check_pattern(self.pattern)
        if self.pattern not in sparsity.FREE_DENSITY:
            kept, group = sparsity.parse_pattern(self.pattern)
            if self.density is not None and abs(self.density - kept / group) > 1e-9:
                raise UserError(
                    f"pattern {self.pattern} fixes the density at {kept / group:g}, not "
                    f"{self.density:g}; drop --density or pass {kept / group:g}"
                )
        if self.vector_size not in vsquant.VECTOR_SIZES:
            raise UserError(
                f"vector size {self.vector_size} is not supported; choose one of "
                + ", ".join(map(str, vsquant.VECTOR_SIZES))
            )
        if self.act_clip not in vsquant.CLIPS:
            raise UserError(
                f"unknown activation clipping {self.act_clip!r}; choose "
                + " or ".join(vsquant.CLIPS)
            )
        if self.weight_clip not in WEIGHT_CLIPS:
            raise UserError(
                f"unknown weight clipping {self.weight_clip!r}; choose one of "
                + ", ".join(WEIGHT_CLIPS)
            )

    @property
    def target_density(self) -> float | None:
        if self.density is None and self.pattern not in sparsity.FREE_DENSITY:
            kept, group = sparsity.parse_pattern(self.pattern)
            return kept / group
        return self.density

    def describe(self) -> str:
        density = "model zeros" if self.target_density is None else f"{self.target_density:g}"
        return (
            f"density {density} {self.pattern}, INT4 VS-Quant vectors of {self.vector_size}, "
            f"weight clip {self.weight_clip}, activation clip {self.act_clip}"
        )


@dataclass(frozen=True)
class WeightStats:
    """What ``sparseperf inspect`` prints for one weight."""

    k: int
    n: int
    density: float  # kept weights / K · N
    stored_bytes: int  # compressed: 4-bit values, positions, per-vector scales, gammas
    clip: str  # the clipping used
    clip_ratio: float  # mean effective clipping scalar / vector max |w| (1.0: nothing clipped)
    sqnr_db: float  # quantization SQNR against the pruned float weight

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.stored_bytes / (self.k * self.n)

    @property
    def int8_bytes(self) -> int:
        """The same weight in int8 with a float32 scale per output channel."""
        return self.k * self.n + 4 * self.n


def prepare(
    w: np.ndarray,
    bias: np.ndarray | None,
    options: SparsityOptions,
    channels: int | None = None,
) -> tuple[packing.PackedWeight, WeightStats]:
    """Prune (or keep the model's zeros), quantize offline and pack one weight W [K, N];
    ``channels``: a convolution's input channels per kernel tap (K = taps x channels)."""
    w = np.asarray(w, np.float32)
    mask = sparsity.existing_mask(w)
    if options.target_density is not None:
        mask &= sparsity.prune(w, options.target_density, options.pattern, channels)
    pruned = np.where(mask, w, np.float32(0))
    clip = options.weight_clip
    if clip == "auto":
        clip = "octav" if mask.all() else "max"
    qw = vsquant.quantize_weight(pruned, options.vector_size, clip, channels=channels)
    stored = sparsity.compress(qw, mask)
    stats = WeightStats(
        k=qw.k,
        n=qw.n,
        density=float(mask.mean()),
        stored_bytes=stored.nbytes,
        clip=clip,
        clip_ratio=_clip_ratio(pruned, qw),
        sqnr_db=sqnr_db(pruned, qw.dequantize()),
    )
    return packing.pack(qw, bias), stats


def _clip_ratio(w: np.ndarray, qw: vsquant.QuantizedWeight) -> float:
    """Mean over nonzero vectors of the effective clipping scalar (7 · gamma · sq) over the
    vector's max |w|."""
    starts = np.flatnonzero(np.diff(qw.vector_of, prepend=-1))
    vector_max = np.maximum.reduceat(np.abs(w), starts, axis=0)
    clip = vsquant.SIGNED_LEVEL * qw.gamma[None, :] * qw.sq.astype(np.float32)
    live = vector_max > 0
    return float(np.mean(clip[live] / vector_max[live])) if live.any() else 1.0
