"""One load, two uses: under `fastest`, sentence vectors may run on another backend than word vectors, each held
to its own gate (word gate for words and tokens, sentence gate for mean-pooled sentence vectors)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bertonnx import Embedder
from bertonnx.backends import Opened, measure, open_backend
from bertonnx.backends.choose import Choice, Machine, this_machine
from bertonnx.backends.measure import SENTENCE_RECIPE, Timings, Trial
from bertonnx.bundle import CONTEXTUAL_OUTPUT, load_bundle
from bertonnx.options import LoadOptions
from bertonnx.results import Serving
from bertonnx.tokenize import Tokenizer

SSE = frozenset({"sse4_2", "avx"})  # no int8 kernels at all
AVX2 = frozenset({"avx2", "fma"})
ZEN4 = frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"})
XEON = frozenset({"avx2", "avx512f", "avx512_vnni", "amx_bf16", "amx_int8"})
ALL = frozenset({"onnxruntime", "openvino", "nncf"})
TEXTS = ["the king is wise .", "she sat on the river bank and watched the boats", "apple"]


def machine(flags: frozenset[str], installed: frozenset[str] = ALL) -> Machine:
    return Machine(installed=installed, ort_providers=("CPUExecutionProvider",), cpu_flags=flags)


@pytest.mark.parametrize(
    "policy,flags,installed,split",
    [
        ("fastest", ZEN4, ALL, True),
        ("fastest", XEON, ALL, True),
        ("fastest", AVX2, ALL, True),  # int8 with 7-bit weights is a candidate there: so is its sentence recipe
        ("fastest", SSE, ALL, False),  # no int8 kernels: nothing to split
        ("fastest", ZEN4, frozenset({"onnxruntime", "openvino"}), False),  # no NNCF to quantise with
        ("auto", ZEN4, ALL, False),  # auto stays one faithful backend, int8 or not
    ],
)
def test_fastest_splits_by_use_only_where_int8_is_a_candidate(
    policy: str, flags: frozenset[str], installed: frozenset[str], split: bool
) -> None:
    pairs = measure.candidates(policy, "fp32", machine(flags, installed), int8_faithful=True)
    keys = measure.by_use(policy, pairs)
    assert (SENTENCE_RECIPE in keys) is split
    assert [key[:2] for key in keys if key[2] == "words"] == pairs  # every word candidate stays, in its order


def test_a_backend_named_without_int8_does_not_split() -> None:
    assert measure.by_use("fastest", [("onnxruntime", "fp32")]) == [("onnxruntime", "fp32", "words")]


def test_sentences_go_to_the_fastest_candidate_that_passes_their_gate() -> None:
    bf16 = Trial("openvino", "bf16", 12.0, 120.0)
    words = Trial("openvino", "int8", 10.0, 100.0)
    sentences = Trial("openvino", "int8", 8.0, 80.0, None, "sentences")
    assert words.name == "openvino int8" and sentences.name == "openvino int8 (sentences recipe)"
    assert measure.fastest_trial([bf16, words, sentences]).key == SENTENCE_RECIPE
    # the sentence recipe under its gate is left out by the caller: the word winner serves sentences too
    assert measure.fastest_trial([bf16, words]).key == ("openvino", "int8", "words")
    near = Trial("openvino", "int8", 9.9, 99.0, None, "sentences")  # 1 % faster: a near-tie opens no second backend
    assert measure.fastest_trial([words, near]).key == ("openvino", "int8", "words")


@pytest.mark.parametrize("sentence_winner,winner_recipe", [(SENTENCE_RECIPE, "words"), (None, "words"),
                                                           (SENTENCE_RECIPE, "sentences")])
def test_the_winners_of_each_use_survive_the_cache(sentence_winner: tuple[str, str, str] | None,
                                                   winner_recipe: str) -> None:
    trials = (Trial("openvino", "int8", 10.0, 100.0), Trial("openvino", "int8", 8.0, 80.0, None, "sentences"))
    timings = Timings("fastest", 2, trials, ("openvino", "int8"), "2026-12-06T16:00:00+00:00", sentence_winner,
                      winner_recipe)
    assert Timings.from_dict(json.loads(json.dumps(timings.to_dict()))) == timings
    assert timings.word_winner == ("openvino", "int8", winner_recipe)


@pytest.fixture(scope="module")
def two_backends(tiny_bundle: Path) -> tuple[Embedder, Embedder, Embedder]:
    """Embedders on ONNX Runtime alone, OpenVINO alone, and ONNX Runtime for words with OpenVINO for sentences."""
    pytest.importorskip("openvino")
    from bertonnx.backends.onnxruntime import OnnxRuntimeBackend
    from bertonnx.backends.openvino import OpenVinoBackend

    bundle = load_bundle(tiny_bundle)
    tokenizer = Tokenizer.from_file(bundle.tokenizer_path, bundle.max_length)
    ort = OnnxRuntimeBackend(bundle.model_path, "cpu", 1)
    ov = OpenVinoBackend(bundle.model_path, CONTEXTUAL_OUTPUT, "fp32", 1)
    words = Opened(ort, Choice("onnxruntime", "fp32", "test"), None)
    sentences = Opened(ov, Choice("openvino", "fp32", "test"), None)
    split = Embedder(bundle, ort, tokenizer, bundle.load_table(), opened=Opened(
        ort, words.choice, None, sentences=sentences))
    return (Embedder(bundle, ort, tokenizer, bundle.load_table(), opened=words),
            Embedder(bundle, ov, tokenizer, bundle.load_table(), opened=sentences), split)


def test_sentence_vectors_run_on_the_sentence_backend_and_words_on_the_word_backend(
    two_backends: tuple[Embedder, Embedder, Embedder],
) -> None:
    ort, ov, split = two_backends
    assert not np.array_equal(ort.sentences(TEXTS), ov.sentences(TEXTS)), "the two backends must differ to tell"
    assert np.array_equal(split.sentences(TEXTS), ov.sentences(TEXTS))
    assert np.array_equal(split.sentences(TEXTS, pooling="cls"), ov.sentences(TEXTS, pooling="cls"))
    for found, expected in zip(split.contextual(TEXTS), ort.contextual(TEXTS)):
        assert np.array_equal(found.vectors, expected.vectors)


def test_info_says_which_backend_serves_each_use(two_backends: tuple[Embedder, Embedder, Embedder]) -> None:
    ort, _, split = two_backends
    serves = split.runtime_info().serves
    assert (serves["words"].backend, serves["sentences"].backend) == ("onnxruntime", "openvino")
    plain = ort.runtime_info().serves
    assert plain["words"] == plain["sentences"] and plain["words"].backend == "onnxruntime"
    as_json = json.loads(json.dumps(split.runtime()))
    assert as_json["serves"]["sentences"] == {"backend": "openvino", "precision": "fp32", "int8_recipe": None,
                                              "int8_recipe_kind": None, "fidelity": None}


def test_a_summary_line_names_the_backend_precision_and_recipe_kind() -> None:
    assert Serving("openvino", "int8", "stdlib-prose-300/...", None, "sentences").label == (
        "openvino int8, sentences recipe")
    assert Serving("onnxruntime", "fp32", None, None).label == "onnxruntime fp32"


@pytest.mark.slow  # quantises the tiny model twice with NNCF (word and sentence recipes), then times five candidates
@pytest.mark.skipif(not {"openvino", "nncf"} <= this_machine().installed, reason="int8 needs openvino and nncf")
@pytest.mark.parametrize("min_fidelity", [0.0, 1.0])
def test_fastest_opens_a_sentence_backend_only_where_it_wins_its_gate(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, min_fidelity: float
) -> None:
    """With every gate at 0 the sentence recipe is timed and, where fastest, serves sentences from a backend of its
    own; at 1.0 it is refused (no quantised graph reaches cosine 1) and the word backend serves both uses. A second
    load reads the verdict, sentence server included, without timing again."""
    from bertonnx.backends.quantize import int8_recipe

    monkeypatch.setenv("BERTONNX_HOME", str(tmp_path / "home"))
    bundle = load_bundle(tiny_bundle)
    tokenizer = Tokenizer.from_file(bundle.tokenizer_path, bundle.max_length)
    vnni = machine(this_machine().cpu_flags | {"avx512_vnni"}, this_machine().installed)
    options = LoadOptions(precision="fastest", threads=1, min_fidelity=min_fidelity)
    opened = open_backend(bundle, tokenizer, options, vnni)
    timings = opened.timings
    assert timings is not None and timings.sentence_winner is not None and opened.sentences is not None
    recipe = next(t for t in timings.trials if t.key == SENTENCE_RECIPE)
    if min_fidelity == 1.0:
        assert recipe.refused and "under the gate 1" in recipe.refused
        assert timings.sentence_winner != SENTENCE_RECIPE and opened.sentences.backend is opened.backend
    else:
        assert recipe.score is not None
        apart = timings.sentence_winner != (*timings.winner, "words")
        assert (opened.sentences.backend is not opened.backend) is apart
        if timings.sentence_winner == SENTENCE_RECIPE:
            details = opened.sentences.backend.info.details
            assert details["int8_recipe"] == int8_recipe(vnni.cpu_flags, "sentences").name
            assert opened.sentences.fidelity is not None
            assert opened.sentences.fidelity.gate.metric == "sentence_min_cosine"
            embedder = Embedder(bundle, opened.backend, tokenizer, bundle.load_table(), opened=opened)
            assert embedder.runtime_info().serves["sentences"].label == "openvino int8, sentences recipe"

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("timed again")

    monkeypatch.setattr(measure, "time_candidates", refuse)
    again = open_backend(bundle, tokenizer, options, vnni)
    assert again.timings is not None and again.timings.sentence_winner == timings.sentence_winner
    assert again.sentences is not None
    assert (again.sentences.backend is again.backend) is (opened.sentences.backend is opened.backend)


def _sentence_recipe_fastest(backends: dict[tuple[str, str, str], object], *args: object,
                             **kwargs: object) -> dict[tuple[str, str, str], tuple[float, float]]:
    """time_candidates' figures where int8's sentence recipe is ten times faster than every other candidate."""
    return {key: (1.0, 1.0) if key == SENTENCE_RECIPE else (10.0, 10.0) for key in backends}


def _int8_machine() -> Machine:
    return machine(this_machine().cpu_flags | {"avx512_vnni"}, this_machine().installed)


@pytest.mark.slow  # quantises the tiny model with NNCF, both recipes
@pytest.mark.skipif(not {"openvino", "nncf"} <= this_machine().installed, reason="int8 needs openvino and nncf")
def test_a_recipe_that_passes_the_word_gate_serves_words_where_it_is_fastest(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each use goes to the fastest candidate that passes its gate, whatever use a recipe was made for: here the
    sentence recipe serves both, one backend; the verdict, its word recipe included, survives the cache, and
    workers opened from the resolved options run it too."""
    monkeypatch.setenv("BERTONNX_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(measure, "time_candidates", _sentence_recipe_fastest)
    bundle = load_bundle(tiny_bundle)
    tokenizer = Tokenizer.from_file(bundle.tokenizer_path, bundle.max_length)
    options = LoadOptions(precision="fastest", threads=1, min_fidelity=0.0)  # every gate passes
    opened = open_backend(bundle, tokenizer, options, _int8_machine())
    assert opened.choice.recipe == "sentences" and opened.timings is not None
    assert opened.timings.word_winner == SENTENCE_RECIPE
    assert opened.fidelity is not None and opened.fidelity.gate.metric == "word_mean_cosine"  # held to the word gate
    assert opened.sentences is not None and opened.sentences.backend is opened.backend  # one backend, both uses
    embedder = Embedder(bundle, opened.backend, tokenizer, bundle.load_table(), opened=opened)
    assert embedder.runtime_info().serves["words"].label == "openvino int8, sentences recipe"

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("timed again")

    monkeypatch.setattr(measure, "time_candidates", refuse)
    again = open_backend(bundle, tokenizer, options, _int8_machine())
    assert again.choice.recipe == "sentences" and again.sentences is not None
    assert again.sentences.backend is again.backend

    pinned = embedder.resolved(options)
    assert (pinned.precision, pinned.words_recipe) == ("int8", "sentences")
    opened_worker = open_backend(bundle, tokenizer, pinned, _int8_machine())
    worker = Embedder(bundle, opened_worker.backend, tokenizer, bundle.load_table(), opened=opened_worker)
    for found, expected in zip(worker.contextual(TEXTS), embedder.contextual(TEXTS)):
        assert np.array_equal(found.vectors, expected.vectors)
    assert np.array_equal(worker.sentences(TEXTS), embedder.sentences(TEXTS))


@pytest.mark.slow  # quantises the tiny model with NNCF, both recipes
@pytest.mark.skipif(not {"openvino", "nncf"} <= this_machine().installed, reason="int8 needs openvino and nncf")
def test_a_recipe_under_the_word_gate_never_serves_words_however_fast(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bertonnx.backends import gate
    from bertonnx.fidelity import GATES, Gate

    monkeypatch.setenv("BERTONNX_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(measure, "time_candidates", _sentence_recipe_fastest)
    monkeypatch.setitem(GATES, "int8", Gate("word_mean_cosine", 1.01))  # no int8 recipe passes the word gate
    monkeypatch.setattr(gate, "SENTENCE_GATE", Gate("sentence_min_cosine", 0.0))  # every one the sentence gate
    bundle = load_bundle(tiny_bundle)
    tokenizer = Tokenizer.from_file(bundle.tokenizer_path, bundle.max_length)
    opened = open_backend(bundle, tokenizer, LoadOptions(precision="fastest", threads=1), _int8_machine())
    assert opened.choice.precision != "int8" and opened.timings is not None
    assert opened.timings.sentence_winner == SENTENCE_RECIPE  # the fastest serves what its gate allows: sentences
    assert opened.sentences is not None and opened.sentences.backend is not opened.backend


def test_a_words_recipe_that_is_no_recipe_is_one_clear_error(tiny_bundle: Path) -> None:
    from bertonnx.errors import OptionError

    with pytest.raises(OptionError, match="words_recipe must be one of words, sentences"):
        Embedder.load(tiny_bundle, LoadOptions(backend="onnxruntime", precision="fp32", words_recipe="tokens"))


def test_a_jobs_fingerprint_names_a_sentence_backend_of_its_own(
    two_backends: tuple[Embedder, Embedder, Embedder],
) -> None:
    """A resumed job must not mix vectors of two sentence backends; a job without a split keeps its old fingerprint."""
    from bertonnx.jobs.fingerprints import runtime_fingerprint

    ort, _, split = two_backends
    assert "sentences" not in runtime_fingerprint(ort)
    assert runtime_fingerprint(split) == runtime_fingerprint(ort) | {"sentences": ["openvino", "fp32", None]}


def test_workers_opened_from_resolved_options_serve_each_use_as_the_split_load_did(
    two_backends: tuple[Embedder, Embedder, Embedder], tiny_bundle: Path,
) -> None:
    """Ray and type-level workers open `Embedder.resolved(...)`: a split load's sentence server travels with it."""
    ort, ov, split = two_backends
    pinned = split.resolved(LoadOptions(precision="fastest", threads=1))
    assert (pinned.backend, pinned.precision, pinned.sentences_on) == ("onnxruntime", "fp32", "openvino fp32 words")
    assert ort.resolved(LoadOptions(threads=1)).sentences_on is None  # no split: nothing pinned
    worker = Embedder.load(tiny_bundle, pinned)
    serves = worker.runtime_info().serves
    assert (serves["words"].backend, serves["sentences"].backend) == ("onnxruntime", "openvino")
    assert np.array_equal(worker.sentences(TEXTS), ov.sentences(TEXTS))
    for found, expected in zip(worker.contextual(TEXTS), ort.contextual(TEXTS)):
        assert np.array_equal(found.vectors, expected.vectors)


@pytest.mark.parametrize("pin", ["openvino int8", "openvino int4 sentences", "", "vulkan fp32 words",
                                 "auto fp32 words", "openvino fastest words", "openvino int8 tokens"])
def test_a_malformed_sentence_pin_is_one_clear_error(tiny_bundle: Path, pin: str) -> None:
    from bertonnx.errors import OptionError

    with pytest.raises(OptionError, match="BACKEND PRECISION RECIPE"):
        Embedder.load(tiny_bundle, LoadOptions(backend="onnxruntime", precision="fp32", sentences_on=pin))
