"""Cached measurements: one JSON file per entry, kept only while the key it was measured under still holds.

Fidelity figures (bertonnx.fidelity) and `auto`'s timings (bertonnx.backends.measure)
are written here; an absent, damaged or outdated entry reads as None, so the caller
measures again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from bertonnx.io.atomic import write_atomic

T = TypeVar("T")


def read_entry(path: Path, key: Mapping[str, Any], parse: Callable[[Any], T]) -> T | None:
    """`parse` of the value stored under `key` at `path`, or None when absent, damaged or keyed otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return parse(data["value"]) if data.get("key") == dict(key) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or damaged: measure again


def write_entry(path: Path, key: Mapping[str, Any], value: Any) -> None:
    """Store a JSON-ready `value` under `key`, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"key": dict(key), "value": value}, indent=2) + "\n"
    write_atomic(path, lambda stream: stream.write(text.encode("utf-8")))
