"""The HTTP service composed: the Service, its routes, error handlers and middleware.

A request's life: the body is read whole under a size limit (middleware.py),
parsed and validated strictly (schemas.py); its texts are tokenized once on a
thread, and the pieces go through the Batcher, which merges them with concurrent
requests, to the Embedder (service.py); the response is rendered on a thread
(routes.py, responses.py). The event loop only parses, validates and routes, so
one slow batch never stalls /health or /metrics.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from bertonnx.embedder import Embedder
from bertonnx.serve.middleware import BodyLimit, JsonBody, RequestMetrics, RequireKey
from bertonnx.serve.responses import add_error_handlers
from bertonnx.serve.routes import EMBEDDING_PATHS, PATHS, add_routes
from bertonnx.serve.service import Service
from bertonnx.serve.settings import ServeSettings


def create_app(embedder: Embedder, settings: ServeSettings | None = None) -> FastAPI:
    """The ASGI app serving `embedder`. Its lifespan starts the batcher and drains it on shutdown."""
    service = Service(embedder, settings or ServeSettings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.batcher.start()
        try:
            yield
        finally:
            await service.batcher.close()  # uvicorn lets in-flight requests finish first

    app = FastAPI(title="bertonnx", summary="BERT word and sentence embeddings from an ONNX bundle", lifespan=lifespan)
    add_routes(app, service)
    add_error_handlers(app)
    app.add_middleware(JsonBody)
    app.add_middleware(BodyLimit, max_bytes=service.settings.max_body_bytes)
    if service.settings.api_key is not None:  # before the body is read: a stranger's body is never buffered
        app.add_middleware(RequireKey, key=service.settings.api_key)
    # Outermost: sees every response, the key's 401s and the body limit's 413s included.
    app.add_middleware(RequestMetrics, metrics=service.metrics, paths=PATHS, embedding_paths=EMBEDDING_PATHS)
    return app
