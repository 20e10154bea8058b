"""How a model is pruned: density, pattern and the layers kept dense (see
``harness.models.pruning``)."""

from __future__ import annotations

from dataclasses import dataclass

from backends.sparse_int4 import sparsity
from harness.errors import UserError

KEEP_DENSE = ("first", "last")  # the layers a recipe may keep dense, in graph order
# Built-in pruned references keep their first and last layers dense, as published sparse
# models do (ResNet-50's stem has 3 input channels, which N:M patterns do not divide).
BUILTIN_KEEP_DENSE = KEEP_DENSE


@dataclass(frozen=True)
class Recipe:
    """How to prune: the kept fraction, the pattern, and which end layers stay dense."""

    density: float
    pattern: str = sparsity.BLOCKS
    keep_dense: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0 < self.density <= 1:
            raise UserError(f"density must be in (0, 1], not {self.density:g}")
        sparsity.check_pattern(self.pattern)
        if self.pattern not in sparsity.FREE_DENSITY:
            kept, group = sparsity.parse_pattern(self.pattern)
            if abs(self.density - kept / group) > sparsity.DENSITY_TOLERANCE:
                raise UserError(
                    f"pattern {self.pattern} fixes the density at {kept / group:g}, not "
                    f"{self.density:g}; pass density {kept / group:g} or another pattern"
                )
        unknown = [name for name in self.keep_dense if name not in KEEP_DENSE]
        if unknown:
            raise UserError(
                f"cannot keep {', '.join(map(repr, unknown))} dense; choose from "
                + ", ".join(KEEP_DENSE)
            )

    def describe(self) -> str:
        """'pruned to 0.125 (pattern 1x4, first and last layers dense), no retraining'."""
        dense = f", {' and '.join(self.keep_dense)} layer{'s' * (len(self.keep_dense) > 1)} dense"
        return (
            f"pruned to {self.density:g} (pattern {self.pattern}"
            + (dense if self.keep_dense else "")
            + "), no retraining"
        )

    @property
    def tag(self) -> str:
        """A short name for labels and file names: d0.125-1x4, d0.5-2.4 (the layers kept
        dense are left out: built-in references always keep the same ones)."""
        return f"d{self.density:g}-{self.pattern.replace(':', '.')}"


def builtin_recipe(density: float, pattern: str) -> Recipe:
    """The recipe of a built-in pruned reference."""
    return Recipe(density, pattern, BUILTIN_KEEP_DENSE)
