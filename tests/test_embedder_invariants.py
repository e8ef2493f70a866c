"""Embedder invariants, property-tested with hypothesis on the tiny model, and one Embedder under 8 threads.

Examples are few and derandomized (a fixed sequence per test), so a run is
repeatable; each model call costs about a millisecond here.
"""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from helpers.reference import context_bound, run_alone, slow_pool
from helpers.texts import HOSTILE_ALPHABET, PROPERTY, TOLERANCE, VOCABULARY, WORDS, texts, word_lists
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from bertonnx import Embedder
from bertonnx.batching import plan_windows
from bertonnx.options import WORD_POOLING_MODES
from bertonnx.pooling import pool_pieces

GIANT = "zq" * 35  # 70 pieces: longer than a window (62), so its pieces come from several windows


long_texts = st.lists(st.sampled_from([*WORDS, GIANT]), min_size=70, max_size=220).map(" ".join)


def with_budget(embedder: Embedder, batch_tokens: int) -> Embedder:
    """The same backend and tokenizer under another token budget."""
    return Embedder(embedder.bundle, embedder.backend, embedder.tokenizer, embedder.table, batch_tokens)


def window_states(embedder: Embedder, ids: NDArray[np.int64]) -> NDArray[np.float32]:
    """(n, H) the content pieces' states of `ids` run on their own."""
    prefix = len(embedder.tokenizer.prefix_ids)
    return run_alone(embedder, ids)[prefix : prefix + ids.size]


@pytest.mark.slow
@PROPERTY
@given(
    batch=st.lists(texts | long_texts, min_size=1, max_size=10),
    batch_tokens=st.sampled_from([1, 7, 64, 300, 8192]),
    data=st.data(),
)
def test_vectors_do_not_depend_on_companions_batch_size_or_order(
    tiny: Embedder, batch: list, batch_tokens: int, data: st.DataObject
) -> None:
    order = data.draw(st.permutations(range(len(batch))), label="order")
    embedder = with_budget(tiny, batch_tokens)
    shuffled = [batch[i] for i in order]
    together = embedder.contextual(shuffled)
    sentences = embedder.sentences(shuffled)
    for position, index in enumerate(order):
        alone = tiny.contextual([batch[index]])[0]
        assert together[position].words == alone.words
        assert together[position].spans.tolist() == alone.spans.tolist()
        np.testing.assert_allclose(together[position].vectors, alone.vectors, rtol=0, atol=TOLERANCE)
        np.testing.assert_allclose(sentences[position], tiny.sentences([batch[index]])[0], rtol=0, atol=TOLERANCE)


@PROPERTY
@given(words=word_lists.filter(bool))
def test_pre_split_words_equal_the_same_words_as_a_raw_string(tiny: Embedder, words: list[str]) -> None:
    raw = tiny.contextual([" ".join(words)])[0]
    split = tiny.contextual([words])[0]
    assert raw.words == split.words == tuple(words)
    np.testing.assert_array_equal(raw.vectors, split.vectors)
    np.testing.assert_array_equal(tiny.sentences([" ".join(words)]), tiny.sentences([words]))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(text=st.text(alphabet=HOSTILE_ALPHABET, max_size=40))
def test_the_words_of_any_raw_string_give_it_back_pre_split(tiny: Embedder, text: str) -> None:
    """The other way round, on hostile text: the words a raw string splits into, passed pre-split."""
    raw = tiny.contextual([text])[0]
    split = tiny.contextual([list(raw.words)])[0]
    assert split.words == raw.words
    np.testing.assert_array_equal(split.vectors, raw.vectors)


@PROPERTY
@given(batch=st.lists(word_lists.filter(bool), min_size=1, max_size=5), mode=st.sampled_from(WORD_POOLING_MODES))
def test_pooling_modes_match_the_slow_reference_on_the_model(tiny: Embedder, batch: list[list[str]],
                                                              mode: str) -> None:
    """Word-id layouts from real tokenization (multi-piece words, [UNK]) in a batch of texts:
    contextual and static pooling against a per-word loop over each text run alone."""
    results = tiny.contextual(batch, pooling=mode)
    for words, result, pieces in zip(batch, results, tiny.tokenizer.split(batch)):
        states = window_states(tiny, pieces.ids)
        groups = [np.flatnonzero(pieces.piece_word == w).tolist() for w in range(len(words))]
        np.testing.assert_allclose(result.vectors, slow_pool(states, groups, mode), rtol=1e-5, atol=1e-5)
        rows = [tiny.table[tiny.tokenizer.backend.encode(word, add_special_tokens=False).ids] for word in words]
        expected = slow_pool(np.concatenate(rows), np.split(np.arange(sum(map(len, rows))),
                                                            np.cumsum([len(r) for r in rows])[:-1]), mode)
        np.testing.assert_allclose(tiny.static(words, pooling=mode, unknown="unk"), expected, rtol=1e-6, atol=1e-7)


@PROPERTY
@given(
    words=st.lists(st.sampled_from(WORDS), max_size=60),
    cuts=st.lists(st.integers(0, 60), max_size=8),
    mode=st.sampled_from(WORD_POOLING_MODES),
    unknown=st.sampled_from(["unk", "zero"]),
)
def test_static_vectors_do_not_depend_on_chunking(tiny: Embedder, words: list[str], cuts: list[int], mode: str,
                                                  unknown: str) -> None:
    whole = tiny.static(words, pooling=mode, unknown=unknown)
    bounds = sorted({0, len(words), *(cut for cut in cuts if cut <= len(words))})
    parts = [tiny.static(words[a:b], pooling=mode, unknown=unknown) for a, b in zip(bounds, bounds[1:])]
    np.testing.assert_array_equal(np.concatenate([whole[:0], *parts]), whole)


def test_static_chunking_across_the_tokenizers_own_groups(tiny: Embedder) -> None:
    """20k words that are not single pieces cross the tokenizer's internal 8192-word groups."""
    words = [f"{WORDS[i % 16]}{i}" for i in range(20_000)]  # "king123" -> king ##1 ##2 ##3
    whole = tiny.static(words)
    rng = random.Random(6)
    bounds = sorted({0, len(words), *rng.sample(range(len(words)), 12)})
    parts = [tiny.static(words[a:b]) for a, b in zip(bounds, bounds[1:])]
    np.testing.assert_array_equal(np.concatenate(parts), whole)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(text=long_texts)
def test_each_word_of_a_long_text_is_its_windows_own_vector(tiny: Embedder, text: str) -> None:
    """Stitching windows gives every word the vector of its pieces in the window it was given,
    run alone; that window leaves it the context the plan promises on both sides; and the
    sentence vector is the token-weighted mean of the windows' own."""
    result = tiny.contextual([text])[0]
    pieces = tiny.tokenizer.split([text])[0]
    window = tiny.tokenizer.window
    plan = plan_windows(pieces.piece_word, window)
    assert plan.starts.size >= 2
    alone = [run_alone(tiny, pieces.ids[a:b]) for a, b in zip(plan.starts.tolist(), plan.ends.tolist())]
    prefix = len(tiny.tokenizer.prefix_ids)
    states = np.stack([alone[k][prefix + offset] for k, offset in zip(plan.piece_window.tolist(),
                                                                      plan.piece_offset.tolist())])
    np.testing.assert_allclose(result.vectors, pool_pieces(states, pieces.word_starts, "mean"), rtol=0, atol=1e-5)
    n, stride = pieces.ids.size, max(1, window // 2)
    for first, end in result.spans.tolist():
        if end - first <= window:
            k = int(plan.piece_window[first])
            margin = min(first - int(plan.starts[k]), int(plan.ends[k]) - end)
            assert margin >= context_bound(first, end, n, window, stride)
    tokens = np.array([len(states) for states in alone], dtype=np.float64)[:, None]
    weighted = (np.stack([states.mean(0) for states in alone]) * tokens).sum(0) / tokens.sum()
    np.testing.assert_allclose(tiny.sentences([text])[0], weighted, rtol=0, atol=1e-5)


# -- concurrency --------------------------------------------------------------


CALLS = 10_000
THREADS = 8


def make_calls(count: int, seed: int) -> list[tuple[str, object, dict[str, object]]]:
    """Mixed calls: static, contextual (some long enough for windows) and sentences, varied texts."""
    rng = random.Random(seed)
    words = [*VOCABULARY, "Queen", "🙂", "語", "x", "zq"]

    def text() -> str:
        length = rng.choice([0, 1, 3, 8, 20]) if rng.random() > 0.02 else 150
        return " ".join(rng.choices(words, k=length))

    calls: list[tuple[str, object, dict[str, object]]] = []
    for _ in range(count):
        kind = rng.choice(["static", "contextual", "sentences"])
        if kind == "static":
            pooling = rng.choice(["mean", "first", "last", "first_last", "max", "sum"])
            calls.append((kind, rng.choices(words, k=rng.randint(1, 6)), {"pooling": pooling, "unknown": "unk"}))
        elif kind == "contextual":
            pooling = rng.choice(["mean", "first_last", "max"])
            calls.append((kind, [text() for _ in range(rng.randint(1, 3))], {"pooling": pooling}))
        else:
            options = {"pooling": rng.choice(["mean", "cls"]), "normalize": rng.random() < 0.5}
            calls.append((kind, [text() for _ in range(rng.randint(1, 3))], options))
    return calls


def perform(embedder: Embedder, call: tuple[str, object, dict[str, object]]) -> list[np.ndarray]:
    kind, inputs, options = call
    if kind == "contextual":
        return [result.vectors for result in embedder.contextual(inputs, **options)]  # type: ignore[arg-type]
    return [getattr(embedder, kind)(inputs, **options)]

@pytest.mark.slow
def test_one_embedder_shared_by_8_threads_matches_serial_use(tiny_bundle: Path) -> None:
    """10,000 mixed calls, serially and then from 8 threads at once: identical results, exact
    counters, no crash; a deadlock fails at the timeout instead of hanging the suite."""
    embedder = Embedder.load(tiny_bundle, provider="cpu", threads=2)
    calls = make_calls(CALLS, seed=6)
    serial = [perform(embedder, call) for call in calls]
    texts_after_serial = embedder.stats.texts

    order = list(range(CALLS))
    random.Random(7).shuffle(order)
    start = threading.Barrier(THREADS)

    def worker(share: list[int]) -> list[tuple[int, list[np.ndarray]]]:
        start.wait()
        return [(index, perform(embedder, calls[index])) for index in share]

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        futures = [pool.submit(worker, order[t::THREADS]) for t in range(THREADS)]
        threaded = [item for future in futures for item in future.result(timeout=600)]

    assert sorted(index for index, _ in threaded) == list(range(CALLS))
    for index, arrays in threaded:
        assert len(arrays) == len(serial[index])
        for got, expected in zip(arrays, serial[index]):
            assert np.array_equal(got, expected), f"call {index} {calls[index][0]} differs under threads"
    assert embedder.stats.texts == 2 * texts_after_serial  # RunStats counted every call exactly once
