"""The endpoints: an OpenAI-compatible /v1/embeddings, word-level endpoints, health, info and metrics.

Handlers only check what the schemas cannot, call the Service and render the
answer on a thread; the event loop never tokenizes or runs the model.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from bertonnx.errors import InputError
from bertonnx.pooling import pooled_width
from bertonnx.serve.responses import encode, render
from bertonnx.serve.schemas import EmbeddingsRequest, StaticRequest, WordsRequest, check_texts
from bertonnx.serve.service import Service

EMBEDDING_PATHS = ("/v1/embeddings", "/embed/words", "/embed/static")
PATHS = (*EMBEDDING_PATHS, "/health", "/info", "/metrics")


def add_routes(app: FastAPI, service: Service) -> None:
    """Mount every endpoint of `service` on `app`."""
    _add_sentences(app, service)
    _add_words(app, service)
    _add_static(app, service)
    _add_probes(app, service)


def _add_sentences(app: FastAPI, service: Service) -> None:
    """POST /v1/embeddings, OpenAI-compatible."""
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
        answer = await service.sentences(texts, body.long_text)
        metrics.tokens.inc(answer.tokens, endpoint="/v1/embeddings")
        head = {
            "object": "list",
            "model": body.model or service.model_name,
            "usage": {"prompt_tokens": answer.tokens, "total_tokens": answer.tokens},
        }
        items = (
            {"object": "embedding", "index": i, "embedding": encode(v, body.encoding_format)}
            for i, v in enumerate(answer.results)
        )
        return await run_in_threadpool(render, head, items)


def _add_words(app: FastAPI, service: Service) -> None:
    """POST /embed/words: a vector per word, contextual or static."""
    embedder, settings, metrics = service.embedder, service.settings, service.metrics

    @app.post("/embed/words")
    async def words(body: WordsRequest) -> Response:
        """Each text's words and one vector per word: contextual (the model) or static (the table)."""
        check_texts(body.texts, settings)
        if body.kind == "static":
            answer = await service.static_words(body.texts, body.pooling)
        else:
            answer = await service.contextual(body.texts, body.pooling, body.long_text)
        metrics.tokens.inc(answer.tokens, endpoint="/embed/words")
        width = embedder.static_dim if body.kind == "static" else embedder.dim
        head = {
            "object": "list",
            "model": service.model_name,
            "kind": body.kind,
            "pooling": body.pooling,
            "dim": pooled_width(width, body.pooling),
            "usage": {"prompt_tokens": answer.tokens, "total_tokens": answer.tokens},
        }
        items = (
            {
                "index": i,
                "words": list(r.words),
                "vectors": encode(r.vectors, body.encoding_format),
                "spans": r.spans.tolist(),
                "unknown": r.unknown.tolist(),
                "truncated": r.truncated,
            }
            for i, r in enumerate(answer.results)
        )
        return await run_in_threadpool(render, head, items)


def _add_static(app: FastAPI, service: Service) -> None:
    """POST /embed/static: context-free vectors of single words."""

    @app.post("/embed/static")
    async def static(body: StaticRequest) -> Response:
        """Context-free word vectors from the embedding table; never runs the model, so never queued."""
        check_texts(body.words, service.settings, "word")
        found = await service.static(body.words, body.pooling, body.unknown)
        head = {
            "object": "list",
            "model": service.model_name,
            "pooling": body.pooling,
            "dim": int(found.vectors.shape[1]),
        }
        items = (
            {"index": i, "word": w, "vector": encode(v, body.encoding_format), "unknown": bool(u)}
            for i, (w, v, u) in enumerate(zip(body.words, found.vectors, found.unknown))
        )
        return await run_in_threadpool(render, head, items)


def _add_probes(app: FastAPI, service: Service) -> None:
    """GET /health, /info and /metrics: answered on the event loop, never queued behind a batch."""

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/info")
    async def info() -> dict[str, Any]:
        """The model, what runs it here (backend, device, precision, fidelity), the manifest and the limits."""
        return service.info()

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
