"""RunSpec: everything one run needs, checked before any process starts."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from backends import BACKENDS, backend_class, create_backend, declared_class, path_options
from backends.base import BackendOption
from backends.sparse_int4.sparsity import BLOCKS
from harness.calibration_list import read_calibration_list
from harness.cluster import check_cluster
from harness.errors import UserError
from harness.models.recipe import Recipe, builtin_recipe
from harness.settings import (
    COMPLIANT_PRESETS,
    PRESETS,
    SCENARIO_NAMES,
    check_choice,
    effective_user_values,
    parse_user_conf,
)
from harness.watchdog import DEFAULT_STALL_S
from harness.workloads import WORKLOADS, get_workload
from harness.workloads.base import DataSource
from submissions.compliance import check_compliance_run

MODES = ("performance", "accuracy")
PATH_FIELDS = (
    "model_path",
    "dataset_path",
    "vocab_path",
    "calibration_list",
    "user_conf",
    "runs_dir",
)


@dataclass(frozen=True)
class RunSpec:
    model: str = "resnet50"
    scenario: str = "Offline"
    mode: str = "performance"
    backend: str = "onnxruntime"
    backend_options: dict[str, Any] = field(default_factory=dict)
    preset: str = "short"
    model_path: Path | None = None
    # A built-in pruned reference: the synthetic model pruned to this density when built.
    model_density: float | None = None
    model_pattern: str | None = None  # its pattern (default 1x4)
    dataset_path: Path | None = None
    dataset_count: int | None = None
    vocab_path: Path | None = None
    # Names of the samples backends calibrate on (MLPerf's official list in the closed division).
    calibration_list: Path | None = None
    user_conf: Path | None = None
    batch_size: int = 8
    workers: int = 1
    server_batch_timeout_ms: float = 0.0
    runs_dir: Path = Path("runs")
    compliance: str | None = None  # an audit test (TEST01, TEST04) this run is made for
    # How long the backend may go without progress before any batch is timed (watchdog).
    stall_timeout_s: float = DEFAULT_STALL_S
    cluster: str | None = None  # local:N, or a Ray cluster's HOST:PORT (harness.cluster)
    replicas: int | None = None  # backend replicas on the cluster (default: one per node)

    def to_json(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> RunSpec:
        """The spec a run.json recorded (paths back to Path)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in body.items() if k in known}
        for name in PATH_FIELDS:
            if values.get(name) is not None:
                values[name] = Path(values[name])
        return cls(**values)

    def resolved(self) -> RunSpec:
        """The spec with every path (and every backend option that is a path) absolute, as
        the caller's working directory means it: the run process works in its run folder."""
        paths = {
            name: _absolute(getattr(self, name))
            for name in PATH_FIELDS
            if getattr(self, name) is not None
        }
        file_options = path_options(self.backend)
        options = {
            key: str(_absolute(Path(value))) if key in file_options and value is not None else value
            for key, value in self.backend_options.items()
        }
        return replace(self, backend_options=options, **paths)

    @property
    def model_recipe(self) -> Recipe | None:
        """How the built-in model is pruned when built (None: it is not)."""
        if self.model_density is None:
            if self.model_pattern is not None:
                raise UserError("--model-pattern needs --model-density (the density to prune to)")
            return None
        if self.model_path is not None:
            raise UserError(
                "--model-density prunes the built-in model; to run a pruned copy of "
                f"{self.model_path}, make one with: sparseperf prune --model-path FILE"
            )
        return builtin_recipe(self.model_density, self.model_pattern or BLOCKS)

    @property
    def model_label(self) -> str:
        """The model as folder names, result lines and tables name it: resnet50, or a built-in
        pruned reference such as resnet50-d0.125-1x4."""
        recipe = self.model_recipe
        return f"{self.model}-{recipe.tag}" if recipe else self.model

    @property
    def data_source(self) -> DataSource:
        full_size = self.preset in COMPLIANT_PRESETS and self.dataset_path is None
        return DataSource(self.dataset_path, self.dataset_count, self.vocab_path, full_size)

    @property
    def backend_label(self) -> str:
        """Backend name (a plug-in's: its class name) plus the options its class shows, for
        folder names and result lines: onnxruntime-int8, sparse-int4-d0.125,
        simaccel-moffett-s30-d0.0625."""
        parts = declared_class(self.backend).label_parts(self.backend_options)
        return "-".join((self.backend.rpartition(":")[2] or self.backend, *parts))


def _absolute(path: Path) -> Path:
    return path.expanduser().absolute()


@functools.cache
def backend_flags() -> Mapping[str, BackendOption]:
    """The backend options with a flag of their own on the command line, for any backend: those
    the built-ins declare, the first declaration of a name giving its help. Others (and a
    plug-in's) are -o KEY=VALUE."""
    flags: dict[str, BackendOption] = {}
    for name in BACKENDS:
        for option in backend_class(name).declared_options:
            flags.setdefault(option.name, option)
    return flags


def flag(name: str) -> str:
    """The command line's flag for a RunSpec field or a backend option: --model-path."""
    return "--" + name.replace("_", "-")


def parse_option(text: str) -> tuple[str, Any]:
    """KEY=VALUE with the value read as an int, a float, or else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UserError(f"backend option {text!r} must look like KEY=VALUE")
    for kind in (int, float):
        try:
            return key, kind(value)
        except ValueError:
            pass
    return key, value


def check_numbers(spec: RunSpec) -> None:
    """Counts at least 1, threads 0 (all cores) or more, timeouts not negative."""
    for name, value in (("batch size", spec.batch_size), ("workers", spec.workers)):
        if value < 1:
            raise UserError(f"{name} must be at least 1, got {value}")
    if spec.dataset_count is not None and spec.dataset_count < 1:
        raise UserError(f"dataset count must be at least 1, got {spec.dataset_count}")
    threads = spec.backend_options.get("threads", 0)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise UserError(f"threads must be a whole number, 0 (all cores) or more; got {threads!r}")
    if not spec.server_batch_timeout_ms >= 0:
        raise UserError("server batch timeout must not be negative")
    if not spec.stall_timeout_s > 0:
        raise UserError(f"stall timeout must be positive, got {spec.stall_timeout_s:g} s")
    check_cluster(spec.cluster, spec.replicas)


def validate(spec: RunSpec) -> dict[str, str]:
    """Check names, numbers and paths; return the user.conf values this run takes, checked
    as LoadGen will read them."""
    workload = get_workload(spec.model)
    check_choice("scenario", spec.scenario, SCENARIO_NAMES)
    if spec.scenario not in workload.scenarios:
        raise UserError(
            f"{spec.scenario} is not defined for {spec.model}; "
            f"it runs {', '.join(workload.scenarios)}"
        )
    check_choice("mode", spec.mode, MODES)
    check_choice("preset", spec.preset, PRESETS)
    check_numbers(spec)
    spec.model_recipe  # noqa: B018 (checks the built-in reference's density and pattern)
    if spec.dataset_path is not None and not spec.dataset_path.exists():
        raise UserError(f"dataset path {spec.dataset_path} does not exist")
    if spec.vocab_path is not None and not workload.uses_vocab:
        raise UserError(f"{spec.model} takes no vocabulary; drop --vocab-path")
    if spec.calibration_list is not None:
        read_calibration_list(spec.calibration_list)
    if spec.compliance is not None:
        check_compliance_run(spec.compliance, workload.loadgen_key, spec.mode)
    backend = create_backend(spec.backend, spec.backend_options)  # checks names and options
    if spec.mode == "accuracy" and backend.timing_only:
        raise UserError(
            f"{spec.backend_label} computes no outputs (functional=off): accuracy mode needs "
            "them; drop --functional off"
        )
    return user_values(spec)


def user_values(spec: RunSpec) -> dict[str, str]:
    """The values the run's user.conf gives its model and scenario, as LoadGen reads them."""
    if not spec.user_conf:
        return {}
    model_keys = frozenset(w.loadgen_key for w in WORKLOADS.values())
    lines = parse_user_conf(spec.user_conf, model_keys)
    return effective_user_values(lines, get_workload(spec.model).loadgen_key, spec.scenario)
