"""The server's limits and batching budgets, as `bertonnx serve` options set them."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal, get_args

from bertonnx.errors import OptionError

SERVE_BATCH_TOKENS = 256
"""Padded tokens per model run when serving (bulk jobs use bertonnx.options.DEFAULT_BATCH_TOKENS, 1024).

A server's merged batch is a few dozen texts of mixed length; in one big run
their padding costs more than batching saves (all-MiniLM-L6-v2, 2-core EPYC,
32 mixed sentences: 8192 -> 99 texts per CPU-second, 256 -> 142, one text per
run -> 115). Runs of ~256 padded tokens, cut from the length-sorted batch, keep
padding near 10% and still amortise the per-run cost.
"""

EmbeddingsLongText = Literal["sentence-transformers", "window"]
"""How /v1/embeddings treats a long text.

"sentence-transformers": cut it at the source model's `max_seq_length` (the bundle
records it as sentence_transformers_max_length; 256 for all-MiniLM-L6-v2), as
`SentenceTransformer.encode` does, so vectors match an index built with it. A bundle
without that record did not come from sentence-transformers: its texts are windowed.
"window": keep every token, averaging overlapping windows past the model maximum.
"""
EMBEDDINGS_LONG_TEXT: tuple[str, ...] = get_args(EmbeddingsLongText)


@dataclass(frozen=True)
class ServeSettings:
    """Limits that keep any request bounded in memory and time, and the batching budgets."""

    max_batch_tokens: int = 2048  # tokens of concurrent requests merged into one batch; 1 turns merging off
    max_wait_ms: float = 5.0  # how long a batch may wait for requests already on their way to it
    max_queue: int = 65536  # tokens waiting for the model; past that, 503 with Retry-After
    max_body_bytes: int = 2 * 1024 * 1024  # request body, before JSON parsing
    max_texts: int = 2048  # texts (or words, for /embed/static) per request
    max_text_chars: int = 32768  # characters per text
    long_text: EmbeddingsLongText = "sentence-transformers"  # /v1/embeddings' default; a request may choose
    api_key: str | None = field(default=None, repr=False)  # every endpoint but /health needs it as a Bearer token

    def __post_init__(self) -> None:
        if self.long_text not in EMBEDDINGS_LONG_TEXT:
            raise OptionError(f"long_text must be one of {', '.join(EMBEDDINGS_LONG_TEXT)}, got {self.long_text!r}")
        if self.api_key is not None and (not self.api_key.strip() or not self.api_key.isprintable()):
            raise OptionError("the API key must be printable text, not empty")
        for setting in fields(self):
            value = getattr(self, setting.name)
            if value is None or isinstance(value, str):
                continue
            minimum = 0 if setting.name == "max_wait_ms" else 1
            if not value >= minimum:  # written so that NaN fails too
                raise OptionError(f"{setting.name} must be at least {minimum}, got {value}")
