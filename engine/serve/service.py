"""The embedder-facing side of the server, with no HTTP in it.

Texts are tokenized once, on a thread (`Embedder.prepare`), as
text-embeddings-inference's router does: the Batcher queues the pieces, never the
raw text, and the Embedder embeds the very `Prepared` it was given. What a request
costs in the queue is counted from those pieces, as the model will run them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Generic, TypeVar

import numpy as np
from numpy.typing import NDArray
from starlette.concurrency import run_in_threadpool

from bertonnx.embedder import Embedder, Prepared, StaticVectors, WordVectors
from bertonnx.errors import InputError
from bertonnx.options import LongText, Unknown, WordPooling
from bertonnx.serve.batcher import Batcher, Task
from bertonnx.serve.metrics import ServeMetrics
from bertonnx.serve.settings import EmbeddingsLongText, ServeSettings
from bertonnx.tokenize import TextInput, TextPieces

R = TypeVar("R")


@dataclass(frozen=True)
class Answer(Generic[R]):
    """A request's results and the tokens they took: what usage reports and the metrics count."""

    results: R
    tokens: int


class Service:
    """The Embedder, the batcher in front of it, and the metrics about both."""

    def __init__(self, embedder: Embedder, settings: ServeSettings) -> None:
        self.embedder = embedder
        self.settings = settings
        self.model_name = embedder.model_name
        self.metrics = ServeMetrics(lambda: self.batcher.queued_requests, lambda: self.batcher.queued_tokens)
        self.batcher = Batcher(
            self._compute,
            max_batch_tokens=settings.max_batch_tokens,
            max_wait=settings.max_wait_ms / 1000,
            max_queue_tokens=settings.max_queue,
            observe=self.metrics.observe_batch,
        )

    async def sentences(self, texts: Sequence[str], long_text: EmbeddingsLongText | None = None) -> Answer[Any]:
        """Unit-length mean-pooled vectors, (N, H), as /v1/embeddings serves them.

        Raises:
            InputError: a text has no tokens.
        """
        prepared = await self._prepare(texts, queued=True)
        empty = [index for index, text in enumerate(prepared.pieces) if text.ids.size == 0]
        if empty:
            raise InputError(f"input {empty[0]} has no tokens: it is empty or blank")
        max_length = self.sentence_max_length(long_text)
        tokens = queued_tokens(prepared, max_length)
        task = Task("sentences", pooling="mean", normalize=True, max_length=max_length)
        return Answer(await self.batcher.submit(task, prepared, tokens), tokens)

    def sentence_max_length(self, long_text: EmbeddingsLongText | None) -> int | None:
        """Where /v1/embeddings cuts texts: the sentence-transformers length when asked and recorded, else nowhere."""
        if (long_text or self.settings.long_text) == "sentence-transformers":
            return self.embedder.sentence_transformers_max_length
        return None

    async def contextual(
        self, texts: Sequence[TextInput], pooling: WordPooling, long_text: LongText
    ) -> Answer[list[WordVectors]]:
        """One vector per word of each text, from the model."""
        prepared = await self._prepare(texts, queued=True)
        tokens = queued_tokens(prepared, self.embedder.max_tokens if long_text == "truncate" else None)
        task = Task("contextual", pooling=pooling, long_text=long_text)
        return Answer(await self.batcher.submit(task, prepared, tokens), tokens)

    async def static_words(self, texts: Sequence[TextInput], pooling: WordPooling) -> Answer[list[WordVectors]]:
        """Table vectors for the words of texts, [UNK]'s row where BERT would see [UNK]; never queued."""
        prepared = await self._prepare(texts, queued=False)
        results = await run_in_threadpool(self._static_words, prepared.pieces, pooling)
        return Answer(results, sum(text.ids.size for text in prepared.pieces))

    async def static(self, words: Sequence[str], pooling: WordPooling, unknown: Unknown) -> StaticVectors:
        """Context-free vectors of single words from the table; never runs the model, so never queued."""
        return await run_in_threadpool(self.embedder.static_lookup, words, pooling, unknown)

    def info(self) -> dict[str, Any]:
        """What this server serves and how: the model, what actually runs it, and every limit."""
        return {
            "model": self.model_name,
            "dim": self.embedder.dim,
            "static_dim": self.embedder.static_dim,
            "max_length": self.embedder.max_tokens,
            "sentence_transformers_max_length": self.embedder.sentence_transformers_max_length,
            "embeddings_max_length": self.sentence_max_length(None),
            "runtime": self.embedder.runtime(),
            "batch_tokens": self.embedder.batch_tokens,
            "settings": asdict(self.settings),
            "manifest": self.embedder.manifest,
        }

    async def _prepare(self, texts: Sequence[TextInput], queued: bool) -> Prepared:
        """Tokenize on a thread; a request bound for the queue is announced, so a forming batch may wait for it."""
        if not queued:
            return await run_in_threadpool(self.embedder.prepare, texts)
        with self.batcher.expecting():
            return await run_in_threadpool(self.embedder.prepare, texts)

    def _compute(self, task: Task, parts: list[Prepared]) -> Sequence[Any]:
        """The worker thread's one Embedder call for the requests merged under `task`."""
        prepared = Prepared.join(parts)
        if task.kind == "sentences":
            return self.embedder.sentences(prepared, task.pooling, task.normalize, task.long_text, task.max_length)
        return self.embedder.contextual(prepared, task.pooling, task.long_text)

    def _static_words(self, pieces: Sequence[TextPieces], pooling: WordPooling) -> list[WordVectors]:
        words = [word for text in pieces for word in text.words]
        found = self.embedder.static_lookup(words, pooling, unknown="unk")  # (W, H) and (W,)
        bounds = np.cumsum([len(text.words) for text in pieces])[:-1]
        return [
            WordVectors(words=text.words, vectors=v, spans=_spans(text), unknown=u)
            for text, v, u in zip(pieces, np.split(found.vectors, bounds), np.split(found.unknown, bounds))
        ]


def queued_tokens(prepared: Prepared, cut: int | None) -> int:
    """Positions the model will run for these texts, each cut to `cut` positions where one is given."""
    tokens = prepared.tokens if cut is None else np.minimum(prepared.tokens, cut)  # (N,)
    return int(tokens.sum())


def _spans(text: TextPieces) -> NDArray[np.int64]:
    """(W, 2) each word's [start, end) in the text's pieces, as WordVectors.spans has them."""
    starts = text.word_starts  # (W,)
    ends = np.append(starts[1:], text.ids.size)[: starts.size]  # a text without words has no ends
    return np.stack([starts, ends], axis=1)
