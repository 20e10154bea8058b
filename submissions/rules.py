"""What MLPerf Inference v6.1 asks of a ResNet-50 or BERT submission (the official checker's
rules, plus the ones it lets slip)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.errors import UserError
from harness.workloads import get_workload
from harness.workloads.base import Workload

VERSION = "v6.1"
DIVISIONS = ("closed", "open", "network")
# Divisions held to the closed rules: every required scenario, compliance tests, valid runs,
# the accuracy targets. The network division adds LoadGen talking to the SUT through a QDL.
STRICT_DIVISIONS = ("closed", "network")
NETWORK_SUT_NAME = "Network SUT"  # what a network division SUT's name must contain


def division_problem(division: str, cluster_run: bool) -> str | None:
    """Why a run may not enter ``division`` (None: it may): the network division takes runs
    through the cluster dispatcher only, the closed division none."""
    if division == "network" and not cluster_run:
        return "the network division takes runs through the cluster dispatcher (--cluster) only"
    if division == "closed" and cluster_run:
        return (
            "a run through the cluster dispatcher (a network SUT) goes to the network "
            "division, not closed"
        )
    return None


MIN_DURATION_MS = 600000
SEEDS = {
    "qsl_rng_seed": 2085463073848966840,
    "sample_index_rng_seed": 2747215439041700203,
    "schedule_rng_seed": 16159082839903944936,
}
TRUNCATED_LOG_MAX_BYTES = 10 * 1024


@dataclass(frozen=True)
class Benchmark:
    model: str  # the workload
    folder: str  # results/<sut>/<folder>/
    accuracy_pattern: re.Pattern[str]  # the checker's, matched per line of accuracy.txt
    accuracy_target: float  # 99% of the FP32 reference
    # TEST01 on a non-deterministic system: allowed accuracy change of the logged responses
    accuracy_delta_percent: float
    offline_min_samples: int  # samples in the one Offline query (closed division)
    # system type -> the scenarios a closed submission must have, and may only have (v6.1 has
    # no optional ones for these models: an extra scenario folder is an error)
    scenarios: dict[str, tuple[str, ...]]

    @property
    def workload(self) -> Workload:
        return get_workload(self.model)

    @property
    def loadgen_key(self) -> str:
        return self.workload.loadgen_key

    @property
    def dataset_size(self) -> int:
        """Samples an accuracy run must cover."""
        return self.workload.dataset_size

    @property
    def performance_sample_count(self) -> int:
        return self.workload.performance_sample_count

    def accuracy_in(self, lines: list[str]) -> float | None:
        """The headline accuracy of the first line in the official format, if any."""
        for line in lines:
            match = self.accuracy_pattern.match(line)
            if match:
                return float(match.group(1))
        return None

    def required_scenarios(self, system_type: str) -> tuple[str, ...]:
        return self.scenarios["datacenter,edge" if "datacenter" in system_type else "edge"]


BENCHMARKS = {
    "resnet50": Benchmark(
        model="resnet50",
        folder="resnet50",
        accuracy_pattern=re.compile(r"^(?:\{\"accuracy|accuracy)[\": ]*=?\s*([\d\.]+).*"),
        accuracy_target=76.46 * 0.99,
        accuracy_delta_percent=1.0,
        offline_min_samples=24576,
        scenarios={
            "edge": ("SingleStream", "MultiStream", "Offline"),
            "datacenter,edge": ("SingleStream", "MultiStream", "Offline", "Server"),
        },
    ),
    "bert-large": Benchmark(
        model="bert-large",
        folder="bert-99",
        accuracy_pattern=re.compile(
            r"^{[\"']exact_match[\"']\:\s*[\d\.]+,\s*[\"']f1[\"']\:\s*([\d\.]+)}"
        ),
        accuracy_target=90.874 * 0.99,
        accuracy_delta_percent=1.0,
        offline_min_samples=10833,
        scenarios={
            "edge": ("SingleStream", "Offline"),
            "datacenter,edge": ("SingleStream", "Offline"),  # no Server for bert-99 in v6.1
        },
    ),
}


def benchmark(model: str) -> Benchmark:
    try:
        return BENCHMARKS[model]
    except KeyError:
        raise UserError(
            f"{model} is not an MLPerf benchmark model; submissions take {' or '.join(BENCHMARKS)}"
        ) from None
