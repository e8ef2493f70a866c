"""A word-similarity check to publish: Roget's 1911 categories, each kind of word vector side by side.

    pip install -c constraints.txt -e ".[similarity]"        # PyRoget: Roget's Thesaurus (1911) as data
    python -m bertonnx.benchmarks.similarity BUNDLE --corpus FILE [--corpus-lines 100000] [--out DIR] \
        [--variant NAME:key=value,...]

Words (benchmarks/roget.py): single lowercase words that Roget's Thesaurus lists under exactly one of its
1,000 categories and that are one whole word piece of the model's vocabulary (one row of the static
table); categories with at least MIN_WORDS of them, at most MAX_WORDS each (a seeded draw).
Vectors: the static table; type-level from templates; from the corpus alone (its first --corpus-lines
lines, prior 0: a word it never saw falls back to templates); from the corpus with the templates as a prior
(the library's default prior and context); and any --variant: keyword arguments of `Embedder.type_vectors`
(e.g. `corpus-line:method=corpus,prior=0,context=line`, the method before priors and local contexts).
Figures, each over the same words:
    nn same category   share of words whose nearest other word (cosine) is in the same category;
    within, between    mean cosine of two words of one category, and of two words of different classes;
    spearman           rank correlation, over a seeded sample of pairs, between a pair's cosine and how close
                       the two sit in Roget's hierarchy (roget.relatedness: same category 3, same section or
                       division 2, same class 1, else 0).
Each again over the words the corpus gave at least --seen contexts, so corpus vectors are read where they
exist. This describes how each kind of vector groups Roget's words; it is not evidence of quality, and
nothing was tuned on it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from bertonnx.benchmarks.machine import describe_machine
from bertonnx.benchmarks.roget import Category, categories, relatedness
from bertonnx.embedder import Embedder
from bertonnx.pooling import l2_normalize

MIN_WORDS = 5
MAX_WORDS = 8
PAIRS = 20_000  # pairs of different categories in the Spearman sample, beside every same-category pair
SOURCE = ("Roget's Thesaurus of English Words and Phrases, 1911 edition (Project Gutenberg eBook #22 and its index "
          "#10681; public domain in the USA), its categories and hierarchy as extracted by PyRoget 0.0.3 "
          "(J. Wenzel and P. R. Polefrone; PyPI; GNU licence), read from the installed package")


@dataclass(frozen=True)
class Pool:
    """The words of the check and the category of each."""

    words: list[str]
    groups: np.ndarray  # (N,) int: index into `categories`
    categories: list[Category]


def pool_of(found: list[Category], is_whole_word: Callable[[str], bool], seed: int = 0) -> Pool:
    """The check's words: per category, its words that are whole vocabulary entries, at most MAX_WORDS."""
    rng = np.random.default_rng(seed)
    words: list[str] = []
    groups: list[int] = []
    kept: list[Category] = []
    for category in found:
        usable = [w for w in category.words if is_whole_word(w)]
        if len(usable) < MIN_WORDS:
            continue
        if len(usable) > MAX_WORDS:
            usable = sorted(rng.choice(usable, size=MAX_WORDS, replace=False).tolist())
        words += usable
        groups += [len(kept)] * len(usable)
        kept.append(category)
    return Pool(words, np.asarray(groups), kept)


def pairs_of(pool: Pool, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every same-category pair and PAIRS seeded pairs of different categories: (i, j, relatedness 0-3)."""
    same = [(i, j) for g in range(len(pool.categories)) for i, j in _combinations(np.flatnonzero(pool.groups == g))]
    rng = np.random.default_rng([seed, 1])
    a = rng.integers(0, len(pool.words), size=PAIRS * 2)
    b = rng.integers(0, len(pool.words), size=PAIRS * 2)
    other = [(int(i), int(j)) for i, j in zip(a, b) if pool.groups[i] != pool.groups[j]][:PAIRS]
    both = np.asarray(same + other, dtype=np.int64)
    related = np.asarray([relatedness(pool.categories[pool.groups[i]], pool.categories[pool.groups[j]])
                        for i, j in both])
    return both[:, 0], both[:, 1], related


def _combinations(rows: np.ndarray) -> list[tuple[int, int]]:
    return [(int(rows[x]), int(rows[y])) for x in range(len(rows)) for y in range(x + 1, len(rows))]


def figures(vectors: np.ndarray, pool: Pool, pairs: tuple[np.ndarray, np.ndarray, np.ndarray],
            keep: np.ndarray | None = None) -> dict[str, float]:
    """The check's figures for one kind of vector, over all words or the `keep` mask (and its pairs)."""
    keep = np.ones(len(pool.words), dtype=bool) if keep is None else keep
    unit = l2_normalize(vectors.astype(np.float64))
    rows = np.flatnonzero(keep)
    scores = unit[rows] @ unit[rows].T
    np.fill_diagonal(scores, -np.inf)
    nearest = rows[np.argmax(scores, axis=1)]
    i, j, related = pairs
    inside = keep[i] & keep[j]
    cosine = (unit[i] * unit[j]).sum(axis=1)
    same = inside & (pool.groups[i] == pool.groups[j])
    apart = inside & (related == 0)
    return {"words": int(keep.sum()), "nn_same_category": float((pool.groups[nearest] == pool.groups[rows]).mean()),
            "within": float(cosine[same].mean()), "between": float(cosine[apart].mean()),
            "spearman": spearman(cosine[inside], related[inside].astype(np.float64)), "pairs": int(inside.sum())}


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation, ties given their average rank."""
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2)[inverse]


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """`NAME:key=value,...` -> (NAME, keyword arguments of Embedder.type_vectors); numbers become numbers."""
    name, _, spec = text.partition(":")
    kwargs: dict[str, Any] = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        try:
            kwargs[key] = int(value)
        except ValueError:
            try:
                kwargs[key] = float(value)
            except ValueError:
                kwargs[key] = value
    return name, kwargs


def vectors_of(embedder: Embedder, pool: Pool, corpus: Path, lines: int, variants: list[tuple[str, dict[str, Any]]],
               keep: Path | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Each variant's (N, H) vectors, and the corpus contexts each corpus variant found per word. With `keep`, each
    variant is saved there as it is done (vectors-NAME.npz) and taken from there when it was made the same way,
    so a run stopped on a busy machine loses only the variant it was in."""
    found: dict[str, np.ndarray] = {"static": embedder.static(pool.words)}
    counts: dict[str, np.ndarray] = {}
    for name, kwargs in variants:
        how = json.dumps({"words": pool.words, "kwargs": kwargs, "corpus": corpus.name, "lines": lines})
        saved = None if keep is None else keep / f"vectors-{name}.npz"
        if saved is not None and saved.is_file() and str(np.load(saved)["how"]) == how:
            with np.load(saved) as data:
                found[name], seen = data["vectors"], data["counts"]
        else:
            print(f"similarity: {name} {kwargs}", file=sys.stderr)
            if kwargs.get("method") == "corpus":
                with corpus.open(encoding="utf-8") as stream:
                    typed = embedder.type_vectors(pool.words, corpus=islice(stream, lines), **kwargs)
            else:
                typed = embedder.type_vectors(pool.words, **kwargs)
            found[name], seen = typed.vectors, np.where(typed.fallback, 0, typed.counts)
            if saved is not None:
                np.savez(saved, vectors=found[name], counts=seen, how=np.array(how))
        if kwargs.get("method") == "corpus":
            counts[name] = seen
    return found, counts


def markdown(record: dict[str, Any]) -> list[str]:
    """report lines: one table over all words, one over the words the corpus saw."""
    md = [f"{record['pool']['words']:,} words in {record['pool']['categories']:,} of Roget's categories "
          f"({record['pairs']:,} pairs); corpus: {record['corpus_lines']:,} lines of `{record['corpus']}`.", ""]
    for title, key in (("all words", "all"), (f"words with ≥ {record['seen']} corpus contexts", "seen")):
        rows = record["figures"][key]
        first = next(iter(rows.values()))
        md += [f"**{title}** ({first['words']:,} words, {first['pairs']:,} pairs)", "",
               "| vectors | nn same category | within | between | within − between | spearman |",
               "|---|---:|---:|---:|---:|---:|"]
        md += [f"| {name} | {f['nn_same_category']:.3f} | {f['within']:.3f} | {f['between']:.3f} | "
               f"{f['within'] - f['between']:.3f} | {f['spearman']:.3f} |" for name, f in rows.items()]
        md.append("")
    return md


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--corpus", type=Path, required=True, help="one text a line (benchmarks/corpus.py)")
    parser.add_argument("--corpus-lines", type=int, default=100_000)
    parser.add_argument("--max-contexts", type=int, default=100)
    parser.add_argument("--seen", type=int, default=10, help="contexts a word needs for the second table")
    parser.add_argument("--variant", action="append", default=[], help="NAME:key=value,... (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("similarity-out"))
    args = parser.parse_args(argv)
    embedder = Embedder.load(args.bundle)
    vocab = embedder.tokenizer.backend.get_vocab()
    pool = pool_of(categories(), vocab.__contains__, args.seed)
    pairs = pairs_of(pool, args.seed)
    corpus = {"method": "corpus", "max_contexts": args.max_contexts}
    variants = [("templates", {}), ("corpus+prior", corpus), ("corpus", {**corpus, "prior": 0})]
    variants += [parse_variant(text) for text in args.variant]
    args.out.mkdir(parents=True, exist_ok=True)
    vectors, counts = vectors_of(embedder, pool, args.corpus, args.corpus_lines, variants, args.out)
    seen = np.all([c >= args.seen for c in counts.values()], axis=0) if counts else np.zeros(len(pool.words), bool)
    record = {
        "schema": "bertonnx-similarity/1", "source": SOURCE, "machine": describe_machine().to_dict(),
        "runtime": embedder.runtime_info().to_dict(), "corpus": args.corpus.name, "corpus_lines": args.corpus_lines,
        "variants": {name: kwargs for name, kwargs in variants}, "seen": args.seen,
        "pool": {"words": len(pool.words), "categories": len(pool.categories)}, "pairs": len(pairs[0]),
        "corpus_coverage": {name: {f">={n}": int((c >= n).sum()) for n in (1, 10, 100)} for name, c in counts.items()},
        "figures": {"all": {name: figures(v, pool, pairs) for name, v in vectors.items()},
                    "seen": {name: figures(v, pool, pairs, seen) for name, v in vectors.items()}},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "similarity.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    md = markdown(record)
    (args.out / "similarity.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    print("\n".join(md))


if __name__ == "__main__":
    main()
