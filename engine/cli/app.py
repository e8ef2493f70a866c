"""The typer app: one module per command, registered here under one error rule."""

from __future__ import annotations

import sys
import types
import typing
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from bertonnx.cli.bench import bench
from bertonnx.cli.compare import compare
from bertonnx.cli.console import USAGE_EXIT, click_exceptions, friendly_errors, say_error
from bertonnx.cli.distributed import embed_distributed
from bertonnx.cli.embed import embed
from bertonnx.cli.export import export
from bertonnx.cli.info import info
from bertonnx.cli.serve import serve

VALUE_NAMES = {int: "INTEGER", float: "FLOAT", str: "TEXT", Path: "PATH"}
"""What help calls a value of each type, as Click does: a user types text, not a Python `str`."""


def value_name(param: TyperOption | TyperArgument, ctx: Any) -> str:
    """The value a parameter takes, for help: TEXT, INTEGER, PATH, a choice as a|b|c; a flag takes none ("").

    One name even for several values: typer already marks those on the parameter's name ("bundles...").
    """
    if getattr(param, "is_flag", False):
        return ""
    if param.type_descriptor.is_choice:
        return param.display_type(ctx).strip("<>").removeprefix("list[").removesuffix("]")  # typer's own a|b|c
    kind = _value_type(param.type_descriptor.annotation)
    return VALUE_NAMES.get(kind, getattr(kind, "__name__", "VALUE").upper())


def _value_type(annotation: Any) -> Any:
    """int for `int | None`, Path for `list[Path] | None`."""
    while typing.get_origin(annotation) in (typing.Union, types.UnionType, list):
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    return annotation


class _Option(TyperOption):
    def display_type_rich(self, ctx: Any) -> str | None:
        return self.metavar if self.metavar is not None else value_name(self, ctx)


class _Argument(TyperArgument):
    def display_type_rich(self, ctx: Any) -> str | None:
        return value_name(self, ctx)


class PlainValueNames:
    """Help names values as a user types them, never as Python types (`<bool>`, `<list[Path]>`).

    typer 0.29 builds its parameter objects itself and labels each with its
    annotation, with no setting to change that; so each parameter's class is
    swapped here for one that differs only in that label.
    """

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if type(param) is TyperOption:
                param.__class__ = _Option
            elif type(param) is TyperArgument:
                param.__class__ = _Argument
        return params


class Command(PlainValueNames, TyperCommand):
    """A bertonnx command: plain value names in its help."""


class OneLineUsageErrors(PlainValueNames, TyperGroup):
    """Usage errors as one line and exit 2, instead of Click's usage block."""

    def main(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D102 - click's signature
        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
        except getattr(click_exceptions, "NoArgsIsHelpError", ()) as error:
            error.show()  # `bertonnx` alone prints the help, as before
            sys.exit(error.exit_code)
        except click_exceptions.UsageError as error:
            command = error.ctx.command_path if error.ctx is not None else "bertonnx"
            message = error.format_message().replace("Value error, ", "")  # pydantic's prefix, via typer
            say_error(f"{message} (see '{command} --help')")
            sys.exit(USAGE_EXIT)
        except click_exceptions.ClickException as error:
            say_error(error.format_message())
            sys.exit(error.exit_code)
        except typer.Abort:
            say_error("aborted")
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


app = typer.Typer(
    name="bertonnx",
    cls=OneLineUsageErrors,
    help="Static and contextual BERT word embeddings, served fast from ONNX bundles.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("export", cls=Command)(friendly_errors(export))
app.command("info", cls=Command)(friendly_errors(info))
app.command("embed", cls=Command)(friendly_errors(embed))
app.command("compare", cls=Command)(friendly_errors(compare))
app.command("serve", cls=Command)(friendly_errors(serve))
app.command("bench", cls=Command)(friendly_errors(bench))
app.command("embed-distributed", cls=Command)(friendly_errors(embed_distributed))


def main() -> None:
    """Console entry point."""
    app()
