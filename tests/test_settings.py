"""user.conf checking and rendering."""

from __future__ import annotations

import pytest

from harness.errors import UserError
from harness.settings import (
    KNOWN_KEYS,
    effective_user_values,
    format_number,
    parse_user_conf,
    render_user_conf,
)

MODELS = frozenset({"resnet50", "bert"})


def parse(tmp_path, text):
    path = tmp_path / "user.conf"
    path.write_text(text)
    return parse_user_conf(path, MODELS)


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
        ("resnet50.Offline.target_qps = fast\n", "must be a number"),
        ("target_qps = 1\n", "model.scenario.key"),
        ("resnet50.Offline.target_qps\n", "expected 'model.scenario.key = value'"),
        ("*.*.mode = 2\n", "--mode"),
    ],
)
def test_rejects_what_loadgen_would_ignore_or_misread(tmp_path, text, needle):
    with pytest.raises(UserError, match=r"user\.conf:1") as info:
        parse(tmp_path, text)
    assert needle in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match=r"cannot read user\.conf"):
        parse_user_conf(tmp_path / "nope.conf", MODELS)


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


def test_known_keys_cover_the_settings_harness_writes():
    assert {
        "min_duration",
        "min_query_count",
        "target_qps",
        "target_latency",
        "performance_sample_count_override",
    } <= KNOWN_KEYS


@pytest.mark.parametrize(("value", "text"), [(2000, "2000"), (2000.0, "2000"), (6.25, "6.25")])
def test_format_number(value, text):
    assert format_number(value) == text
