"""``sparseperf predict``: the simulated accelerator's timing model without LoadGen.

Offline is the steady stream of full batches (transfers overlapping compute), SingleStream and
MultiStream the latency of one query on an idle device, and Server the highest Poisson arrival
rate that passes a LoadGen-length run (``harness.server_model``). What is not given by a flag
comes from the device's submitted configuration for the model (precision, density, batch,
batching timeout, workers, padding removed or not), and the prediction says which values it
used and where each comes from.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from backends.simaccel.device import DeviceProfile
from backends.simaccel.profiles import resolve_profile
from backends.simaccel.submitted import Submission
from backends.simaccel.timing import (
    BatchTime,
    LayerTime,
    Options,
    TimingModel,
    density_warning,
)
from backends.simaccel.workload import ModelWork, model_work
from backends.sparse_int4.sparsity import UNSTRUCTURED
from harness.console import say
from harness.datasets.squad_lengths import builtin_token_counts, describe
from harness.errors import UserError
from harness.models.check import read_interface
from harness.server_model import ServerPoint, capacity
from harness.settings import SCENARIO_NAMES, check_choice
from harness.workloads import get_workload
from harness.workloads.base import DataSource
from scenarios import ScenarioOptions

# Samples per batch where neither --batch nor a submitted configuration says; the stream
# scenarios always.
SCENARIO_BATCH = {"Offline": 64, "Server": 64, "SingleStream": 1, "MultiStream": 8}
BATCH_FIELD = {"Offline": "offline_batch", "Server": "server_batch"}


def mean_load(samples: int, ratios: np.ndarray) -> np.ndarray:
    """The load of ``samples`` average samples, given every sample's tokens / L."""
    return samples * np.array([1.0, ratios.mean(), (ratios * ratios).mean()])


def render(layers: list[LayerTime], limit: int) -> str:
    """The ``limit`` slowest layers as a markdown table, in graph order."""
    slowest = set(
        sorted(range(len(layers)), key=lambda i: layers[i].seconds)[-limit:] if limit else []
    )
    lines = [
        "| layer | op | dense MACs | effective MACs | bytes | bound | time (us) | energy (mJ) |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    lines += [
        f"| {layer.name} | {layer.op} | {layer.dense_macs:,} | {layer.effective_macs:,} | "
        f"{layer.bytes:,} | {layer.bound} | {layer.seconds * 1e6:.2f} | {layer.joules * 1e3:.4f} |"
        for i, layer in enumerate(layers)
        if i in slowest
    ]
    return "\n".join(lines) + "\n"


def batch_lines(timing: BatchTime, layers: list[LayerTime]) -> list[str]:
    """Where one batch's time and energy go."""
    busy: dict[str, float] = {}
    for layer in layers:
        busy[layer.bound] = busy.get(layer.bound, 0.0) + layer.seconds
    share = ", ".join(f"{bound} {100 * s / timing.device_s:.0f}%" for bound, s in busy.items())
    return [
        f"batch of {timing.samples}: device {timing.device_s * 1e3:.4g} ms ({share}, launch "
        f"{timing.launch_s * 1e6:.1f} us); input transfer {timing.transfer_s * 1e3:.4g} ms",
        f"weights {'stay on chip' if timing.weights_on_chip else 'are read every batch'}",
        f"energy: {timing.joules / timing.samples * 1e3:.4g} mJ per sample, "
        f"{timing.samples / timing.joules:.4g} samples/J",
    ]


def offline_rate(model: TimingModel, ratios: np.ndarray, options: ScenarioOptions) -> float:
    """Samples/s of a stream of full batches: one worker waits for each batch to finish,
    more keep the next transfer going while the device computes."""
    timing = model.batch(mean_load(options.batch_size, ratios))
    seconds = timing.latency_s if options.workers == 1 else timing.interval_s
    return options.batch_size / seconds


def server_capacity(
    model: TimingModel, ratios: np.ndarray, options: ScenarioOptions, bound_s: float
) -> ServerPoint:
    """The highest Poisson rate whose LoadGen-length run passes the latency bound."""
    service = [model.batch(mean_load(n, ratios)) for n in range(options.batch_size + 1)]
    # the policy of a run, which sizes batches by the backend's batch times
    options = replace(
        options, batch_times=tuple((n, service[n].latency_s) for n in range(1, len(service)))
    )
    return capacity(service, options, bound_s, offline_rate(model, ratios, options))


@dataclass(frozen=True)
class PredictRequest:
    model: str = "resnet50"
    model_path: Path | None = None
    device: str | None = None
    device_file: Path | None = None
    # None in the fields below: the submitted configuration's value, else the default.
    tokens: str | None = None  # padded (default) or real
    scenario: str = "Offline"
    batch: int | None = None
    workers: int | None = None  # default 1
    server_batch_timeout_ms: float | None = None  # default 0
    precision: str | None = None  # default: the narrowest type the device computes in
    density: float | None = None  # default: the model's own zeros
    sparsity_pattern: str | None = None  # default: a pruned model's own, else unstructured
    dataset_path: Path | None = None
    vocab_path: Path | None = None
    layers: int = 15


@dataclass(frozen=True)
class Prediction:
    """A request resolved to its device, configuration, model work and token ratios."""

    request: PredictRequest  # with every configuration value filled in
    profile: DeviceProfile
    work: ModelWork
    ratios: np.ndarray  # each sample's tokens / L (all 1 when padded or not a token model)
    tokens_note: str
    configuration: tuple[str, ...] = ()  # the values used and where each comes from

    @property
    def options(self) -> Options:
        request = self.request
        return Options(
            request.precision or self.profile.default_dtype(),
            request.density,
            request.sparsity_pattern or UNSTRUCTURED,
        )

    @property
    def batch_size(self) -> int:
        return self.request.batch or SCENARIO_BATCH[self.request.scenario]

    @property
    def scenario_options(self) -> ScenarioOptions:
        request = self.request
        return ScenarioOptions(
            self.batch_size, request.workers or 1, request.server_batch_timeout_ms or 0.0
        )

    def with_profile(self, profile: DeviceProfile) -> Prediction:
        return replace(self, profile=profile)

    def model(self) -> TimingModel:
        return TimingModel(self.work, self.profile, self.options)

    def figure(self) -> tuple[float, str]:
        """The scenario's metric (samples/s, queries/s, or seconds per query) and its line."""
        request, model, scenario = self.request, self.model(), self.scenario_options
        if request.scenario == "Offline":
            rate = offline_rate(model, self.ratios, scenario)
            return rate, f"Offline: {rate:.5g} samples/s"
        if request.scenario == "Server":
            bound = get_workload(request.model).server_latency_ms / 1e3
            point = server_capacity(model, self.ratios, scenario, bound)
            ratio = point.qps / offline_rate(model, self.ratios, scenario)
            return point.qps, (
                f"Server: {point.qps:.5g} queries/s ({ratio:.3f} of Offline at the same batch) "
                f"with p99 {point.p99_s * 1e3:.4g} ms within the {bound * 1e3:g} ms bound "
                f"(Poisson arrivals over a LoadGen-length run, dynamic batches of up to "
                f"{self.batch_size}, {point.mean_batch:.3g} on average, waiting up to "
                f"{scenario.server_batch_timeout_ms:g} ms, {scenario.workers} worker(s))"
            )
        latency = model.batch(mean_load(self.batch_size, self.ratios)).latency_s
        return latency, f"{request.scenario}: {latency * 1e3:.4g} ms per query"


def configure(
    request: PredictRequest, submission: Submission, own_model: bool, token_model: bool
) -> tuple[PredictRequest, tuple[str, ...]]:
    """The request with what no flag gave taken from the submitted configuration, and one line
    per value used saying where it comes from. A model file of the user's (``own_model``)
    keeps its own zeros: the submitted density describes the submitter's model, not it."""
    given: dict[str, object] = {}
    used: list[str] = []

    def pick(field: str, fact_name: str | None, default: object) -> object:
        value = getattr(request, field)
        fact = getattr(submission, fact_name) if fact_name else None
        if value is not None:
            used.append(f"{fact_name or field} = {value} (given)")
            return value
        if fact is not None:
            used.append(f"{fact_name} = {fact.value} ({fact.source})")
            return fact.value
        return default

    given["precision"] = pick("precision", "precision", None)
    if own_model and request.density is None:
        used.append("density = the model file's own zeros")
        given["density"] = None
        given["sparsity_pattern"] = request.sparsity_pattern
    else:
        given["density"] = pick("density", "density", None)
        given["sparsity_pattern"] = pick("sparsity_pattern", "pattern", None)
    scenario = request.scenario
    if scenario in BATCH_FIELD:
        given["batch"] = pick("batch", BATCH_FIELD[scenario], None)
        given["workers"] = pick("workers", "workers", 1)
    if scenario == "Server":
        given["server_batch_timeout_ms"] = pick("server_batch_timeout_ms", "server_timeout_ms", 0.0)
    if token_model:
        given["tokens"] = pick("tokens", "tokens", None)
    return replace(request, **given), tuple(used)  # type: ignore[arg-type]


def prepare(request: PredictRequest) -> Prediction:
    """Check the request and read what it needs (profile, model work, token counts)."""
    profile = resolve_profile(request.device, request.device_file)
    workload = get_workload(request.model)
    check_choice("scenario", request.scenario, SCENARIO_NAMES)
    if request.scenario not in workload.scenarios:
        raise UserError(
            f"{request.scenario} is not defined for {request.model}; it runs "
            f"{', '.join(workload.scenarios)}"
        )
    streams = request.scenario in ("SingleStream", "MultiStream")
    if request.batch is not None and (streams or request.batch < 1):
        raise UserError(
            f"{request.scenario} queries have {SCENARIO_BATCH[request.scenario]} sample(s); "
            "--batch applies to Offline and Server"
            if streams
            else f"batch must be at least 1, got {request.batch}"
        )
    if request.workers is not None and request.workers < 1:
        raise UserError(f"workers must be at least 1, got {request.workers}")
    Options(density=request.density)  # checks the density before any model is read
    if request.model_path is None:  # the built-in model needs no check: BERT-Large stays fast
        path = workload.builtin_model(say, None)
    else:
        from harness.runner import prepare_model
        from harness.spec import RunSpec

        path = prepare_model(RunSpec(model=request.model, model_path=request.model_path))
        pruning = read_interface(path).pruning
        if request.sparsity_pattern is None and pruning is not None:
            request = replace(request, sparsity_pattern=pruning.pattern)
    work = model_work(path)
    submission = profile.submission(workload.loadgen_key)
    own_model = request.model_path is not None
    request, used = configure(request, submission, own_model, bool(work.tokens))
    profile.check_dtype(request.precision or profile.default_dtype())
    ratios, note = _token_ratios(request, work.tokens, path)
    return Prediction(request, profile, work, ratios, note, used)


def predict_lines(prediction: Prediction) -> list[str]:
    """The per-layer table and the scenario's figures, as ``sparseperf predict`` prints them."""
    request, profile, options = prediction.request, prediction.profile, prediction.options
    model = TimingModel(prediction.work, profile, options)
    load = mean_load(prediction.batch_size, prediction.ratios)
    layers = model.layer_times(load)
    weights = f"at density {request.density:g}" if request.density else "as in the model"
    calibrated = profile.calibrated_on or "not calibrated on a published result"
    lines = [
        f"# {request.model} on {profile.name} (simulated: {profile.description}), "
        f"{options.dtype}, weights {weights}, efficiency {profile.efficiency:g}"
        f"{prediction.tokens_note}",
        f"efficiency {profile.efficiency:g}: {calibrated}",
        "configuration (flags, else as the device's results were submitted):",
        *(f"  {line}" for line in prediction.configuration),
        render(layers, request.layers).rstrip("\n"),
        *batch_lines(model.batch(load), layers),
    ]
    if warning := density_warning(profile, options):
        lines.append(f"warning: {warning}")
    lines.append(prediction.figure()[1])
    return lines


def _token_ratios(request: PredictRequest, length: int, path: Path) -> tuple[np.ndarray, str]:
    """Each sample's tokens / L: from the dataset with tokens=real, else all 1 (padded)."""
    if request.tokens not in (None, "padded", "real"):
        raise UserError(f"tokens must be padded or real, got {request.tokens!r}")
    if not length:
        if request.tokens == "real":
            raise UserError(f"tokens=real needs a token model; {request.model} is not")
        return np.ones(1), ""
    if request.tokens != "real":
        return np.ones(1), f"; work per sample for all {length} padded tokens"
    if request.dataset_path is None:
        counts = builtin_token_counts(say)
        return counts / length, f"; work per sample for its real tokens, from {describe(counts)}"
    workload = get_workload(request.model)
    source = DataSource(request.dataset_path, None, request.vocab_path)
    data = workload.open_data(source, path, say)
    mask = data.load(np.arange(data.count))[workload.token_mask]
    ratios = np.count_nonzero(mask, axis=1) / length
    note = (
        f"; work per sample for its real tokens ({ratios.mean() * length:.1f} of {length} on "
        f"average over {data.description})"
    )
    return ratios, note
