"""Detail-log parsing, accuracy scoring, and the in-memory sample store."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from harness.accuracy import imagenet_top1, read_responses
from harness.errors import UserError
from harness.qsl import SampleStore
from harness.results import summarize
from harness.warmup import concurrent_rate


def detail_log(path, entries, errors=()):
    lines = []
    for key, value in entries.items():
        meta = {"is_error": key in errors, "is_warning": False}
        lines.append(":::MLLOG " + json.dumps({"key": key, "value": value, "metadata": meta}))
    lines.append(':::MLLOG {"key": "truncat')  # a line cut off by a dying process
    path.write_text("\n".join(lines) + "\n")
    return path


BASE = {
    "loadgen_version": "6.0.17",
    "effective_qsl_rng_seed": 1,
    "effective_sample_index_rng_seed": 2,
    "effective_schedule_rng_seed": 3,
    "result_validity": "VALID",
    "result_min_duration_met": True,
    "result_min_queries_met": True,
    "result_perf_constraints_met": True,
    "early_stopping_met": True,
    "result_50.00_percentile_latency_ns": 2_000_000,
    "result_99.00_percentile_latency_ns": 9_000_000,
    "power_begin": "11-22-2026 20:32:04.000",
    "power_end": "11-22-2026 20:33:05.500",
}


def test_offline_valid(tmp_path):
    log = detail_log(tmp_path / "d.txt", {**BASE, "result_samples_per_second": 135.5})
    result = summarize(log, "Offline", "performance")
    assert (result["value"], result["units"], result["validity"]) == (135.5, "samples/s", "VALID")
    assert result["invalid_reasons"] == []
    assert result["latency_ms"] == {"50.00": 2.0, "99.00": 9.0}
    assert result["duration_s"] == pytest.approx(61.5)
    assert result["seeds"] == {
        "qsl_rng_seed": 1,
        "sample_index_rng_seed": 2,
        "schedule_rng_seed": 3,
    }


def test_singlestream_metric_in_ms_and_invalid_reasons(tmp_path):
    entries = {
        **BASE,
        "result_validity": "INVALID",
        "result_min_duration_met": False,
        "result_invalid_reason": "Reduce target latency. ",
        "early_stopping_latency_ss": 12_345_678,
    }
    result = summarize(detail_log(tmp_path / "d.txt", entries), "SingleStream", "performance")
    assert result["value"] == pytest.approx(12.345678) and result["units"] == "ms"
    assert result["validity"] == "INVALID"
    assert result["invalid_reasons"] == ["min duration not met", "Reduce target latency."]


def test_a_stream_run_without_an_early_stopping_estimate_reports_its_measured_percentile(
    tmp_path,
):
    entries = {
        **BASE,
        "result_validity": "INVALID",
        "early_stopping_met": False,
        "early_stopping_latency_ms": 0,  # what LoadGen logs when it has no estimate
        "result_99.00_percentile_per_query_latency_ns": 6_250_000,
    }
    result = summarize(detail_log(tmp_path / "d.txt", entries), "MultiStream", "performance")
    assert result["value"] == pytest.approx(6.25) and result["units"] == "ms"
    assert result["metric"] == "result_99.00_percentile_per_query_latency_ns"
    assert result["invalid_reasons"] == ["early stopping not met"]


def test_logged_errors_make_a_valid_run_invalid(tmp_path):
    entries = {**BASE, "result_completed_samples_per_sec": 99.0, "error_invalid_config": "x"}
    log = detail_log(tmp_path / "d.txt", entries, errors={"error_invalid_config"})
    result = summarize(log, "Server", "performance")
    assert result["validity"] == "INVALID"
    assert result["errors"] == ["error_invalid_config: x"]


def test_unfinished_log_is_an_error(tmp_path):
    log = detail_log(tmp_path / "d.txt", {"loadgen_version": "6.0.17"})
    with pytest.raises(UserError, match="did not finish"):
        summarize(log, "Offline", "performance")


def accuracy_log(path, labels_by_index):
    entries = [
        {"seq_id": n, "qsl_idx": i, "data": np.float32(v).tobytes().hex().upper()}
        for n, (i, v) in enumerate(labels_by_index)
    ]
    path.write_text(json.dumps(entries))
    return path


def test_imagenet_top1_uses_first_response_per_sample(tmp_path):
    log = accuracy_log(tmp_path / "a.json", [(0, 5), (1, 7), (2, 1), (0, 9)])
    accuracy = imagenet_top1(read_responses(log), np.array([5, 7, 3]))
    assert accuracy.line == "accuracy=66.667%, good=2, total=3"
    assert accuracy.value == pytest.approx(200 / 3)


def test_corrupt_accuracy_log(tmp_path):
    bad = tmp_path / "a.json"
    bad.write_text("[{")
    with pytest.raises(UserError, match=r"accuracy log .* is not valid JSON"):
        read_responses(bad)
    bad.write_text('[{"qsl_idx": 1}]')
    with pytest.raises(UserError, match="is not a LoadGen accuracy log"):
        read_responses(bad)


def as_float(batch):
    return {name: values.astype(np.float32) * 10 for name, values in batch.items()}


def test_sample_store_gathers_loaded_samples_by_qsl_index():
    """Loaded samples are held as fetched (compact) and made model inputs per batch; inputs a
    backend does not read stay zero-copy views of one converted sample."""
    store = SampleStore(10, lambda idx: {"x": idx.astype(np.uint8), "y": idx[:, None]}, as_float)
    store.load_samples([7, 2, 5])
    batch = store.batch([5, 7, 5])
    assert batch["x"].dtype == np.float32 and batch["x"].tolist() == [50, 70, 50]
    views = store.batch([2, 7, 5], only=frozenset({"x"}))
    assert views["y"].shape == (3, 1) and views["y"].strides[0] == 0
    assert views["y"][:, 0].tolist() == [20, 20, 20]
    store.unload_samples([7, 2, 5])
    with pytest.raises(RuntimeError, match="not loaded"):
        store.batch([5])


def test_offline_warmup_counts_overlapping_workers():
    """Two workers on a backend that overlaps calls (sleep releases the GIL) reach about twice
    one worker's rate; the sample store is left empty."""
    store = SampleStore(8, lambda idx: {"x": idx.astype(np.float32)})

    def infer(indices):
        time.sleep(0.02)
        return store.batch(indices)["x"]

    one = concurrent_rate(infer, store, 4, 1, 0.2)
    two = concurrent_rate(infer, store, 4, 2, 0.2)
    assert one < 4 / 0.02 and 1.6 < two / one < 2.2
    with pytest.raises(RuntimeError, match="not loaded"):
        store.batch([0])


def test_offline_warmup_passes_a_backend_error_on():
    store = SampleStore(8, lambda idx: {"x": idx.astype(np.float32)})

    def infer(indices):
        raise ValueError("device lost")

    with pytest.raises(ValueError, match="device lost"):
        concurrent_rate(infer, store, 4, 2, 0.1)


def test_loaded_resnet50_samples_are_held_as_uint8_crops(small_dataset):
    """What memory grows with: 147 KiB per loaded ResNet-50 sample, made float32 per batch."""
    from harness.datasets import imagenet
    from harness.datasets.imagenet_preprocess import to_model_input
    from harness.workloads.resnet50 import ImageNetData

    folder = imagenet.open_imagenet(small_dataset)
    data = ImageNetData(folder, imagenet.preprocessed_crops(folder), folder.count)
    (held,) = data.fetch(np.arange(10)).values()
    assert held.dtype == np.uint8 and held.nbytes == 10 * 3 * 224 * 224
    (inputs,) = data.load(np.arange(2)).values()
    np.testing.assert_array_equal(inputs, to_model_input(held[:2]))
