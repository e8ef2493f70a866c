"""`bertonnx serve`: the HTTP service as a command.

Registered in bertonnx.cli.app as `app.command("serve")(friendly_errors(serve))`. The
web stack (the `serve` extra) is imported only when the command runs.
"""

from __future__ import annotations

import ipaddress
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
    ProviderChoice,
    ProviderOption,
    load_options,
)
from bertonnx.cli.progress import status_spinner
from bertonnx.defaults import resolve_bundle
from bertonnx.embedder import RuntimeInfo
from bertonnx.errors import missing_extra
from bertonnx.options import choice_enum
from bertonnx.serve.settings import EMBEDDINGS_LONG_TEXT, SERVE_BATCH_TOKENS, ServeSettings

DEFAULTS = ServeSettings()
EmbeddingsLongText = choice_enum("EmbeddingsLongText", EMBEDDINGS_LONG_TEXT)
DEFAULT_LONG_TEXT = EmbeddingsLongText(DEFAULTS.long_text)


def serve(
    bundle: Annotated[Path | None, typer.Argument(help="Bundle directory; default: all-MiniLM-L6-v2")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 for every interface")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port; 0 picks a free one", min=0, max=65535)] = 8080,
    max_batch_tokens: Annotated[
        int, typer.Option(help="Tokens of concurrent requests merged into one batch; 1 turns merging off", min=1)
    ] = DEFAULTS.max_batch_tokens,
    batch_tokens: Annotated[
        int, typer.Option(help="Padded tokens per ONNX Runtime run, cut from a length-sorted batch", min=1)
    ] = SERVE_BATCH_TOKENS,
    max_wait_ms: Annotated[
        float, typer.Option(help="How long a batch may wait for requests already on their way to it", min=0)
    ] = DEFAULTS.max_wait_ms,
    max_queue: Annotated[
        int, typer.Option(help="Tokens that may wait for the model; past that, 503 with Retry-After", min=1)
    ] = DEFAULTS.max_queue,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body", min=1)] = DEFAULTS.max_body_bytes,
    max_texts: Annotated[int, typer.Option(help="Most texts (or words) in one request", min=1)] = DEFAULTS.max_texts,
    max_text_chars: Annotated[
        int, typer.Option(help="Longest text, in characters", min=1)
    ] = DEFAULTS.max_text_chars,
    long_text: Annotated[
        EmbeddingsLongText,
        typer.Option(
            help="/v1/embeddings' default for long texts (a request may choose with \"long_text\"): "
            "sentence-transformers cuts them where the source model's encode() does (its max_seq_length, "
            "recorded in the bundle; 256 for all-MiniLM-L6-v2), so vectors match an index built with it; "
            "window keeps every token, averaging windows past the model maximum"
        ),
    ] = DEFAULT_LONG_TEXT,
    threads: Annotated[int | None, typer.Option(help="Inference threads (default: all cores)")] = None,
    spin: Annotated[
        bool, typer.Option(help="ORT threads busy-wait between a call's operators (not after it): lower latency")
    ] = True,
    backend: BackendOption = BackendChoice.auto,
    precision: PrecisionOption = PrecisionChoice.auto,
    provider: ProviderOption = ProviderChoice.auto,
    min_fidelity: MinFidelityOption = None,
    access_log: Annotated[bool, typer.Option(help="Log every request")] = False,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="BERTONNX_API_KEY", show_envvar=True,
            help="Require 'Authorization: Bearer KEY' on every endpoint but /health; prefer the environment "
            "variable, which keeps the key out of the process list",
        ),
    ] = None,
) -> None:
    """Serve embeddings over HTTP: OpenAI-compatible /v1/embeddings, plus word-level endpoints."""
    try:
        from bertonnx.serve.app import create_app
        from bertonnx.serve.server import check_can_listen, run_server
    except ImportError as error:
        raise missing_extra("bertonnx serve", "serve", error) from error
    from bertonnx.embedder import Embedder

    settings = ServeSettings(
        max_batch_tokens=max_batch_tokens,
        max_wait_ms=max_wait_ms,
        max_queue=max_queue,
        max_body_bytes=max_body_bytes,
        max_texts=max_texts,
        max_text_chars=max_text_chars,
        long_text=long_text.value,
        api_key=api_key,
    )
    check_can_listen(host, port)  # a taken port fails before the model loads

    with status_spinner(err, "opening the bundle") as step:
        path = resolve_bundle(bundle, step)
        step(f"loading {path}")
        embedder = Embedder.load(path, load_options(backend, precision, provider, threads, batch_tokens, spin,
                                                    min_fidelity))
    line = serving_line(path, embedder.model_name, embedder.dim, embedder.runtime_info())
    if settings.api_key is not None:
        line += "; every endpoint but /health needs the API key"
    err.print(line, highlight=False, soft_wrap=True, markup=False)  # one line, however narrow the terminal
    warning = exposure_warning(host, port, settings.api_key)
    if warning is not None:
        err.print(warning, highlight=False, soft_wrap=True, markup=False)
    cut = embedder.sentence_transformers_max_length
    if cut is not None and settings.long_text == "sentence-transformers":
        err.print(
            f"/v1/embeddings cuts texts at {cut} tokens as sentence-transformers does (--long-text window keeps them)",
            highlight=False, soft_wrap=True,
        )
    run_server(create_app(embedder, settings), host, port, access_log=access_log)


def exposure_warning(host: str, port: int, api_key: str | None) -> str | None:
    """A warning when the server listens beyond this machine with no key: anyone who reaches it may use it."""
    if api_key is not None or host == "localhost":
        return None
    try:
        if ipaddress.ip_address(host.strip("[]")).is_loopback:
            return None
    except ValueError:
        pass  # a host name other than localhost may resolve to any interface
    return (
        f"warning: listening on {host} with no API key: anyone who can reach port {port} can use this server "
        "(set BERTONNX_API_KEY or --api-key)"
    )


def serving_line(path: Path, model: str, dim: int, runtime: RuntimeInfo) -> str:
    """The start-up line: what is served, and what actually runs it (with its fidelity when not fp32)."""
    threads = runtime.threads
    line = (
        f"serving {path} ({model}, {dim} dims) on {runtime.backend} {runtime.device} {runtime.precision}, "
        f"{threads} thread{'' if threads == 1 else 's'}"
    )
    if runtime.fidelity is not None:
        found = runtime.fidelity.fidelity
        line += (
            f"; word cosine vs {runtime.fidelity.reference} min {found.word_min_cosine:.5f}, "
            f"mean {found.word_mean_cosine:.5f}"
        )
    sentences = runtime.serves.get("sentences")
    if sentences is not None and sentences != runtime.serves.get("words"):  # `fastest` split by use
        line += f"; sentences on {sentences.backend} {sentences.precision}"
        if sentences.fidelity is not None and sentences.fidelity.fidelity.sentence_min_cosine is not None:
            line += f", sentence cosine min {sentences.fidelity.fidelity.sentence_min_cosine:.5f}"
    return line
