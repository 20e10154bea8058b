"""user.conf checking and rendering: keys and values as LoadGen 6.0.17 reads them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest

from harness.errors import UserError
from harness.loadgen_keys import SETTINGS
from harness.settings import (
    effective_user_values,
    format_number,
    parse_user_conf,
    render_user_conf,
    rounded,
)

MODELS = frozenset({"resnet50", "bert"})


def parse(tmp_path, text):
    path = tmp_path / "user.conf"
    path.write_text(text)
    return parse_user_conf(path, MODELS)


def values(tmp_path, text, scenario="Offline"):
    return effective_user_values(parse(tmp_path, text), "resnet50", scenario)


def test_parses_loadgen_lines_and_comments(tmp_path):
    lines = parse(
        tmp_path,
        "# comment\n\nresnet50.Server.target_qps = 120.5\n*.*.min_duration=60000 # inline\n",
    )
    assert [(c.model, c.scenario, c.key, c.value) for c in lines] == [
        ("resnet50", "Server", "target_qps", "120.5"),
        ("*", "*", "min_duration", "60000"),
    ]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("resnet50.Offline.target_qsp = 1\n", "unknown LoadGen setting 'target_qsp'"),
        ("resnet.Offline.target_qps = 1\n", "unknown model 'resnet'"),
        ("resnet50.offline.target_qps = 1\n", "unknown scenario 'offline'"),
        ("resnet50.Offline.target_qps = fast\n", "must be a decimal number"),
        ("target_qps = 1\n", "model.scenario.key"),
        ("resnet50.Offline.target_qps\n", "expected 'model.scenario.key = value'"),
        ("*.*.mode = 2\n", "--mode"),
        ("*.*.qsl_rng_seed = 5\n", "only from its built-in mlperf.conf"),
        ("*.*.server_num_issue_query_threads = 2\n", "does not read it from a conf file"),
        ("*.*.use_token_latencies = 1\n", "LLM benchmarks"),
        ("resnet50.Offline.target_latency = 5\n", "does not read target_latency for Offline"),
        ("resnet50.Server.samples_per_query = 8\n", "it is a setting of MultiStream"),
    ],
)
def test_rejects_what_loadgen_would_ignore_or_misread(tmp_path, text, needle):
    with pytest.raises(UserError, match=r"user\.conf:1") as info:
        parse(tmp_path, text)
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("scenario", "line", "needle"),
    [
        # LoadGen drops the whole file over a value it cannot parse.
        ("Offline", "*.*.min_duration = 1_0", "whole number"),
        ("Offline", "*.*.target_qps = 1_0", "decimal number"),
        # LoadGen's strtoull: octal, hex, exponents, signs and fractions are misread.
        ("Offline", "*.*.min_duration = 010", "octal"),
        ("Offline", "*.*.min_duration = 0x10", "whole number"),
        ("Offline", "*.*.min_duration = 1e3", "whole number"),
        ("Offline", "*.*.min_duration = -5", "whole number"),
        ("Offline", "*.*.min_duration = 2000.5", "whole number"),
        ("Server", "*.Server.target_latency = 2.7", "whole number"),
        # Absurd and nonsense values.
        ("Offline", "*.*.min_duration = 100000000000000000000", "at most 604800000 ms"),
        ("Offline", "*.*.max_duration = 1000000000000", "at most 604800000 ms"),
        ("Offline", "*.*.min_query_count = 0", "at least 1"),
        ("Offline", "*.*.target_qps = 0", "above 0"),
        ("Offline", "*.*.target_qps = -1", "no sign"),
        ("Offline", "*.*.target_qps = nan", "no sign, nan, inf"),
        ("Offline", "*.*.target_qps = inf", "no sign, nan, inf"),
        ("Offline", "*.*.target_qps = 1e400", "at most 10000000"),
        ("Server", "*.Server.target_qps = 0x1p3", "decimal number"),
        ("SingleStream", "*.*.target_latency = 15000000", "at most 600000 ms"),
        ("SingleStream", "*.*.target_latency = 0", "above 0"),
        ("Server", "*.*.target_latency_percentile = 100", "below 100"),
        ("Offline", "*.*.print_timestamps = 2", "0 or 1"),
    ],
)
def test_values_are_checked_as_loadgen_reads_them(tmp_path, scenario, line, needle):
    with pytest.raises(UserError, match=r"user\.conf:1: ") as info:
        values(tmp_path, line + "\n", scenario)
    assert needle in str(info.value)


def test_a_wildcard_value_is_checked_for_the_scenario_it_runs_in(tmp_path):
    # 2.5 ms is a fine SingleStream expectation but Server reads whole ms.
    text = "*.*.target_latency = 2.5\n"
    assert values(tmp_path, text, "SingleStream") == {"target_latency": "2.5"}
    with pytest.raises(UserError, match="whole number"):
        values(tmp_path, text, "Server")
    assert values(tmp_path, text, "Offline") == {}  # LoadGen does not read it there


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(UserError, match=r"user\.conf .*nope\.conf cannot be read"):
        parse_user_conf(tmp_path / "nope.conf", MODELS)
    latin = tmp_path / "latin.conf"
    latin.write_bytes("# d\xe9j\xe0 vu\n*.*.min_duration = 5\n".encode("latin-1"))
    with pytest.raises(UserError, match="is not UTF-8 text"):
        parse_user_conf(latin, MODELS)


def test_effective_values_follow_loadgen_lookup_order(tmp_path):
    lines = parse(
        tmp_path,
        "*.*.target_qps = 1\nresnet50.*.target_qps = 2\n*.Server.target_qps = 3\n"
        "resnet50.Server.target_qps = 4\nresnet50.Server.target_qps = 5\n"
        "bert.Server.min_duration = 9\n*.Offline.min_duration = 7\n",
    )
    assert effective_user_values(lines, "resnet50", "Server") == {"target_qps": "5"}
    assert effective_user_values(lines, "resnet50", "Offline") == {
        "target_qps": "2",
        "min_duration": "7",
    }
    assert effective_user_values(lines, "bert", "Server") == {
        "target_qps": "3",
        "min_duration": "9",
    }


def test_render_puts_comments_on_their_own_lines_and_later_sections_win(tmp_path):
    text = render_user_conf(
        "resnet50",
        "Offline",
        [
            ("preset smoke", {"min_duration": "2000", "target_qps": "1"}),
            ("user", {"target_qps": "50"}),
        ],
    )
    for line in text.splitlines():
        assert line.startswith("#") or "#" not in line  # LoadGen rejects trailing comments
    assert "resnet50.Offline.min_duration = 2000" in text
    assert "resnet50.Offline.target_qps = 50" in text
    assert "target_qps = 1\n" not in text
    reparsed = parse(tmp_path, text)
    assert {c.key: c.value for c in reparsed} == {"min_duration": "2000", "target_qps": "50"}


def test_render_refuses_values_from_any_source(tmp_path):
    with pytest.raises(UserError, match=r"stored by sparseperf tune: target_qps = '0'"):
        render_user_conf("resnet50", "Server", [("stored by sparseperf tune", {"target_qps": "0"})])


# Every key, in every scenario LoadGen reads it, at a few values across its range.
def samples(found) -> list[float]:
    if found.kind == "flag":
        return [0, 1]
    if found.kind == "whole":
        picks = {found.low, found.low + 1, 2000, 600000, found.high}
        return sorted(int(n) for n in picks if found.low <= n <= found.high)
    top = found.high * (0.999 if found.high_open else 1)
    return [n for n in (1e-3, 0.25, 1.5, 12.0, 120.5, top) if n < found.high or not found.high_open]


def test_loadgen_reads_every_written_value_exactly(tmp_path):
    """The run's user.conf, read by LoadGen itself (in its own process: FromConfig once per
    process): every value lands in its field as written; a file LoadGen drops is caught."""
    cases = []
    for key, scenarios in SETTINGS.items():
        for scenario, found in scenarios.items():
            for number in samples(found):
                if found.low_open and number <= found.low:
                    continue
                cases.append((scenario, {key: found.text(number)}))
    script = textwrap.dedent(
        """
        import json, sys
        import mlperf_loadgen as lg
        from harness.settings import loaded_mismatches, render_user_conf
        problems = []
        for number, (scenario, values) in enumerate(json.loads(sys.argv[1])):
            path = f"{sys.argv[2]}/{number}.conf"
            with open(path, "w") as f:
                f.write(render_user_conf("resnet50", scenario, [("test", values)]))
            settings = lg.TestSettings()
            code = settings.FromConfig(path, "resnet50", scenario)
            problems += [f"{scenario} {values}: code {code}"] if code else []
            problems += loaded_mismatches(settings, scenario, values)
        # What the check catches: LoadGen drops a file over 1_0 and keeps what it had.
        path = f"{sys.argv[2]}/dropped.conf"
        with open(path, "w") as f:
            f.write("resnet50.Offline.min_duration = 1_0\\n")
        settings = lg.TestSettings()
        code = settings.FromConfig(path, "resnet50", "Offline")
        dropped = loaded_mismatches(settings, "Offline", {"min_duration": "10"})
        print(json.dumps([problems, code, dropped]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(cases), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    problems, code, dropped = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(cases) > 60 and problems == []
    assert code != 0 and len(dropped) == 1
    assert re.fullmatch(r"min_duration = 10 was read as min_duration_ms = \d+", dropped[0])


@pytest.mark.parametrize(("value", "text"), [(2000, "2000"), (2000.0, "2000"), (6.25, "6.25")])
def test_format_number(value, text):
    assert format_number(value) == text


@pytest.mark.parametrize(("value", "text"), [(43.137, "43.14"), (0.0123456, "0.01235")])
def test_measured_values_keep_their_significant_digits(value, text):
    assert rounded(value) == text
