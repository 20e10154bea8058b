"""Every key LoadGen 6.0.17 reads from a user.conf: how it parses the value, what sparseperf
accepts, and the ``TestSettings`` field the value lands in.

LoadGen reads whole-number keys with ``strtoull`` (so ``1e3`` is 1, ``-5`` wraps to 2^64 - 5,
``010`` is octal 8 and ``2.7`` is 2) and decimal keys with ``strtod`` (``nan``, ``inf`` and
hex floats pass); a value it cannot parse at all (``1_0``) makes it drop the whole file,
silently. So each value is checked here in LoadGen's terms and written back in one plain
spelling that LoadGen reads as exactly that number.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from harness.errors import UserError

SCENARIO_NAMES = ("Offline", "Server", "SingleStream", "MultiStream")
STREAMS = ("SingleStream", "MultiStream")
MAX_DURATION_MS = 7 * 24 * 3600 * 1000  # a week: longer is a typo (LoadGen wraps near 1e13)
MAX_LATENCY_MS = 600_000  # ten minutes per query: more is a value given in ns or us
MAX_COUNT = 1_000_000_000
MAX_QPS = 1e7
UINT64_MAX = 2**64 - 1

_WHOLE = re.compile(r"^(0|[1-9][0-9]*)$")
_DECIMAL = re.compile(r"^([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$")


@dataclass(frozen=True)
class Setting:
    """How one key is read in one scenario."""

    field: str  # the TestSettings attribute LoadGen stores the value in
    kind: str  # "whole" (strtoull), "decimal" (strtod) or "flag" (whole, 0 or 1)
    low: float
    high: float
    low_open: bool = False  # the value must be above ``low``, not equal to it
    high_open: bool = False
    scale: float = 1.0  # LoadGen's factor from the conf's unit into the field's
    unit: str = ""

    def value(self, text: str) -> float:
        """The number ``text`` means to LoadGen; ValueError says why it is refused."""
        if self.kind == "decimal":
            if not _DECIMAL.match(text):
                raise ValueError(
                    "must be a decimal number such as 12.5 or 1e3 (no sign, nan, inf or hex)"
                )
            number = float(text)
        else:
            if not _WHOLE.match(text):
                octal = re.match(r"^0[0-9]+$", text)
                hint = "LoadGen would read it as octal" if octal else "LoadGen would misread it"
                raise ValueError(f"must be a whole number in plain digits ({hint})")
            number = int(text)
        if self.kind == "flag" and number not in (0, 1):
            raise ValueError("must be 0 or 1")
        below = number <= self.low if self.low_open else number < self.low
        above = number >= self.high if self.high_open else number > self.high
        if not math.isfinite(number) or below or above:
            raise ValueError(f"must be {self.range_text()}")
        return number

    def range_text(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        low = f"above {_plain(self.low)}" if self.low_open else f"at least {_plain(self.low)}"
        high = f"below {_plain(self.high)}" if self.high_open else f"at most {_plain(self.high)}"
        return f"{low} and {high}{unit}"

    def text(self, number: float) -> str:
        """The spelling written into the run's user.conf."""
        return str(int(number)) if self.kind != "decimal" else _plain(float(number))

    def field_value(self, number: float) -> float:
        """What LoadGen stores in ``field`` for ``number``."""
        if self.kind == "decimal":
            return number * self.scale
        return int(number) * int(self.scale)


def _plain(number: float) -> str:
    if float(number).is_integer() and abs(number) < 1e16:
        return str(int(number))
    return repr(float(number))


def _every(setting: Setting) -> dict[str, Setting]:
    return dict.fromkeys(SCENARIO_NAMES, setting)


_PERCENTILE = {"low": 0, "high": 100, "low_open": True, "high_open": True, "scale": 0.01}
_WHOLE_MS = {"kind": "whole", "low": 0, "high": MAX_DURATION_MS, "unit": "ms"}
_LATENCY = {"low": 0, "high": MAX_LATENCY_MS, "low_open": True, "scale": 1e6, "unit": "ms"}

# key -> scenario -> how LoadGen reads it there (scenarios it is not read in are absent).
SETTINGS: dict[str, dict[str, Setting]] = {
    "min_duration": _every(Setting("min_duration_ms", **_WHOLE_MS)),
    "max_duration": _every(Setting("max_duration_ms", **_WHOLE_MS)),  # 0: no limit
    "min_query_count": _every(Setting("min_query_count", "whole", 1, MAX_COUNT)),
    "max_query_count": _every(Setting("max_query_count", "whole", 0, MAX_COUNT)),
    "performance_sample_count_override": _every(
        Setting("performance_sample_count_override", "whole", 0, MAX_COUNT)
    ),
    "accuracy_sample_count_override": _every(
        Setting("accuracy_sample_count_override", "whole", 0, MAX_COUNT)
    ),
    "accuracy_log_rng_seed": _every(Setting("accuracy_log_rng_seed", "whole", 0, UINT64_MAX)),
    "accuracy_log_sampling_target": _every(
        Setting("accuracy_log_sampling_target", "whole", 0, MAX_COUNT)
    ),
    "print_timestamps": _every(Setting("print_timestamps", "flag", 0, 1)),
    "performance_issue_unique": _every(Setting("performance_issue_unique", "flag", 0, 1)),
    "performance_issue_same": _every(Setting("performance_issue_same", "flag", 0, 1)),
    "performance_issue_same_index": _every(
        Setting("performance_issue_same_index", "whole", 0, MAX_COUNT)
    ),
    "sample_concatenate_permutation": _every(
        Setting("sample_concatenate_permutation", "flag", 0, 1)
    ),
    "target_latency_percentile": {
        scenario: Setting(f"{field}_target_latency_percentile", "decimal", **_PERCENTILE)
        for scenario, field in (
            ("SingleStream", "single_stream"),
            ("MultiStream", "multi_stream"),
            ("Server", "server"),
        )
    },
    "target_latency": {
        **{
            scenario: Setting(f"{field}_expected_latency_ns", "decimal", **_LATENCY)
            for scenario, field in (
                ("SingleStream", "single_stream"),
                ("MultiStream", "multi_stream"),
            )
        },
        # Read as a whole number of ms: LoadGen would take 2.7 for 2.
        "Server": Setting(
            "server_target_latency_ns", "whole", **{**_LATENCY, "low_open": False, "low": 1}
        ),
    },
    "samples_per_query": {
        "MultiStream": Setting("multi_stream_samples_per_query", "whole", 1, MAX_COUNT)
    },
    "target_qps": {
        "Offline": Setting("offline_expected_qps", "decimal", 0, MAX_QPS, True, unit="samples/s"),
        "Server": Setting("server_target_qps", "decimal", 0, MAX_QPS, True, unit="queries/s"),
    },
    "coalesce_queries": {"Server": Setting("server_coalesce_queries", "flag", 0, 1)},
    "max_async_queries": {
        "Server": Setting("server_max_async_queries", "whole", 0, MAX_COUNT)  # 0: no limit
    },
}

# Keys LoadGen has but does not take from a user.conf, and why.
_BUILT_IN_ONLY = "LoadGen reads it only from its built-in mlperf.conf and ignores it in user.conf"
_TOKENS = "token latencies are for LLM benchmarks; resnet50 and bert report no tokens"
REFUSED: dict[str, str] = {
    "mode": "set the test mode with --mode, not in user.conf",
    **dict.fromkeys(
        (
            "qsl_rng_seed",
            "sample_index_rng_seed",
            "schedule_rng_seed",
            "accuracy_log_probability",
            "test05",
            "test05_qsl_rng_seed",
            "test05_sample_index_rng_seed",
            "test05_schedule_rng_seed",
        ),
        _BUILT_IN_ONLY,
    ),
    "server_num_issue_query_threads": "LoadGen does not read it from a conf file",
    **dict.fromkeys(
        (
            "use_token_latencies",
            "ttft_latency",
            "tpot_latency",
            "infer_token_latencies",
            "token_latency_scaling_factor",
        ),
        _TOKENS,
    ),
}


def check_key(key: str, scenario: str, where: str) -> None:
    """A key (for a scenario, or "*") LoadGen reads from a user.conf; UserError otherwise."""
    if key in REFUSED:
        raise UserError(f"{where}: {key} cannot be set here: {REFUSED[key]}")
    if key not in SETTINGS:
        raise UserError(f"{where}: unknown LoadGen setting {key!r} (misspelt?)")
    read_in = SETTINGS[key]
    if scenario != "*" and scenario not in read_in:
        raise UserError(
            f"{where}: LoadGen does not read {key} for {scenario}; it is a setting of "
            f"{', '.join(read_in)}"
        )


def setting(key: str, scenario: str) -> Setting | None:
    """How LoadGen reads ``key`` in ``scenario`` (None: it does not)."""
    return SETTINGS.get(key, {}).get(scenario)


def canonical(key: str, scenario: str, text: str, where: str) -> str:
    """The value as the run's user.conf writes it, checked as LoadGen will read it."""
    found = setting(key, scenario)
    if found is None:
        raise UserError(f"{where}: LoadGen does not read {key} for {scenario}")
    try:
        return found.text(found.value(text.strip()))
    except ValueError as exc:
        raise UserError(f"{where}: {key} = {text.strip()!r} {exc}") from None
