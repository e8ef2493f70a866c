"""Type-level vectors at scale, and how far they move from the static table: `python -m bertonnx.benchmarks.type_level`.

    python -m bertonnx.benchmarks.type_level BUNDLE [--words 30000] [--corpus-lines 3000] [--out DIR]

Speed, each figure next to the contextual throughput of the same backend in the same run:
    templates   a vocabulary of --words words (the bundle's own whole-word entries, then
                word+suffix compounds), each in the six default templates: words/s;
    corpus      --corpus-lines mixed-length lines built from the vocabulary (Zipf-like, as
                `bertonnx bench`'s corpus), every vocabulary word wanted: lines/s of the corpus
                pass, against `Embedder.contextual_rows` over the same lines.
Report (not evidence of quality; the separate word-similarity benchmarks decide that):
    mean cosine between each word's static and type-level vector, and the overlap of their
    10 nearest neighbours among the vocabulary, for the whole list and a few named words.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console

from bertonnx.benchmarks.machine import Machine, describe_machine
from bertonnx.embedder import Embedder
from bertonnx.pooling import l2_normalize
from bertonnx.results import RuntimeInfo
from bertonnx.type_level.matching import Vocabulary
from bertonnx.type_level.vectors import DEFAULT_TEMPLATES, TypeSums, TypeVectors

console = Console(stderr=True)
SHOWN = ("king", "queen", "man", "woman", "apple", "bank", "music", "river")
NEIGHBOURS = 10


def vocabulary_words(embedder: Embedder, count: int, compounds: bool = True) -> list[str]:
    """Whole-word entries of the bundle's vocabulary, then compounds of a word and a ## suffix, to `count`."""
    vocab = embedder.tokenizer.backend.get_vocab()
    ordered = sorted(vocab, key=vocab.__getitem__)
    words = [w for w in ordered if w.isalpha() and not w.startswith("[") and not w.startswith("##")]
    if not compounds:
        return list(dict.fromkeys(words))
    suffixes = [w[2:] for w in ordered if w.startswith("##") and w[2:].isalpha() and len(w) >= 5]
    found = dict.fromkeys(words)
    for suffix in suffixes:
        for word in words[1000:4000]:
            if len(found) >= count:
                return list(found)[:count]
            found.setdefault(word + suffix)
    return list(found)[:count]


def corpus_lines(words: list[str], lines: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, len(words) + 1, dtype=np.float64)
    weights = 1 / ranks
    weights /= weights.sum()
    lengths = np.clip(rng.lognormal(2.6, 0.6, size=lines).astype(int), 3, 120)
    return [" ".join(rng.choice(words, size=n, p=weights)) for n in lengths]


@dataclass(frozen=True)
class Speeds:
    """The timed passes: templates and corpus, each beside the contextual throughput of the same backend."""

    words: int  # vocabulary of the templates pass
    templates_s: float
    template_texts_per_s: float  # the template texts as plain contextual texts
    lines: int  # of the corpus pass
    frequent: int  # words the corpus pass collects
    contexts: int  # occurrences it found
    corpus_s: float
    contextual_s: float  # the same lines through Embedder.contextual_rows


def main(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory")],
    words: Annotated[int, typer.Option(help="Vocabulary size for the templates pass")] = 30_000,
    corpus_lines_n: Annotated[int, typer.Option("--corpus-lines", help="Lines of the corpus pass")] = 3_000,
    threads: Annotated[int | None, typer.Option(help="Threads (default: all cores)")] = None,
    out: Annotated[Path, typer.Option(help="report.json and report.md go here")] = Path(
        "benchmarks/results/type-level"
    ),
) -> None:
    """Time the templates and corpus passes, and report how type-level vectors differ from static ones."""
    embedder = Embedder.load(bundle, threads=threads)
    info = embedder.runtime_info()
    vocab = vocabulary_words(embedder, words)
    console.print(f"{len(vocab):,} words; {info.backend} {info.precision}, {info.threads} threads")
    templates, speeds = time_passes(embedder, vocab, corpus_lines_n)
    whole, cosine, overlap, shown = compare_with_static(embedder, vocab, templates)
    machine = describe_machine()
    record = {
        "schema": "bertonnx-type-level/1", "machine": machine.to_dict(), "runtime": info.to_dict(),
        "words": speeds.words, "report_words": len(whole), "templates": list(DEFAULT_TEMPLATES),
        "templates_words_per_s": speeds.words / speeds.templates_s,
        "template_texts_per_s_contextual": speeds.template_texts_per_s,
        "corpus_lines": speeds.lines, "corpus_vocabulary": speeds.frequent, "corpus_contexts": speeds.contexts,
        "corpus_lines_per_s": speeds.lines / speeds.corpus_s,
        "contextual_lines_per_s": speeds.lines / speeds.contextual_s,
        "mean_cosine_static_vs_type_level": float(cosine.mean()),
        "mean_neighbour_overlap": float(overlap.mean()), "shown": shown,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    md = markdown(machine, info, speeds, len(whole), cosine, overlap, shown)
    (out / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    print("\n".join(md))


def time_passes(embedder: Embedder, vocab: list[str], corpus_lines_n: int) -> tuple[TypeVectors, Speeds]:
    """The templates pass over `vocab` and the corpus pass over `corpus_lines_n` lines, each beside the contextual
    throughput of the same texts; the templates' vectors."""
    started = time.perf_counter()
    templates = embedder.type_vectors(vocab)
    templates_s = time.perf_counter() - started
    console.print(f"templates: {len(vocab) / templates_s:,.1f} words/s")

    lines = corpus_lines(vocab, corpus_lines_n)
    frequent = vocab[:2000]
    sums = TypeSums(embedder.runner, Vocabulary.of(embedder.tokenizer, frequent), max_contexts=10**9)
    started = time.perf_counter()
    for start in range(0, len(lines), 512):
        sums.add_corpus(lines[start : start + 512])
    corpus_s = time.perf_counter() - started
    started = time.perf_counter()
    for start in range(0, len(lines), 512):
        embedder.contextual_rows(lines[start : start + 512])
    contextual_s = time.perf_counter() - started
    contexts = int(sums.counts.sum())
    console.print(f"corpus: {len(lines) / corpus_s:,.1f} lines/s ({contexts:,} contexts); contextual "
                  f"{len(lines) / contextual_s:,.1f} lines/s")
    # a template text is a word and a few more: as contextual texts, its throughput in texts/s
    template_texts = [t.replace("{}", w) for w in vocab[:500] for t in DEFAULT_TEMPLATES]
    started = time.perf_counter()
    embedder.contextual_rows(template_texts)
    template_contextual = len(template_texts) / (time.perf_counter() - started)
    return templates, Speeds(len(vocab), templates_s, template_contextual, len(lines), len(frequent), contexts,
                             corpus_s, contextual_s)


def compare_with_static(
    embedder: Embedder, vocab: list[str], templates: TypeVectors
) -> tuple[list[str], np.ndarray, np.ndarray, dict[str, dict[str, Any]]]:
    """Static against type-level vectors over the vocabulary's whole words: the words, each word's cosine and
    neighbour overlap, and the SHOWN words' figures and neighbours."""
    # The report is over the vocabulary's own whole words: the compounds that fill the speed run to --words
    # are not words, and would crowd the neighbour lists.
    whole = vocabulary_words(embedder, 0, compounds=False)
    index = {word: i for i, word in enumerate(vocab)}
    static = l2_normalize(embedder.static(whole, unknown="unk"))
    typed = l2_normalize(templates.vectors[[index[word] for word in whole]])
    cosine = (static * typed).sum(axis=1)
    overlap = _neighbour_overlap(static, typed)
    shown = {w: {"cosine": float(cosine[whole.index(w)]), "overlap": float(overlap[whole.index(w)]),
                 "static": _neighbours(static, whole, w), "type_level": _neighbours(typed, whole, w)}
             for w in SHOWN if w in whole}
    return whole, cosine, overlap, shown


def markdown(
    machine: Machine,
    info: RuntimeInfo,
    speeds: Speeds,
    report_words: int,
    cosine: np.ndarray,
    overlap: np.ndarray,
    shown: dict[str, dict[str, Any]],
) -> list[str]:
    """report.md's lines: the speed table, then static against type-level over the whole words."""
    template_contextual = speeds.template_texts_per_s
    per_word = template_contextual / len(DEFAULT_TEMPLATES)
    md = [
        f"{machine.cpu} (family {machine.family}), {info.threads} threads, {info.backend} {info.precision}; "
        f"SIMD: {', '.join(machine.flags)}", "",
        "| pass | throughput | same backend, contextual | ratio |", "|---|---:|---:|---:|",
        f"| templates ({speeds.words:,} words × {len(DEFAULT_TEMPLATES)} templates) | "
        f"{speeds.words / speeds.templates_s:,.1f} words/s | {per_word:,.1f} "
        f"words/s ({template_contextual:,.0f} template texts/s) | "
        f"{(speeds.words / speeds.templates_s) / per_word:.2f}× |",
        f"| corpus ({speeds.lines:,} lines, {speeds.frequent:,}-word vocabulary, {speeds.contexts:,} contexts) | "
        f"{speeds.lines / speeds.corpus_s:,.1f} lines/s | {speeds.lines / speeds.contextual_s:,.1f} lines/s | "
        f"{speeds.contextual_s / speeds.corpus_s:.2f}× |", "",
        f"Static vs type-level (templates), the vocabulary's {report_words:,} whole words: mean cosine "
        f"{cosine.mean():.3f}; "
        f"mean overlap of the {NEIGHBOURS} nearest neighbours {overlap.mean():.3f}.", "",
        "| word | cosine | neighbour overlap | static neighbours | type-level neighbours |", "|---|---:|---:|---|---|",
    ]
    md += [f"| {w} | {v['cosine']:.3f} | {v['overlap']:.1f} | {', '.join(v['static'][:6])} | "
           f"{', '.join(v['type_level'][:6])} |" for w, v in shown.items()]
    return md


def _neighbours(unit: np.ndarray, vocab: list[str], word: str) -> list[str]:
    row = vocab.index(word)
    scores = unit @ unit[row]
    scores[row] = -np.inf
    return [vocab[i] for i in np.argsort(-scores)[:NEIGHBOURS]]


def _neighbour_overlap(a: np.ndarray, b: np.ndarray, block: int = 2048) -> np.ndarray:
    """Per word, the share of its NEIGHBOURS nearest neighbours under `a` that are also nearest under `b`."""
    found = np.empty(a.shape[0])
    for start in range(0, a.shape[0], block):
        tops = []
        for unit in (a, b):
            scores = unit[start : start + block] @ unit.T
            scores[np.arange(scores.shape[0]), np.arange(start, start + scores.shape[0])] = -np.inf
            tops.append(np.argpartition(-scores, NEIGHBOURS, axis=1)[:, :NEIGHBOURS])
        found[start : start + block] = [len(set(x) & set(y)) / NEIGHBOURS for x, y in zip(*tops)]
    return found


if __name__ == "__main__":
    typer.run(main)
