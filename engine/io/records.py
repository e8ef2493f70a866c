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


def literal(value: object) -> str:
    """`value` as text that an error's message template (bertonnx.errors.BertonnxError) shows as is, braces
    and all: a path or a found value interpolated into a message that names fixes."""
    return str(value).replace("{", "{{").replace("}", "}}")


def read_record(path: Path, kind: str, version: int, remedy: str = "", **fixes: Any) -> dict[str, Any]:
    """The record at `path`, checked to be a `kind` record of `version`.

    Args:
        remedy: what the user can do about a bad record, appended to the message: a message template
            naming `fixes` as `{argument}` placeholders (bertonnx.errors.BertonnxError).

    Raises:
        OutputError: not JSON, not an object, another format or another version.
    """
    tail = f"; {remedy}" if remedy else ""
    show = literal if fixes else str  # a template is formatted only when it names fixes
    try:
        record = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise OutputError(f"{show(path)}: damaged ({show(error)}){tail}", **fixes) from error
    found = record.get("format") if isinstance(record, dict) else type(record).__name__
    if not isinstance(record, dict) or found != kind:
        raise OutputError(f"{show(path)}: expected a {kind} record, found {show(repr(found))}{tail}", **fixes)
    if record.get("version") != version:
        found = show(repr(record.get("version")))
        raise OutputError(f"{show(path)}: expected {kind} version {version}, found {found}{tail}", **fixes)
    return record
