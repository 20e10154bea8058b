"""LoadGen settings: presets, user.conf validation, and the user.conf each run records.

LoadGen silently ignores keys it does not know, so the harness checks every user.conf key
against the ones LoadGen 6.0 reads and refuses the rest. Values are in LoadGen's units:
durations and latencies in ms, percentiles in %.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UserError

SCENARIO_NAMES = ("Offline", "Server", "SingleStream", "MultiStream")

# Every key LoadGen 6.0's TestSettings::FromConfig reads, except "mode": the CLI's --mode sets it.
KNOWN_KEYS = frozenset(
    {
        "min_duration",
        "max_duration",
        "min_query_count",
        "max_query_count",
        "qsl_rng_seed",
        "sample_index_rng_seed",
        "schedule_rng_seed",
        "accuracy_log_rng_seed",
        "accuracy_log_probability",
        "accuracy_log_sampling_target",
        "test05",
        "test05_qsl_rng_seed",
        "test05_sample_index_rng_seed",
        "test05_schedule_rng_seed",
        "print_timestamps",
        "performance_issue_unique",
        "performance_issue_same",
        "performance_issue_same_index",
        "performance_sample_count_override",
        "sample_concatenate_permutation",
        "target_latency_percentile",
        "target_latency",
        "target_qps",
        "samples_per_query",
        "max_async_queries",
        "coalesce_queries",
        "server_num_issue_query_threads",
        "use_token_latencies",
        "ttft_latency",
        "tpot_latency",
        "infer_token_latencies",
        "token_latency_scaling_factor",
    }
)


def check_choice(kind: str, name: str, choices: tuple[str, ...] | dict) -> None:
    """A name (scenario, preset, mode) must be one of its choices."""
    if name not in choices:
        raise UserError(f"unknown {kind} {name!r}; choose one of {', '.join(choices)}")


# The fewest queries LoadGen's early stopping accepts: p90 for SingleStream, p99 otherwise.
EARLY_STOPPING_QUERIES = {"SingleStream": 64, "MultiStream": 662, "Server": 662}

# Preset overrides per scenario; "valid" keeps the official mlperf.conf durations and counts.
PRESETS: dict[str, dict[str, dict[str, float]]] = {
    "smoke": {
        "Offline": {"min_duration": 2000, "min_query_count": 1},
        "Server": {"min_duration": 2000, "min_query_count": 100},
        "SingleStream": {"min_duration": 2000, "min_query_count": 64},
        "MultiStream": {"min_duration": 2000, "min_query_count": 16},
    },
    "short": {
        "Offline": {"min_duration": 60000, "min_query_count": 1},
        "Server": {"min_duration": 60000, "min_query_count": EARLY_STOPPING_QUERIES["Server"]},
        "SingleStream": {
            "min_duration": 60000,
            "min_query_count": EARLY_STOPPING_QUERIES["SingleStream"],
        },
        "MultiStream": {
            "min_duration": 60000,
            "min_query_count": EARLY_STOPPING_QUERIES["MultiStream"],
        },
    },
    "valid": {name: {} for name in SCENARIO_NAMES},
}
COMPLIANT_PRESETS = frozenset({"valid"})

_LINE = re.compile(r"^\s*([^\s=#]+)\s*=\s*(\S+)\s*$")


@dataclass(frozen=True)
class ConfLine:
    model: str  # LoadGen model key or "*"
    scenario: str  # scenario name or "*"
    key: str
    value: str
    line_no: int

    def applies_to(self, model: str, scenario: str) -> bool:
        return self.model in (model, "*") and self.scenario in (scenario, "*")

    @property
    def specificity(self) -> int:
        """LoadGen's lookup order: model.scenario, *.scenario, model.*, *.*."""
        return {(True, True): 3, (False, True): 2, (True, False): 1}.get(
            (self.model != "*", self.scenario != "*"), 0
        )


def parse_user_conf(path: Path, model_keys: frozenset[str]) -> list[ConfLine]:
    """Read a user.conf; an unknown model, scenario or key, or a non-number, is an error."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserError(f"cannot read user.conf {path}: {exc.strerror}") from exc
    lines = []
    for number, raw in enumerate(text.splitlines(), start=1):
        content = raw.split("#", 1)[0].strip()
        if not content:
            continue
        where = f"{path}:{number}"
        match = _LINE.match(content)
        if not match:
            raise UserError(f"{where}: expected 'model.scenario.key = value', got {content!r}")
        name, value = match.groups()
        parts = name.split(".")
        if len(parts) != 3:
            raise UserError(f"{where}: key {name!r} must have the form model.scenario.key")
        model, scenario, key = parts
        if model != "*" and model not in model_keys:
            raise UserError(
                f"{where}: unknown model {model!r}; use {', '.join(sorted(model_keys))} or *"
            )
        if scenario != "*" and scenario not in SCENARIO_NAMES:
            raise UserError(
                f"{where}: unknown scenario {scenario!r}; use {', '.join(SCENARIO_NAMES)} or *"
            )
        if key == "mode":
            raise UserError(f"{where}: set the test mode with --mode, not in user.conf")
        if key not in KNOWN_KEYS:
            raise UserError(f"{where}: unknown LoadGen setting {key!r} (misspelt?)")
        try:
            float(value)
        except ValueError:
            raise UserError(f"{where}: value of {name} must be a number, got {value!r}") from None
        lines.append(ConfLine(model, scenario, key, value, number))
    return lines


def effective_user_values(lines: list[ConfLine], model: str, scenario: str) -> dict[str, str]:
    """The value LoadGen will take for each key the user set, for this model and scenario."""
    chosen: dict[str, ConfLine] = {}
    for line in lines:
        if not line.applies_to(model, scenario):
            continue
        current = chosen.get(line.key)
        # Among equal specificity LoadGen keeps the last line read.
        if current is None or line.specificity >= current.specificity:
            chosen[line.key] = line
    return {key: line.value for key, line in chosen.items()}


def render_user_conf(model: str, scenario: str, sections: list[tuple[str, dict[str, str]]]) -> str:
    """A user.conf with every value fully qualified; later sections override earlier ones.

    Comments stand on their own lines: LoadGen's parser rejects a comment after a value.
    """
    merged: dict[str, tuple[str, str]] = {}
    for source, values in sections:
        for key, value in values.items():
            merged[key] = (value, source)
    out = [f"# sparseperf settings for {model} {scenario}"]
    for source, _ in sections:
        keys = [key for key, (_, origin) in merged.items() if origin == source]
        if keys:
            out.append(f"# {source}")
            out.extend(f"{model}.{scenario}.{key} = {merged[key][0]}" for key in keys)
    return "\n".join(out) + "\n"


def format_number(value: float) -> str:
    """A conf value: integers without a decimal point, others with enough precision."""
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"
