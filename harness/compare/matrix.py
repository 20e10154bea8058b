"""``sparseperf compare``: every model x backend x scenario cell as an ordinary run folder.
A cell that fails is recorded with its reason and the matrix goes on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from backends import create_backend
from harness.compare.choices import BackendChoice, parse_backend
from harness.compare.rows import failed_row, read_row
from harness.errors import UserError
from harness.settings import PRESETS, SCENARIO_NAMES, check_choice
from harness.spec import RunSpec, check_numbers
from harness.workloads import get_workload

# Per run, beyond LoadGen's minimum duration: process start, model and data loading, warm-up.
RUN_OVERHEAD_S = 15.0


def split_list(text: str, what: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise UserError(f"no {what} given; list them separated by commas")
    return list(dict.fromkeys(items))


@dataclass(frozen=True)
class Matrix:
    models: tuple[str, ...]
    backends: tuple[BackendChoice, ...]
    scenarios: tuple[str, ...]
    preset: str = "smoke"
    accuracy: bool = True  # one Offline accuracy run per model and backend that has outputs
    batch_size: int = 8
    workers: int = 1
    dataset_count: int | None = None  # the first N samples of each built-in data set
    # The model every backend runs: a file (one model only), or the built-in pruned reference.
    model_path: Path | None = None
    model_density: float | None = None
    model_pattern: str | None = None
    cluster: str | None = None  # every cell's backend on this cluster's replicas
    replicas: int | None = None

    @classmethod
    def parse(cls, models: str, backends: str, scenarios: str, **settings: Any) -> Matrix:
        """Check every name before anything runs."""
        model_names = tuple(split_list(models, "models"))
        for model in model_names:
            get_workload(model)
        scenario_names = tuple(split_list(scenarios, "scenarios"))
        for scenario in scenario_names:
            check_choice("scenario", scenario, SCENARIO_NAMES)
        choices = tuple(parse_backend(text) for text in split_list(backends, "backends"))
        check_choice("preset", settings.get("preset", cls.preset), PRESETS)
        matrix = cls(model_names, choices, scenario_names, **settings)
        check_numbers(RunSpec(batch_size=matrix.batch_size, workers=matrix.workers,
                              dataset_count=matrix.dataset_count, cluster=matrix.cluster,
                              replicas=matrix.replicas))  # fmt: skip
        if matrix.model_path is not None and len(model_names) > 1:
            raise UserError(
                f"--model-path gives one model file, but the matrix has {len(model_names)} "
                "models; compare one model per file"
            )
        for model in model_names:
            spec = matrix.model_spec(model)
            if spec.model_path is not None:
                from harness.runner import prepare_model  # heavy: only for a model file

                prepare_model(spec.resolved())  # the file fits the model, before any run
            spec.model_recipe  # noqa: B018 (checks the built-in reference's density and pattern)
        return matrix

    def model_spec(self, model: str, **fields: Any) -> RunSpec:
        """A run of ``model`` as the matrix has it: its file or built-in pruned reference."""
        return RunSpec(model=model, model_path=self.model_path, model_density=self.model_density,
                       model_pattern=self.model_pattern, **fields)  # fmt: skip

    def specs(self, runs_dir: Path) -> list[RunSpec]:
        """The cells, in order: performance per scenario, then accuracy (Offline)."""
        specs = []
        for model in self.models:
            defined = get_workload(model).scenarios
            for choice in self.backends:
                base = self.model_spec(
                    model,
                    backend=choice.backend,
                    backend_options=choice.options,
                    preset=self.preset,
                    batch_size=self.batch_size,
                    workers=self.workers,
                    dataset_count=self.dataset_count,
                    runs_dir=runs_dir,
                    cluster=self.cluster,
                    replicas=self.replicas,
                )
                specs += [replace(base, scenario=s) for s in self.scenarios if s in defined]
                if self.accuracy and not create_backend(choice.backend, choice.options).timing_only:
                    specs.append(replace(base, mode="accuracy"))
        return specs

    def skipped(self) -> list[str]:
        """Cells the matrix names that a model does not define (e.g. bert-large MultiStream)."""
        return [
            f"{model} {scenario}"
            for model in self.models
            for scenario in self.scenarios
            if scenario not in get_workload(model).scenarios
        ]


def estimate_s(specs: list[RunSpec]) -> float:
    """Roughly how long the matrix takes: each run's minimum duration plus its overhead."""
    total = 0.0
    for spec in specs:
        if spec.mode == "accuracy":
            total += RUN_OVERHEAD_S
            continue
        duration = PRESETS[spec.preset][spec.scenario].get("min_duration", 600_000)
        total += duration / 1000 + RUN_OVERHEAD_S
    return total


def run_cells(specs: list[RunSpec], say: Callable[[str], None]) -> list[dict[str, Any]]:
    """Run each cell; a failed one becomes a failed row and the rest go on."""
    from harness.runner import RunFailed, run  # heavy imports only when runs start

    rows = []
    for number, spec in enumerate(specs, start=1):
        say(f"cell {number}/{len(specs)}: {spec.model_label} {spec.backend_label} {spec.scenario} "
            f"{spec.mode}")  # fmt: skip
        try:
            outcome = run(spec)
        except RunFailed as exc:
            say(f"cell {number} failed: {exc}")
            rows.append(failed_row(spec, exc.reason, exc.folder))
        except UserError as exc:  # refused before it started, e.g. a model/backend mismatch
            say(f"cell {number} not run: {exc}")
            rows.append(failed_row(spec, str(exc), None))
        else:
            rows.append(read_row(outcome.folder))
    return rows
