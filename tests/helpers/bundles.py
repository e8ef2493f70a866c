"""Damaging a bundle on purpose, so that only the check under test can catch it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bertonnx.bundle import sha256_file


def edit_manifest(bundle: Path, change: Callable[[dict[str, Any]], object]) -> None:
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def reseal(bundle: Path, name: str) -> None:
    """Record a replaced file's checksum, so only the check under test can catch it."""
    path = bundle / name
    entry = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    edit_manifest(bundle, lambda m: m["files"].update({name: entry}))
