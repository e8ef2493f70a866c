"""Embedder against transformers on the same weights: token, word and sentence level."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from helpers.reference import pool_block, reference_words

from bertonnx import Embedder, EmptyWordError, TextTooLongError, UnknownWordError
from bertonnx.batching import plan_windows
from bertonnx.options import WORD_POOLING_MODES
from bertonnx.pooling import cosine_rows

TEXTS = [
    "The king is wise.",
    "The queen is one of the great bands in history.",
    "How much is an Apple music account?",
    "unable",
    "The king eats apple every day.",
]


@pytest.mark.parametrize("mode", WORD_POOLING_MODES)
def test_contextual_words_match_transformers(
    tiny: Embedder, tiny_torch, tiny_model: Path, mode: str
) -> None:
    results = tiny.contextual(TEXTS, pooling=mode)
    for text, result in zip(TEXTS, results):
        words, expected = reference_words(tiny_torch, tiny_model, text, mode)
        assert list(result.words) == words
        assert cosine_rows(result.vectors, expected).min() >= 0.99999
        np.testing.assert_allclose(result.vectors, expected, atol=2e-5)


def test_raw_text_is_split_by_the_model_pre_tokenizer(tiny: Embedder) -> None:
    result = tiny.contextual(["The king is wise."])[0]
    assert result.words == ("The", "king", "is", "wise", ".")
    assert result.vectors.shape == (5, tiny.dim)
    assert result.spans.tolist() == [[0, 1], [1, 2], [2, 3], [3, 4], [4, 5]]


def test_word_spans_cover_multi_piece_words(tiny: Embedder) -> None:
    result = tiny.contextual(["unable embedding"])[0]
    assert result.words == ("unable", "embedding")
    starts, ends = result.spans.T
    assert ends.tolist() == starts[1:].tolist() + [ends[-1]]
    assert (ends - starts > 1).all()  # un ##able ; em ##bed ##ding


def test_pre_split_words_equal_the_raw_string(tiny: Embedder) -> None:
    raw = tiny.contextual(["The king is wise."])[0]
    split = tiny.contextual([["The", "king", "is", "wise", "."]])[0]
    assert split.words == raw.words
    np.testing.assert_array_equal(split.vectors, raw.vectors)


def test_static_equals_pooled_embedding_rows(tiny: Embedder, tiny_torch, tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    table = tiny_torch.get_input_embeddings().weight.detach().numpy()
    words = ["king", "Queen", "unable", "embeddings", "apple", "x"]
    for mode in WORD_POOLING_MODES:
        vectors = tiny.static(words, pooling=mode)
        for word, vector in zip(words, vectors):
            rows = table[tokenizer(word, add_special_tokens=False)["input_ids"]]
            expected = pool_block(rows, mode)
            np.testing.assert_allclose(vector, expected, rtol=1e-6, atol=1e-7)


def test_static_never_runs_the_transformer(tiny: Embedder, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the static path ran the ONNX graph")

    monkeypatch.setattr(tiny.backend, "run", refuse)
    assert tiny.static(["king", "queen"]).shape == (2, tiny.dim)


def test_static_is_the_same_however_the_list_is_chunked(tiny: Embedder) -> None:
    words = ["king", "queen", "unable", "man", "woman"] * 5000
    whole = tiny.static(words)
    parts = np.concatenate([tiny.static(words[i : i + 7]) for i in range(0, 70, 7)])
    np.testing.assert_array_equal(whole[:70], parts)
    assert whole.shape == (25000, tiny.dim)


def test_unknown_words_are_an_error_unless_asked_for(tiny: Embedder) -> None:
    with pytest.raises(UnknownWordError, match=r"word 1 \('🙂'\) maps to the unknown token"):
        tiny.static(["king", "🙂"])
    unk = tiny.static(["king", "🙂"], unknown="unk")
    np.testing.assert_array_equal(unk[1], tiny.table[tiny.tokenizer.unk_id])
    assert not tiny.static(["king", "🙂"], unknown="zero")[1].any()
    assert tiny.contextual(["the 🙂 king"])[0].unknown.tolist() == [False, True, False]


@pytest.mark.parametrize("word", ["", "   ", "\t"])
def test_blank_static_words_are_an_error(tiny: Embedder, word: str) -> None:
    with pytest.raises(EmptyWordError, match="word 1"):
        tiny.static(["king", word])


def test_texts_without_words_give_empty_results(tiny: Embedder) -> None:
    results = tiny.contextual(["", "   ", "king"])
    assert [len(r.words) for r in results] == [0, 0, 1]
    assert results[0].vectors.shape == (0, tiny.dim)


def test_sentence_mean_matches_masked_mean_of_transformers(tiny: Embedder, tiny_torch, tiny_model: Path) -> None:
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = tiny_torch(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    expected = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    np.testing.assert_allclose(tiny.sentences(TEXTS), expected, atol=2e-5)
    np.testing.assert_allclose(tiny.sentences(TEXTS, pooling="cls"), hidden[:, 0].numpy(), atol=2e-5)
    normalized = tiny.sentences(TEXTS, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(normalized, axis=1), 1.0, rtol=1e-6)


def test_results_do_not_depend_on_batching_or_order(tiny_bundle: Path, tiny: Embedder) -> None:
    texts = TEXTS * 7
    alone = [tiny.contextual([t])[0].vectors for t in texts[:5]]
    small_batches = Embedder.load(tiny_bundle, provider="cpu", threads=1, batch_tokens=16)
    for embedder in (tiny, small_batches):
        results = embedder.contextual(texts)
        for index in range(5):
            np.testing.assert_allclose(results[index].vectors, alone[index], atol=1e-5)
        shuffled = list(reversed(texts))
        reversed_results = embedder.contextual(shuffled)
        for index, result in enumerate(reversed_results):
            np.testing.assert_allclose(result.vectors, results[len(texts) - 1 - index].vectors, atol=1e-5)
    assert small_batches.stats.batches > tiny.stats.batches
    assert 0.0 <= small_batches.stats.padding_ratio < 1.0


def long_text(tiny: Embedder, times: int = 4) -> str:
    sentence = "the king and queen rule the kingdom . "
    per_sentence = len(tiny.tokenizer.split([sentence])[0].ids)
    return sentence * (times * tiny.bundle.max_length // per_sentence + 1)


def test_a_text_four_times_the_maximum_gets_every_word(tiny: Embedder) -> None:
    text = long_text(tiny)
    n_words = len(text.split())
    assert n_words > 4 * tiny.bundle.max_length
    result = tiny.contextual([text])[0]
    assert len(result.words) == n_words
    assert np.isfinite(result.vectors).all()
    # Each word comes from the window where it is most central: the same vector as that window alone.
    pieces = tiny.tokenizer.split([text])[0]
    assert len(pieces.ids) == n_words  # every word of this text is a single piece
    plan = plan_windows(pieces.piece_word, tiny.tokenizer.window)
    assert len(plan.starts) >= 4
    for word in (n_words // 3, n_words // 2):
        k = plan.piece_window[word]
        start, end = int(plan.starts[k]), int(plan.ends[k])
        assert min(word - start, end - 1 - word) >= tiny.tokenizer.window // 4  # context on both sides
        alone = tiny.contextual([list(result.words[start:end])])[0]
        np.testing.assert_allclose(result.vectors[word], alone.vectors[word - start], atol=1e-5)
    assert tiny.sentences([text]).shape == (1, tiny.dim)


def test_long_text_can_raise_or_truncate(tiny: Embedder) -> None:
    text = long_text(tiny)
    with pytest.raises(TextTooLongError, match=f"the model takes {tiny.tokenizer.window}"):
        tiny.contextual([text], long_text="error")
    truncated = tiny.contextual([text, "king"], long_text="truncate")
    assert truncated[0].truncated and not truncated[1].truncated
    assert truncated[0].spans[-1, 1] <= tiny.tokenizer.window
    window_result = tiny.contextual([text])[0]
    assert len(truncated[0].words) < len(window_result.words)


def test_one_embedder_shared_by_threads_matches_serial_use(tiny: Embedder) -> None:
    texts = [f"{t} {i}" for i in range(40) for t in TEXTS[:2]]
    serial = [r.vectors for r in tiny.contextual(texts)]
    static_serial = tiny.static(["king", "queen", "unable"])

    def job(index: int) -> tuple[int, np.ndarray, np.ndarray]:
        return index, tiny.contextual([texts[index]])[0].vectors, tiny.static(["king", "queen", "unable"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        for index, vectors, static in pool.map(job, range(len(texts))):
            np.testing.assert_allclose(vectors, serial[index], atol=1e-5)
            np.testing.assert_array_equal(static, static_serial)


def test_a_single_string_is_refused_not_iterated(tiny: Embedder) -> None:
    with pytest.raises(TypeError, match="not one string"):
        tiny.contextual("the king")
    with pytest.raises(TypeError, match="not one string"):
        tiny.static("king")
    with pytest.raises(TypeError, match=r"not one string: \['the king'\] rather than 'the king'"):
        tiny.sentences("the king")


@pytest.mark.slow
def test_default_model_parity_at_every_level(default_bundle: Path, default_model: Path) -> None:
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    embedder = Embedder.load(default_bundle, provider="cpu")
    model = AutoModel.from_pretrained(default_model).eval()
    for text, result in zip(TEXTS, embedder.contextual(TEXTS)):
        words, expected = reference_words(model, default_model, text)
        assert list(result.words) == words
        assert cosine_rows(result.vectors, expected).min() >= 0.99999
    table = model.get_input_embeddings().weight.detach().numpy()
    ids = embedder.tokenizer.backend.encode("embeddings", add_special_tokens=False).ids
    assert len(ids) > 1
    np.testing.assert_allclose(embedder.static(["embeddings"])[0], table[ids].mean(0), rtol=1e-6, atol=1e-7)
    reference = SentenceTransformer(str(default_model), device="cpu").encode(TEXTS)
    ours = embedder.sentences(TEXTS, normalize=True)
    assert cosine_rows(ours, reference).min() >= 0.99999
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_a_table_only_embedder_gives_the_same_static_vectors_without_a_model(tiny_bundle: Path, tiny: Embedder) -> None:
    from bertonnx.errors import OptionError

    table_only = Embedder.table_only(tiny_bundle)
    words = ["king", "Queen", "unable", "embeddings", "apple", "x"]
    for mode in WORD_POOLING_MODES:
        np.testing.assert_array_equal(table_only.static(words, pooling=mode), tiny.static(words, pooling=mode))
    assert table_only.runtime_info().backend == "none"
    with pytest.raises(OptionError, match="holds the static table only"):
        table_only.contextual(["the king is wise"])
    with pytest.raises(OptionError, match="holds the static table only"):
        table_only.sentences(["the king is wise"])
