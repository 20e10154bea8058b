"""``run --backend simaccel`` as the device's results were submitted: the device-side options
no flag gives (precision, weight density and pattern, tokens) come from the profile's
submitted configuration for the model, with a line for each one used, saying its source."""

from __future__ import annotations

from typing import Any

from backends.simaccel.profiles import resolve_profile
from harness.workloads import get_workload

# Backend option -> field of the submitted configuration.
OPTIONS = {"precision": "precision", "density": "density", "sparsity_pattern": "pattern",
           "tokens": "tokens"}  # fmt: skip


def with_submitted(
    backend: str, model: str, own_model: bool, options: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """``options`` completed from the submitted configuration (``own_model``: the run's model
    is a file or a pruned reference of its own, whose zeros are kept), and what was taken."""
    if backend != "simaccel":
        return options, []
    profile = resolve_profile(options.get("device"), options.get("device_file"))
    workload = get_workload(model)
    submission = profile.submission(workload.loadgen_key)
    filled, lines = dict(options), []
    for option, name in OPTIONS.items():
        fact = getattr(submission, name)
        if option in options or fact is None:
            continue
        if (name in ("density", "pattern") and own_model) or (
            name == "tokens" and not workload.token_mask
        ):
            continue
        filled[option] = fact.value
        lines.append(f"simaccel {profile.name} as submitted: {name} = {fact.value} ({fact.source})")
    return filled, lines
