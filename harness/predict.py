"""``sparseperf predict``: the simulated accelerator's timing model without LoadGen.

Offline is the steady stream of full batches (transfers overlapping compute), SingleStream and
MultiStream the latency of one query on an idle device, and Server the highest Poisson arrival
rate whose p99 latency meets the bound when queries go through the Server scenario's own
batching policy (``scenarios.server.simulate``) onto the modelled device.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from backends.simaccel.profiles import DeviceProfile, resolve_profile
from backends.simaccel.timing import (
    BatchTime,
    DeviceClock,
    LayerTime,
    Options,
    TimingModel,
    density_warning,
)
from backends.simaccel.workload import ModelWork, model_work
from backends.sparse_int4.sparsity import UNSTRUCTURED
from harness.errors import UserError
from harness.loadgen_run import say
from harness.models.check import read_interface
from harness.settings import SCENARIO_NAMES, check_choice
from harness.workloads import get_workload
from harness.workloads.base import DataSource
from scenarios import ScenarioOptions
from scenarios.server import poisson_arrivals, simulate

# Samples per batch: Offline and Server by default (--batch), the stream scenarios always.
SCENARIO_BATCH = {"Offline": 64, "Server": 64, "SingleStream": 1, "MultiStream": 8}
SERVER_QUERIES = 20_000  # simulated queries per probed rate
SERVER_STEPS = 14  # bisection steps: the rate is found to 1/16,000 of the device's capacity


def mean_load(samples: int, ratios: np.ndarray) -> np.ndarray:
    """The load of ``samples`` average samples, given every sample's tokens / L."""
    return samples * np.array([1.0, ratios.mean(), (ratios * ratios).mean()])


def render(layers: list[LayerTime], limit: int) -> str:
    """The ``limit`` slowest layers as a markdown table, in graph order."""
    slowest = set(sorted(range(len(layers)), key=lambda i: layers[i].seconds)[-limit:])
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


@dataclass(frozen=True)
class ServerPoint:
    qps: float  # the highest rate found whose p99 meets the bound
    p99_s: float
    mean_batch: float


def offline_rate(model: TimingModel, ratios: np.ndarray, options: ScenarioOptions) -> float:
    """Samples/s of a stream of full batches: one worker waits for each batch to finish,
    more keep the next transfer going while the device computes."""
    timing = model.batch(mean_load(options.batch_size, ratios))
    seconds = timing.latency_s if options.workers == 1 else timing.interval_s
    return options.batch_size / seconds


def server_capacity(
    model: TimingModel, ratios: np.ndarray, options: ScenarioOptions, bound_s: float
) -> ServerPoint:
    """Bisect the Poisson rate for the highest one whose p99 latency is within the bound."""
    service = [model.batch(mean_load(n, ratios)) for n in range(options.batch_size + 1)]
    # the policy of a run, which sizes batches by the backend's batch times
    options = replace(
        options, batch_times=tuple((n, service[n].latency_s) for n in range(1, len(service)))
    )
    best = ServerPoint(0.0, service[1].latency_s, 1.0)
    if service[1].latency_s > bound_s:
        return best
    # A finite run can briefly exceed the device's capacity before its queue grows past the
    # bound; no rate above the capacity is sustainable, so the search stops there.
    low, high = 0.0, offline_rate(model, ratios, options)
    for _ in range(SERVER_STEPS):
        rate = (low + high) / 2
        point = _server_run(rate, service, options)
        if point.p99_s <= bound_s:
            low, best = rate, point
        else:
            high = rate
    return best


def _server_run(rate: float, service: list[BatchTime], options: ScenarioOptions) -> ServerPoint:
    clock = DeviceClock()
    batches: list[int] = []

    def serve(dispatch: float, samples: int) -> float:
        batches.append(samples)
        return clock.finish(dispatch, service[samples])[1]

    latencies = simulate(poisson_arrivals(rate, SERVER_QUERIES), options, serve)
    return ServerPoint(rate, float(np.percentile(latencies, 99)), float(np.mean(batches)))


@dataclass(frozen=True)
class PredictRequest:
    model: str = "resnet50"
    model_path: Path | None = None
    device: str | None = None
    device_file: Path | None = None
    tokens: str | None = None  # padded (default) or real
    scenario: str = "Offline"
    batch: int | None = None
    workers: int = 1
    precision: str | None = None
    density: float | None = None
    sparsity_pattern: str | None = None  # None: a pruned model's own, else unstructured
    dataset_path: Path | None = None
    vocab_path: Path | None = None
    layers: int = 15


@dataclass(frozen=True)
class Prediction:
    """A request resolved to its device, model work and per-sample token ratios."""

    request: PredictRequest
    profile: DeviceProfile
    work: ModelWork
    ratios: np.ndarray  # each sample's tokens / L (all 1 when padded or not a token model)
    tokens_note: str

    @property
    def options(self) -> Options:
        request = self.request
        dtype = request.precision or self.profile.default_dtype()
        return Options(dtype, request.density, request.sparsity_pattern or UNSTRUCTURED)

    @property
    def batch_size(self) -> int:
        return self.request.batch or SCENARIO_BATCH[self.request.scenario]

    def with_profile(self, profile: DeviceProfile) -> Prediction:
        return replace(self, profile=profile)

    def figure(self) -> tuple[float, str]:
        """The scenario's metric (samples/s, queries/s, or seconds per query) and its line."""
        request, model = self.request, TimingModel(self.work, self.profile, self.options)
        scenario = ScenarioOptions(self.batch_size, request.workers)
        if request.scenario == "Offline":
            rate = offline_rate(model, self.ratios, scenario)
            return rate, f"Offline: {rate:.5g} samples/s"
        if request.scenario == "Server":
            bound = get_workload(request.model).server_latency_ms / 1e3
            point = server_capacity(model, self.ratios, scenario, bound)
            return point.qps, (
                f"Server: {point.qps:.5g} queries/s with p99 {point.p99_s * 1e3:.4g} ms within "
                f"the {bound * 1e3:g} ms bound (Poisson arrivals, dynamic batches of up to "
                f"{self.batch_size}, {point.mean_batch:.3g} on average, {request.workers} "
                "worker(s))"
            )
        latency = model.batch(mean_load(self.batch_size, self.ratios)).latency_s
        return latency, f"{request.scenario}: {latency * 1e3:.4g} ms per query"


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
    if request.workers < 1:
        raise UserError(f"workers must be at least 1, got {request.workers}")
    profile.check_dtype(request.precision or profile.default_dtype())
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
    ratios, note = _token_ratios(request, work.tokens, path)
    return Prediction(request, profile, work, ratios, note)


def predict_lines(prediction: Prediction) -> list[str]:
    """The per-layer table and the scenario's figures, as ``sparseperf predict`` prints them."""
    request, profile, options = prediction.request, prediction.profile, prediction.options
    model = TimingModel(prediction.work, profile, options)
    load = mean_load(prediction.batch_size, prediction.ratios)
    layers = model.layer_times(load)
    weights = f"at density {request.density:g}" if request.density else "as in the model"
    lines = [
        f"# {request.model} on {profile.name} (simulated: {profile.description}), "
        f"{options.dtype}, weights {weights}, efficiency {profile.efficiency:g}"
        f"{prediction.tokens_note}",
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
