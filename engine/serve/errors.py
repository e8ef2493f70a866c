"""Errors a request can cause. Each maps to one HTTP status, never 500."""

from __future__ import annotations


class InputError(ValueError):
    """The request is well-formed JSON but asks for something impossible (400)."""


class TooLarge(ValueError):
    """The request is over a configured limit (413)."""


class Overloaded(Exception):
    """The queue is full or the server is stopping (503): retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
