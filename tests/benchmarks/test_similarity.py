"""The word-similarity check's pool, pairs and figures, on vectors whose answer is known, and its vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bertonnx import Embedder
from bertonnx.benchmarks.roget import Category
from bertonnx.benchmarks.similarity import (
    MAX_WORDS,
    Pool,
    _ranks,
    figures,
    pairs_of,
    parse_variant,
    pool_of,
    spearman,
    vectors_of,
)


def _categories() -> list[Category]:
    words = [f"w{i:02d}" for i in range(40)]
    return [Category("cat0001", "A", ("A", "1", "cat0001"), tuple(words[:6])),
            Category("cat0002", "B", ("A", "1", "cat0002"), tuple(words[6:12])),
            Category("cat0003", "C", ("A", "2", "cat0003"), tuple(words[12:18])),
            Category("cat0004", "D", ("B", "3", "cat0004"), tuple(words[18:21])),  # too few
            Category("cat0005", "E", ("B", "3", "cat0005"), tuple(words[21:40]))]  # more than MAX_WORDS


def test_pool_keeps_whole_words_of_categories_big_enough() -> None:
    pool = pool_of(_categories(), lambda word: word != "w00")
    assert [c.code for c in pool.categories] == ["cat0001", "cat0002", "cat0003", "cat0005"]
    assert "w00" not in pool.words and "w18" not in pool.words
    assert np.bincount(pool.groups).tolist() == [5, 6, 6, MAX_WORDS]
    assert pool_of(_categories(), lambda _: True, seed=0).words == pool_of(_categories(), lambda _: True).words


def test_figures_on_vectors_that_group_by_category_and_on_noise() -> None:
    pool = pool_of(_categories(), lambda _: True)
    pairs = pairs_of(pool)
    i, j, related = pairs
    assert set(related[pool.groups[i] == pool.groups[j]]) == {3}
    assert set(related[pool.groups[i] != pool.groups[j]]) == {0, 1, 2}
    rng = np.random.default_rng(0)
    directions = {node: rng.normal(size=64) for c in pool.categories for node in c.path}  # a direction per node:
    centres = np.array([sum(directions[node] for node in c.path) for c in pool.categories])  # shared nodes, closer
    grouped = centres[pool.groups] + 0.1 * rng.normal(size=(len(pool.words), 64))
    good = figures(grouped, pool, pairs)
    assert good["nn_same_category"] == 1.0 and good["within"] > 0.9 > abs(good["between"]) + 0.3
    assert good["spearman"] > 0.5
    noise = figures(rng.normal(size=(len(pool.words), 64)), pool, pairs)
    assert noise["nn_same_category"] < 0.6 and abs(noise["within"] - noise["between"]) < 0.2
    keep = pool.groups != 0
    part = figures(grouped, pool, pairs, keep)
    assert part["words"] == int(keep.sum()) and part["pairs"] < good["pairs"]


def test_spearman_against_a_slow_reference() -> None:
    assert _ranks(np.array([10.0, 20.0, 20.0, 30.0, 5.0])).tolist() == [2.0, 3.5, 3.5, 5.0, 1.0]
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=200), rng.integers(0, 4, size=200).astype(float)
    ra = np.array([sorted(a).index(x) + 1 for x in a])
    rb = np.array([np.mean([k + 1 for k, y in enumerate(sorted(b)) if y == x]) for x in b])
    assert spearman(a, b) == pytest.approx(np.corrcoef(ra, rb)[0, 1])
    assert spearman(a, a * 3 + 1) == pytest.approx(1.0)


def test_parse_variant() -> None:
    assert parse_variant("corpus+prior:method=corpus,prior=5,context=window:3") == (
        "corpus+prior", {"method": "corpus", "prior": 5, "context": "window:3"})
    assert parse_variant("p:prior=0.5") == ("p", {"prior": 0.5})


def test_vectors_of_each_variant_and_the_corpus_counts(tiny: Embedder, tmp_path: Path) -> None:
    vocab = tiny.tokenizer.backend.get_vocab()
    words = sorted(w for w in vocab if w.isalpha() and len(w) > 2)[:6]
    pool = Pool(words, np.array([0, 0, 0, 1, 1, 1]), _categories()[:2])
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(f"1 {words[0]} 2 {words[1]}\n{words[0]} 3\n{words[2]} comes too late\n", encoding="utf-8")
    variants = [("templates", {}), ("corpus", {"method": "corpus"})]
    vectors, counts = vectors_of(tiny, pool, corpus, 2, variants, tmp_path)
    assert set(vectors) == {"static", "templates", "corpus"}
    assert all(v.shape == (6, vectors["static"].shape[1]) for v in vectors.values())
    assert counts["corpus"].tolist() == [2, 1, 0, 0, 0, 0]
    np.testing.assert_allclose(vectors["corpus"][2:], vectors["templates"][2:], rtol=1e-5, atol=1e-6)
    saved = np.load(tmp_path / "vectors-corpus.npz")
    saved["vectors"][...] = 0  # a loaded copy: changing it changes nothing on disk
    again, again_counts = vectors_of(tiny, pool, corpus, 2, variants, tmp_path)
    np.testing.assert_array_equal(again["corpus"], vectors["corpus"])
    assert again_counts["corpus"].tolist() == [2, 1, 0, 0, 0, 0]
    np.savez(tmp_path / "vectors-corpus.npz", vectors=np.zeros((6, 1)), counts=np.zeros(6), how=np.array("other"))
    third, _ = vectors_of(tiny, pool, corpus, 2, variants, tmp_path)  # made another way: computed again
    np.testing.assert_array_equal(third["corpus"], vectors["corpus"])
