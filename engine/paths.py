"""Where bertonnx keeps things on disk: the lowest floor, importable by every layer (backends included)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_BUNDLE_NAME = "all-MiniLM-L6-v2"


def bundle_home() -> Path:
    """$BERTONNX_HOME, else $XDG_CACHE_HOME/bertonnx, else ~/.cache/bertonnx."""
    if os.environ.get("BERTONNX_HOME"):
        return Path(os.environ["BERTONNX_HOME"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "bertonnx"


def default_bundle_path() -> Path:
    """Where the default model's bundle is built on first use."""
    return bundle_home() / "bundles" / DEFAULT_BUNDLE_NAME
