"""The matrix's backend names: ``name[:main option][:key=value...]``, e.g. onnxruntime:int8,
sparse-int4:0.125, simaccel:moffett-s30:density=0.0625, or a plug-in ``module:Class``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from backends import BACKENDS, backend_class, create_backend, declared_class
from backends.base import option_text
from harness.errors import UserError
from harness.spec import RunSpec, parse_option


@dataclass(frozen=True)
class BackendChoice:
    text: str  # canonical: the same choice always reads the same
    backend: str
    options: dict[str, Any] = field(default_factory=dict)


def parse_backend(text: str) -> BackendChoice:
    """A backend choice, its options checked by the backend itself."""
    name, _, rest = text.strip().partition(":")
    if name not in BACKENDS:  # a plug-in: module:Class[:key=value...]
        class_name, _, rest = rest.partition(":")
        name = f"{name}:{class_name}" if class_name else name
    main_key = declared_class(name).main_option
    options: dict[str, Any] = {}
    for position, part in enumerate(p for p in rest.split(":") if p):
        if "=" in part:
            key, value = parse_option(part)
        elif position == 0 and main_key:
            key, value = main_key, parse_option(f"x={part}")[1]
        else:
            bare = [n for n in BACKENDS if backend_class(n).main_option]
            raise UserError(
                f"backend {text!r}: {part!r} must be key=value (only the first argument of "
                f"{', '.join(bare)} may be bare)"
            )
        options[key] = value
    try:
        create_backend(name, options)
    except UserError as exc:
        raise UserError(f"backend {text!r} in the matrix: {exc}") from None
    return BackendChoice(canonical(name, options), name, options)


def canonical(backend: str, options: dict[str, Any]) -> str:
    """One spelling per choice: name[:main option][:key=value...], other options sorted."""
    main_key = declared_class(backend).main_option
    parts = [backend]
    if main_key in options:
        parts.append(option_text(options[main_key]))
    parts += [f"{k}={option_text(v)}" for k, v in sorted(options.items()) if k != main_key]
    return ":".join(parts)


def backend_spec(spec: RunSpec) -> str:
    """A run's backend in the matrix's terms."""
    return canonical(spec.backend, spec.backend_options)
