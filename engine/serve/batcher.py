"""Dynamic batching: concurrent requests merged into token-budgeted model calls.

A collector task on the event loop takes waiting requests until the batch holds
`max_batch_tokens` tokens or the oldest request has waited `max_wait`, groups
them by task (the same kind and options) and hands each group to one Embedder
call on a single worker thread. A request's payload is whatever `compute`
takes, already tokenized: the Batcher never sees raw text, only its size. While that thread runs the model, new requests
queue up, so the batches grow with the load by themselves. The collector waits
only while other requests are on their way (being tokenized, see `expecting`):
a lone request never pays max_wait. The event loop only moves futures; it
never runs the model.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence, Sized
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from bertonnx.serve.errors import Overloaded, TooLarge

Kind = Literal["sentences", "contextual"]


@dataclass(frozen=True)
class Task:
    """What a request asks the model for. Requests with equal tasks share one Embedder call."""

    kind: Kind
    pooling: str = "mean"
    normalize: bool = False  # sentences only
    long_text: str = "window"
    max_length: int | None = None  # sentences only: cut each text here, as sentence-transformers does


Compute = Callable[[Task, list[Any]], Sequence[Any]]
"""Runs one task over the payloads of one or more requests, merged; returns one result per item of
every payload, in order (`len(payload)` results for each)."""
BatchObserver = Callable[[int, int, int, float], None]
"""Called after each batch with (requests, texts, tokens, seconds)."""


@dataclass(eq=False)
class _Job:
    task: Task
    payload: Sized  # len(payload) results are due, e.g. one per text
    tokens: int
    future: asyncio.Future[Sequence[Any]]
    enqueued: float  # loop.time() when submitted


class Batcher:
    """Merges concurrent requests into model calls made by one worker thread."""

    def __init__(
        self,
        compute: Compute,
        max_batch_tokens: int,
        max_wait: float,
        max_queue_tokens: int,
        observe: BatchObserver | None = None,
    ) -> None:
        """Set the budgets; `start` must run on the serving event loop before `submit`.

        Args:
            compute: the Embedder call, run on the worker thread.
            max_batch_tokens: tokens merged into one batch; a bigger request runs alone.
            max_wait: seconds the oldest waiting request may wait for others to join it.
            max_queue_tokens: tokens allowed to wait; past that, `submit` raises Overloaded.
            observe: optional callback for batch metrics, called on the event loop.
        """
        for name, value in (("max_batch_tokens", max_batch_tokens), ("max_queue_tokens", max_queue_tokens)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if max_wait < 0:
            raise ValueError(f"max_wait must be >= 0 seconds, got {max_wait}")
        self.compute = compute
        self.max_batch_tokens = max_batch_tokens
        self.max_wait = max_wait
        self.max_queue_tokens = max_queue_tokens
        self.observe = observe
        self.queued_tokens = 0
        self._expected = 0  # requests between `expecting` and `submit`
        self._pending: deque[_Job] = deque()
        self._arrived = asyncio.Event()
        self._closing = False
        self._tokens_per_second = 0.0  # moving average, for Retry-After
        # One thread owns every model call; it starts on the first batch.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bertonnx-model")
        self._collector: asyncio.Task[None] | None = None

    @property
    def queued_requests(self) -> int:
        return len(self._pending)

    async def start(self) -> None:
        """Start the collector task on the running loop."""
        self._collector = asyncio.get_running_loop().create_task(self._collect(), name="bertonnx-batcher")

    async def close(self) -> None:
        """Refuse new requests, finish every accepted one, then stop the worker."""
        self._closing = True
        self._arrived.set()
        if self._collector is not None:
            await self._collector
        self._executor.shutdown(wait=True)

    @contextmanager
    def expecting(self) -> Iterator[None]:
        """Mark a request as on its way to `submit`, so a forming batch may wait for it (up to max_wait)."""
        self._expected += 1
        try:
            yield
        finally:
            self._expected -= 1
            self._arrived.set()

    async def submit(self, task: Task, payload: Sized, tokens: int) -> Sequence[Any]:
        """Queue a request's payload (e.g. its tokenized texts) for the model and wait for its results.

        Args:
            task: what to compute; requests with equal tasks share one `compute` call.
            payload: handed to `compute` as it is, merged with others; `len(payload)` results come back.
            tokens: what the payload costs in the queue and in a batch's budget.

        Raises:
            TooLarge: `tokens` exceeds the whole queue.
            Overloaded: the queue has no room for `tokens` now, or the server is stopping.
            Whatever `compute` raised for these texts.
        """
        if tokens > self.max_queue_tokens:
            raise TooLarge(
                f"the request has {tokens} tokens; this server queues at most {self.max_queue_tokens} "
                "(send fewer or shorter texts, or raise --max-queue)"
            )
        if self._closing:
            raise Overloaded("the server is shutting down", retry_after=1)
        if self.queued_tokens + tokens > self.max_queue_tokens:
            raise Overloaded(
                f"the queue is full ({self.queued_tokens} of {self.max_queue_tokens} tokens waiting)",
                retry_after=self._retry_after(),
            )
        loop = asyncio.get_running_loop()
        job = _Job(task, payload, tokens, loop.create_future(), loop.time())
        self._pending.append(job)
        self.queued_tokens += tokens
        self._arrived.set()
        return await job.future

    def _retry_after(self) -> int:
        """Seconds until the queue has likely drained, from the recent model speed."""
        if self._tokens_per_second <= 0:
            return 1
        return max(1, min(60, math.ceil(self.queued_tokens / self._tokens_per_second)))

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                if self._closing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
            deadline = self._pending[0].enqueued + self.max_wait
            while self._expected and self.queued_tokens < self.max_batch_tokens and not self._closing:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            await self._run(self._take())

    def _take(self) -> list[_Job]:
        """Oldest jobs first, up to the token budget; the first one always fits."""
        batch: list[_Job] = []
        tokens = 0
        while self._pending and (not batch or tokens + self._pending[0].tokens <= self.max_batch_tokens):
            job = self._pending.popleft()
            self.queued_tokens -= job.tokens
            if not job.future.done():  # a cancelled request needs no model time
                batch.append(job)
                tokens += job.tokens
        return batch

    async def _run(self, batch: list[_Job]) -> None:
        if not batch:
            return
        groups: dict[Task, list[_Job]] = {}
        for job in batch:
            groups.setdefault(job.task, []).append(job)
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        outcomes = await loop.run_in_executor(self._executor, self._compute_groups, list(groups.values()))
        seconds = time.perf_counter() - started
        for job, outcome in outcomes:
            if job.future.done():
                continue
            if isinstance(outcome, BaseException):
                job.future.set_exception(outcome)
            else:
                job.future.set_result(outcome)
        tokens = sum(job.tokens for job in batch)
        if seconds > 0:
            rate = tokens / seconds
            previous = self._tokens_per_second
            self._tokens_per_second = rate if previous == 0 else 0.8 * previous + 0.2 * rate
        if self.observe is not None:
            self.observe(len(batch), sum(len(job.payload) for job in batch), tokens, seconds)

    def _compute_groups(self, groups: list[list[_Job]]) -> list[tuple[_Job, Any]]:
        """Worker thread: one Embedder call per group; each job gets its results or its error."""
        return [outcome for jobs in groups for outcome in self._compute_group(jobs)]

    def _compute_group(self, jobs: list[_Job]) -> list[tuple[_Job, Any]]:
        try:
            results = self.compute(jobs[0].task, [job.payload for job in jobs])
        except ValueError as error:
            if len(jobs) == 1:
                return [(jobs[0], error)]
            # One request's bad input must not fail the requests merged with it: run each alone.
            return [outcome for job in jobs for outcome in self._compute_group([job])]
        except Exception as error:  # a model failure fails the whole group, but never the collector
            return [(job, error) for job in jobs]
        outcomes = []
        start = 0
        for job in jobs:
            outcomes.append((job, results[start : start + len(job.payload)]))
            start += len(job.payload)
        return outcomes
