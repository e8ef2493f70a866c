"""Fidelity in the bench: each system's token, mean-pooled word and mean-pooled sentence vectors against PyTorch's on
the same token ids.

A speed figure never goes without it: the harness compares every system of a case with the PyTorch
system of its path and provider, on the case's first inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from bertonnx.benchmarks.contract import Outputs, System, SystemSpec
from bertonnx.benchmarks.workloads import Workload
from bertonnx.pooling import cosine_rows, pool_pieces
from bertonnx.tokenize import Tokenizer


@dataclass(frozen=True)
class Fidelity:
    """A system's vectors against PyTorch's on the same inputs (the reference itself scores 1)."""

    reference: str  # the system compared with
    items: int  # inputs compared
    tokens: int  # token vectors compared (static: word pieces)
    words: int  # word vectors compared
    token_min_cosine: float
    token_mean_cosine: float
    word_min_cosine: float
    word_mean_cosine: float
    max_abs_diff: float  # over token vectors
    sentence_min_cosine: float | None = None  # each input's tokens mean-pooled, as sentence-transformers pools;
    sentence_mean_cosine: float | None = None  # None on the static path (no sentences)


def fidelities(systems: Sequence[System], workload: Workload, tokenizer: Tokenizer, items: int) -> dict[str, Fidelity]:
    """Each system against the PyTorch system of its path and provider, on the case's first `items` inputs."""
    inputs = workload.inputs[:items]
    token_word = alignment(tokenizer, inputs, workload.case.path)
    counts = None if workload.case.path == "static" else text_tokens(tokenizer, inputs)
    outputs = {s.spec.label: s.outputs(inputs, token_word) for s in systems}
    found = {}
    for system in systems:
        reference = _reference(system.spec, [s.spec for s in systems])
        if reference is None:
            raise RuntimeError(f"no PyTorch reference ran next to {system.spec.label}")
        found[system.spec.label] = compare(
            reference.label, outputs[reference.label], outputs[system.spec.label], len(inputs), counts
        )
    return found


def alignment(tokenizer: Tokenizer, inputs: Sequence[str], path: str) -> NDArray[np.int64]:
    """(N,) global word index of every token the model sees (-1 on special tokens); static: of every piece."""
    if path == "static":
        ids, starts = tokenizer.split_words(inputs)
        counts = np.diff(np.append(starts, ids.size))
        return np.repeat(np.arange(len(inputs), dtype=np.int64), counts)
    prefix = np.full(len(tokenizer.prefix_ids), -1, dtype=np.int64)
    suffix = np.full(len(tokenizer.suffix_ids), -1, dtype=np.int64)
    parts = []
    offset = 0
    for pieces in tokenizer.split(list(inputs)):
        parts += [prefix, pieces.piece_word + offset, suffix]
        offset += len(pieces.words)
    return np.concatenate(parts)


def text_tokens(tokenizer: Tokenizer, inputs: Sequence[str]) -> NDArray[np.int64]:
    """(N,) tokens each input gives the model, special tokens included: the runs of `Outputs.tokens` per input."""
    extra = len(tokenizer.prefix_ids) + len(tokenizer.suffix_ids)
    return np.array([pieces.ids.size + extra for pieces in tokenizer.split(list(inputs))], dtype=np.int64)


def compare(
    reference: str, expected: Outputs, found: Outputs, items: int, counts: NDArray[np.int64] | None = None
) -> Fidelity:
    """Row-wise cosines of tokens, words and, given each input's token count, mean-pooled sentences.

    Raises:
        ValueError: the two systems produced different numbers of tokens or words
            (they did not see the same token ids).
    """
    for what, a, b in (("token", expected.tokens, found.tokens), ("word", expected.words, found.words)):
        if a.shape != b.shape:
            raise ValueError(f"{what} vectors: the reference gives {a.shape}, the system {b.shape}")
    tokens = _cosines(expected.tokens, found.tokens)
    words = _cosines(expected.words, found.words)
    diff = np.abs(expected.tokens.astype(np.float64) - found.tokens).max(initial=0.0)
    sentences = None
    if counts is not None and counts.size and int(counts.sum()) == len(expected.tokens):
        starts = np.cumsum(counts) - counts
        sentences = _cosines(pool_pieces(expected.tokens, starts, "mean"), pool_pieces(found.tokens, starts, "mean"))
    return Fidelity(
        reference=reference,
        items=items,
        tokens=int(tokens.size),
        words=int(words.size),
        token_min_cosine=float(tokens.min(initial=1.0)),
        token_mean_cosine=float(tokens.mean()) if tokens.size else 1.0,
        word_min_cosine=float(words.min(initial=1.0)),
        word_mean_cosine=float(words.mean()) if words.size else 1.0,
        max_abs_diff=float(diff),
        sentence_min_cosine=None if sentences is None else float(sentences.min()),
        sentence_mean_cosine=None if sentences is None else float(sentences.mean()),
    )


def _cosines(a: NDArray[np.float32], b: NDArray[np.float32]) -> NDArray[np.float64]:
    """Row-wise cosine; two all-zero rows (a zeroed padding embedding, say) count as identical."""
    cosines = cosine_rows(a, b)
    cosines[~a.any(axis=1) & ~b.any(axis=1)] = 1.0
    return cosines


def _reference(spec: SystemSpec, specs: Sequence[SystemSpec]) -> SystemSpec | None:
    for other in specs:
        if (
            other.kind in ("pytorch", "pytorch-embedding")
            and other.path == spec.path
            and other.provider == spec.provider
        ):
            return other
    return None
