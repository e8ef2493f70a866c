"""Embedder input handling: every hostile input gets a clear error or a documented, correct result.

Strings without words, tokens outside the vocabulary and megabyte strings, through
static, contextual and sentences. The same inputs as file lines are in test_jobs_bulk,
damaged bundles in test_bundle, impossible providers in test_backends_onnxruntime.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers.reference import run_alone
from helpers.texts import HOSTILE_ALPHABET, MEGABYTE, SHORT_MESSAGE
from hypothesis import given, settings
from hypothesis import strategies as st

from bertonnx import Embedder, EmptyWordError, UnknownWordError
from bertonnx.batching import plan_windows


def normalized(embedder: Embedder, text: str) -> str:
    """The text as the model's normaliser sees it, whitespace removed."""
    return "".join(embedder.tokenizer.backend.normalizer.normalize_str(text).split())


# -- strings that carry no words ----------------------------------------------


WORDLESS = {
    "empty": "",
    "whitespace": " \t\r\n\u00a0\u3000",
    "NUL bytes": "\x00\x00",
    "control characters": "\x07\x1b\x7f",
    "zero-width characters": "\u200b\u200d\ufeff",
    "lone combining marks": "\u0301\u0308",
}


@pytest.mark.parametrize("text", WORDLESS.values(), ids=WORDLESS.keys())
def test_a_text_without_words(tiny: Embedder, text: str) -> None:
    """Documented: contextual gives no words; sentences gives the vector of [CLS] [SEP]
    (what sentence-transformers gives for ""); a static or pre-split word raises EmptyWordError."""
    result = tiny.contextual([text, "king"])
    assert result[0].words == () and result[0].vectors.shape == (0, tiny.dim)
    assert result[0].spans.shape == (0, 2) and result[0].unknown.shape == (0,)
    assert result[1].words == ("king",)
    np.testing.assert_array_equal(tiny.sentences([text, "king"])[0], tiny.sentences([""])[0])
    with pytest.raises(EmptyWordError, match=r"^word 1 \(.*\) has no word pieces"):
        tiny.static(["king", text])
    with pytest.raises(EmptyWordError, match=r"^text 1: word 0 \(.*\) has no word pieces"):
        tiny.contextual(["king", [text, "queen"]])


def test_a_text_of_only_punctuation_is_a_text_of_punctuation_words(tiny: Embedder) -> None:
    """BERT's pre-tokenizer makes every punctuation mark a word, so such a text is not empty."""
    ascii_marks, unicode_marks = tiny.contextual(["?!...", "«—»"])
    assert ascii_marks.words == ("?", "!", ".", ".", ".") and not ascii_marks.unknown.any()
    assert unicode_marks.words == ("«", "—", "»") and unicode_marks.unknown.all()  # not in the tiny vocabulary
    dot = tiny.table[tiny.tokenizer.backend.token_to_id(".")]
    np.testing.assert_allclose(tiny.static(["..."])[0], dot, rtol=1e-6)  # one word of three pieces


# -- tokens outside the vocabulary --------------------------------------------


OUT_OF_VOCABULARY = {
    "emoji": "🙂",
    "emoji ZWJ sequence": "👩\u200d👩\u200d👧",
    "skin tone": "👍🏽",
    "CJK": "語",
    "Hebrew (RTL)": "שלום",
    "Arabic (RTL)": "مرحبا",
}


@pytest.mark.parametrize("word", OUT_OF_VOCABULARY.values(), ids=OUT_OF_VOCABULARY.keys())
def test_words_outside_the_vocabulary(tiny: Embedder, word: str) -> None:
    with pytest.raises(UnknownWordError, match=r"^word 1 \(.*\) maps to the unknown token"):
        tiny.static(["king", word])
    unk_row = tiny.table[tiny.tokenizer.unk_id]
    np.testing.assert_array_equal(tiny.static([word], unknown="unk")[0], unk_row)
    assert not tiny.static([word], unknown="zero").any()
    result = tiny.contextual([f"the {word} king"])[0]
    assert result.words == ("the", word, "king")
    assert result.unknown.tolist() == [False, True, False]
    assert np.isfinite(result.vectors).all()


NOISY = {
    "NUL inside": ("ki\x00ng", "king"),
    "control character inside": ("ki\x07ng", "king"),
    "zero-width space inside": ("qu\u200been", "queen"),
    "byte-order mark before": ("\ufeffqueen", "queen"),
    "combining accent": ("ki\u0301ng", "king"),
    "upper case": ("KING", "king"),
}


@pytest.mark.parametrize("noisy,clean", NOISY.values(), ids=NOISY.keys())
def test_characters_the_normaliser_drops_do_not_change_the_vector(tiny: Embedder, noisy: str, clean: str) -> None:
    """BERT's normaliser deletes control and format characters and accents: the word stays the word.
    Its text in `words` is still the input's own substring."""
    np.testing.assert_array_equal(tiny.static([noisy]), tiny.static([clean]))
    noisy_result, clean_result = tiny.contextual([f"the {noisy} rule", f"the {clean} rule"])
    assert len(noisy_result.words) == 3 and noisy_result.words[1] in noisy
    assert normalized(tiny, noisy_result.words[1]) == clean
    np.testing.assert_array_equal(noisy_result.vectors, clean_result.vectors)


@settings(max_examples=120, deadline=None, derandomize=True)
@given(text=st.text(alphabet=HOSTILE_ALPHABET, max_size=40) | st.text(max_size=30))
def test_words_of_any_text_are_its_own_pieces_in_order(tiny: Embedder, text: str) -> None:
    """Whatever the script or control characters: the words are substrings of the text, in
    order, together holding exactly what the normaliser keeps; spans tile the pieces; and a
    word is flagged unknown exactly when one of its pieces is [UNK]."""
    result = tiny.contextual([text])[0]
    position = 0
    for word in result.words:
        found = text.find(word, position)
        assert word and found >= position, (text, result.words)
        position = found + len(word)
    assert normalized(tiny, text) == "".join(normalized(tiny, word) for word in result.words)
    pieces = tiny.tokenizer.split([text])[0]
    starts, ends = result.spans.T
    assert starts.tolist() == pieces.word_starts.tolist()
    assert ends.tolist() == starts[1:].tolist() + ([pieces.ids.size] if starts.size else [])
    has_unk = [bool((pieces.ids[a:b] == tiny.tokenizer.unk_id).any()) for a, b in result.spans.tolist()]
    assert result.unknown.tolist() == has_unk
    assert result.vectors.shape == (len(result.words), tiny.dim) and np.isfinite(result.vectors).all()


# -- megabyte strings ---------------------------------------------------------


def test_a_megabyte_word_is_one_unknown_word(tiny: Embedder) -> None:
    """WordPiece gives [UNK] for a word over 100 characters: static raises (unknown="error"),
    with a message that does not quote the megabyte; contextual flags it."""
    word = "a" * MEGABYTE
    with pytest.raises(UnknownWordError, match=r"word 1 .*\(1048576 characters\)") as caught:
        tiny.static(["king", word])
    assert len(str(caught.value)) < SHORT_MESSAGE
    np.testing.assert_array_equal(tiny.static([word], unknown="unk")[0], tiny.table[tiny.tokenizer.unk_id])
    with pytest.raises(EmptyWordError) as blank:
        tiny.static([" " * MEGABYTE])
    assert len(str(blank.value)) < SHORT_MESSAGE
    result = tiny.contextual([word])[0]
    assert result.words == (word,) and result.unknown.tolist() == [True]
    assert tiny.contextual([" " * MEGABYTE])[0].words == ()

@pytest.mark.slow

def test_a_megabyte_text_goes_through_windows(tiny: Embedder) -> None:
    """About 200k words (258k pieces, 8.4k windows): every word comes back, each with the vector
    of its pieces in the window that was chosen for it, run on its own. ~3 s each for
    contextual and sentences on one core here: model time, linear in the length."""
    sentence = "the king and queen rule the kingdom , unable embedding . "
    text = (sentence * (MEGABYTE // len(sentence) + 1))[:MEGABYTE]
    result = tiny.contextual([text])[0]
    assert result.words == tuple(text.split())
    assert np.isfinite(result.vectors).all()
    pieces = tiny.tokenizer.split([text])[0]
    plan = plan_windows(pieces.piece_word, tiny.tokenizer.window)
    for word in (0, 1, len(result.words) // 2, len(result.words) - 1):
        start, end = result.spans[word]
        window = int(plan.piece_window[start])
        first, last = int(plan.starts[window]), int(plan.ends[window])
        hidden = run_alone(tiny, pieces.ids[first:last])
        offset = len(tiny.tokenizer.prefix_ids) - first
        np.testing.assert_allclose(result.vectors[word], hidden[start + offset : end + offset].mean(0), atol=1e-5)
    sentence_vector = tiny.sentences([text])
    assert sentence_vector.shape == (1, tiny.dim) and np.isfinite(sentence_vector).all()
