"""Reading the files users hand over and writing the files a run leaves, with one-line errors.

Every input file (user.conf, val_map.txt, JSON records, lists) is read through ``read_text`` or
``read_json``: unreadable, non-UTF-8, malformed or absurdly nested files become a ``UserError``
that names the file. Records are written through ``write_text``/``write_json``: into a temporary
file that is renamed into place, so that a full disk or a crash never leaves a truncated file
under the final name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from harness.errors import UserError


class UnreadableFile(UserError):
    """An input file that cannot be used; ``problem`` says why, without the file's name."""

    def __init__(self, what: str, path: Path, problem: str) -> None:
        super().__init__(f"{what} {path} {problem}")
        self.problem = problem


def read_text(path: Path, what: str) -> str:
    """The UTF-8 text of ``path``; ``what`` names the file in errors ("user.conf")."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UnreadableFile(what, path, f"cannot be read ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnreadableFile(
            what,
            path,
            f"is not UTF-8 text (byte {exc.start} is 0x{data[exc.start]:02x}); save it as UTF-8",
        ) from None


def read_json(path: Path, what: str) -> Any:
    """The JSON document in ``path``."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        problem = f"is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        raise UnreadableFile(what, path, problem) from None
    except RecursionError:
        raise UnreadableFile(what, path, "is nested too deeply to be read") from None


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON file that must hold an object."""
    body = read_json(path, what)
    if not isinstance(body, dict):
        problem = f"must hold a JSON object, not a {type(body).__name__}"
        raise UnreadableFile(what, path, problem)
    return body


def write_text(path: Path, text: str) -> None:
    """Write ``path`` completely or not at all (the old content, if any, stays on failure)."""
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with open(partial, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        partial.unlink(missing_ok=True)


def write_json(path: Path, body: Any) -> None:
    write_text(path, json.dumps(body, indent=2, default=str) + "\n")
