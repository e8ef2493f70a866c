"""Two bounded hand-offs between threads, so that reading, the model and writing overlap.

A bulk job reads and tokenizes on one thread, runs the model on another and
encodes and writes on a third. The backends and the tokenizer release the GIL
while they work, so the stages run side by side; the queues between them hold
a few items at most, so memory stays bounded whatever the input's size.
Errors travel with the items: a failure on any thread is raised on the caller's.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")

_POLL_SECONDS = 0.1  # how often a blocked thread looks whether the other side has stopped
_READER = "bertonnx-ahead"


class _Done:
    """Marks the end of a stream."""


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def ahead(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """`items`, produced on a background thread up to `depth` items ahead of the consumer.

    Closing the returned generator (or dropping it) stops the producer at its next item.
    """
    hand: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: object) -> bool:
        while not stop.is_set():
            try:
                hand.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(item):
                    return
            offer(_Done())
        except BaseException as error:  # handed over, raised on the consumer's thread
            offer(_Failed(error))

    thread = threading.Thread(target=produce, name=_READER, daemon=True)
    thread.start()
    waited = 5.0  # a producer blocked on a pipe is a daemon and dies with the process
    try:
        while True:
            item = hand.get()
            if isinstance(item, _Done):
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item  # type: ignore[misc]
    except KeyboardInterrupt:  # Ctrl-C while waiting for input: the producer may wait on a terminal for good
        waited = _POLL_SECONDS
        raise
    finally:
        stop.set()
        thread.join(timeout=waited)


def stranded() -> bool:
    """Whether a producer of `ahead` is still running, blocked on input that does not come (a terminal, a silent
    pipe): the interpreter's shutdown would wait on the stream it holds, so a process in that state leaves with
    os._exit."""
    return any(thread.name == _READER and thread.is_alive() for thread in threading.enumerate())


class Behind(Generic[T]):
    """Items handed to `consume` on a background thread, at most `depth` waiting.

    `put` raises the consumer's error, if it failed; leaving the `with` block waits
    for every item to be consumed (or, after an error in the block, stops at once).
    """

    def __init__(self, consume: Callable[[T], None], depth: int = 2) -> None:
        self._consume = consume
        self._hand: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bertonnx-behind", daemon=True)

    def __enter__(self) -> Behind[T]:
        self._thread.start()
        return self

    def put(self, item: T) -> None:
        while True:
            self._raise_failure()
            try:
                self._hand.put(item, timeout=_POLL_SECONDS)
                return
            except queue.Full:
                continue

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if kind is not None:
            self._stop.set()
        else:
            self.put(_Done())  # type: ignore[arg-type]
        self._thread.join()
        if kind is None:
            self._raise_failure()

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._hand.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                continue
            if isinstance(item, _Done):
                return
            try:
                self._consume(item)  # type: ignore[arg-type]
            except BaseException as error:  # raised on the producer's thread at its next put or exit
                self._error = error
                return
