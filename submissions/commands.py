"""The ``sparseperf run`` command line that repeats a recorded run."""

from __future__ import annotations

import shlex

from harness.spec import BACKEND_FLAGS

# RunSpec fields and their flags, with the values that need no flag.
SPEC_FLAGS = (
    ("model", None),
    ("scenario", None),
    ("mode", None),
    ("backend", None),
    ("preset", None),
    ("model_path", None),
    ("dataset_path", None),
    ("dataset_count", None),
    ("vocab_path", None),
    ("batch_size", 8),
    ("workers", 1),
    ("server_batch_timeout_ms", 0.0),
    ("compliance", None),
)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def run_command(spec: dict, user_conf: str | None = None) -> str:
    """``sparseperf run ...`` for a run.json spec; ``user_conf`` replaces the spec's own."""
    words = ["sparseperf", "run"]
    options = dict(spec.get("backend_options", {}))
    for name, default in SPEC_FLAGS:
        value = spec.get(name)
        if value is not None and value != default:
            words += [flag(name), str(value)]
        if name == "backend":
            for option in BACKEND_FLAGS:
                if option in options:
                    words += [flag(option), str(options.pop(option))]
            for key, value in options.items():
                words += ["-o", f"{key}={value}"]
    conf = user_conf or spec.get("user_conf")
    if conf:
        words += ["--user-conf", str(conf)]
    return shlex.join(words)
