"""Finding vocabulary words in a corpus on a byte-level BPE model (RoBERTa), where a word's pieces depend on what
stands before it: a line's start, a space, a bracket."""

from __future__ import annotations

import numpy as np
import pytest

from bertonnx import Embedder
from bertonnx.type_level.matching import Matcher, Vocabulary

LINES = ["apple is red", "the apple is red", "(apple) is red", "an  apple", "the king\tapple", "pineapple is not"]


def reference(embedder: Embedder, lines: list[str], word: str) -> tuple[np.ndarray, int]:
    """Mean of the contextual vectors of every word of `lines` that reads exactly `word`, each line embedded whole."""
    found = [row.vectors[i] for row in embedder.contextual(lines) for i, text in enumerate(row.words) if text == word]
    return np.mean(found, axis=0), len(found)


def test_a_word_is_found_at_a_line_start_after_a_space_and_after_a_bracket(roberta: Embedder) -> None:
    vocabulary = Vocabulary.of(roberta.tokenizer, ["apple", "king", "red"])
    first = [key for key, slot in zip(vocabulary.forms, vocabulary.form_slot.tolist()) if slot == 0]
    assert len(first) == 2  # "apple" and "Ġapple": the tokenizer, not a rule about "Ġ", says there are two
    found = Matcher(vocabulary).find(roberta.tokenizer.split(LINES))
    apples = found[found[:, 0] == 0]
    assert apples[:, 1].tolist() == [0, 1, 2, 3, 4]  # every line but "pineapple", once each
    vectors = roberta.type_vectors(["apple", "king"], method="corpus", corpus=LINES, context="line", prior=0)
    expected, count = reference(roberta, LINES, "apple")
    assert vectors.counts.tolist()[0] == count == 5
    np.testing.assert_allclose(vectors.vectors[0], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("context", ["sentence", "line"])
def test_a_word_starting_a_sentence_and_inside_one_are_one_word(roberta: Embedder, context: str) -> None:
    lines = ["The king is here. apple pie is red.", "I ate apple pie."]
    found = roberta.type_vectors(["apple", "pie"], method="corpus", corpus=lines, context=context, prior=0)
    assert found.counts.tolist() == [2, 2] and not found.fallback.any()


def test_wordpiece_has_one_form_per_word(embedder: Embedder) -> None:
    vocabulary = Vocabulary.of(embedder.tokenizer, ["apple", "u.s.", "king", "(king"])
    assert vocabulary.form_slot.tolist() == [0, 1, 2, 3]
    assert vocabulary.n_words.tolist() == [1, 4, 1, 2]
