"""Parse LoadGen's detail log (JSON lines) into the verdict a run reports."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from harness.errors import UserError
from harness.files import read_text

PREFIX = ":::MLLOG "
# The layout of result.json and run.json; reports refuse folders of another one.
RUN_FORMAT = 2
# Each scenario's official metric: detail-log key, units, and a divisor into those units.
METRICS = {
    "Offline": ("result_samples_per_second", "samples/s", 1.0),
    "Server": ("result_completed_samples_per_sec", "queries/s", 1.0),
    "SingleStream": ("early_stopping_latency_ss", "ms", 1e6),
    "MultiStream": ("early_stopping_latency_ms", "ms", 1e6),
}
# A stream run that early stopping gave no estimate (too few queries; LoadGen then logs 0 ms)
# reports the percentile it measured instead, never a latency it did not measure.
MEASURED_PERCENTILE = {
    "SingleStream": "result_90.00_percentile_latency_ns",
    "MultiStream": "result_99.00_percentile_per_query_latency_ns",
}
PERCENTILES = ("50.00", "90.00", "95.00", "97.00", "99.00", "99.90")
_CONSTRAINTS = {
    "result_min_duration_met": "min duration not met",
    "result_min_queries_met": "min queries not met",
    "result_perf_constraints_met": "latency constraint not met",
    "early_stopping_met": "early stopping not met",
}


def read_detail_log(path: Path) -> tuple[dict, list[str], list[str]]:
    """(last value of every key, error messages, warning messages) of a detail log."""
    values: dict = {}
    errors: list[str] = []
    warnings: list[str] = []
    for line in read_text(path, "LoadGen detail log").splitlines():
        if not line.startswith(PREFIX):
            continue
        try:
            entry = json.loads(line[len(PREFIX) :])
        except (json.JSONDecodeError, RecursionError):
            continue  # a line LoadGen was still writing when the process died
        if not isinstance(entry, dict) or "key" not in entry:
            continue
        values[entry["key"]] = entry.get("value")
        metadata = entry.get("metadata")
        metadata = metadata if isinstance(metadata, dict) else {}
        if metadata.get("is_error"):
            errors.append(f"{entry['key']}: {entry['value']}")
        elif metadata.get("is_warning"):
            warnings.append(f"{entry['key']}: {entry['value']}")
    return values, errors, warnings


def summarize(detail_log: Path, scenario: str, mode: str) -> dict:
    """The result.json body: metric, validity with reasons, latency percentiles, seeds."""
    values, errors, warnings = read_detail_log(detail_log)
    result: dict = {
        "scenario": scenario,
        "mode": mode,
        "loadgen_version": values.get("loadgen_version"),
        "errors": errors,
        "warnings": warnings,
        "seeds": {
            name: values.get(f"effective_{name}")
            for name in ("qsl_rng_seed", "sample_index_rng_seed", "schedule_rng_seed")
        },
        "performance_sample_count": values.get("effective_performance_sample_count"),
    }
    if mode == "accuracy":
        return result
    key, units, divisor = METRICS[scenario]
    if values.get("early_stopping_met") is False and MEASURED_PERCENTILE.get(scenario) in values:
        key = MEASURED_PERCENTILE[scenario]
    if key not in values or "result_validity" not in values:
        raise UserError(f"{detail_log} has no result: the LoadGen run did not finish")
    validity = values["result_validity"]
    reasons = [text for flag, text in _CONSTRAINTS.items() if values.get(flag) is False]
    if values.get("result_invalid_reason"):
        reasons.append(values["result_invalid_reason"].strip())
    if errors:
        reasons.append(f"{len(errors)} error(s) in the detail log")
        validity = "INVALID"
    result.update(
        metric=key,
        value=values[key] / divisor,
        units=units,
        validity=validity,
        invalid_reasons=reasons if validity != "VALID" else [],
        query_count=values.get("result_query_count"),
        duration_s=_duration_s(values),
        latency_ms={
            p: values[f"result_{p}_percentile_latency_ns"] / 1e6
            for p in PERCENTILES
            if f"result_{p}_percentile_latency_ns" in values
        },
    )
    if scenario == "Server":
        result["target_qps"] = values.get("effective_target_qps")
        bound = values.get("effective_target_latency_ns")
        result["latency_bound_ms"] = bound / 1e6 if bound else None
    return result


def _duration_s(values: dict) -> float | None:
    """Length of the timed part of the run, from LoadGen's power_begin/power_end stamps."""
    try:
        begin, end = (
            datetime.strptime(values[key], "%m-%d-%Y %H:%M:%S.%f")
            for key in ("power_begin", "power_end")
        )
    except (KeyError, TypeError, ValueError):
        return None
    return (end - begin).total_seconds()
