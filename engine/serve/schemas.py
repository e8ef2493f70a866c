"""Request bodies. Strict: unknown fields, nulls and type coercions are 4xx, never guessed at."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bertonnx.errors import InputError
from bertonnx.options import LongText, Unknown, WordPooling
from bertonnx.serve.errors import TooLarge
from bertonnx.serve.settings import EmbeddingsLongText, ServeSettings
from bertonnx.tokenize import TextInput

EncodingFormat = Literal["float", "base64"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class EmbeddingsRequest(_Body):
    """POST /v1/embeddings, as the OpenAI embeddings API takes it."""

    input: str | list[str] = Field(description="A text, or a list of texts.")
    model: str | None = Field(None, max_length=256, description="Echoed back; the server has one model.")
    encoding_format: EncodingFormat = "float"
    dimensions: int | None = Field(None, description="Accepted only when it equals the model's width.")
    user: str | None = Field(None, max_length=256, description="Accepted and ignored, as OpenAI clients send it.")
    long_text: EmbeddingsLongText | None = Field(
        None, description="sentence-transformers (cut as encode() does) or window; default: the server's own "
        "(ServeSettings.long_text, set when it starts)."
    )

    @field_validator("input", mode="before")
    @classmethod
    def _no_token_ids(cls, value: Any) -> Any:
        # Some clients (LangChain by default) send tiktoken ids, which mean nothing to a BERT vocabulary.
        if isinstance(value, list) and value and all(_token_ids(v) for v in value):
            raise ValueError(
                "token-id input is not supported: send strings "
                "(LangChain: OpenAIEmbeddings(check_embedding_ctx_length=False))"
            )
        return value


def _token_ids(value: Any) -> bool:
    return isinstance(value, int) or (isinstance(value, list) and all(isinstance(v, int) for v in value))


class WordsRequest(_Body):
    """POST /embed/words: one vector per word of each text."""

    texts: list[str | list[str]] = Field(
        min_length=1, description="Raw texts, or texts already split into words (lists of strings)."
    )
    kind: Literal["contextual", "static"] = "contextual"
    pooling: WordPooling = "mean"
    long_text: LongText = "window"
    encoding_format: EncodingFormat = "float"


class StaticRequest(_Body):
    """POST /embed/static: context-free vectors of single words, from the embedding table."""

    words: list[str] = Field(min_length=1)
    pooling: WordPooling = "mean"
    unknown: Unknown = "error"
    encoding_format: EncodingFormat = "float"


def check_texts(texts: Sequence[TextInput], settings: ServeSettings, what: str = "text") -> None:
    """Enforce the count and length limits, and reject strings Python can hold but UTF-8 cannot.

    Raises:
        TooLarge: too many texts, or a text over max_text_chars.
        InputError: a text with a lone surrogate (JSON allows "\\ud800"; tokenizers cannot take it).
    """
    if len(texts) > settings.max_texts:
        raise TooLarge(f"{len(texts)} {what}s in one request; this server takes at most {settings.max_texts}")
    for index, text in enumerate(texts):
        parts = [text] if isinstance(text, str) else text
        chars = sum(len(part) for part in parts)
        if chars > settings.max_text_chars:
            raise TooLarge(
                f"{what} {index} has {chars} characters; this server takes at most {settings.max_text_chars}"
            )
        for part in parts:
            try:
                part.encode("utf-8")
            except UnicodeEncodeError:
                raise InputError(f"{what} {index} is not valid Unicode: it holds a lone surrogate") from None
