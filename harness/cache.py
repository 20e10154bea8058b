"""Where generated models, datasets and preprocessed samples are cached."""

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType


def cache_dir(*parts: str) -> Path:
    """A folder under the user cache (``$SPARSEPERF_CACHE`` or ``$XDG_CACHE_HOME/sparseperf``)."""
    root = os.environ.get("SPARSEPERF_CACHE")
    if root:
        base = Path(root)
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sparseperf"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_once(path: Path, build: Callable[[Path], None]) -> Path:
    """``path``, made by ``build`` into a temporary file and renamed into place if it is not
    there yet: a crash never leaves a half-written file under the final name."""
    if not path.exists():
        partial = path.with_suffix(f".partial-{os.getpid()}")
        try:
            build(partial)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
    return path


def source_digest(*modules: ModuleType) -> str:
    """Cache keys follow the generator code: a change to it rebuilds what it generated."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(Path(str(module.__file__)).read_bytes())
    return digest.hexdigest()[:12]
