"""Contexts of corpus occurrences: the sentence rule on the tokenizer's words, windows, and type-level vectors read
in them against a slow reference that embeds each sentence (or window) as a text of its own."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.models import tiny_byte_level_bpe, tiny_wordpiece

from bertonnx import Embedder
from bertonnx.tokenize import Tokenizer
from bertonnx.type_level.contexts import parse_context, sentence_ends, word_spans

# paragraphs, each a list of the sentences the rule must find in it
PARAGRAPHS = [
    ["The king is wise.", "The queen is kind!", "An apple a day?"],
    ["The king of the u.s. eats every apple.", "Mr. King and the queen rule the kingdom..."],
    ['"The queen is music!"', "The band is great."],
    ["How much is an apple music account, e.g. in the u.s. today?", "The king is strong (and wise)."],
    ["pi is 3.14 today.", "the king eats (an apple.)", "then the queen rules"],
    ["no end mark here and the king"],
    ["the king!?", "the queen\u2026", "the apple"],
]
VOCAB = ["king", "queen", "apple", "u.s.", "music", "zebra"]


def sentences_of(tokenizer: Tokenizer, text: str) -> list[str]:
    pieces = tokenizer.split([text])[0]
    spans = word_spans(text, pieces.words)
    ends = sentence_ends(text, pieces.words, spans)
    starts = [0] + (ends[:-1] + 1).tolist()
    return [text[spans[a, 0] : spans[b, 1]].strip() for a, b in zip(starts, ends.tolist())]


@pytest.mark.parametrize("tokenizer", [tiny_wordpiece(), tiny_wordpiece(lowercase=False), tiny_byte_level_bpe()],
                         ids=["uncased", "cased", "byte-level-bpe"])
@pytest.mark.parametrize("paragraph", PARAGRAPHS, ids=range(len(PARAGRAPHS)))
def test_the_sentence_rule_cuts_where_the_sentences_end(tokenizer: object, paragraph: list[str]) -> None:
    split = Tokenizer(tokenizer, 64)  # type: ignore[arg-type]
    assert sentences_of(split, " ".join(paragraph)) == paragraph
    assert sentences_of(split, "  ".join(paragraph) + " ") == paragraph  # more spaces change nothing
    for sentence in paragraph:
        assert sentences_of(split, sentence) == [sentence]


def test_context_options_parse() -> None:
    assert parse_context("window:3").spec == "window:3" and parse_context("window:3").words == 3
    assert parse_context("sentence").kind == "sentence" and parse_context("line").spec == "line"


def reference(embedder: Embedder, texts: list[str], word: str, cap: int, window: int | None = None) -> np.ndarray:
    """Mean of `word`'s first `cap` occurrences (one word to the model), each embedded in `texts[i]` alone, or in
    the `window` words either side of it in that text, as a list of words."""
    key = embedder.tokenizer.split([word])[0].ids.tolist()
    found = []
    for text in texts:
        pieces = embedder.tokenizer.split([text])[0]
        words = [pieces.ids[pieces.piece_word == w].tolist() for w in range(len(pieces.words))]
        for index, pieces_of in enumerate(words):
            if pieces_of != key or len(found) == cap:
                continue
            if window is None:
                found.append(embedder.contextual([text])[0].vectors[index])
            else:
                low = max(0, index - window)
                context = list(pieces.words[low : index + window + 1])
                found.append(embedder.contextual([context])[0].vectors[index - low])
    return np.mean(found, axis=0)


@pytest.mark.parametrize("context,window", [("sentence", None), ("window:2", 2)])
def test_each_occurrence_is_read_in_its_own_sentence_or_window(embedder: Embedder, context: str,
                                                               window: int | None) -> None:
    lines = [" ".join(paragraph) for paragraph in PARAGRAPHS]
    sentences = [sentence for paragraph in PARAGRAPHS for sentence in paragraph]
    words = ["king", "queen", "apple", "music"]
    found = embedder.type_vectors(words, method="corpus", corpus=lines, context=context, prior=0, max_contexts=4)
    for index, word in enumerate(words):
        np.testing.assert_allclose(found.vectors[index], reference(embedder, sentences, word, 4, window),
                                   rtol=1e-5, atol=1e-5, err_msg=word)
    lines_found = embedder.type_vectors(words, method="corpus", corpus=lines, context="line", prior=0, max_contexts=4)
    assert found.counts.tolist() == lines_found.counts.tolist()  # the same occurrences, read in less context
    assert not np.allclose(found.vectors, lines_found.vectors, atol=1e-3)


@pytest.mark.parametrize("context", ["sentence", "window:3"])
@pytest.mark.parametrize("model", ["embedder", "roberta"])
def test_a_paragraph_a_line_gives_what_a_sentence_a_line_gives(request: pytest.FixtureRequest, model: str,
                                                               context: str) -> None:
    embedder: Embedder = request.getfixturevalue(model)
    paragraphs = [" ".join(paragraph) for paragraph in PARAGRAPHS] * 3
    sentences = [sentence for paragraph in PARAGRAPHS for sentence in paragraph] * 3
    for prior in (0, 5):
        a = embedder.type_vectors(VOCAB, method="corpus", corpus=paragraphs, context=context, prior=prior,
                                  max_contexts=7)
        b = embedder.type_vectors(VOCAB, method="corpus", corpus=sentences, context=context, prior=prior,
                                  max_contexts=7)
        assert a.counts.tolist() == b.counts.tolist() and a.fallback.tolist() == b.fallback.tolist()
        assert a.counts[VOCAB.index("king")] == 7
        np.testing.assert_allclose(a.vectors, b.vectors, rtol=0, atol=1e-6)  # up to batching's float order


def test_a_window_stays_within_the_model_length(embedder: Embedder) -> None:
    """A window wider than the model's window of pieces shrinks until it fits: the model reads it in one run."""
    line = " ".join(["the kingdom rules every day"] * 40) + " the king " + " ".join(["a day of music"] * 40)
    room = embedder.tokenizer.window
    assert len(embedder.tokenizer.split([line])[0].ids) > 3 * room
    wide = embedder.type_vectors(["king"], method="corpus", corpus=[line], context="window:1000", prior=0)
    pieces = embedder.tokenizer.split([line])[0]
    at = pieces.words.index("king")
    # the widest symmetric window of words around it that fits, as the rule picks it
    for n in range(1000, -1, -1):
        low, high = max(0, at - n), min(len(pieces.words), at + 1 + n)
        if int(np.isin(pieces.piece_word, np.arange(low, high)).sum()) <= room:
            break
    expected = embedder.contextual([list(pieces.words[low:high])])[0].vectors[at - low]
    np.testing.assert_allclose(wide.vectors[0], expected, rtol=1e-5, atol=1e-5)
