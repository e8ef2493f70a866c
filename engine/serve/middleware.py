"""ASGI middleware: the body size limit, and the request metrics that see every response."""

from __future__ import annotations

import hmac
import time
from collections.abc import Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bertonnx.serve.metrics import ServeMetrics
from bertonnx.serve.responses import error_response


class BodyLimit:
    """Reads the whole body before the app does, and answers 413 once it passes max_bytes.

    Checking Content-Length alone is not enough: a chunked body declares none.
    """

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


class JsonBody:
    """Reads a POST body as JSON when its Content-Type says nothing better: none at all, or the form encoding that
    `curl -d` sends by default. The OpenAI clients send application/json; a person trying curl should not need to."""

    UNTYPED = (b"", b"application/x-www-form-urlencoded")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            headers = [(name, value) for name, value in scope["headers"] if name != b"content-type"]
            declared = dict(scope["headers"]).get(b"content-type", b"").split(b";")[0].strip().lower()
            if declared in self.UNTYPED:
                scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        await self.app(scope, receive, send)


class RequireKey:
    """Every path but the open ones (/health) needs `Authorization: Bearer <key>`; else 401, OpenAI's shape.

    The key is compared in constant time, as bytes, and never logged or echoed.
    """

    def __init__(self, app: ASGIApp, key: str, open_paths: Collection[str] = ("/health",)) -> None:
        self.app = app
        self.expected = b"Bearer " + key.encode("utf-8")
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        if not hmac.compare_digest(given, self.expected):
            message = "a valid API key is required: send Authorization: Bearer <key>" if given else (
                "this server requires an API key: send Authorization: Bearer <key>")
            response = error_response(401, message, headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class RequestMetrics:
    """Counts every request and error and times it, labelled by endpoint (unknown paths as "other")."""

    def __init__(
        self, app: ASGIApp, metrics: ServeMetrics, paths: Collection[str], embedding_paths: Collection[str]
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.paths = paths  # labelled by name; any other path is "other", so labels stay few
        self.embedding_paths = embedding_paths  # counted in flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"] if scope["path"] in self.paths else "other"
        embedding = endpoint in self.embedding_paths
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
