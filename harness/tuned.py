"""The tuned-value store: LoadGen settings that ``sparseperf tune`` found, kept per (host,
backend, model, scenario, batching) in the cache for later runs to reuse."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from harness import provenance
from harness.cache import cache_dir
from harness.errors import UserError
from harness.files import read_json_object
from harness.spec import RunSpec

STORE_FILE = "tuned.json"


@dataclass(frozen=True)
class Tuned:
    values: dict[str, str]  # LoadGen keys: target_qps or target_latency
    when: str  # UTC, ISO 8601
    probes: int
    note: str  # how it was found

    def describe(self) -> str:
        settings = ", ".join(f"{k} = {v}" for k, v in self.values.items())
        return f"{settings} (tuned {self.when}, {self.probes} probe run(s): {self.note})"


def store_key(spec: RunSpec) -> str:
    """What a tuned value depends on: the machine, the backend and how queries are batched."""
    host = provenance.host()
    return " | ".join(
        str(part)
        for part in (
            f"{host['cpu']} x{host['cores']}",
            spec.backend_label,
            spec.model_label,
            spec.scenario,
            f"batch {spec.batch_size}",
            f"workers {spec.workers}",
            f"timeout {spec.server_batch_timeout_ms:g} ms",
            *(
                [f"cluster {spec.cluster} replicas {spec.replicas or 'default'}"]
                if spec.cluster
                else []
            ),
        )
    )


def store_path() -> Path:
    return cache_dir() / STORE_FILE


def _read_store(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    try:
        return read_json_object(path, "tuned-values file")
    except UserError as exc:
        raise UserError(f"{exc}; delete it and tune again") from None


def stored(spec: RunSpec) -> Tuned | None:
    """The tuned values stored for this run's key, if any."""
    entry = _read_store(store_path()).get(store_key(spec))
    return Tuned(**entry) if entry else None


def save(spec: RunSpec, tuned: Tuned) -> None:
    """Store atomically, so that a crash never leaves a half-written file."""
    path = store_path()
    body = _read_store(path)
    body[store_key(spec)] = tuned.__dict__
    partial = path.with_suffix(f".partial-{os.getpid()}")
    partial.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    os.replace(partial, path)
