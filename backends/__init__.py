"""Inference backends behind one small interface (load, predict, describe).

Built-in backends are listed in ``BACKENDS``; any other backend plugs in as ``module:Class``
(a ``backends.base.Backend`` subclass importable in the run's process).
"""

from __future__ import annotations

import importlib
import inspect
import types
import typing
from pathlib import Path
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


def declared_class(name: str) -> type[Backend]:
    """The class whose declarations (options, main option, label) a backend name reads; for a
    plug-in this process cannot import, the contract itself, declaring nothing, so that runs
    recorded elsewhere still read."""
    try:
        return backend_class(name)
    except UserError:
        if name in BACKENDS:  # a built-in that cannot be imported is a broken install
            raise
        return Backend


def create_backend(name: str, options: dict[str, Any]) -> Backend:
    """Instantiate a backend; options it does not take, or of the wrong type, are an error,
    not silently dropped, and so is a constructor that fails."""
    cls = backend_class(name)
    parameters = _parameters(cls)
    unknown = sorted(key for key in options if key not in parameters)
    if unknown:
        raise UserError(
            f"backend {name!r} does not take option(s) {', '.join(unknown)}; "
            f"it takes: {', '.join(parameters) or 'none'}"
        )
    for key, value in options.items():
        _check_type(name, key, value, parameters[key].annotation)
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
        raise UserError(f"backend {name!r} cannot be used: it does not implement {missing}")
    try:
        return cls(**options)
    except UserError:
        raise
    except Exception as exc:  # a plug-in's own failure: say so in one line
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UserError(
            f"backend {name!r} could not be created: {type(exc).__name__}"
            + (f": {text}" if text else "")
        ) from exc


def path_options(name: str) -> frozenset[str]:
    """The backend's options that name files (annotated as ``Path``): the harness resolves
    them against the caller's working directory before the run process starts."""
    return frozenset(
        key
        for key, parameter in _parameters(backend_class(name)).items()
        if Path in _accepted(parameter.annotation)
    )


def _parameters(cls: type[Backend]) -> dict[str, inspect.Parameter]:
    try:
        signature = inspect.signature(cls.__init__, eval_str=True)
    except (NameError, TypeError, SyntaxError):  # annotations a plug-in cannot resolve
        signature = inspect.signature(cls.__init__)
    return {
        key: parameter
        for key, parameter in signature.parameters.items()
        if key != "self" and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    }


def _accepted(annotation: object) -> tuple[object, ...]:
    """The types an annotation allows (``X | None`` gives X and NoneType)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return typing.get_args(annotation)
    return (annotation,)


_KINDS = {int: "a whole number", float: "a number", str: "text", bool: "true/false", Path: "a path"}


def _check_type(name: str, key: str, value: object, annotation: object) -> None:
    accepted = _accepted(annotation)
    if not all(kind in (*_KINDS, type(None)) for kind in accepted):
        return  # not annotated, or with types the harness does not check
    fits = {
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
        bool: isinstance(value, bool),
        Path: isinstance(value, (str, Path)),
        type(None): value is None,
    }
    if not any(fits[kind] for kind in accepted):
        wanted = " or ".join(_KINDS[kind] for kind in accepted if kind in _KINDS)
        raise UserError(f"backend {name!r}: option {key} takes {wanted}, got {value!r}")
