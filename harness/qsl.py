"""The query sample library: samples LoadGen asks for, held in memory as stacked arrays."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from backends.base import Batch


class SampleStore:
    """Loads the sample set LoadGen asks for (as ``fetch`` gives it) and gathers batches of
    model inputs (made by ``to_inputs``) from it by QSL index."""

    def __init__(
        self,
        count: int,
        fetch: Callable[[np.ndarray], Batch],
        to_inputs: Callable[[Batch], Batch] = lambda batch: batch,
    ) -> None:
        self.count = count
        self._fetch = fetch
        self._to_inputs = to_inputs
        self._rows = np.full(count, -1, dtype=np.int64)  # QSL index -> row in self._data
        self._data: Batch = {}

    def load_samples(self, indices: Sequence[int]) -> None:
        index = np.asarray(indices, dtype=np.int64)
        self._data = {}  # the previous set goes before the next one arrives
        self._data = self._fetch(index)
        self._rows[:] = -1
        self._rows[index] = np.arange(len(index))

    def unload_samples(self, indices: Sequence[int]) -> None:
        self._rows[np.asarray(indices, dtype=np.int64)] = -1
        if not np.any(self._rows >= 0):
            self._data = {}

    def batch(self, indices: Sequence[int], only: frozenset[str] | None = None) -> Batch:
        """The samples' model inputs stacked; inputs not in ``only`` are zero-copy views of the
        first sample's repeated (right shape and dtype, no data gathered)."""
        rows = self._rows[np.asarray(indices, dtype=np.int64)]
        if np.any(rows < 0):
            raise RuntimeError("LoadGen asked for a sample that is not loaded")
        gathered = {
            name: values[rows] if only is None or name in only else values[rows[:1]]
            for name, values in self._data.items()
        }
        return {
            name: (
                values
                if len(values) == len(rows)
                else np.broadcast_to(values, (len(rows), *values.shape[1:]))
            )
            for name, values in self._to_inputs(gathered).items()
        }
