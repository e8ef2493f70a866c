"""The CLI's choice types (str Enums, as typer wants). tests/test_cli.py keeps them equal to the engine's lists."""

from __future__ import annotations

from enum import Enum


class Provider(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class WordPooling(str, Enum):
    mean = "mean"
    first = "first"
    last = "last"
    first_last = "first_last"
    max = "max"
    sum = "sum"


class Pooling(str, Enum):
    """Word pooling modes plus cls, which applies to sentences only."""

    mean = "mean"
    first = "first"
    last = "last"
    first_last = "first_last"
    max = "max"
    sum = "sum"
    cls = "cls"


class UnknownPolicy(str, Enum):
    error = "error"
    unk = "unk"
    zero = "zero"


class LongText(str, Enum):
    window = "window"
    truncate = "truncate"
    error = "error"


class OnError(str, Enum):
    fail = "fail"
    skip = "skip"
