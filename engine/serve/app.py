"""The HTTP service: an OpenAI-compatible /v1/embeddings plus word-level endpoints.

A request's life: the body is read whole under a size limit, parsed and
validated strictly; its texts are tokenized on a thread to count tokens; model
work goes through the Batcher, which merges it with concurrent requests; the
response is rendered on a thread. The event loop only parses, validates and
routes, so one slow batch never stalls /health or /metrics.
"""

from __future__ import annotations

import base64
import json
import signal
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from numpy.typing import NDArray
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bertonnx.embedder import Embedder, WordVectors
from bertonnx.errors import InputError
from bertonnx.serve.batcher import Batcher, Task
from bertonnx.serve.errors import Overloaded, TooLarge
from bertonnx.serve.metrics import ServeMetrics
from bertonnx.serve.schemas import EmbeddingsRequest, StaticRequest, WordsRequest, check_texts
from bertonnx.serve.settings import ServeSettings
from bertonnx.tokenize import TextInput, TextPieces

EMBEDDING_PATHS = ("/v1/embeddings", "/embed/words", "/embed/static")
PATHS = (*EMBEDDING_PATHS, "/health", "/info", "/metrics")
USER_ERRORS = (InputError,)
ERROR_TYPES = {
    400: "invalid_request_error",
    404: "not_found_error",
    405: "method_not_allowed",
    413: "request_too_large",
    422: "invalid_request_error",
    503: "overloaded_error",
}


class Service:
    """The Embedder, the batcher in front of it, and the metrics about both."""

    def __init__(self, embedder: Embedder, settings: ServeSettings) -> None:
        self.embedder = embedder
        self.settings = settings
        self.model_name = str(embedder.bundle.manifest["source"]["model"])
        self.metrics = ServeMetrics(lambda: self.batcher.queued_requests, lambda: self.batcher.queued_tokens)
        self.batcher = Batcher(
            self._compute,
            max_batch_tokens=settings.max_batch_tokens,
            max_wait=settings.max_wait_ms / 1000,
            max_queue_tokens=settings.max_queue,
            observe=self.metrics.observe_batch,
        )
        tokenizer = embedder.tokenizer
        self.n_special = len(tokenizer.prefix_ids) + len(tokenizer.suffix_ids)

    def split(self, texts: Sequence[TextInput]) -> tuple[list[TextPieces], NDArray[np.int64]]:
        """Pieces of each text and (N,) its content-piece count; runs on a thread."""
        pieces = self.embedder.tokenizer.split(texts)
        return pieces, np.array([p.ids.size for p in pieces], dtype=np.int64)

    def _compute(self, task: Task, texts: list[Any]) -> Sequence[Any]:
        if task.kind == "sentences":
            return self.embedder.sentences(texts, task.pooling, task.normalize, task.long_text)
        return self.embedder.contextual(texts, task.pooling, task.long_text)

    def static_words(self, pieces: list[TextPieces], pooling: str) -> list[WordVectors]:
        """Table vectors for the words of already split texts, [UNK]'s row where BERT would see [UNK]."""
        words = [word for text in pieces for word in text.words]
        vectors = self.embedder.static(words, pooling, unknown="unk")  # (W, H)
        unknown = self.embedder.find_unknown(words)  # (W,)
        bounds = np.cumsum([len(text.words) for text in pieces])[:-1]
        return [
            WordVectors(words=text.words, vectors=v, spans=_spans(text), unknown=u)
            for text, v, u in zip(pieces, np.split(vectors, bounds), np.split(unknown, bounds))
        ]

    def info(self) -> dict[str, Any]:
        runtime = self.embedder.runtime()
        return {
            "model": self.model_name,
            "dim": self.embedder.dim,
            "static_dim": self.embedder.static_dim,
            "max_length": self.embedder.bundle.max_length,
            "provider": runtime["device"],  # kept for clients of earlier versions; see runtime
            "threads": runtime["threads"],
            "runtime": runtime,
            "batch_tokens": self.embedder.batch_tokens,
            "settings": asdict(self.settings),
            "manifest": self.embedder.bundle.manifest,
        }


def create_app(embedder: Embedder, settings: ServeSettings | None = None) -> FastAPI:
    """The ASGI app serving `embedder`. Its lifespan starts the batcher and drains it on shutdown."""
    service = Service(embedder, settings or ServeSettings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        await service.batcher.start()
        try:
            yield
        finally:
            await service.batcher.close()  # uvicorn lets in-flight requests finish first

    app = FastAPI(title="bertonnx", summary="BERT word and sentence embeddings from an ONNX bundle", lifespan=lifespan)
    _add_routes(app, service)
    _add_error_handlers(app)
    app.add_middleware(_BodyLimit, max_bytes=service.settings.max_body_bytes)
    app.add_middleware(_Metrics, metrics=service.metrics)  # outermost: sees every response, 413s included
    return app


def _add_routes(app: FastAPI, service: Service) -> None:
    embedder, settings, metrics = service.embedder, service.settings, service.metrics

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingsRequest) -> Response:
        """Sentence vectors, mean-pooled and unit length, in OpenAI's response shape."""
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts:
            raise InputError("input is an empty list; send at least one text")
        if body.dimensions is not None and body.dimensions != embedder.dim:
            raise InputError(f"dimensions must be {embedder.dim} for this model (or left out), got {body.dimensions}")
        check_texts(texts, settings, "input")
        with service.batcher.expecting():
            _, content = await run_in_threadpool(service.split, texts)
        if (content == 0).any():
            first = int(np.flatnonzero(content == 0)[0])
            raise InputError(f"input {first} has no tokens: it is empty or blank")
        tokens = int(content.sum()) + service.n_special * len(texts)
        task = Task("sentences", pooling="mean", normalize=True)
        vectors = await service.batcher.submit(task, texts, tokens)
        metrics.tokens.inc(tokens, endpoint="/v1/embeddings")
        head = {
            "object": "list",
            "model": body.model or service.model_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        items = (
            {"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
            for i, v in enumerate(vectors)
        )
        return await run_in_threadpool(_render, head, items)

    @app.post("/embed/words")
    async def words(body: WordsRequest) -> Response:
        """Each text's words and one vector per word: contextual (the model) or static (the table)."""
        check_texts(body.texts, settings)
        with service.batcher.expecting():
            pieces, content = await run_in_threadpool(service.split, body.texts)
        if body.kind == "static":
            tokens = int(content.sum())
            results = await run_in_threadpool(service.static_words, pieces, body.pooling)
        else:
            tokens = int(content.sum()) + service.n_special * len(body.texts)
            task = Task("contextual", pooling=body.pooling, long_text=body.long_text)
            results = await service.batcher.submit(task, body.texts, tokens)
        metrics.tokens.inc(tokens, endpoint="/embed/words")
        head = {
            "object": "list",
            "model": service.model_name,
            "kind": body.kind,
            "pooling": body.pooling,
            "dim": (embedder.static_dim if body.kind == "static" else embedder.dim) * (
                2 if body.pooling == "first_last" else 1
            ),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        items = (
            {
                "index": i,
                "words": list(r.words),
                "vectors": _encode(r.vectors, body.encoding_format),
                "spans": r.spans.tolist(),
                "unknown": r.unknown.tolist(),
                "truncated": r.truncated,
            }
            for i, r in enumerate(results)
        )
        return await run_in_threadpool(_render, head, items)

    @app.post("/embed/static")
    async def static(body: StaticRequest) -> Response:
        """Context-free word vectors from the embedding table; never runs the model, so never queued."""
        check_texts(body.words, settings, "word")
        vectors, unknown = await run_in_threadpool(_static, embedder, body)
        head = {
            "object": "list",
            "model": service.model_name,
            "pooling": body.pooling,
            "dim": int(vectors.shape[1]),
        }
        items = (
            {"index": i, "word": w, "vector": _encode(v, body.encoding_format), "unknown": bool(u)}
            for i, (w, v, u) in enumerate(zip(body.words, vectors, unknown))
        )
        return await run_in_threadpool(_render, head, items)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/info")
    async def info() -> dict[str, Any]:
        """The bundle's manifest and this server's settings."""
        return service.info()

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


def _static(embedder: Embedder, body: StaticRequest) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    vectors = embedder.static(body.words, body.pooling, body.unknown)  # (W, H)
    return vectors, embedder.find_unknown(body.words)


def _spans(text: TextPieces) -> NDArray[np.int64]:
    """(W, 2) each word's [start, end) in the text's pieces, as WordVectors.spans has them."""
    starts = text.word_starts  # (W,)
    ends = np.append(starts[1:], text.ids.size)[: starts.size]  # a text without words has no ends
    return np.stack([starts, ends], axis=1)


def _encode(vectors: NDArray[np.float32], encoding: str) -> Any:
    """Floats as JSON numbers, or base64 of little-endian float32 as the OpenAI client decodes it."""
    if encoding == "base64":
        return base64.b64encode(np.ascontiguousarray(vectors, dtype="<f4").tobytes()).decode("ascii")
    return vectors.tolist()


def _render(head: dict[str, Any], items: Iterator[dict[str, Any]]) -> Response:
    """head plus a "data" list, rendered one item at a time.

    Only one item's floats are ever Python objects at once, so a large /embed/words
    answer costs its JSON text in memory, not several times that.
    """
    data = ",".join(json.dumps(item, separators=(",", ":")) for item in items)
    text = json.dumps(head, separators=(",", ":"))[:-1] + ',"data":[' + data + "]}"
    return Response(text, media_type="application/json")


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """Every error body has one shape, OpenAI's: {"error": {"message", "type"}}."""
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = error.errors()
        status = 400 if any(p.get("type") == "json_invalid" for p in problems) else 422
        return error_response(status, _describe(problems))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return error_response(error.status_code, str(error.detail), error.headers)

    async def user_error(request: Request, error: Exception) -> JSONResponse:
        return error_response(400, str(error))

    for kind in USER_ERRORS:
        app.add_exception_handler(kind, user_error)

    @app.exception_handler(TooLarge)
    async def too_large(request: Request, error: TooLarge) -> JSONResponse:
        return error_response(413, str(error))

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, error: Overloaded) -> JSONResponse:
        return error_response(503, str(error), {"Retry-After": str(error.retry_after)})

    @app.exception_handler(Exception)
    async def internal(request: Request, error: Exception) -> JSONResponse:
        # Starlette re-raises after this response is sent, so uvicorn logs the traceback.
        return error_response(500, "internal server error; see the server log")


def _describe(problems: Sequence[Any]) -> str:
    """Pydantic's errors as one line a person can act on: where, and what was wrong."""
    parts = []
    for problem in problems[:3]:
        where = ".".join(str(part) for part in problem.get("loc", ()) if part != "body")
        if problem.get("type") == "json_invalid":
            parts.append(f"the body is not valid JSON ({problem.get('ctx', {}).get('error', 'decode error')})")
        elif not where and isinstance(problem.get("input"), bytes | str):
            parts.append("the body must be a JSON object, sent with Content-Type: application/json")
        else:
            # A validator's own ValueError reads better without pydantic's "Value error, " prefix.
            message = problem.get("ctx", {}).get("error") if problem.get("type") == "value_error" else None
            parts.append(f"{where or 'body'}: {message or problem.get('msg', 'invalid')}")
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return "; ".join(dict.fromkeys(parts)) + more


class _BodyLimit:
    """Reads the whole body before the app does, and answers 413 once it passes max_bytes."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = f"the request body is over this server's limit of {self.max_bytes} bytes"
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await error_response(413, too_large)(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await error_response(413, too_large)(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class _Metrics:
    """Counts every request and error and times it, labelled by endpoint (unknown paths as "other")."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"] if scope["path"] in PATHS else "other"
        embedding = endpoint in EMBEDDING_PATHS
        status = 500  # unless a response starts: an exception escaping the app becomes a 500
        started = time.perf_counter()
        self.metrics.in_flight += embedding

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            self.metrics.in_flight -= embedding
            self.metrics.requests.inc(endpoint=endpoint)
            if status >= 400:
                self.metrics.errors.inc(endpoint=endpoint, code=str(status))
            self.metrics.latency.observe(time.perf_counter() - started, endpoint=endpoint)


def run_server(app: FastAPI, host: str, port: int, access_log: bool = False) -> None:
    """Serve until SIGTERM or Ctrl+C, then stop gracefully: in-flight requests finish, exit status 0.

    Call check_can_listen first (the CLI does, before loading the model) for a one-line error on a taken port.
    """
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, access_log=access_log, lifespan="on", log_level="info")
    with _signals_ignored_after_shutdown():
        uvicorn.Server(config).run()


def check_can_listen(host: str, port: int) -> None:
    """Fail on a taken port or a foreign address now, as one line, rather than in uvicorn's log with exit status 3.

    Binds as uvicorn will (SO_REUSEADDR, so a port in TIME_WAIT is not taken) and lets go again.

    Raises:
        OSError: the address cannot be resolved or bound, naming host and port.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as error:
        raise OSError(f"cannot listen on {host}:{port}: {error.strerror or error}") from error


@contextmanager
def _signals_ignored_after_shutdown() -> Iterator[None]:
    """uvicorn re-raises the signal it stopped on once it is done; a graceful stop is not a failure.

    uvicorn installs its own handlers while serving and restores the ones it found
    before re-raising: ignoring the signals here makes that re-raise a no-op.
    """
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in handled}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
