"""The ``sparseperf`` command line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from backends import backend_class
from harness import interrupts
from harness.console import say
from harness.errors import UserError
from harness.files import read_text
from harness.settings import SCENARIO_NAMES
from harness.spec import MODES, RunSpec, backend_flags, flag, parse_option
from harness.tune import MAX_MINUTES
from harness.watchdog import DEFAULT_STALL_S
from harness.workloads import WORKLOADS, get_workload

EXIT_ERROR = 2


def options(*flags: Callable) -> Callable[[Callable], Callable]:
    """One decorator for several click options, in the order they are listed."""

    def apply(command: Callable) -> Callable:
        for add in reversed(flags):
            command = add(command)
        return command

    return apply


class DeclaredFlags:
    """Where a command takes backend options as flags of their own. They are made from the
    backends' declarations only when click reads the command's options (to parse them or to
    show its help), so that ``sparseperf --help`` and the other commands import no backend."""

    def __init__(self, backend: str | None, names: tuple[str, ...]) -> None:
        self.backend = backend  # None: every built-in's flags (harness.spec.backend_flags)
        self.names = names  # those of the backend's options (none named: all)

    def options(self) -> list[click.Option]:
        if self.backend is None:
            declared = backend_flags()
        else:
            declared = {o.name: o for o in backend_class(self.backend).declared_options}
        return [
            click.Option(
                [flag(option.name)],
                type=click.Path(path_type=Path) if option.type is Path else option.type,
                default=None,
                help=option.help,
            )
            for option in (declared[name] for name in self.names or declared)
        ]


def declared_flags(backend: str | None = None, *names: str) -> Callable[[Callable], Callable]:
    """Flags for declared backend options, placed as a click.option is: every built-in's, or
    one backend's (those named, or all)."""

    def apply(command: Callable) -> Callable:
        params = getattr(command, "__click_params__", [])
        command.__click_params__ = [*params, DeclaredFlags(backend, names)]
        return command

    return apply


class Command(click.Command):
    """A click command whose DeclaredFlags become click options when click first reads them."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        self.params = [
            made
            for param in self.params
            for made in (param.options() if isinstance(param, DeclaredFlags) else [param])
        ]
        return super().get_params(ctx)


class Group(click.Group):
    """The command line's groups, whose commands are ``Command``s."""

    command_class = Command
    group_class = type  # subgroups are Groups too


# A built-in pruned reference, shared by run and compare.
model_reference_flags = options(
    click.option(
        "--model-density",
        type=float,
        default=None,
        help="Use the built-in model pruned to this density when built (recalibrated, with "
        "its own FP32 labels): a pruned reference every backend runs.",
    ),
    click.option(
        "--model-pattern",
        default=None,
        help="The built-in reference's pruning pattern: 1x4 (default), 4x4, 16x4, unstructured "
        "or N:M.",
    ),
)


# Scale-out on Ray, shared by run, tune, compare and submission run.
cluster_flags = options(
    click.option(
        "--cluster",
        default=None,
        help="Run the backend on replicas in a Ray cluster: local:N (a cluster on 127.0.0.1 "
        "started for the run, N replica processes) or HOST:PORT of one started with `ray "
        "start --head` or `sparseperf cluster start`.",
    ),
    click.option(
        "--replicas",
        type=int,
        default=None,
        help="Backend replicas on the cluster (default: one per node; N on local:N).",
    ),
)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """MLPerf-Inference-style benchmarks: LoadGen scenarios over pluggable backends."""


def run_options(preset_default: str) -> Callable[[Callable], Callable]:
    """What one run needs besides its scenario and mode: model, backend, data, settings."""
    return options(
        click.option("--model", default="resnet50", show_default=True, help=", ".join(WORKLOADS)),
        click.option(
            "--backend",
            default="onnxruntime",
            show_default=True,
            help="onnxruntime, sparse-int4, simaccel, or a plug-in backend as module:Class.",
        ),
        declared_flags(),
        click.option(
            "--backend-option",
            "-o",
            "extra_options",
            multiple=True,
            metavar="KEY=VALUE",
            help="Any other backend option, e.g. -o graph_optimization=extended (repeatable).",
        ),
        click.option(
            "--preset",
            default=preset_default,
            show_default=True,
            help="smoke (seconds, not compliant), short (about a minute, not compliant), "
            "valid (official durations and counts).",
        ),
        click.option(
            "--model-path",
            type=click.Path(path_type=Path),
            help="ONNX model file (e.g. the official resnet50_v1.onnx, or one written by "
            "sparseperf prune); default: built-in synthetic.",
        ),
        model_reference_flags,
        click.option(
            "--dataset-path",
            type=click.Path(path_type=Path),
            help="Dataset: ImageNet val folder with val_map.txt, or SQuAD dev-v1.1.json "
            "(or its folder); default: built-in synthetic.",
        ),
        click.option(
            "--dataset-count",
            type=int,
            help="Use only the first N images (ImageNet) or questions (SQuAD).",
        ),
        click.option(
            "--vocab-path",
            type=click.Path(path_type=Path),
            help="BERT: the model's vocab.txt; default: vocab.txt beside the SQuAD file.",
        ),
        click.option(
            "--calibration-list",
            type=click.Path(path_type=Path),
            help="Samples backends calibrate on, one name per line: images in the dataset "
            "folder (ImageNet) or question ids (SQuAD). The closed division needs the official "
            "list (e.g. cal_image_list_option_1.txt); default: 128 dataset samples.",
        ),
        click.option(
            "--user-conf",
            type=click.Path(path_type=Path),
            help="LoadGen user.conf whose values override the preset's (keys are checked).",
        ),
        click.option(
            "--batch-size",
            type=int,
            default=8,
            show_default=True,
            help="Offline batch size; largest dynamic batch in Server.",
        ),
        click.option(
            "--workers",
            type=int,
            default=1,
            show_default=True,
            help="Worker threads for Offline and Server.",
        ),
        click.option(
            "--server-batch-timeout-ms",
            type=float,
            default=0.0,
            show_default=True,
            help="How long Server waits to fill a batch (0: take what is queued).",
        ),
        click.option(
            "--runs-dir",
            type=click.Path(path_type=Path),
            default=Path("runs"),
            show_default=True,
            help="Where run folders are written.",
        ),
        click.option(
            "--stall-timeout",
            "stall_timeout_s",
            type=float,
            default=DEFAULT_STALL_S,
            show_default=True,
            help="Seconds the backend may go without progress (in load() or a batch) before "
            "the run is stopped as hung; once batches are timed, 50x the slowest batch (at "
            "least 10 s) if that is less.",
        ),
        cluster_flags,
    )


@cli.command()
@click.option("--scenario", default="Offline", show_default=True, help=", ".join(SCENARIO_NAMES))
@click.option("--mode", default="performance", show_default=True, help=" or ".join(MODES))
@run_options(preset_default="short")
@click.option(
    "--compliance",
    default=None,
    help="Make this a compliance run: TEST01 (resnet50, bert) or TEST04 (resnet50); its "
    "audit.config is applied in this run's folder only.",
)
def run(extra_options: tuple[str, ...], **fields: Any) -> None:
    """Run one LoadGen test and write a run folder."""
    from harness.spec import validate
    from harness.submitted_run import with_submitted

    options = backend_options(fields, extra_options)
    own_model = fields["model_path"] is not None or fields["model_density"] is not None
    options, submitted = with_submitted(fields["backend"], fields["model"], own_model, options)
    spec = RunSpec(backend_options=options, **fields)
    if submitted:
        validate(spec)  # a bad option fails in one line, before the lines below
        for line in submitted:
            say(line)
    from harness.runner import run as execute  # heavy imports only when a run starts

    outcome = execute(spec)
    click.echo(result_line(spec, outcome.result, outcome.folder))


@cli.command()
@click.option("--scenario", default="Server", show_default=True, help=", ".join(SCENARIO_NAMES))
@run_options(preset_default="short")
@click.option("--retune", is_flag=True, help="Search again even when a value is stored.")
@click.option(
    "--max-time",
    "max_minutes",
    type=float,
    default=MAX_MINUTES,
    show_default=True,
    help="Minutes the Server search may take in all; a probe that would end later is not run.",
)
def tune(extra_options: tuple[str, ...], retune: bool, max_minutes: float, **fields: Any) -> None:
    """Find the LoadGen target (Server QPS, expected latency or QPS) with short probe runs and
    store it for later runs on this host, backend, model and scenario."""
    from harness.spec import validate
    from harness.tune import Budget, loadgen_probe, tune
    from harness.tuned import save, store_key, store_path, stored

    spec = RunSpec(backend_options=backend_options(fields, extra_options), **fields)
    budget = Budget(max_minutes * 60)
    validate(spec)
    kept = stored(spec)
    if kept is not None and not retune:
        click.echo(f"stored for {store_key(spec)}: {kept.describe()}; --retune searches again")
        return
    start = float(kept.values["target_qps"]) if kept and spec.scenario == "Server" else None
    tuned = tune(spec, loadgen_probe(spec.runs_dir / "tune"), say, start, budget)
    save(spec, tuned)
    click.echo(
        f"TUNED {spec.model_label} {spec.scenario} {spec.backend_label}: {tuned.describe()} "
        f"-> {store_path()}; later runs use it"
    )


def backend_options(fields: dict[str, Any], extra_options: tuple[str, ...]) -> dict[str, Any]:
    """Backend options from the dedicated flags (taken out of ``fields``) and -o KEY=VALUE."""
    flags = {name: fields.pop(name) for name in backend_flags() if name in fields}
    options = {name: value for name, value in flags.items() if value is not None}
    options.update(parse_option(text) for text in extra_options)
    return options


def result_line(spec: RunSpec, result: dict, folder: Path) -> str:
    """The one line that ends a run."""
    mode = f"{spec.mode} {spec.compliance}" if spec.compliance else spec.mode
    head = f"RESULT {spec.model_label} {spec.scenario} {spec.backend_label} {mode}:"
    notes = [result["model_note"]] if result.get("model_note") else []
    if not result.get("compliant_preset"):
        notes.append(f"preset {spec.preset} is not compliant")
    if result.get("synthetic_data"):
        notes.append("synthetic data")
    if result.get("backend_report", {}).get("warning"):
        notes.append(result["backend_report"]["warning"])
    cluster = result.get("cluster")
    if cluster:
        died = sum(1 for replica in cluster["replicas"] if replica["died"])
        notes.append(
            f"{cluster['replicas_served']} of {len(cluster['replicas'])} replica(s) served it "
            f"on {cluster['nodes']} node(s)" + (f", {died} died" if died else "")
        )
    if spec.mode == "accuracy":
        body = result["accuracy"]["line"]
        if result.get("synthetic_data"):
            notes.append("accuracy = agreement with the FP32 reference")
    else:
        body = f"{result['value']:.4g} {result['units']}, {result['validity']}"
        if result["invalid_reasons"]:
            body += " (" + "; ".join(result["invalid_reasons"]) + ")"
    suffix = f" [{', '.join(notes)}]" if notes else ""
    return f"{head} {body}{suffix} -> {folder}"


@cli.group()
def data() -> None:
    """Datasets: make synthetic ones in the official layouts."""


@data.group()
def synth() -> None:
    """Write a synthetic dataset in an official layout."""


@synth.command("imagenet")
@click.option("--count", type=int, required=True, help="Number of images.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="New folder.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--model-path",
    type=click.Path(path_type=Path),
    help="Model whose FP32 predictions become the labels; default: built-in ResNet-50.",
)
def synth_imagenet(count: int, out: Path, seed: int, model_path: Path | None) -> None:
    """JPEG images plus val_map.txt; labels are FP32 model predictions."""
    from harness.datasets.imagenet import write_synthetic_imagenet
    from harness.runner import prepare_model
    from harness.workloads.resnet50 import fp32_labels

    model = prepare_model(RunSpec(model="resnet50", model_path=model_path))
    write_synthetic_imagenet(out, count, seed, fp32_labels(model), model.name, say)
    say(f"wrote {count} synthetic images and val_map.txt to {out}")
    click.echo(
        f"{out}: synthetic ImageNet-layout set; labels are the FP32 predictions of "
        f"{model.name}, so accuracy on it measures agreement with FP32"
    )


@synth.command("squad")
@click.option("--count", type=int, required=True, help="Number of questions.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="New folder.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--model",
    default="bert-large",
    show_default=True,
    help="Built-in model whose FP32 predictions become the answers: bert-large or bert-tiny.",
)
@click.option(
    "--model-path",
    type=click.Path(path_type=Path),
    help="BERT ONNX model whose FP32 predictions become the answers; default: built-in.",
)
def synth_squad(count: int, out: Path, seed: int, model: str, model_path: Path | None) -> None:
    """dev-v1.1.json plus vocab.txt; gold answers are FP32 model predictions."""
    from harness.datasets.synthetic_squad import write_synthetic_squad
    from harness.runner import prepare_model
    from harness.workloads.bert import fp32_answers

    spec = RunSpec(model=model, model_path=model_path)
    if not get_workload(model).uses_vocab:
        raise UserError(f"{model} is not a BERT model; choose bert-large or bert-tiny")
    path = prepare_model(spec)
    write_synthetic_squad(out, count, seed, fp32_answers(path, say), path.name, say)
    click.echo(
        f"{out}: synthetic SQuAD v1.1-layout set; answers are the FP32 predictions of "
        f"{path.name}, so accuracy on it measures agreement with FP32"
    )


@cli.command()
@click.option("--model", default="resnet50", show_default=True, help=", ".join(WORKLOADS))
@click.option("--model-path", type=click.Path(path_type=Path), default=None, help="ONNX model.")
@declared_flags("sparse-int4")
@click.option("--format", "fmt", type=click.Choice(["md", "csv"]), default="md", show_default=True)
def inspect(model: str, model_path: Path | None, fmt: str, **flags: Any) -> None:
    """Per-layer table of a model on the sparse-int4 backend: shapes, density, bits per
    weight, clipping, weight SQNR, MACs and bytes."""
    from backends.sparse_int4.backend import SparseInt4Backend
    from harness.layer_report import layer_rows, render, summary
    from harness.runner import prepare_model

    options = backend_options(dict(flags, precision=None, threads=None), ())
    backend = SparseInt4Backend(**options)
    path = prepare_model(RunSpec(model=model, model_path=model_path))
    click.echo(f"# {model} on sparse-int4: {backend.options.describe()}", err=True)
    layers = backend.inspect(path)
    click.echo(render(layer_rows(layers), fmt), nl=False)
    click.echo(summary(layers), err=True)


@cli.command("prune")
@click.option("--model", default="resnet50", show_default=True, help=", ".join(WORKLOADS))
@click.option(
    "--model-path",
    type=click.Path(path_type=Path),
    default=None,
    help="ONNX model to prune (e.g. the official file); default: the built-in synthetic one.",
)
@click.option("--density", type=float, required=True, help="Fraction of weights kept, in (0, 1].")
@click.option(
    "--sparsity-pattern",
    default="1x4",
    show_default=True,
    help="1x4 (whole blocks of 4 input channels, sparse-int4's fast pattern), 4x4 (those "
    "blocks kept by 4 output channels together: faster, less accurate), 16x4 (by 16: AMX "
    "tiles), unstructured, or N:M such as 2:4.",
)
@click.option(
    "--keep-dense",
    default="",
    help="Layers left dense: first, last or first,last (in graph order).",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="New ONNX file.")
def prune(
    model: str,
    model_path: Path | None,
    density: float,
    sparsity_pattern: str,
    keep_dense: str,
    out: Path,
) -> None:
    """Write a magnitude-pruned copy of a model (zeros in its weight-bearing layers, the same
    patterns as sparse-int4), with the density and pattern in its metadata."""
    from harness.models.recipe import Recipe
    from harness.prune import check_output, prune_file, summary_lines
    from harness.runner import prepare_model

    check_output(out)
    ends = tuple(dict.fromkeys(part.strip() for part in keep_dense.split(",") if part.strip()))
    recipe = Recipe(density, sparsity_pattern, ends)
    source = prepare_model(RunSpec(model=model, model_path=model_path))
    label = model_path.name if model_path else f"built-in synthetic {model} (seed 0)"
    record = prune_file(source, recipe, out, label)
    for line in summary_lines(record):
        click.echo(line)
    click.echo(f"wrote {out}: {model}, {record.recipe.describe()}")


@cli.command("sparsity-table")
@click.option("--model", default="resnet50", show_default=True, help=", ".join(WORKLOADS))
@click.option("--model-path", type=click.Path(path_type=Path), default=None, help="ONNX model.")
@click.option("--dataset-path", type=click.Path(path_type=Path), default=None)
@click.option("--vocab-path", type=click.Path(path_type=Path), default=None)
@click.option("--dataset-count", type=int, default=256, show_default=True, help="Samples per run.")
@click.option(
    "--densities",
    default="1,0.5,0.25,0.125,0.0625,0.03125",
    show_default=True,
    help="Weight densities, comma-separated.",
)
@declared_flags("sparse-int4")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option(
    "--runs-dir", type=click.Path(path_type=Path), default=Path("runs"), show_default=True
)
def sparsity_table(densities: str, out: Path, **fields: Any) -> None:
    """Accuracy against weight density (sparse-int4 vs FP32 onnxruntime), as markdown + CSV."""
    from harness.sparsity_table import measure, parse_densities, write_tables

    chosen = parse_densities(densities)
    if fields.pop("density") is not None:
        raise UserError("sparsity-table takes --densities (a list), not --density")
    fields.update(density=None, precision=None, threads=None)
    options = backend_options(fields, ())  # takes the backend flags out of fields
    base = RunSpec(preset="smoke", **fields)
    rows = measure(base, chosen, options)
    markdown, table = write_tables(rows, out, f"{base.model}: accuracy against weight density")
    click.echo(markdown.read_text())
    click.echo(f"wrote {markdown} and {table}")


# What a prediction is of: shared by predict and calibrate. What no flag gives comes from the
# device's submitted configuration for the model (see the predict output), else the defaults:
# the model's own zeros, the narrowest type, batch 64, 1 worker, padded tokens.
prediction_flags = options(
    click.option("--model", default="resnet50", show_default=True, help=", ".join(WORKLOADS)),
    click.option("--model-path", type=click.Path(path_type=Path), default=None, help="ONNX model."),
    declared_flags("simaccel", "device", "device_file", "tokens"),
    click.option(
        "--scenario", default="Offline", show_default=True, help=", ".join(SCENARIO_NAMES)
    ),
    click.option(
        "--batch", type=int, default=None, help="Samples per batch (Server: the largest batch)."
    ),
    click.option(
        "--workers", type=int, default=None, help="Batches in flight, as in sparseperf run."
    ),
    click.option(
        "--server-batch-timeout-ms",
        type=float,
        default=None,
        help="Server: how long a batch waits to fill.",
    ),
    declared_flags("simaccel", "precision", "density", "sparsity_pattern"),
    click.option(
        "--dataset-path", type=click.Path(path_type=Path), default=None, help="For --tokens real."
    ),
    click.option(
        "--vocab-path", type=click.Path(path_type=Path), default=None, help="For --tokens real."
    ),
)


@cli.command()
@prediction_flags
@click.option(
    "--layers",
    type=click.IntRange(min=0),
    default=15,
    show_default=True,
    help="Slowest layers shown.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "csv"]),
    default="text",
    show_default=True,
    help="json or csv: every layer and the totals, for scripts (--layers applies to text).",
)
def predict(fmt: str, **fields: Any) -> None:
    """Predict a modelled device's throughput, latency and energy, layer by layer (no LoadGen)."""
    from harness.predict import PredictRequest, predict_lines, prepare
    from harness.predict_output import as_csv, as_json

    prediction = prepare(PredictRequest(**fields))
    if fmt == "text":
        for line in predict_lines(prediction):
            click.echo(line)
    else:
        click.echo((as_json if fmt == "json" else as_csv)(prediction), nl=False)


@cli.command()
@prediction_flags
@click.option(
    "--measured",
    type=float,
    required=True,
    help="The published or measured result: samples/s (Offline), queries/s (Server), "
    "or ms per query (SingleStream, MultiStream).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Profile file to write (default: the --device-file itself).",
)
def calibrate(measured: float, out: Path | None, **fields: Any) -> None:
    """Fit a device profile's efficiency factor to one measured result; write the profile."""
    from backends.simaccel.profiles import write_profile_file
    from harness.calibrate import UNITS, fit_efficiency
    from harness.predict import PredictRequest, prepare

    target = out or fields["device_file"]
    if target is None:
        raise UserError("give --out FILE for the calibrated profile (or calibrate a --device-file)")
    prediction = prepare(PredictRequest(**fields))
    before = prediction.figure()[1]
    profile = fit_efficiency(prediction, measured)
    source = (
        f"efficiency {profile.efficiency:g} fitted to {measured:g} "
        f"{UNITS[prediction.request.scenario]} ({prediction.request.model} "
        f"{prediction.request.scenario}, batch {prediction.batch_size}, density "
        f"{prediction.request.density or 'as in the model'})"
    )
    profile = replace(profile, references=(*profile.references, source))
    write_profile_file(profile, target)
    click.echo(f"before: {before}")
    click.echo(f"after:  {prediction.with_profile(profile).figure()[1]}")
    click.echo(f"wrote {target}: {source}")


# Where a comparison's tables go, and what it is checked against: shared by compare and report.
output_flags = options(
    click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder."),
    click.option(
        "--baseline-backend",
        default=None,
        help="Speed-ups in the tables are against this backend (default: the first one).",
    ),
    click.option(
        "--baseline",
        type=click.Path(path_type=Path),
        default=None,
        help="results.json of an earlier comparison: fail when a cell's ratio to it regresses.",
    ),
    click.option(
        "--fail-below",
        type=float,
        default=0.9,
        show_default=True,
        help="With --baseline: the lowest ratio (higher is better) that still passes.",
    ),
)


@cli.command()
@click.option("--models", default="resnet50", show_default=True, help="Comma-separated models.")
@click.option(
    "--backends",
    default="onnxruntime:fp32,onnxruntime:int8",
    show_default=True,
    help="Comma-separated name[:main option][:key=value...], e.g. onnxruntime:int8, "
    "sparse-int4:0.125, simaccel:moffett-s30.",
)
@click.option("--scenarios", default="Offline", show_default=True, help="Comma-separated.")
@click.option("--preset", default="smoke", show_default=True, help="smoke, short or valid.")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--workers", type=int, default=1, show_default=True)
@click.option("--dataset-count", type=int, default=None, help="Use only the first N samples.")
@click.option(
    "--model-path",
    type=click.Path(path_type=Path),
    default=None,
    help="The ONNX file every backend runs (one model), e.g. one written by sparseperf prune.",
)
@model_reference_flags
@click.option(
    "--accuracy/--no-accuracy",
    default=True,
    show_default=True,
    help="Also one Offline accuracy run per model and backend.",
)
@cluster_flags
@output_flags
def compare(
    models: str,
    backends: str,
    scenarios: str,
    out: Path,
    baseline_backend: str | None,
    baseline: Path | None,
    fail_below: float,
    **settings: Any,
) -> None:
    """Run a models x backends x scenarios matrix and write its tables and report."""
    from harness.compare.matrix import Matrix, estimate_s, run_cells
    from harness.compare.publish import check_writable, match_baseline, read_baseline
    from harness.compare.rows import backend_spec

    matrix = Matrix.parse(models, backends, scenarios, **settings)
    choices = [choice.text for choice in matrix.backends]
    base = _baseline_backend(baseline_backend, choices)
    check_writable(out)
    specs = matrix.specs(out / "runs")
    if baseline is not None:
        cells = [(s.model, backend_spec(s), s.scenario) for s in specs if s.mode == "performance"]
        match_baseline(read_baseline(baseline), cells, baseline)
    for cell in matrix.skipped():
        say(f"skipped: {cell} (not defined for that model)")
    minutes = estimate_s(specs) / 60
    say(f"{len(specs)} runs (preset {matrix.preset}), about {minutes:.0f} min in all")
    rows = run_cells(specs, say)
    _publish(rows, out, base, baseline, fail_below)


@cli.command()
@click.argument("run_folders", nargs=-1, type=click.Path(path_type=Path))
@output_flags
def report(
    run_folders: tuple[Path, ...],
    out: Path,
    baseline_backend: str | None,
    baseline: Path | None,
    fail_below: float,
) -> None:
    """Tables and report from existing run folders (or folders of runs), without re-running."""
    from harness.compare.publish import check_writable, read_rows
    from harness.compare.tables import backends

    check_writable(out)
    rows = read_rows(list(run_folders))
    base = _baseline_backend(baseline_backend, backends(rows))
    _publish(rows, out, base, baseline, fail_below)


def _baseline_backend(name: str | None, choices: list[str]) -> str | None:
    """The backend speed-ups are taken against: the named one (in its canonical spelling), or
    the first."""
    from harness.compare.choices import parse_backend

    if name is None:
        return choices[0] if choices else None
    text = parse_backend(name).text
    if text not in choices:
        raise UserError(f"baseline backend {name!r} is not in the matrix ({', '.join(choices)})")
    return text


def _publish(
    rows: list[dict], out: Path, base: str | None, baseline: Path | None, fail_below: float
) -> None:
    from harness.compare.publish import Regression, check_baseline, publish

    check = check_baseline(rows, baseline, fail_below) if baseline is not None else None
    for path in publish(rows, out, base, check):
        click.echo(f"wrote {path}")
    if check and check.failures:
        raise Regression(
            f"{len(check.failures)} cell(s) below {fail_below:g}x the baseline: "
            + "; ".join(check.failures)
        )
    failed = [row for row in rows if row["status"] != "complete"]
    if failed:
        raise UserError(
            f"{len(failed)} of {len(rows)} cell(s) failed (the others are in the tables): "
            + "; ".join(f"{r['model']} {r['backend']} {r['scenario']} {r['mode']}" for r in failed)
        )
    click.echo(f"{len(rows)} cells, all finished")


@cli.group()
def cluster() -> None:
    """A local Ray cluster on 127.0.0.1 for repeated runs (--cluster local:N starts one per run)."""


@cluster.command("start")
@click.option(
    "--slots",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Replica slots: the replicas a run on it gets by default (actor processes).",
)
def cluster_start(slots: int) -> None:
    """Start the local cluster; runs use it with --cluster ADDRESS."""
    from harness.cluster import require_ray
    from harness.cluster.local import save, saved, start

    require_ray()
    running = saved()
    if running is not None:
        raise UserError(
            f"a local cluster is already running at {running.address}; stop it first with: "
            "sparseperf cluster stop"
        )
    started = start(slots, detach=True)
    save(started)
    click.echo(f"local Ray cluster at {started.address} ({slots} replica slot(s))")
    click.echo(f"run on it with: sparseperf run --cluster {started.address} ...")


@cluster.command("stop")
def cluster_stop() -> None:
    """Stop the local cluster and everything it runs."""
    from harness.cluster.local import forget, saved, stop

    running = saved()
    if running is None:
        click.echo("no local cluster is running")
        return
    stop(running)
    forget()
    click.echo(f"stopped the local Ray cluster at {running.address}")


@cluster.command("status")
def cluster_status() -> None:
    """Whether the local cluster runs, and its address."""
    from harness.cluster.local import saved

    running = saved()
    if running is None:
        click.echo("no local cluster is running (start one with: sparseperf cluster start)")
        return
    click.echo(
        f"local Ray cluster at {running.address}: {running.slots} replica slot(s), "
        f"process {running.pid}, folder {running.folder}"
    )


@cli.group()
def submission() -> None:
    """MLPerf Inference v6.1 submission trees: run, build, check."""


# Who submits what: shared by submission run and build.
submission_flags = options(
    click.option("--submitter", required=True, help="Submitting organisation (a folder name)."),
    click.option("--system", required=True, help="System under test's name: systems/<NAME>.json."),
    click.option(
        "--division",
        required=True,
        type=click.Choice(["closed", "open", "network"]),
        help="closed: the reference model as is (onnxruntime); network: the same rules, "
        "LoadGen driving replicas through the cluster dispatcher (--cluster); open: anything "
        "else.",
    ),
    click.option(
        "--system-file",
        type=click.Path(path_type=Path),
        help="JSON with the system fields that cannot be detected (host_storage_type, "
        "host_memory_configuration, cooling) and any to override (status, system_type...).",
    ),
    click.option("--out", type=click.Path(path_type=Path), required=True, help="New tree folder."),
)


def report_build(report: Any) -> None:
    for problem in report.problems:
        click.echo(f"warning: {problem}", err=True)
    click.echo(f"wrote {report.root} ({', '.join(report.scenarios)})")
    click.echo(f"check it with: sparseperf submission check {report.root.parent.parent}")


@submission.command("build")
@submission_flags
@click.option(
    "--from",
    "run_list",
    type=click.Path(path_type=Path),
    help="A file listing run folders, one per line (instead of or besides RUN_FOLDERS).",
)
@click.argument("run_folders", nargs=-1, type=click.Path(path_type=Path))
def submission_build(
    run_folders: tuple[Path, ...], run_list: Path | None, out: Path, **fields: Any
) -> None:
    """Assemble run folders (performance, accuracy, compliance) into a submission tree."""
    from submissions.build import BuildRequest, build

    folders = list(run_folders)
    if run_list is not None:
        lines = read_text(run_list, "run list").splitlines()
        folders += [Path(line.strip()) for line in lines if line.strip()]
    report_build(build(BuildRequest(out=out, runs=tuple(folders), **fields), say))


@submission.command("run")
@run_options(preset_default="valid")
@click.option(
    "--scenarios",
    default=None,
    help="Comma-separated scenarios (default: all the division requires of the system type).",
)
@submission_flags
def submission_run(
    extra_options: tuple[str, ...],
    scenarios: str | None,
    submitter: str,
    system: str,
    division: str,
    system_file: Path | None,
    out: Path,
    **fields: Any,
) -> None:
    """Run everything a submission needs (scenarios, accuracy, compliance), then build it."""
    from submissions.build import BuildRequest
    from submissions.orchestrate import run_submission

    options = backend_options(fields, extra_options)
    base = RunSpec(backend_options=options, **fields)
    request = BuildRequest(submitter, system, division, out, (), system_file)
    chosen = tuple(s.strip() for s in scenarios.split(",")) if scenarios else None
    report_build(run_submission(base, request, chosen, say))


@submission.command("check")
@click.argument("tree", type=click.Path(path_type=Path))
def submission_check(tree: Path) -> None:
    """Check a submission tree; every problem is listed with its path."""
    from submissions.check import check_tree

    problems, checked = check_tree(tree)
    for problem in problems:
        click.echo(problem)
    if problems:
        raise UserError(f"{len(problems)} problem(s) in {checked} result folder(s) of {tree}")
    click.echo(f"{tree}: {checked} result folder(s), no problems found")


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors end in one line on stderr and a non-zero exit; SIGTERM and
    SIGHUP end a command as Ctrl-C does."""
    try:
        with interrupts.handled():
            cli.main(args=argv, prog_name="sparseperf", standalone_mode=False)
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "sparseperf"
        click.echo(f"error: {exc.format_message()} (see: {command} --help)", err=True)
        sys.exit(EXIT_ERROR)
    except click.Abort as exc:
        stop = exc.__cause__ if isinstance(exc.__cause__, KeyboardInterrupt) else None
        click.echo(f"error: {interrupts.reason(stop) if stop else 'aborted'}", err=True)
        sys.exit(interrupts.exit_code(stop) if stop else EXIT_ERROR)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except OSError as exc:  # the system refused a file operation (full disk, permissions...)
        where = f" ({exc.filename})" if exc.filename else ""
        click.echo(f"error: {exc.strerror or exc}{where}", err=True)
        sys.exit(EXIT_ERROR)
