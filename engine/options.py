"""Every user choice, defined once.

The library's signatures take the `Literal` types; the CLI shows the `str` Enums,
which are built from the same Literals, so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, Literal, get_args

from bertonnx.errors import OptionError

WordPooling = Literal["mean", "first", "last", "first_last", "max", "sum"]
SentencePooling = Literal["mean", "cls"]
LongText = Literal["window", "truncate", "error"]
Unknown = Literal["error", "unk", "zero"]
Mode = Literal["static", "contextual", "sentences"]
OnError = Literal["fail", "skip"]
Provider = Literal["auto", "cpu", "cuda", "tensorrt"]
BackendName = Literal["auto", "onnxruntime", "openvino"]
Precision = Literal["auto", "fastest", "fp32", "bf16", "fp16", "int8"]
OutputFormat = Literal["npy", "parquet"]

WORD_POOLING_MODES: tuple[str, ...] = get_args(WordPooling)
SENTENCE_POOLING_MODES: tuple[str, ...] = get_args(SentencePooling)
LONG_TEXT_POLICIES: tuple[str, ...] = get_args(LongText)
UNKNOWN_POLICIES: tuple[str, ...] = get_args(Unknown)
MODES: tuple[str, ...] = get_args(Mode)
ON_ERROR_POLICIES: tuple[str, ...] = get_args(OnError)
PROVIDERS: tuple[str, ...] = get_args(Provider)
BACKENDS: tuple[str, ...] = get_args(BackendName)
PRECISIONS: tuple[str, ...] = get_args(Precision)
OUTPUT_FORMATS: tuple[str, ...] = get_args(OutputFormat)
POOLING_MODES: tuple[str, ...] = WORD_POOLING_MODES + tuple(
    mode for mode in SENTENCE_POOLING_MODES if mode not in WORD_POOLING_MODES
)
"""Word pooling modes plus cls, which applies to sentences only: the CLI's --pooling."""
DEFAULT_CHUNK_LINES = 20_000
"""Input lines between a bulk or type-level job's checkpoints (one also falls each minute): what a kill can lose."""
DEFAULT_BATCH_TOKENS = 1024
"""Padded tokens per model run. Measured on 2 cores: smaller runs stay in cache; 1024 beat 8192
by 1.3-2x on a mixed-length corpus (benchmarks/README.md)."""


@dataclass(frozen=True)
class LoadOptions:
    """How a bundle is opened, besides its path: one value that `Embedder.load`, the backends, every CLI
    command and Ray actors pass along."""

    backend: BackendName = "auto"  # auto | onnxruntime | openvino
    precision: Precision = "auto"  # auto | fastest (admits int8) | fp32 | bf16 | fp16 | int8
    provider: Provider = "auto"  # ONNX Runtime's auto | cpu | cuda | tensorrt (naming one implies onnxruntime)
    threads: int | None = None  # default: every core this process may use
    batch_tokens: int = DEFAULT_BATCH_TOKENS
    spin: bool = True  # ONNX Runtime's threads busy-wait between a run's operators (never after it returns)
    min_fidelity: float | None = None  # replaces a reduced precision's gate
    sentences_on: str | None = None  # "backend precision recipe" serving sentence vectors where `fastest` split by
    # use (Embedder.resolved sets it, so that workers run what one load chose); None: the word backend serves both
    words_recipe: str | None = None  # OpenVINO int8's recipe kind serving word vectors where `fastest` found another
    # faster under the word gate (Embedder.resolved sets it); None: the recipe made for words

    def with_choices(self, **choices: Any) -> LoadOptions:
        """These options with some fields replaced; an unknown name is an OptionError."""
        unknown = sorted(set(choices) - set(self.__dataclass_fields__))
        if unknown:
            raise OptionError(
                f"unknown load option {', '.join(unknown)}; expected some of {', '.join(self.__dataclass_fields__)}"
            )
        return replace(self, **choices) if choices else self


def check_choice(value: str, allowed: tuple[str, ...], what: str = "pooling") -> None:
    """Raise an OptionError naming the allowed choices when `value` is not one of them."""
    if value not in allowed:
        raise OptionError(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")


def check_pooling_for_mode(pooling: str, mode: str) -> None:
    """A pooling fits a mode: word modes for static and contextual, mean or cls for sentences."""
    check_choice(mode, MODES, "mode")
    allowed = SENTENCE_POOLING_MODES if mode == "sentences" else WORD_POOLING_MODES
    if pooling not in allowed:
        raise OptionError(f"pooling {pooling!r} does not apply to {mode}; choose from {', '.join(allowed)}")


def check_positive(name: str, value: object) -> int:
    """A whole number >= 1 (bools refused), returned as int."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(f"{name} must be a positive whole number, got {value!r}")
    return value


def choice_enum(name: str, choices: tuple[str, ...]) -> type[Enum]:
    """A str Enum over `choices`, as typer wants for a choice option."""
    return Enum(name, {choice: choice for choice in choices}, type=str)  # type: ignore[return-value]
