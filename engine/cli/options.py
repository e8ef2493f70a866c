"""Option declarations several commands share, and the str Enums typer shows.

Every Enum is built from the choices in bertonnx.options, so the CLI and the
library cannot disagree on what a flag takes.
"""

from __future__ import annotations

from typing import Annotated

import typer

from bertonnx.errors import OptionError
from bertonnx.jobs.bulk import BulkOptions
from bertonnx.options import (
    BACKENDS,
    DEFAULT_BATCH_TOKENS,
    LONG_TEXT_POLICIES,
    ON_ERROR_POLICIES,
    POOLING_MODES,
    PRECISIONS,
    PROVIDERS,
    UNKNOWN_POLICIES,
    WORD_POOLING_MODES,
    LoadOptions,
    choice_enum,
)

ProviderChoice = choice_enum("ProviderChoice", PROVIDERS)
BackendChoice = choice_enum("BackendChoice", BACKENDS)
PrecisionChoice = choice_enum("PrecisionChoice", PRECISIONS)
WordPoolingChoice = choice_enum("WordPoolingChoice", WORD_POOLING_MODES)
PoolingChoice = choice_enum("PoolingChoice", POOLING_MODES)
UnknownChoice = choice_enum("UnknownChoice", UNKNOWN_POLICIES)
LongTextChoice = choice_enum("LongTextChoice", LONG_TEXT_POLICIES)
OnErrorChoice = choice_enum("OnErrorChoice", ON_ERROR_POLICIES)


def load_options(
    backend: BackendChoice,  # type: ignore[valid-type]
    precision: PrecisionChoice,  # type: ignore[valid-type]
    provider: ProviderChoice,  # type: ignore[valid-type]
    threads: int | None = None,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    spin: bool = True,
    min_fidelity: float | None = None,
) -> LoadOptions:
    """The load options every command declares, as the library's one carrier."""
    return LoadOptions(
        backend=backend.value, precision=precision.value, provider=provider.value,  # type: ignore[attr-defined]
        threads=threads, batch_tokens=batch_tokens, spin=spin, min_fidelity=min_fidelity,
    )


# -- the bulk options `bertonnx embed` and `bertonnx embed-distributed` share ----

StaticFlag = Annotated[bool, typer.Option("--static", help="One word per line -> its static vector")]
ContextualFlag = Annotated[bool, typer.Option("--contextual", help="One text per line -> a contextual vector per word")]
SentencesFlag = Annotated[bool, typer.Option("--sentences", help="One text per line -> one vector")]
PoolingOption = Annotated[PoolingChoice, typer.Option(help="Word pooling; for --sentences: mean or cls")]
NormalizeOption = Annotated[bool, typer.Option(help="--sentences: unit-length vectors")]
UnknownOption = Annotated[
    UnknownChoice, typer.Option(help="--static, --type-level: a word mapping to [UNK] is an error, or is embedded "
                                "as [UNK] (type-level: from templates), or gets 0")
]
LongTextOption = Annotated[LongTextChoice, typer.Option(help="Texts over the model maximum")]
OnErrorOption = Annotated[OnErrorChoice, typer.Option(help="A bad line stops the job, or is skipped and reported")]
ProviderOption = Annotated[
    ProviderChoice, typer.Option(help="ONNX Runtime execution provider (naming one implies --backend onnxruntime)")
]
BackendOption = Annotated[
    BackendChoice, typer.Option(help="What runs the graph; auto: the fastest faithful backend on this machine")
]
PrecisionOption = Annotated[
    PrecisionChoice,
    typer.Option(help="auto: the fastest faithful backend and precision, timed once per machine; "
                 "fastest: the same, int8 admitted under its own gate"),
]
MinFidelityOption = Annotated[
    float | None,
    typer.Option(help="Replace a reduced precision's gate (bf16/fp16: min token cosine; int8: mean word cosine)"),
]
BatchTokensOption = Annotated[int, typer.Option(help="Padded tokens per model run", min=1)]
MaxLengthOption = Annotated[
    int | None,
    typer.Option(
        help="--sentences: cut every text to N positions, special tokens included, as sentence-transformers' "
        "max_seq_length does (the bundle's manifest records the source model's as "
        "model.sentence_transformers_max_length); default: the model maximum, then --long-text",
        min=1,
    ),
]



def bulk_options(
    static: bool,
    contextual: bool,
    sentences: bool,
    pooling: PoolingChoice,
    normalize: bool,
    unknown: UnknownChoice,
    long_text: LongTextChoice,
    on_error: OnErrorChoice,
    **more: int,
) -> BulkOptions:
    """The BulkOptions the bulk flags ask for; `more` passes on fields such as chunk_lines.

    Raises:
        OptionError: not exactly one mode flag, or a pooling that does not apply to the mode.
    """
    modes = [name for name, chosen in (("static", static), ("contextual", contextual), ("sentences", sentences))
             if chosen]
    if len(modes) != 1:
        raise OptionError("choose exactly one of --static, --contextual, --sentences")
    return BulkOptions(
        mode=modes[0],
        pooling=pooling.value,
        unknown=unknown.value,
        long_text=long_text.value,
        normalize=normalize,
        on_error=on_error.value,
        **more,
    )
