"""The CLI's choices (str Enums, as typer wants) and the bulk options two commands share.

tests/test_cli.py keeps the Enums equal to the engine's lists.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from engine.bulk import BulkOptions
from engine.pooling import SENTENCE_POOLING_MODES, WORD_POOLING_MODES


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


# -- the bulk options `bertonnx embed` and `bertonnx embed-distributed` share ----

StaticFlag = Annotated[bool, typer.Option("--static", help="One word per line -> its static vector")]
ContextualFlag = Annotated[bool, typer.Option("--contextual", help="One text per line -> a contextual vector per word")]
SentencesFlag = Annotated[bool, typer.Option("--sentences", help="One text per line -> one vector")]
PoolingOption = Annotated[Pooling, typer.Option(help="Word pooling; for --sentences: mean or cls")]
NormalizeOption = Annotated[bool, typer.Option(help="--sentences: unit-length vectors")]
UnknownOption = Annotated[
    UnknownPolicy, typer.Option(help="--static: a word mapping to [UNK] is an error, or gets [UNK]'s row, or 0")
]
LongTextOption = Annotated[LongText, typer.Option(help="Texts over the model maximum")]
OnErrorOption = Annotated[OnError, typer.Option(help="A bad line stops the job, or is skipped and reported")]
ProviderOption = Annotated[Provider, typer.Option(help="ONNX Runtime execution provider")]
BatchTokensOption = Annotated[int, typer.Option(help="Padded tokens per model run")]


def bulk_options(
    static: bool,
    contextual: bool,
    sentences: bool,
    pooling: Pooling,
    normalize: bool,
    unknown: UnknownPolicy,
    long_text: LongText,
    on_error: OnError,
    **more: int,
) -> BulkOptions:
    """The BulkOptions the bulk flags ask for; `more` passes on fields such as chunk_lines.

    Raises:
        ValueError: not exactly one mode flag, or a pooling that does not apply to the mode.
    """
    modes = [name for name, chosen in (("static", static), ("contextual", contextual), ("sentences", sentences))
             if chosen]
    if len(modes) != 1:
        raise ValueError("choose exactly one of --static, --contextual, --sentences")
    mode = modes[0]
    if (mode == "sentences") != (pooling.value in SENTENCE_POOLING_MODES) and pooling != Pooling.mean:
        allowed = SENTENCE_POOLING_MODES if mode == "sentences" else WORD_POOLING_MODES
        raise ValueError(f"--pooling {pooling.value} does not apply to --{mode}; choose from {', '.join(allowed)}")
    return BulkOptions(
        mode=mode,
        pooling=pooling.value,
        unknown=unknown.value,
        long_text=long_text.value,
        normalize=normalize,
        on_error=on_error.value,
        **more,
    )
