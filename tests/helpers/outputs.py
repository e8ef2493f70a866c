"""The files a bulk job leaves behind: its output (with sidecars), its last checkpoint, anything else."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bertonnx.io.formats import output_files as possible_files
from bertonnx.io.sinks import partial_dir


def output_files(out: Path) -> list[Path]:
    """Every file that makes up `out`: a .npy output's sidecars too (ids and flags only in jobs with them)."""
    return [path for path in possible_files(out) if path == out or path.exists()]


def output_bytes(out: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in output_files(out)}


def checkpoint_position(out: Path) -> dict[str, Any]:
    """The caller's position at the last checkpoint on disk, read as a resume would ({} before the first)."""
    try:
        state = json.loads((partial_dir(out) / "state.json").read_text())
    except (OSError, ValueError):
        return {}
    return dict(state.get("checkpoint", {}).get("position", {}))


def leftovers(directory: Path, out: Path) -> list[str]:
    """Names in `directory` other than the files that make up `out`."""
    return sorted(path.name for path in directory.iterdir() if path not in output_files(out))
