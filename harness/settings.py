"""LoadGen settings: presets, user.conf validation, and the user.conf each run records.

LoadGen silently ignores keys it does not know and drops a whole file over one value it
cannot parse, so the harness checks every user.conf key and value as LoadGen will read it
(``loadgen_keys``) and refuses the rest. Values are in LoadGen's units: durations and
latencies in ms, percentiles in %. The run's own user.conf writes every value in a spelling
LoadGen reads as exactly that number, and the run checks that LoadGen did.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UserError
from harness.files import read_text
from harness.loadgen_keys import SCENARIO_NAMES, canonical, check_key, setting


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
    path: str = "user.conf"  # the file the line is in, for errors

    def applies_to(self, model: str, scenario: str) -> bool:
        return self.model in (model, "*") and self.scenario in (scenario, "*")

    @property
    def specificity(self) -> int:
        """LoadGen's lookup order: model.scenario, *.scenario, model.*, *.*."""
        return {(True, True): 3, (False, True): 2, (True, False): 1}.get(
            (self.model != "*", self.scenario != "*"), 0
        )


def parse_user_conf(path: Path, model_keys: frozenset[str]) -> list[ConfLine]:
    """Read a user.conf; an unknown model, scenario or key, or a key LoadGen does not take
    from a user.conf, is an error naming the line. Values are checked per run
    (``effective_user_values``), as a key may be read differently in each scenario."""
    lines = []
    for number, raw in enumerate(read_text(path, "user.conf").splitlines(), start=1):
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
        check_key(key, scenario, where)
        if scenario != "*":
            canonical(key, scenario, value, where)
        lines.append(ConfLine(model, scenario, key, value, number, str(path)))
    return lines


def effective_user_values(lines: list[ConfLine], model: str, scenario: str) -> dict[str, str]:
    """The value LoadGen will take for each key the user set, for this model and scenario,
    checked as LoadGen reads it there (keys it does not read in this scenario are left out)."""
    chosen: dict[str, ConfLine] = {}
    for line in lines:
        if not line.applies_to(model, scenario) or setting(line.key, scenario) is None:
            continue
        current = chosen.get(line.key)
        # Among equal specificity LoadGen keeps the last line read.
        if current is None or line.specificity >= current.specificity:
            chosen[line.key] = line
    return {
        key: canonical(key, scenario, line.value, f"{line.path}:{line.line_no}")
        for key, line in chosen.items()
    }


def render_user_conf(model: str, scenario: str, sections: list[tuple[str, dict[str, str]]]) -> str:
    """A user.conf with every value fully qualified; later sections override earlier ones.

    Every value is checked and written as LoadGen will read it; comments stand on their own
    lines (LoadGen's parser rejects a comment after a value).
    """
    merged: dict[str, tuple[str, str]] = {}
    for source, values in sections:
        for key, value in values.items():
            merged[key] = (canonical(key, scenario, str(value), source), source)
    out = [f"# sparseperf settings for {model} {scenario}"]
    for source, _ in sections:
        keys = [key for key, (_, origin) in merged.items() if origin == source]
        if keys:
            out.append(f"# {source}")
            out.extend(f"{model}.{scenario}.{key} = {merged[key][0]}" for key in keys)
    return "\n".join(out) + "\n"


def loaded_mismatches(loaded: object, scenario: str, values: dict[str, str]) -> list[str]:
    """The values LoadGen's ``TestSettings`` (``loaded``) does not hold as written: empty when
    LoadGen used exactly what the run's user.conf records."""
    wrong = []
    for key, text in values.items():
        found = setting(key, scenario)
        if found is None:
            continue
        expected = found.field_value(found.value(text))
        actual = getattr(loaded, found.field)
        if not math.isclose(float(actual), float(expected), rel_tol=1e-12, abs_tol=0.0):
            wrong.append(f"{key} = {text} was read as {found.field} = {actual}")
    return wrong


def check_sample_counts(values: dict[str, str], count: int, source: str) -> None:
    """Sample-count overrides may not exceed the dataset."""
    for key in ("performance_sample_count_override", "accuracy_sample_count_override"):
        if int(values.get(key, 0)) > count:
            raise UserError(
                f"{source}: {key} = {values[key]} is more than the dataset's {count} samples"
            )


def rounded(value: float, digits: int = 4) -> str:
    """A measured conf value to ``digits`` significant digits (never rounded to zero)."""
    return format_number(float(f"{value:.{digits}g}"))


def format_number(value: float) -> str:
    """A conf value: integers without a decimal point, others with enough precision."""
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"
