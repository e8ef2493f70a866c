"""The typer app: one module per command, registered here under one error rule."""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperGroup

from bertonnx.cli.bench import bench
from bertonnx.cli.compare import compare
from bertonnx.cli.console import USAGE_EXIT, click_exceptions, friendly_errors, say_error
from bertonnx.cli.distributed import embed_distributed
from bertonnx.cli.embed import embed
from bertonnx.cli.export import export
from bertonnx.cli.info import info
from bertonnx.cli.serve import serve


class OneLineUsageErrors(TyperGroup):
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
app.command("export")(friendly_errors(export))
app.command("info")(friendly_errors(info))
app.command("embed")(friendly_errors(embed))
app.command("compare")(friendly_errors(compare))
app.command("serve")(friendly_errors(serve))
app.command("bench")(friendly_errors(bench))
app.command("embed-distributed")(friendly_errors(embed_distributed))


def main() -> None:
    """Console entry point."""
    app()
