"""Where generated models, datasets and preprocessed samples are cached."""

import os
from pathlib import Path


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
