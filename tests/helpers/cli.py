"""The bertonnx command through typer's CliRunner, and what its errors must look like."""

from __future__ import annotations

import re

from typer.testing import CliRunner, Result

from bertonnx.cli.app import app

runner = CliRunner()


def run(*args: object, stdin: str | bytes | None = None) -> Result:
    return runner.invoke(app, [str(a) for a in args], input=stdin)


def one_line_error(result: Result, pattern: str, code: int = 1) -> None:
    """One `error:` line on stderr, no traceback; exit 2 for a wrong command line, 1 for work that failed."""
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and pattern in lines[0], result.stderr
    assert "Traceback" not in result.output


def choices_of(*command: str) -> list[str]:
    """The values a choice flag takes, as the command line itself lists them when given one it does not take.

    `command` ends with the flag, e.g. choices_of("embed", "B", "--sentences", "--pooling").
    """
    result = run(*command, "not-a-choice")
    one_line_error(result, f"Invalid value for '{command[-1]}'", code=2)
    listed = re.search(r"is not one of (.*?)\.? \(see", result.stderr)
    assert listed, result.stderr
    return re.findall(r"'([^']*)'", listed.group(1))
