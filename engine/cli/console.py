"""The CLI's two consoles and its one rule for errors.

- exit 2: the command line is wrong (an unknown flag, a value an option does not
  take, flags that conflict): one line on stderr, as Click and argparse do;
- exit 1: the command line is fine but the work failed (a bad input line, a
  damaged bundle, a missing extra, a full disk): one line on stderr;
- anything else is a bug in bertonnx: one line saying so, exit 1, and the
  traceback with BERTONNX_DEBUG=1.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

import typer
from rich.console import Console

try:  # typer >= 0.2x carries its own copy of click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer on the real click
    from click import exceptions as click_exceptions  # type: ignore[no-redef]

from bertonnx.errors import BertonnxError, Fix, OptionError

# No emoji codes: a message quoting ":-1:" (a port, a path) must print as typed, not as 👎.
out = Console(emoji=False)
err = Console(stderr=True, emoji=False)
USAGE_EXIT = 2
FAILURE_EXIT = 1


class CliError(BertonnxError):
    """A failure only the CLI can see (an input path that is not a file): exit 1."""


def debugging() -> bool:
    return bool(os.environ.get("BERTONNX_DEBUG"))


FLAGS = {"mode": "", "out": "--out"}
"""Library arguments whose flag is not `--` + the argument's name: a mode is chosen by its own flag (--static)."""


def as_flag(fix: Fix) -> str:
    """A library fix (`force=True`, `unknown=('unk', 'zero')`) as the command line says it (`--force`,
    `--unknown unk|zero`)."""
    flag = FLAGS.get(fix.argument, "--" + fix.argument.replace("_", "-"))
    value = fix.value
    if fix.argument == "mode":
        return f"--{value}"
    if value is True or value is ...:
        return flag
    if value is False:
        return "--no-" + flag.removeprefix("--")
    if isinstance(value, tuple):
        return f"{flag} {'|'.join(str(choice) for choice in value)}"
    return f"{flag} {value}"


def one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror and error.filename:  # "[Errno 28] ..." as people read it
        return f"{error.filename}: {error.strerror[0].lower()}{error.strerror[1:]}"
    text = (error.render(as_flag) if isinstance(error, BertonnxError) else str(error)).strip()
    return text.splitlines()[0] if text else type(error).__name__


def say_error(message: str) -> None:
    err.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)


def friendly_errors(command: Callable[..., None]) -> Callable[..., None]:
    """Run a command under the CLI's error rule (see the module docstring)."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except (typer.Exit, typer.Abort, click_exceptions.ClickException):
            raise
        except OptionError as error:
            if debugging():
                raise
            say_error(one_line(error))
            raise typer.Exit(USAGE_EXIT) from None
        except (BertonnxError, OSError) as error:
            if debugging():
                raise
            say_error(one_line(error))
            raise typer.Exit(FAILURE_EXIT) from None
        except Exception as error:
            if debugging():
                raise
            say_error(
                f"unexpected {type(error).__name__}: {one_line(error)} -- a bug in bertonnx; "
                "BERTONNX_DEBUG=1 shows the traceback"
            )
            raise typer.Exit(FAILURE_EXIT) from None

    return run


def print_skipped(lines: Sequence[str], shown: int = 20) -> None:
    """The skipped input lines a bulk job reports, the first `shown` of them."""
    for line in lines[:shown]:
        err.print(line, markup=False, highlight=False, soft_wrap=True)
    if len(lines) > shown:
        err.print(f"... and {len(lines) - shown:,} more skipped lines", markup=False, highlight=False, soft_wrap=True)


class _Unclosed:
    """A stream a `with` block may use and leave open."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream

    def __enter__(self) -> BinaryIO:
        return self.stream

    def __exit__(self, *exc: object) -> None:
        self.stream.flush()


def data_stdout() -> BinaryIO:
    """The process's stdout, kept for data alone: from here on anything else printed there (a library's log or
    progress bar, from Python or native code) goes to stderr, so every stdout line parses."""
    sys.stdout.flush()
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (an in-process test runner's capture)
        return _Unclosed(sys.stdout.buffer)
    data = os.fdopen(os.dup(descriptor), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    return data


def say(message: str) -> None:
    """A plain status line on stderr."""
    err.print(message, markup=False, highlight=False, soft_wrap=True)
