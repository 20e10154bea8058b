"""``sparseperf predict --format json|csv``: the prediction as data, so scripts need not parse
text. JSON holds the request, the configuration used, every layer and the totals; CSV one row
per layer and a total row (with the scenario's figure)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from typing import Any

from harness.calibrate import UNITS
from harness.predict import Prediction, mean_load

LAYER_COLUMNS = ("name", "op", "dense_macs", "effective_macs", "bytes", "bound", "seconds",
                 "joules")  # fmt: skip
FIGURE_COLUMNS = ("scenario", "figure", "unit")


def record(prediction: Prediction) -> dict[str, Any]:
    """Everything ``predict`` prints, as plain data."""
    request, profile = prediction.request, prediction.profile
    model = prediction.model()
    load = mean_load(prediction.batch_size, prediction.ratios)
    layers = model.layer_times(load)
    batch = model.batch(load)
    value, line = prediction.figure()
    unit = "s" if request.scenario in ("SingleStream", "MultiStream") else UNITS[request.scenario]
    return {
        "simulated": True,
        "model": request.model,
        "device": profile.name,
        "device_description": profile.description,
        "efficiency": profile.efficiency,
        "calibrated_on": profile.calibrated_on,
        "precision": prediction.options.dtype,
        "density": request.density,
        "pattern": prediction.options.pattern,
        "batch": prediction.batch_size,
        "workers": prediction.scenario_options.workers,
        "tokens": request.tokens or "padded",
        "mean_tokens": float(prediction.ratios.mean() * prediction.work.tokens)
        if prediction.work.tokens
        else None,
        "configuration": list(prediction.configuration),
        "layers": [asdict(layer) for layer in layers],
        "totals": {
            "samples": batch.samples,
            "dense_macs": sum(layer.dense_macs for layer in layers),
            "effective_macs": sum(layer.effective_macs for layer in layers),
            "bytes": sum(layer.bytes for layer in layers),
            "device_s": batch.device_s,
            "transfer_s": batch.transfer_s,
            "launch_s": batch.launch_s,
            "weights_on_chip": batch.weights_on_chip,
            "joules": batch.joules,
            "samples_per_joule": batch.samples / batch.joules if batch.joules else None,
        },
        "scenario": request.scenario,
        "figure": value,
        "unit": unit,
        "summary": line,
    }


def as_json(prediction: Prediction) -> str:
    return json.dumps(record(prediction), indent=2) + "\n"


def as_csv(prediction: Prediction) -> str:
    body = record(prediction)
    totals = body["totals"]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*LAYER_COLUMNS, *FIGURE_COLUMNS])
    for layer in body["layers"]:
        writer.writerow([*(layer[name] for name in LAYER_COLUMNS), "", "", ""])
    writer.writerow(
        [
            f"total (batch of {totals['samples']}, simulated)", "", totals["dense_macs"],
            totals["effective_macs"], totals["bytes"], "", totals["device_s"], totals["joules"],
            body["scenario"], body["figure"], body["unit"],
        ]
    )  # fmt: skip
    return buffer.getvalue()
