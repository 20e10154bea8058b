"""Where generated models, datasets and preprocessed samples are cached.

Entries are written under a temporary name and renamed into place, so a crash never leaves a
half-written entry under its final name; an entry damaged later (truncated, half copied) fails
its check when it is next used and is built again.
"""

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from harness.errors import UserError

CACHE_ENV = "SPARSEPERF_CACHE"


def cache_root() -> Path:
    """The cache folder: ``$SPARSEPERF_CACHE`` or ``$XDG_CACHE_HOME/sparseperf``, absolute."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root).absolute()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return (base / "sparseperf").absolute()


def cache_dir(*parts: str) -> Path:
    """A folder under the cache root, made if needed."""
    path = cache_root().joinpath(*parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"cannot use cache folder {path}: {exc.strerror or exc}; point {CACHE_ENV} at a "
            "writable folder"
        ) from None
    return path


def reusable(path: Path, check: Callable[[Path], object], say: Callable[[str], None]) -> bool:
    """Whether the cache entry ``path`` (a file or a folder) exists and passes ``check``
    (which raises if the entry is damaged); a damaged entry is removed."""
    if not path.exists():
        return False
    try:
        check(path)
        return True
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        say(f"cache entry {path} is damaged ({reason}); making it again")
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
    return False


def build_once(
    path: Path,
    build: Callable[[Path], None],
    check: Callable[[Path], object] = lambda _: None,
    say: Callable[[str], None] = lambda _: None,
) -> Path:
    """``path``, made by ``build`` into a temporary file and renamed into place unless a sound
    entry (one that passes ``check``) is there already."""
    if not reusable(path, check, say):
        partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
        try:
            build(partial)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        check(path)
    return path


def source_digest(*modules: ModuleType) -> str:
    """Cache keys follow the generator code: a change to it rebuilds what it generated."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(Path(str(module.__file__)).read_bytes())
    return digest.hexdigest()[:12]
