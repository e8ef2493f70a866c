"""Type-level word vectors against slow references written plainly: a loop over templates and occurrences."""

from __future__ import annotations

import numpy as np
import pytest

from bertonnx import Embedder
from bertonnx.errors import EmptyWordError, InputError, OptionError, UnknownWordError
from bertonnx.type_level.matching import Vocabulary
from bertonnx.type_level.vectors import DEFAULT_TEMPLATES, TypeSums

VOCAB = ["king", "queen", "apple", "Apple", "unable", "u.s.", "music", "zebra"]
CORPUS = [
    "the king is wise and the queen is kind",
    "an apple a day ; the Apple company makes music",
    "the king eats every apple in the kingdom of the u.s. , unable to stop",
    "how much is an apple music account in the u.s.",
    "",
    "the queen and the king rule the kingdom",
    "the king is strong",
] * 3


def reference_templates(embedder: Embedder, word: str, templates: tuple[str, ...], pooling: str) -> np.ndarray:
    """The word in each template, embedded one text at a time, its pieces pooled, averaged."""
    found = []
    for template in templates:
        before, after = template.split("{}")
        left = list(embedder.tokenizer.split([before])[0].words)
        right = list(embedder.tokenizer.split([after])[0].words)
        found.append(embedder.contextual([[*left, word, *right]], pooling=pooling)[0].vectors[len(left)])
    return np.mean(found, axis=0)


def reference_corpus(embedder: Embedder, word: str, corpus: list[str], cap: int) -> tuple[np.ndarray | None, int]:
    """Mean-pooled occurrences of `word` (its run of pre-tokenizer words) in order, up to `cap`, text by text."""
    key = embedder.tokenizer.split([word])[0]
    key_words = [key.ids[key.piece_word == w].tolist() for w in range(int(key.piece_word.max()) + 1)]
    found: list[np.ndarray] = []
    for text in corpus:
        pieces = embedder.tokenizer.split([text])[0]
        if pieces.ids.size == 0:
            continue
        words = [pieces.ids[pieces.piece_word == w].tolist() for w in range(int(pieces.piece_word.max()) + 1)]
        vectors = embedder.contextual([text])[0].vectors  # (W, H) mean of each word's pieces
        for start in range(len(words) - len(key_words) + 1):
            if len(found) == cap:
                break
            if words[start : start + len(key_words)] == key_words:
                lengths = np.array([len(w) for w in key_words], dtype=np.float64)
                run = vectors[start : start + len(key_words)].astype(np.float64)
                found.append((run * lengths[:, None]).sum(axis=0) / lengths.sum())  # the mean over all its pieces
    return (np.mean(found, axis=0) if found else None), len(found)


@pytest.mark.parametrize("pooling", ["mean", "max", "first_last"])
def test_templates_match_the_slow_reference(embedder: Embedder, pooling: str) -> None:
    words = ["king", "apple", "unable", "u.s."]
    found = embedder.type_vectors(words, pooling=pooling)
    assert found.words == tuple(words) and found.vectors.dtype == np.float32
    assert found.counts.tolist() == [len(DEFAULT_TEMPLATES)] * 4 and not found.fallback.any()
    for word, vector in zip(words, found.vectors):
        np.testing.assert_allclose(vector, reference_templates(embedder, word, DEFAULT_TEMPLATES, pooling),
                                   rtol=1e-5, atol=1e-5)


def test_own_templates(embedder: Embedder) -> None:
    templates = ("a {} !", "{} and the band")
    found = embedder.type_vectors(["queen"], templates=templates)
    np.testing.assert_allclose(found.vectors[0], reference_templates(embedder, "queen", templates, "mean"), atol=1e-5)
    with pytest.raises(OptionError, match=r"template 0 .* must hold \{\} exactly once"):
        embedder.type_vectors(["queen"], templates=["no slot"])
    with pytest.raises(OptionError, match="at least one"):
        embedder.type_vectors(["queen"], templates=[])


@pytest.mark.parametrize("cap", [1, 2, 100])
def test_corpus_matches_the_slow_reference_and_falls_back_to_templates(embedder: Embedder, cap: int) -> None:
    """Whole lines, no prior: the plain corpus mean (the method as it was before contexts had a rule)."""
    found = embedder.type_vectors(VOCAB, method="corpus", corpus=iter(CORPUS), max_contexts=cap, context="line",
                                  prior=0)
    for index, word in enumerate(VOCAB):
        expected, count = reference_corpus(embedder, word, CORPUS, cap)
        if expected is None:  # never seen: the templates, flagged
            assert found.fallback[index] and found.counts[index] == len(DEFAULT_TEMPLATES), word
            expected = reference_templates(embedder, word, DEFAULT_TEMPLATES, "mean")
        else:
            assert not found.fallback[index] and found.counts[index] == count, word
        np.testing.assert_allclose(found.vectors[index], expected, rtol=1e-5, atol=1e-5, err_msg=word)
    assert found.fallback[VOCAB.index("zebra")] and not found.fallback[VOCAB.index("u.s.")]
    # the uncased model cannot tell Apple from apple: one word to it, one vector
    np.testing.assert_array_equal(found.vectors[VOCAB.index("Apple")], found.vectors[VOCAB.index("apple")])


def test_the_corpus_is_read_as_a_stream_and_stops_when_every_word_is_full(embedder: Embedder) -> None:
    read: list[int] = []

    def lines() -> object:
        for number in range(100_000):
            read.append(number)
            yield "the king and the queen"

    found = embedder.type_vectors(["king", "queen"], method="corpus", corpus=lines(), max_contexts=3)
    assert found.counts.tolist() == [3, 3] and len(read) < 2_000


def test_postprocessing_centres_and_removes_top_directions(embedder: Embedder) -> None:
    words = ["king", "queen", "apple", "music", "band", "kingdom", "fruit", "company"]
    plain = embedder.type_vectors(words).vectors.astype(np.float64)
    centred = embedder.type_vectors(words, postprocess="center").vectors
    np.testing.assert_allclose(centred, plain - plain.mean(axis=0), atol=1e-5)
    abtt = embedder.type_vectors(words, postprocess="abtt:2").vectors.astype(np.float64)
    rows = plain - plain.mean(axis=0)
    top = np.linalg.svd(rows, full_matrices=False)[2][:2]  # (2, H) top principal directions
    np.testing.assert_allclose(abtt, rows - rows @ top.T @ top, atol=1e-4)
    np.testing.assert_allclose(abtt @ top.T, 0.0, atol=1e-4)
    for bad in ("abtt", "abtt:0", f"abtt:{embedder.dim}", "pca"):
        with pytest.raises(OptionError, match="expected none, center or abtt:D"):
            embedder.type_vectors(words, postprocess=bad)


def test_bad_input(embedder: Embedder) -> None:
    with pytest.raises(InputError, match="word 1 .* holds 2 words; type-level vectors are one word each"):
        embedder.type_vectors(["king", "the queen"])
    with pytest.raises(EmptyWordError, match="word 0 .* has no word pieces"):
        embedder.type_vectors(["  "])
    with pytest.raises(InputError, match="the corpus is empty"):
        embedder.type_vectors(["king"], method="corpus", corpus=[])
    with pytest.raises(OptionError, match="needs corpus"):
        embedder.type_vectors(["king"], method="corpus")
    with pytest.raises(OptionError, match="unknown method"):
        embedder.type_vectors(["king"], method="pca")
    with pytest.raises(TypeError, match="not one string"):
        embedder.type_vectors("king")


def test_unknown_words_follow_the_policy(embedder: Embedder) -> None:
    words = ["king", "ü€"]  # the tiny vocabulary has no piece for these characters
    with pytest.raises(UnknownWordError, match="word 1 .* maps to the unknown token"):
        embedder.type_vectors(words)
    zero = embedder.type_vectors(words, unknown="zero", method="corpus", corpus=CORPUS)
    assert zero.unknown.tolist() == [False, True] and not zero.vectors[1].any() and zero.counts[1] == 0
    unk = embedder.type_vectors(words, unknown="unk", method="corpus", corpus=CORPUS + ["ü€ ü€"])
    # [UNK] words are never matched in a corpus (their pieces would match unrelated words): templates
    assert unk.fallback[1] and unk.counts[1] == len(DEFAULT_TEMPLATES) and unk.vectors[1].any()


def test_a_repeated_word_and_a_postprocessing_that_would_leave_zeros_are_refused(embedder: Embedder) -> None:
    with pytest.raises(InputError, match=r"word 2 \('king'\) repeats word 0; give each word once"):
        embedder.type_vectors(["king", "queen", "king"])
    with pytest.raises(OptionError, match="abtt:3 needs at least 5 distinct words, got 4"):
        embedder.type_vectors(["king", "queen", "apple", "music"], postprocess="abtt:3")
    with pytest.raises(OptionError, match="center needs at least 2 distinct words, got 1"):
        embedder.type_vectors(["king", "KING"], postprocess="center")  # one word to an uncased model


def test_entries_the_model_cannot_tell_apart_share_a_slot(embedder: Embedder) -> None:
    vocabulary = Vocabulary.of(embedder.tokenizer, ["Apple", "apple", "APPLE", "u.s.", "king"])
    assert vocabulary.slot.tolist() == [0, 0, 0, 1, 2] and vocabulary.n_words.tolist() == [1, 4, 1]
    sums = TypeSums(embedder.runner, vocabulary, max_contexts=5)
    assert sums.add_corpus(["apple Apple the u.s. king"]) == 4 and sums.counts.tolist() == [2, 1, 1]
    assert vocabulary.form_slot.tolist() == [0, 1, 2]  # WordPiece spells a word alike anywhere: one form each


def test_a_giant_corpus_line_is_read_in_parts_cut_between_words(embedder: Embedder) -> None:
    """Over LONG_LINE_PIECES pieces a line is read in parts (its states stay small); no word is split, none lost."""
    from bertonnx.tokenize import TextPieces
    from bertonnx.type_level.contexts import LONG_LINE_PIECES, cut_long

    lengths = np.random.default_rng(0).integers(1, 5, size=3000)
    piece_word = np.repeat(np.arange(lengths.size), lengths)
    text = TextPieces(ids=np.arange(piece_word.size, dtype=np.int64), piece_word=piece_word, words=())
    parts = cut_long(text, 100)
    assert all(0 < part.ids.size <= 100 for part in parts)
    np.testing.assert_array_equal(np.concatenate([part.ids for part in parts]), text.ids)
    firsts = np.cumsum([0] + [part.ids.size for part in parts])[1:-1]
    assert all(piece_word[i] != piece_word[i - 1] for i in firsts)  # every cut falls between two words
    line = " ".join(["the king and the queen rule"] * (LONG_LINE_PIECES // 6 + 50))  # ~16.7k pieces, no sentence end
    for context in ("line", "sentence"):
        sums = TypeSums(embedder.runner, Vocabulary.of(embedder.tokenizer, ["king", "queen"]), max_contexts=10**9,
                        context=context)
        assert sums.add_corpus([line]) == 2 * (LONG_LINE_PIECES // 6 + 50)
        assert np.isfinite(sums.sums).all() and sums.counts.tolist() == [LONG_LINE_PIECES // 6 + 50] * 2


@pytest.mark.parametrize("prior", [0.0, 1.0, 5.0, 2.5])
def test_the_prior_blends_the_templates_in_as_k_contexts(embedder: Embedder, prior: float) -> None:
    """v = (corpus sum + k x templates' mean) / (n + k) for a word the corpus saw; the templates for one it did not."""
    found = embedder.type_vectors(VOCAB, method="corpus", corpus=CORPUS, max_contexts=3, context="line",
                                  prior=prior)
    for index, word in enumerate(VOCAB):
        template = reference_templates(embedder, word, DEFAULT_TEMPLATES, "mean").astype(np.float64)
        mean, count = reference_corpus(embedder, word, CORPUS, 3)
        if mean is None:
            expected = template
            assert found.fallback[index] and found.counts[index] == len(DEFAULT_TEMPLATES), word
        else:
            expected = (count * mean + prior * template) / (count + prior)
            assert not found.fallback[index] and found.counts[index] == count, word  # corpus contexts alone
        np.testing.assert_allclose(found.vectors[index], expected, rtol=1e-5, atol=1e-5, err_msg=word)
    assert found.record()["prior"] == prior and found.record()["method"] == "corpus"


def test_a_prior_of_zero_on_lines_is_the_corpus_mean_exactly(embedder: Embedder) -> None:
    """k = 0 adds nothing to the corpus sums: the same bits as the sums divided by the counts."""
    found = embedder.type_vectors(["king", "queen"], method="corpus", corpus=CORPUS, context="line", prior=0)
    sums = TypeSums(embedder.runner, Vocabulary.of(embedder.tokenizer, ["king", "queen"]), context="line")
    sums.add_corpus(CORPUS)
    np.testing.assert_array_equal(found.vectors, (sums.sums / sums.counts[:, None]).astype(np.float32))


def test_bad_prior_and_context(embedder: Embedder) -> None:
    for bad in (-1, float("nan"), float("inf"), "5", True):
        with pytest.raises(OptionError, match="prior must be a number >= 0"):
            embedder.type_vectors(["king"], prior=bad)  # type: ignore[arg-type]
    for bad in ("paragraph", "window", "window:0", "window:x", "window:-2"):
        with pytest.raises(OptionError, match="expected sentence, line or window:N with N >= 1"):
            embedder.type_vectors(["king"], context=bad)


def test_a_byte_level_model_reads_its_templates_as_prose(roberta: Embedder) -> None:
    """The word in "The word is {}." is read as the text "The word is apple." (its space and all), as the corpus
    reads it; an entry that would merge with a template's characters is read as a word of its own there."""
    templates = ("The word is {}.", "{}", "({}) and more", "a {}.b")
    found = roberta.type_vectors(["apple", "king"], templates=templates)
    for index, word in enumerate(["apple", "king"]):
        rows = roberta.contextual([template.replace("{}", word) for template in templates])
        expected = np.mean([row.vectors[list(row.words).index(word)] for row in rows], axis=0)
        np.testing.assert_allclose(found.vectors[index], expected, rtol=1e-5, atol=1e-5, err_msg=word)
    glued = roberta.tokenizer.split(["The word is u.s.."])[0].words
    assert glued[-1] == ".."  # "u.s." + "." merge: the word is read between the template's words
    merged = roberta.type_vectors(["u.s."], templates=["The word is {}."])
    np.testing.assert_allclose(merged.vectors[0], reference_templates(roberta, "u.s.", ("The word is {}.",), "mean"),
                               rtol=1e-5, atol=1e-5)
