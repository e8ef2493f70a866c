"""The inputs every system gets, built from the bundle's own vocabulary with a fixed seed: no downloads.

Families:
    latency           one short sentence, many times over.
    grid              batch x sequence length: B texts of exactly T tokens each.
    corpus            a realistic mixed-length corpus: word counts drawn log-normally,
                      words Zipf-distributed over the vocabulary (BERT vocabularies are
                      roughly frequency-ordered), some glued to a ##suffix so they split.
    vocab-contextual  every vocabulary entry alone in its own sentence, contextual path.
    static-vocab      every vocabulary entry as a word, static path.
    static-million    a million words drawn like the corpus's, static path.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bertonnx.benchmarks.names import BENCH_WORKLOADS
from bertonnx.errors import OptionError
from bertonnx.tokenize import Tokenizer

FAMILIES = BENCH_WORKLOADS
CONTEXTUAL_FAMILIES = ("latency", "grid", "corpus", "vocab-contextual")
BULK_FAMILIES = ("corpus", "vocab-contextual", "static-vocab", "static-million")
"""One call takes seconds: repeats are capped (BULK_REPEAT) and warm-up uses a slice."""
BULK_REPEAT = 3
ONCE_FAMILIES = ("vocab-contextual",)
"""Every vocabulary entry as its own text: minutes per call for a baseline on 2 cores, so timed once per system."""
LATENCY_REPEAT = 50
"""One short sentence takes milliseconds: at least this many timed runs for a stable p50."""
SHORT_SENTENCE = "The king is wise and rules the kingdom well."
WARMUP_SLICE = 64


@dataclass(frozen=True)
class ModelShape:
    """What encoder FLOPs depend on."""

    layers: int
    hidden: int  # H
    intermediate: int  # feed-forward width
    heads: int

    def flops(self, lengths: NDArray[np.int64]) -> float:
        """Encoder FLOPs for sequences of these real lengths (padding excluded: useful work only).

        Per layer and token, the Q, K, V, output and two feed-forward matmuls cost
        2 x (4H^2 + 2HI); per layer and sequence, QK^T and AV cost 4 T^2 H.
        Embeddings, LayerNorm, softmax and GELU are left out: they do not reach the matmul peak anyway.
        """
        t = lengths.astype(np.float64)
        dense = 2.0 * (4 * self.hidden**2 + 2 * self.hidden * self.intermediate) * t.sum()
        attention = 4.0 * self.hidden * (t**2).sum()
        return float(self.layers * (dense + attention))

    @classmethod
    def from_config(cls, config_path: Path) -> ModelShape:
        """Read a Hugging Face config.json (BERT names, DistilBERT's in the fallbacks)."""
        config = json.loads(config_path.read_text(encoding="utf-8"))
        hidden = int(config.get("hidden_size", config.get("dim", 0)))
        return cls(
            layers=int(config.get("num_hidden_layers", config.get("n_layers", 0))),
            hidden=hidden,
            intermediate=int(config.get("intermediate_size", config.get("hidden_dim", 4 * hidden))),
            heads=int(config.get("num_attention_heads", config.get("n_heads", 0))),
        )


@dataclass(frozen=True)
class Case:
    """One measured situation: what one timed call processes."""

    family: str  # one of FAMILIES
    name: str  # e.g. "b8 x t64"
    path: str  # "contextual" or "static"
    items: int  # texts (contextual) or words (static) per call
    tokens: int  # real tokens per call, special tokens included, padding excluded (static: word pieces)
    longest: int  # tokens of the longest text, special tokens included (static: 0)
    flops: float  # useful encoder FLOPs per call (static: 0)
    batch_size: int | None = None  # grid only
    seq_len: int | None = None  # grid only

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Workload:
    """A case and its inputs."""

    case: Case
    inputs: tuple[str, ...]  # texts or words: the same for every system
    warmup: tuple[str, ...]  # what each system runs before timing starts
    repeat: int  # timed runs per system


@dataclass(frozen=True)
class WorkloadSpec:
    """What to build; every choice a command-line option can change."""

    families: tuple[str, ...] = FAMILIES
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    seq_lens: tuple[int, ...] = (16, 64, 128, 512)
    corpus_texts: int = 1000
    million: int = 1_000_000  # words of the static-million family
    repeat: int = 5
    seed: int = 0


@dataclass(frozen=True)
class Skipped:
    """A case or system that was not measured, and why."""

    what: str
    reason: str


def build_workloads(
    spec: WorkloadSpec, tokenizer: Tokenizer, shape: ModelShape
) -> tuple[list[Workload], list[Skipped]]:
    """Every workload of `spec`, in a fixed order; grid cells longer than the model are skipped."""
    unknown = sorted(set(spec.families) - set(FAMILIES))
    if unknown:
        raise OptionError(f"unknown workload {', '.join(unknown)}; expected some of {', '.join(FAMILIES)}")
    for name, value in (("repeat", spec.repeat), ("corpus_texts", spec.corpus_texts), ("million", spec.million)):
        if value < 1:
            raise OptionError(f"{name} must be at least 1, got {value}")
    words = Vocabulary.of(tokenizer)
    workloads: list[Workload] = []
    skipped: list[Skipped] = []
    for family in FAMILIES:
        if family not in spec.families:
            continue
        if family == "latency":
            workloads.append(_contextual(family, "one short sentence", (SHORT_SENTENCE,), tokenizer, shape, spec))
        elif family == "grid":
            for seq_len in spec.seq_lens:
                if seq_len > tokenizer.max_length or seq_len <= tokenizer.n_special:
                    skipped.append(Skipped(f"grid t{seq_len}", f"the model takes 3 to {tokenizer.max_length} tokens"))
                    continue
                for batch in spec.batch_sizes:
                    rng = np.random.default_rng([spec.seed, batch, seq_len])
                    texts = tuple(
                        words.exact_text(seq_len - tokenizer.n_special, rng, tokenizer) for _ in range(batch)
                    )
                    workloads.append(
                        _contextual(family, f"b{batch} x t{seq_len}", texts, tokenizer, shape, spec, batch, seq_len)
                    )
        elif family == "corpus":
            texts = words.corpus(spec.corpus_texts, np.random.default_rng([spec.seed, 1]), tokenizer)
            workloads.append(_contextual(family, f"{len(texts)} mixed-length texts", texts, tokenizer, shape, spec))
        elif family == "vocab-contextual":
            texts = words.entries
            workloads.append(_contextual(family, f"{len(texts)} entries, one per text", texts, tokenizer, shape, spec))
        elif family == "static-vocab":
            workloads.append(_static(family, f"{len(words.entries)} entries", words.entries, tokenizer, spec))
        else:
            drawn = words.draw(spec.million, np.random.default_rng([spec.seed, 2]))
            workloads.append(_static(family, f"{len(drawn):,} words", drawn, tokenizer, spec))
    return workloads, skipped


@dataclass(frozen=True)
class Vocabulary:
    """The word material: vocabulary entries, plain words by rank, and ##suffixes."""

    entries: tuple[str, ...]  # every vocabulary entry, by id
    plain: tuple[str, ...]  # alphabetic entries kept whole, by id (~frequency rank); of lone letters only a, i
    suffixes: tuple[str, ...]  # alphabetic ##continuations, without the ##

    @classmethod
    def of(cls, tokenizer: Tokenizer) -> Vocabulary:
        vocab = tokenizer.backend.get_vocab()
        entries = tuple(sorted(vocab, key=vocab.__getitem__))
        single = tokenizer.single_pieces
        plain = tuple(w for w in entries if w in single and w.isascii() and w.isalpha() and (len(w) > 1 or w in "ai"))
        suffixes = tuple(w[2:] for w in entries if w.startswith("##") and w[2:].isascii() and w[2:].isalpha())
        if len(plain) < 2:
            raise ValueError(f"the vocabulary has {len(plain)} plain alphabetic words; benchmarks need a few")
        return cls(entries=entries, plain=plain, suffixes=suffixes)

    def draw(self, n: int, rng: np.random.Generator) -> tuple[str, ...]:
        """n words, Zipf-distributed over the plain words; 8% glued to a suffix so they split."""
        ranks = np.arange(len(self.plain), dtype=np.float64)
        weights = 1.0 / (ranks + 2.7)  # Zipf-Mandelbrot, exponent 1
        chosen = rng.choice(len(self.plain), size=n, p=weights / weights.sum())
        glue = rng.random(n) < 0.08 if self.suffixes else np.zeros(n, dtype=bool)
        suffix = rng.integers(0, max(1, len(self.suffixes)), size=n)
        return tuple(
            self.plain[w] + self.suffixes[s] if g else self.plain[w]
            for w, g, s in zip(chosen.tolist(), glue.tolist(), suffix.tolist())
        )

    def exact_text(self, pieces: int, rng: np.random.Generator, tokenizer: Tokenizer) -> str:
        """A text of exactly `pieces` content pieces: plain words are one piece each."""
        ranks = rng.integers(0, len(self.plain), size=pieces)
        text = " ".join(self.plain[r] for r in ranks.tolist())
        found = tokenizer.split([text])[0].ids.size
        if found != pieces:
            raise RuntimeError(f"built a text of {found} pieces where {pieces} were wanted")
        return text

    def corpus(self, n_texts: int, rng: np.random.Generator, tokenizer: Tokenizer) -> tuple[str, ...]:
        """Sentences of log-normal word counts (median 18), capitalised, with commas and a full stop.

        A sentence longer than the model takes loses words from its end until it
        fits, so every system sees whole, untruncated texts.
        """
        counts = np.clip(np.round(rng.lognormal(np.log(18), 0.6, size=n_texts)), 2, 120).astype(int)
        drawn = self.draw(int(counts.sum()), rng)
        commas = rng.random(len(drawn)) < 0.06
        bounds = np.cumsum(counts) - counts
        sentences = [
            [drawn[i] + ("," if commas[i] and i < start + count - 1 else "") for i in range(start, start + count)]
            for start, count in zip(bounds.tolist(), counts.tolist())
        ]
        texts = [_sentence(words) for words in sentences]
        for index, pieces in enumerate(tokenizer.split(texts)):
            words, size = sentences[index], pieces.ids.size
            while size > tokenizer.window:
                words = words[: max(1, len(words) * tokenizer.window // size - 1)]
                texts[index] = _sentence(words)
                size = tokenizer.split([texts[index]])[0].ids.size
        return tuple(texts)


def token_lengths(tokenizer: Tokenizer, texts: Sequence[str]) -> NDArray[np.int64]:
    """(N,) tokens of each text as the model sees it, special tokens included."""
    pieces = tokenizer.split(list(texts))
    return np.array([p.ids.size for p in pieces], dtype=np.int64) + tokenizer.n_special


def _contextual(
    family: str,
    name: str,
    texts: tuple[str, ...],
    tokenizer: Tokenizer,
    shape: ModelShape,
    spec: WorkloadSpec,
    batch_size: int | None = None,
    seq_len: int | None = None,
) -> Workload:
    lengths = token_lengths(tokenizer, texts)
    case = Case(
        family=family,
        name=name,
        path="contextual",
        items=len(texts),
        tokens=int(lengths.sum()),
        longest=int(lengths.max()),
        flops=shape.flops(lengths),
        batch_size=batch_size,
        seq_len=seq_len,
    )
    return Workload(case, texts, _warmup(family, texts), _repeat(family, spec.repeat))


def _static(family: str, name: str, words: tuple[str, ...], tokenizer: Tokenizer, spec: WorkloadSpec) -> Workload:
    ids, _ = tokenizer.split_words(words)
    case = Case(family=family, name=name, path="static", items=len(words), tokens=int(ids.size), longest=0, flops=0.0)
    return Workload(case, words, _warmup(family, words), _repeat(family, spec.repeat))


def _warmup(family: str, inputs: tuple[str, ...]) -> tuple[str, ...]:
    return inputs[:WARMUP_SLICE] if family in BULK_FAMILIES else inputs


def _repeat(family: str, repeat: int) -> int:
    if family in ONCE_FAMILIES:
        return 1
    if family in BULK_FAMILIES:
        return min(repeat, BULK_REPEAT)
    return max(repeat, LATENCY_REPEAT) if family == "latency" else repeat


def _sentence(words: list[str]) -> str:
    return " ".join(words).rstrip(",").capitalize() + "."
