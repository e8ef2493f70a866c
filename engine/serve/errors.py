"""Errors a request can cause beyond the library's own. Each maps to one HTTP status, never 500.

A well-formed request that asks for something impossible raises the library's
`InputError` (400), like any other caller's bad input.
"""

from __future__ import annotations

from bertonnx.errors import BertonnxError


class TooLarge(BertonnxError, ValueError):
    """The request is over a configured limit (413)."""


class Overloaded(BertonnxError):
    """The queue is full or the server is stopping (503): retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
