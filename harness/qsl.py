"""The query sample library: samples LoadGen asks for, held in memory as stacked arrays."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from backends.base import Batch


class SampleStore:
    """Loads the sample set LoadGen asks for and gathers batches from it by QSL index."""

    def __init__(self, count: int, load: Callable[[np.ndarray], Batch]) -> None:
        self.count = count
        self._load = load
        self._rows = np.full(count, -1, dtype=np.int64)  # QSL index -> row in self._data
        self._data: Batch = {}

    def load_samples(self, indices: Sequence[int]) -> None:
        index = np.asarray(indices, dtype=np.int64)
        self._data = self._load(index)
        self._rows[:] = -1
        self._rows[index] = np.arange(len(index))

    def unload_samples(self, indices: Sequence[int]) -> None:
        self._rows[np.asarray(indices, dtype=np.int64)] = -1
        if not np.any(self._rows >= 0):
            self._data = {}

    def batch(self, indices: Sequence[int], only: frozenset[str] | None = None) -> Batch:
        """The samples' inputs stacked; inputs not in ``only`` are zero-copy views of the
        first sample repeated (right shape and dtype, no data gathered)."""
        rows = self._rows[np.asarray(indices, dtype=np.int64)]
        if np.any(rows < 0):
            raise RuntimeError("LoadGen asked for a sample that is not loaded")
        return {
            name: (
                values[rows]
                if only is None or name in only
                else np.broadcast_to(values[rows[0]], (len(rows), *values.shape[1:]))
            )
            for name, values in self._data.items()
        }
