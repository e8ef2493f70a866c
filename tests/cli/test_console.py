"""The CLI's one error rule: exit 2 for a wrong command line, 1 for failed work, and a bug says it is one."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from bertonnx.cli.console import friendly_errors, print_skipped
from bertonnx.errors import BundleError, OptionError


def app_raising(error: Exception) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @friendly_errors
    def fail() -> None:
        raise error

    @app.command()
    def other() -> None:  # a second command, so that `fail` is a subcommand as in bertonnx
        """Unused."""

    return app


def run(error: Exception, env: dict[str, str] | None = None):  # noqa: ANN201 - click Result
    return CliRunner().invoke(app_raising(error), ["fail"], env=env)


def test_a_bad_option_is_a_usage_error() -> None:
    result = run(OptionError("threads must be a positive whole number, got 0"))
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: threads must be a positive whole number, got 0"


def test_failed_work_is_one_line_and_exit_1() -> None:
    for error in (BundleError("b: checksum does not match the manifest"), OSError(28, "No space left on device")):
        result = run(error)
        assert result.exit_code == 1
        assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")


def test_an_unexpected_exception_says_it_is_a_bug_and_shows_the_traceback_when_debugging() -> None:
    result = run(ZeroDivisionError("division by zero"))
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: unexpected ZeroDivisionError: division by zero -- a bug in bertonnx; "
        "BERTONNX_DEBUG=1 shows the traceback"
    )
    debugging = run(ZeroDivisionError("division by zero"), env={"BERTONNX_DEBUG": "1"})
    assert isinstance(debugging.exception, ZeroDivisionError)  # raised through, traceback and all


def test_skipped_lines_past_the_first_twenty_are_counted_with_separators(capsys: pytest.CaptureFixture[str]) -> None:
    print_skipped([f"skipped line {n}: blank" for n in range(1, 1301)])
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 21 and lines[-1] == "... and 1,280 more skipped lines"
