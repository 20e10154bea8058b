"""Where a Server query's latency goes: when the SUT was handed it, when its batch started, when
the backend returned and when LoadGen had its response (``time.monotonic_ns`` each)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

COLUMNS = ("issued_ns", "started_ns", "inferred_ns", "completed_ns", "batch_samples")
QUANTILES = (0.5, 0.9, 0.99)


@dataclass
class Timeline:
    rows: list[tuple[int, int, int, int, int]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, issued: Sequence[int], started: int, inferred: int, completed: int) -> None:
        """One batch: the issue time of each of its samples, then the batch's own times."""
        with self._lock:
            self.rows.extend((i, started, inferred, completed, len(issued)) for i in issued)

    def table(self) -> np.ndarray:
        """int64 [samples, len(COLUMNS)], in issue order, times from the first issue."""
        rows = np.array(sorted(self.rows), np.int64).reshape(-1, len(COLUMNS))
        if len(rows):
            rows[:, :4] -= rows[0, 0]
        return rows


def summary(table: np.ndarray) -> dict[str, object]:
    """Percentiles (ms) of each stage of a ``Timeline.table()``: queued (handed to the SUT until
    its batch started), backend (the batch's inference), respond (handing the responses to
    LoadGen), total; and backend_single, the backend time of batches of one query."""
    rows = table.astype(np.float64)
    if not len(rows):
        return {"samples": 0}
    spans = {
        "queued": rows[:, 1] - rows[:, 0],
        "backend": rows[:, 2] - rows[:, 1],
        "respond": rows[:, 3] - rows[:, 2],
        "total": rows[:, 3] - rows[:, 0],
    }
    single = rows[:, 4] == 1
    if single.any():  # a lone query's service time: no rate can do better than this
        spans["backend_single"] = spans["backend"][single]
    out: dict[str, object] = {"samples": len(rows), "mean_batch": float(rows[:, 4].mean())}
    for stage, span in spans.items():
        values = np.quantile(span, QUANTILES) / 1e6
        quantiles = zip(QUANTILES, values, strict=True)
        out[stage] = {f"p{q * 100:g}_ms": round(float(v), 3) for q, v in quantiles}
    return out
