"""Backends declare their options: the command line's flags, labels, compare choices and rerun
commands all come from the declarations, for the built-ins and for plug-ins alike."""

from __future__ import annotations

import inspect
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

from backends import BACKENDS, backend_class
from harness.cli import backend_options, cli
from harness.compare.choices import parse_backend
from harness.spec import RunSpec
from submissions.commands import run_command

DECLARING = "tests.fakes:DeclaringBackend"


@pytest.mark.parametrize(
    ("backend", "options", "label"),
    [
        ("onnxruntime", {}, "onnxruntime"),
        ("onnxruntime", {"precision": "int8", "threads": 2}, "onnxruntime-int8"),
        ("sparse-int4", {"density": 0.125, "sparsity_pattern": "4x4"}, "sparse-int4-d0.125"),
        ("sparse-int4", {"density": 1}, "sparse-int4-d1"),
        ("simaccel", {"device": "moffett-s30", "density": 0.0625}, "simaccel-moffett-s30-d0.0625"),
        (
            "simaccel",
            {"device_file": "/x/my-dev.toml", "precision": "int8"},
            "simaccel-my-dev-int8",
        ),
        ("tests.fakes:FixedTimeBackend", {"service_ms": 5.0}, "FixedTimeBackend"),
        (
            DECLARING,
            {"flavour": "spicy", "scale": 0.5, "threads": 2},
            "DeclaringBackend-spicy-x0.5",
        ),
        # Recorded elsewhere, not importable here: still read, by its class name.
        ("gone.module:GoneBackend", {"precision": "int8"}, "GoneBackend"),
    ],
)
def test_labels_show_the_options_a_backend_declares(backend, options, label) -> None:
    assert RunSpec(backend=backend, backend_options=options).backend_label == label


def flags(command: str) -> list[tuple[str, str]]:
    """A command's options as (flag, type), in the order its help lists them."""
    params = cli.commands[command].get_params(click.Context(cli.commands[command]))
    return [(param.opts[0], param.type.name) for param in params]


def test_the_command_lines_backend_flags_are_unchanged() -> None:
    backend_flags = [
        ("--precision", "text"),
        ("--threads", "integer"),
        ("--density", "float"),
        ("--sparsity-pattern", "text"),
        ("--vector-size", "integer"),
        ("--act-clip", "text"),
        ("--device", "text"),
        ("--device-file", "path"),
        ("--tokens", "text"),
        ("--functional", "text"),
    ]
    run = flags("run")
    at = run.index(("--backend", "text")) + 1
    assert run[at : at + len(backend_flags) + 1] == [*backend_flags, ("--backend-option", "text")]
    sparse = [("--density", "float"), ("--sparsity-pattern", "text"), ("--vector-size", "integer"),
              ("--act-clip", "text")]  # fmt: skip
    assert flags("inspect")[2:6] == sparse
    assert flags("predict")[2:5] == [("--device", "text"), ("--device-file", "path"),
                                     ("--tokens", "text")]  # fmt: skip
    assert flags("predict")[9:12] == [("--precision", "text"), ("--density", "float"),
                                      ("--sparsity-pattern", "text")]  # fmt: skip


def test_builtin_declarations_are_constructor_options_of_one_type() -> None:
    types: dict[str, type] = {}
    for name in BACKENDS:
        cls = backend_class(name)
        parameters = inspect.signature(cls.__init__).parameters
        assert {option.name for option in cls.declared_options} <= set(parameters)
        assert cls.main_option in {option.name for option in cls.declared_options}
        for option in cls.declared_options:
            assert types.setdefault(option.name, option.type) is option.type, option.name


def test_a_plug_ins_declared_main_option_may_be_bare_in_compare() -> None:
    choice = parse_backend(f"{DECLARING}:spicy:scale=0.5")
    assert choice.options == {"flavour": "spicy", "scale": 0.5}
    assert choice.text == f"{DECLARING}:spicy:scale=0.5"
    assert parse_backend(f"{DECLARING}:scale=0.5:flavour=spicy").text == choice.text


def test_a_plug_ins_rerun_command_gives_its_options() -> None:
    spec = RunSpec(
        backend=DECLARING, backend_options={"flavour": "spicy", "scale": 0.5, "threads": 2}
    )
    assert "--backend tests.fakes:DeclaringBackend --threads 2 -o flavour=spicy -o scale=0.5" in (
        run_command(spec.to_json())
    )


@pytest.mark.parametrize(
    ("backend", "options"),
    [
        (DECLARING, {"flavour": "spicy", "scale": 0.5, "threads": 2}),
        ("simaccel", {"device_file": "/x/my-dev.toml", "density": 0.25, "functional": "off"}),
        ("sparse-int4", {"density": 0.5, "vector_size": 32, "weight_clip": "mse"}),
    ],
)
def test_a_rerun_command_reads_back_as_the_run(backend, options) -> None:
    """Options with a flag of their own are written as that flag, others as -o KEY=VALUE; the
    command line reads the command back to the same options."""
    words = shlex.split(run_command(RunSpec(backend=backend, backend_options=options).to_json()))
    assert words[:2] == ["sparseperf", "run"]
    with cli.commands["run"].make_context("run", words[2:]) as ctx:
        fields = dict(ctx.params)
    read = backend_options(fields, fields.pop("extra_options"))
    assert read == {k: Path(v) if k == "device_file" else v for k, v in options.items()}


def test_help_imports_no_backend() -> None:
    """The flags are made from the declarations only when a command that takes them is read."""
    code = """import sys
from backends import BACKENDS
from harness.cli import main
try:
    main(["--help"])
except SystemExit:
    pass
print([m for m in (target.partition(":")[0] for target in BACKENDS.values()) if m in sys.modules])
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"
