"""The one cache folder of the engine (built graphs, extracted split packages, file hashes)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Where built ONNX graphs are kept: ``$SURERANK_CACHE`` or ``~/.cache/surerank``."""
    root = os.environ.get("SURERANK_CACHE")
    if root:
        path = Path(root).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "surerank"
    path.mkdir(parents=True, exist_ok=True)
    return path
