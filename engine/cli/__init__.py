"""The `bertonnx` command: a thin typer layer over the Python API, one module per command.

app.py       the typer app and its one-line usage errors
console.py   stdout/stderr consoles and the error rule (exit 2 usage, exit 1 failure)
options.py   option declarations shared by several commands, built from bertonnx.options
progress.py  spinners and bars on stderr
<command>.py one module per command
"""

from __future__ import annotations

from bertonnx.cli.app import app, main

__all__ = ["app", "main"]
