"""`bertonnx serve`: the HTTP service as a command.

Registered in bertonnx.cli.app as `app.command("serve")(friendly_errors(serve))`. The
web stack (the `serve` extra) is imported only when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bertonnx.cli.console import err
from bertonnx.cli.options import (
    BackendChoice,
    BackendOption,
    MinFidelityOption,
    PrecisionChoice,
    PrecisionOption,
    Provider,
    ProviderOption,
)
from bertonnx.cli.progress import status_spinner
from bertonnx.defaults import resolve_bundle
from bertonnx.serve.settings import SERVE_BATCH_TOKENS, ServeSettings

DEFAULTS = ServeSettings()


def serve(
    bundle: Annotated[Path | None, typer.Argument(help="Bundle directory; default: all-MiniLM-L6-v2")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 for every interface")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port; 0 picks a free one")] = 8080,
    max_batch_tokens: Annotated[
        int, typer.Option(help="Tokens of concurrent requests merged into one batch; 1 turns merging off")
    ] = DEFAULTS.max_batch_tokens,
    batch_tokens: Annotated[
        int, typer.Option(help="Padded tokens per ONNX Runtime run, cut from a length-sorted batch")
    ] = SERVE_BATCH_TOKENS,
    max_wait_ms: Annotated[
        float, typer.Option(help="How long a batch may wait for requests already on their way to it")
    ] = DEFAULTS.max_wait_ms,
    max_queue: Annotated[
        int, typer.Option(help="Tokens that may wait for the model; past that, 503 with Retry-After")
    ] = DEFAULTS.max_queue,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body")] = DEFAULTS.max_body_bytes,
    max_texts: Annotated[int, typer.Option(help="Most texts (or words) in one request")] = DEFAULTS.max_texts,
    max_text_chars: Annotated[int, typer.Option(help="Longest text, in characters")] = DEFAULTS.max_text_chars,
    threads: Annotated[int | None, typer.Option(help="ONNX Runtime threads (default: all cores)")] = None,
    spin: Annotated[
        bool, typer.Option(help="ORT threads busy-wait between operators: lower latency, CPU burned while idle")
    ] = False,
    backend: BackendOption = BackendChoice.auto,
    precision: PrecisionOption = PrecisionChoice.auto,
    provider: ProviderOption = Provider.auto,
    min_fidelity: MinFidelityOption = None,
    access_log: Annotated[bool, typer.Option(help="Log every request")] = False,
) -> None:
    """Serve embeddings over HTTP: OpenAI-compatible /v1/embeddings, plus word-level endpoints."""
    try:
        from bertonnx.serve.app import check_can_listen, create_app, run_server
    except ImportError as error:
        raise ImportError(f"bertonnx serve needs the serve extra: pip install 'bertonnx[serve]' ({error})") from error
    from bertonnx.embedder import Embedder

    check_can_listen(host, port)  # a taken port fails before the model loads

    settings = ServeSettings(
        max_batch_tokens=max_batch_tokens,
        max_wait_ms=max_wait_ms,
        max_queue=max_queue,
        max_body_bytes=max_body_bytes,
        max_texts=max_texts,
        max_text_chars=max_text_chars,
    )
    with status_spinner(err, "opening the bundle") as step:
        path = resolve_bundle(bundle, step)
        step(f"loading {path}")
        embedder = Embedder.load(
            path, backend=backend.value, precision=precision.value, provider=provider.value, threads=threads,
            batch_tokens=batch_tokens, spin=spin, min_fidelity=min_fidelity,
        )
    err.print(f"serving {path} ({embedder.bundle.manifest['source']['model']}, {embedder.dim} dims)", highlight=False)
    run_server(create_app(embedder, settings), host, port, access_log=access_log)
