"""Inference backends behind one small interface (load, predict, describe).

Built-in backends are listed in ``BACKENDS``; any other backend plugs in as ``module:Class``
(a ``backends.base.Backend`` subclass importable in the run's process).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from backends.base import Backend
from harness.errors import UserError

BACKENDS = {
    "onnxruntime": "backends.onnxruntime:OnnxRuntimeBackend",
    "sparse-int4": "backends.sparse_int4.backend:SparseInt4Backend",
    "simaccel": "backends.simaccel.backend:SimAccelBackend",
}


def backend_class(name: str) -> type[Backend]:
    """Resolve a built-in backend name or a ``module:Class`` plug-in reference."""
    target = BACKENDS.get(name, name)
    module_name, _, class_name = target.partition(":")
    if not class_name:
        raise UserError(
            f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)} "
            "or name a plug-in as module:Class"
        )
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"cannot import backend {name!r}: {exc}") from exc
    if not (inspect.isclass(cls) and issubclass(cls, Backend)):
        raise UserError(f"backend {name!r} is not a backends.base.Backend subclass")
    return cls


def create_backend(name: str, options: dict[str, Any]) -> Backend:
    """Instantiate a backend; options it does not take are an error, not silently dropped."""
    cls = backend_class(name)
    accepted = inspect.signature(cls.__init__).parameters
    unknown = sorted(key for key in options if key not in accepted)
    if unknown:
        raise UserError(
            f"backend {name!r} does not take option(s) {', '.join(unknown)}; "
            f"it takes: {', '.join(k for k in accepted if k != 'self') or 'none'}"
        )
    return cls(**options)
