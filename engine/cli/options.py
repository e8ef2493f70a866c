"""Option declarations several commands share, and the str Enums typer shows.

Every Enum is built from the choices in bertonnx.options, so the CLI and the
library cannot disagree on what a flag takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from bertonnx.errors import OptionError
from bertonnx.jobs.bulk import BulkOptions
from bertonnx.options import (
    BACKENDS,
    DEFAULT_BATCH_TOKENS,
    DEFAULT_CHUNK_LINES,
    LONG_TEXT_POLICIES,
    ON_ERROR_POLICIES,
    OUTPUT_FORMATS,
    POOLING_MODES,
    PRECISIONS,
    PROVIDERS,
    UNKNOWN_POLICIES,
    WORD_POOLING_MODES,
    LoadOptions,
    choice_enum,
)
from bertonnx.type_level.contexts import DEFAULT_CONTEXT
from bertonnx.type_level.job import read_templates
from bertonnx.type_level.vectors import DEFAULT_MAX_CONTEXTS, DEFAULT_PRIOR, DEFAULT_TEMPLATES, TypeLevelOptions

ProviderChoice = choice_enum("ProviderChoice", PROVIDERS)
BackendChoice = choice_enum("BackendChoice", BACKENDS)
PrecisionChoice = choice_enum("PrecisionChoice", PRECISIONS)
WordPoolingChoice = choice_enum("WordPoolingChoice", WORD_POOLING_MODES)
PoolingChoice = choice_enum("PoolingChoice", POOLING_MODES)
UnknownChoice = choice_enum("UnknownChoice", UNKNOWN_POLICIES)
LongTextChoice = choice_enum("LongTextChoice", LONG_TEXT_POLICIES)
OnErrorChoice = choice_enum("OnErrorChoice", ON_ERROR_POLICIES)
OutputFormatChoice = choice_enum("OutputFormatChoice", OUTPUT_FORMATS)


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
    UnknownChoice | None,
    typer.Option(help="--static, --type-level: a word mapping to [UNK] is an error (the default), or is embedded "
                      "as [UNK] (type-level: from templates), or gets 0", show_default=False),
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
PriorOption = Annotated[
    float,
    typer.Option("--prior", metavar="K", min=0, help="--type-level --corpus: the templates count as K contexts beside "
                 "a word's n corpus contexts: (their sum + K x the templates' mean) / (n + K); 0: the corpus mean "
                 "alone. Default 5: one or two odd sentences barely move a word, a few dozen outweigh the templates"),
]
ContextOption = Annotated[
    str,
    typer.Option("--context", metavar="RULE", help="--type-level --corpus: what the model reads around each "
                 "occurrence: sentence (. ! ? end one, abbreviations aside), window:N (N words either side, within "
                 "the sentence) or line"),
]
MinFidelityOption = Annotated[
    float | None,
    typer.Option(help="Replace a reduced precision's gate (bf16/fp16: min token cosine; int8: mean word cosine; "
                 "under --precision fastest, the sentence gate's min sentence cosine too)"),
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


@dataclass(frozen=True)
class JobFlags:
    """The flags that choose and shape a job, which `embed` and `embed-distributed` share."""

    static: bool
    contextual: bool
    sentences: bool
    type_level: bool
    pooling: PoolingChoice  # type: ignore[valid-type]
    normalize: bool
    unknown: UnknownChoice | None  # type: ignore[valid-type]  # None: not given (an error, where it applies)
    long_text: LongTextChoice  # type: ignore[valid-type]
    on_error: OnErrorChoice  # type: ignore[valid-type]
    max_length: int | None
    corpus: list[str] | None
    templates: Path | None
    max_contexts: int
    postprocess: str
    prior: float = DEFAULT_PRIOR
    context: str = DEFAULT_CONTEXT


@dataclass(frozen=True)
class TypeLevelFiles:
    """Where a type-level job reads and writes: its vocabulary (-i), its corpus (--corpus) and its output (-o)."""

    vocabulary: str
    corpus: list[str]
    output: Path | None


def job_options(flags: JobFlags, chunk_lines: int = DEFAULT_CHUNK_LINES) -> BulkOptions | TypeLevelOptions:
    """The job the flags ask for, as the library's carrier: the one rule both commands refuse combinations by.

    Raises:
        OptionError: not exactly one of --static, --contextual, --sentences, --type-level; a flag of one kind of
            job given to the other (--normalize, --max-length, --long-text, --on-error with --type-level; --corpus,
            --templates, --max-contexts, --prior, --context, --postprocess without it); a pooling that does not
            apply to the mode; a --context that is not a rule.
    """
    modes = [name for name, chosen in (("static", flags.static), ("contextual", flags.contextual),
                                       ("sentences", flags.sentences)) if chosen]
    if flags.type_level:
        if modes:
            raise OptionError("choose exactly one of --static, --contextual, --sentences, --type-level")
        ignored = [flag for flag, given in (("--normalize", flags.normalize),
                                            ("--max-length", flags.max_length is not None),
                                            ("--long-text", flags.long_text != LongTextChoice.window),
                                            ("--on-error", flags.on_error != OnErrorChoice.fail)) if given]
        if ignored:
            raise OptionError(f"{', '.join(ignored)} do{'es' if len(ignored) == 1 else ''} not apply to --type-level")
        return TypeLevelOptions(
            templates=read_templates(flags.templates) if flags.templates is not None else None,
            max_contexts=flags.max_contexts, postprocess=flags.postprocess, pooling=flags.pooling.value,
            unknown=(flags.unknown or UnknownChoice.error).value, chunk_lines=chunk_lines, prior=flags.prior,
            context=flags.context,
        )
    if (flags.corpus or flags.templates is not None or flags.max_contexts != DEFAULT_MAX_CONTEXTS
            or flags.postprocess != "none" or flags.prior != DEFAULT_PRIOR or flags.context != DEFAULT_CONTEXT):
        raise OptionError("--corpus, --templates, --max-contexts, --prior, --context and --postprocess go with "
                          "--type-level")
    if len(modes) != 1:
        raise OptionError("choose exactly one of --static, --contextual, --sentences, --type-level")
    ignored = [flag for flag, given in (("--normalize", flags.normalize and modes[0] != "sentences"),
                                        ("--unknown", flags.unknown is not None and modes[0] != "static")) if given]
    if ignored:
        raise OptionError(f"{', '.join(ignored)} do{'es' if len(ignored) == 1 else ''} not apply to --{modes[0]}"
                          + (" (a contextual vector of a word read as [UNK] still reads its context; its row is "
                             "flagged unknown)" if "--unknown" in ignored else ""))
    return BulkOptions(
        mode=modes[0], pooling=flags.pooling.value, unknown=(flags.unknown or UnknownChoice.error).value,
        long_text=flags.long_text.value,
        normalize=flags.normalize, on_error=flags.on_error.value, chunk_lines=chunk_lines, max_length=flags.max_length,
    )


def made_by(method: str, options: TypeLevelOptions) -> str:
    """How type-level vectors were made, for a summary line: the method, and for the corpus its prior, context rule
    and cap."""
    if method == "templates":
        return f"method templates, {len(options.templates or DEFAULT_TEMPLATES)} of them"
    return (f"method corpus: prior {options.prior:g}, context {options.context}, at most "
            f"{options.max_contexts:,} contexts a word")
