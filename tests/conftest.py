"""Shared fixtures: one cache per test session, a built-in model, a small synthetic dataset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.cli import main
from harness.datasets import synthetic_images
from harness.models import resnet50 as builder
from harness.workloads import resnet50 as workload

SMALL_DATASET = 48
QUESTIONS = 24  # in the small synthetic SQuAD set


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every cache (model, datasets, preprocessed samples, int8 models) under one temp folder."""
    cache = Path(os.environ.get("SPARSEPERF_TEST_CACHE") or tmp_path_factory.mktemp("cache"))
    os.environ["SPARSEPERF_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def builtin_model(session_cache: Path) -> Path:
    from harness.runner import prepare_model
    from harness.spec import RunSpec

    return prepare_model(RunSpec())


@pytest.fixture
def small_builds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Built-in models and data sets of a few classes and images, in a cache of their own."""
    monkeypatch.setenv("SPARSEPERF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(synthetic_images, "CLASSES", 8)
    monkeypatch.setattr(builder, "CALIBRATION_COUNT", 4)
    monkeypatch.setattr(workload, "BUILTIN_DATASET_COUNT", 24)


@pytest.fixture(scope="session")
def small_dataset(builtin_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "imagenet"
    main(["data", "synth", "imagenet", "--count", str(SMALL_DATASET), "--out", str(out)])
    return out


@pytest.fixture(scope="session")
def squad_set(session_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic SQuAD set answered by bert-tiny."""
    out = tmp_path_factory.mktemp("squad") / "squad"
    main(["data", "synth", "squad", "--count", str(QUESTIONS), "--model", "bert-tiny",
          "--out", str(out)])  # fmt: skip
    return out


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
