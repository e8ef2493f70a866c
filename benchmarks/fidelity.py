"""Fidelity in the bench: each system's token and mean-pooled word vectors against PyTorch's on the same token ids.

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
from bertonnx.pooling import cosine_rows
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


def fidelities(systems: Sequence[System], workload: Workload, tokenizer: Tokenizer, items: int) -> dict[str, Fidelity]:
    """Each system against the PyTorch system of its path and provider, on the case's first `items` inputs."""
    inputs = workload.inputs[:items]
    token_word = alignment(tokenizer, inputs, workload.case.path)
    outputs = {s.spec.label: s.outputs(inputs, token_word) for s in systems}
    found = {}
    for system in systems:
        reference = _reference(system.spec, [s.spec for s in systems])
        if reference is None:
            raise RuntimeError(f"no PyTorch reference ran next to {system.spec.label}")
        found[system.spec.label] = compare(
            reference.label, outputs[reference.label], outputs[system.spec.label], len(inputs)
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


def compare(reference: str, expected: Outputs, found: Outputs, items: int) -> Fidelity:
    """Row-wise cosines of tokens and words.

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
