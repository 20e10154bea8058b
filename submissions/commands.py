"""The ``sparseperf run`` command line that repeats a recorded run."""

from __future__ import annotations

import shlex
from dataclasses import fields

from harness.spec import RunSpec, backend_flags, flag

# RunSpec fields in command-line order: these always written, the optional ones only where
# they differ from RunSpec's defaults (which are the command line's too).
ALWAYS = ("model", "scenario", "mode", "backend", "preset")
OPTIONAL = (
    "model_path",
    "model_density",
    "model_pattern",
    "dataset_path",
    "dataset_count",
    "vocab_path",
    "calibration_list",
    "batch_size",
    "workers",
    "server_batch_timeout_ms",
    "compliance",
    "cluster",
    "replicas",
)
DEFAULTS = {f.name: f.default for f in fields(RunSpec)}


def run_command(spec: dict, user_conf: str | None = None) -> str:
    """``sparseperf run ...`` for a run.json spec; ``user_conf`` replaces the spec's own."""
    words = ["sparseperf", "run"]
    options = dict(spec.get("backend_options", {}))
    for name in ALWAYS + OPTIONAL:
        value = spec.get(name)
        if value is not None and (name in ALWAYS or value != DEFAULTS[name]):
            words += [flag(name), str(value)]
        if name == "backend":
            for option in backend_flags():
                if option in options:
                    words += [flag(option), str(options.pop(option))]
            for key, value in options.items():
                words += ["-o", f"{key}={value}"]
    conf = user_conf or spec.get("user_conf")
    if conf:
        words += ["--user-conf", str(conf)]
    return shlex.join(words)
