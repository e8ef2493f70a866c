"""The small JSON records that describe work on disk: one reader, one checker.

The sink's `state.json` (a resumable job) and the Ray job's `manifest.json`
(its shards) both say what they are with a `format` name and a `version`;
this is where both are written and read back with those checked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bertonnx.errors import OutputError


def record_bytes(record: dict[str, Any]) -> bytes:
    """A record as written: indented UTF-8 JSON with sorted keys, so reruns write the same bytes."""
    return (json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def read_record(path: Path, kind: str, version: int, remedy: str = "", **fixes: Any) -> dict[str, Any]:
    """The record at `path`, checked to be a `kind` record of `version`.

    Args:
        remedy: what the user can do about a bad record, appended to the message: a message template
            naming `fixes` as `{argument}` placeholders (bertonnx.errors.BertonnxError).

    Raises:
        OutputError: not JSON, not an object, another format or another version.
    """
    tail = f"; {remedy}" if remedy else ""
    try:
        record = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise OutputError(f"{path}: damaged ({error}){tail}", **fixes) from error
    found = record.get("format") if isinstance(record, dict) else type(record).__name__
    if not isinstance(record, dict) or found != kind:
        raise OutputError(f"{path}: expected a {kind} record, found {found!r}{tail}", **fixes)
    if record.get("version") != version:
        raise OutputError(f"{path}: expected {kind} version {version}, found {record.get('version')!r}{tail}",
                          **fixes)
    return record
