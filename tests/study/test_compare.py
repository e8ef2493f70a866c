"""The static-versus-contextual study against transformers, its outputs, and its errors."""

from __future__ import annotations

import functools
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import typer
from helpers.cli import choices_of
from helpers.reference import pool_block
from typer.testing import CliRunner

from bertonnx import Embedder
from bertonnx.cli.app import app
from bertonnx.defaults import DEFAULT_BUNDLE_NAME
from bertonnx.options import PROVIDERS, WORD_POOLING_MODES
from bertonnx.study import DEFAULT_CONTEXTS, METRICS, StudyResult, check_contexts, match_word, run_study
from bertonnx.study.files import load_contexts, write_outputs
from bertonnx.study.plots import color_range
from bertonnx.type_level import TypeLevelOptions

# Words of several pieces in the tiny vocabulary (play ##ing, un ##able), capitals
# and punctuation next to them, and a word that occurs twice (the first counts).
PIECES_CONTEXTS = {
    "playing": ["Playing, the king is wise.", "the band is playing music."],
    "unable": ["the queen is unable to rule.", "Unable!"],
    "king": ["the king and the king.", "a king eats apple every day."],
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def cli() -> typer.Typer:
    """The real `bertonnx` app, in which `compare` is registered."""
    return app


def reference_vectors(model, folder: Path, contexts: dict[str, list[str]], mode: str) -> list[np.ndarray]:
    """transformers on its own: the word found by a regex, its pieces by character offsets.

    Returns:
        [static (W, H), context 1 (W, H), ...].
    """
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    table = model.get_input_embeddings().weight.detach().numpy()  # (V, H)
    pool = functools.partial(pool_block, mode=mode)
    words = list(contexts)
    kinds = [np.array([pool(table[tokenizer(w, add_special_tokens=False).input_ids]) for w in words])]
    for k in range(len(contexts[words[0]])):
        rows = []
        for word in words:
            sentence = contexts[word][k]
            found = re.search(rf"(?<!\w){re.escape(word)}(?!\w)", sentence, flags=re.IGNORECASE)
            assert found is not None
            encoding = tokenizer(sentence, return_tensors="pt", return_offsets_mapping=True)
            offsets = encoding.pop("offset_mapping")[0].tolist()
            with torch.inference_mode():
                hidden = model(**encoding).last_hidden_state[0].numpy()  # (T, H)
            inside = [i for i, (a, b) in enumerate(offsets) if b > a and found.start() <= a and b <= found.end()]
            rows.append(pool(hidden[inside]))
        kinds.append(np.array(rows))
    return kinds


def assert_matches(result: StudyResult, expected: list[np.ndarray], atol: float = 1e-4) -> None:
    """Vectors, both matrices and the analogy, each computed the obvious way."""
    assert len(result.panels) == len(expected)
    for panel, vectors in zip(result.panels, expected):
        np.testing.assert_allclose(panel.vectors, vectors, atol=atol, err_msg=panel.kind)
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        np.testing.assert_allclose(panel.cosine, unit @ unit.T, atol=atol, err_msg=panel.kind)
        for i, j in np.ndindex(panel.euclidean.shape):
            distance = np.linalg.norm(vectors[i].astype(np.float64) - vectors[j])
            assert panel.euclidean[i, j] == pytest.approx(distance, rel=1e-4, abs=atol), (panel.kind, i, j)
        if panel.analogy is not None:
            index = {word: n for n, word in enumerate(result.words)}
            royal = vectors[index["queen"]] - vectors[index["king"]]
            gender = vectors[index["woman"]] - vectors[index["man"]]
            assert panel.analogy.gap == pytest.approx(np.linalg.norm(royal - gender), rel=1e-4, abs=atol)
            cosine = royal @ gender / np.linalg.norm(royal) / np.linalg.norm(gender)
            assert panel.analogy.cosine == pytest.approx(cosine, abs=1e-3)


def test_seed_study_matches_transformers(tiny: Embedder, tiny_torch, tiny_model: Path) -> None:
    result = run_study(tiny, DEFAULT_CONTEXTS)
    assert result.words == ("king", "queen", "man", "woman", "apple")
    assert result.kinds == ("static", "context 1", "context 2")
    assert result.panels[2].sentences[4] == "How much is an Apple music account?"
    assert all(panel.analogy is not None for panel in result.panels)
    assert_matches(result, reference_vectors(tiny_torch, tiny_model, DEFAULT_CONTEXTS, "mean"))


@pytest.mark.parametrize("mode", WORD_POOLING_MODES)
def test_words_of_several_pieces_match_transformers(tiny: Embedder, tiny_torch, tiny_model: Path, mode: str) -> None:
    result = run_study(tiny, PIECES_CONTEXTS, pooling=mode)
    assert_matches(result, reference_vectors(tiny_torch, tiny_model, PIECES_CONTEXTS, mode))
    assert all(panel.analogy is None for panel in result.panels)


def test_first_occurrence_counts(tiny: Embedder) -> None:
    result = run_study(tiny, PIECES_CONTEXTS)
    found = tiny.contextual(["the king and the king."])[0]
    assert found.words == ("the", "king", "and", "the", "king", ".")
    king = result.words.index("king")
    np.testing.assert_array_equal(result.panels[1].vectors[king], found.vectors[1])
    assert not np.allclose(found.vectors[1], found.vectors[4])


def test_across_contexts_compares_each_word_with_itself(tiny: Embedder) -> None:
    result = run_study(tiny, DEFAULT_CONTEXTS)
    cosine = result.across_contexts("cosine")  # (W, K, K)
    assert cosine.shape == (5, 2, 2)
    first, second = result.panels[1].vectors[4], result.panels[2].vectors[4]  # apple: fruit, company
    assert cosine[4, 0, 1] == pytest.approx(first @ second / np.linalg.norm(first) / np.linalg.norm(second), abs=1e-6)
    assert result.across_contexts("euclidean")[4, 1, 0] == pytest.approx(np.linalg.norm(first - second), rel=1e-6)


@pytest.mark.parametrize(
    "words,target,expected",
    [
        (("The", "King.", "is"), "king", 1),
        (("How", "an", "Apple", "account", "?"), "apple", 2),
        (("«Queen»",), "queen", 0),
        (("ＫＩＮＧ",), "king", 0),  # full-width letters, NFKC-equal
        (("the", "kingdom"), "king", None),
        (("king", "king"), "King!", 0),
    ],
)
def test_match_word_ignores_case_and_punctuation(words: tuple[str, ...], target: str, expected: int | None) -> None:
    assert match_word(words, target) == expected


def test_outputs_are_written_and_hold_every_number(tiny: Embedder, tmp_path: Path) -> None:
    result = run_study(tiny, DEFAULT_CONTEXTS)
    written = write_outputs(result, tmp_path / "out")
    assert [path.name for path in written] == ["cosine.png", "euclidean.png", "study.json"]
    for figure in written[:2]:
        data = figure.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    saved = json.loads(written[2].read_text())
    assert saved["words"] == list(result.words) and saved["kinds"] == list(result.kinds)
    for panel, stored in zip(result.panels, saved["panels"]):
        np.testing.assert_array_equal(np.array(stored["cosine"]), panel.cosine)
        np.testing.assert_array_equal(np.array(stored["euclidean"]), panel.euclidean)
        assert stored["analogy"] == vars(panel.analogy)
    assert saved["panels"][2]["sentences"]["queen"] == "The queen is one of the great bands in history."
    np.testing.assert_array_equal(
        np.array(saved["across_contexts"]["cosine"]["apple"]), result.across_contexts("cosine")[4]
    )


def test_one_metric_draws_one_figure(tiny: Embedder, tmp_path: Path) -> None:
    written = write_outputs(run_study(tiny, PIECES_CONTEXTS), tmp_path, ["euclidean"])
    assert [path.name for path in written] == ["euclidean.png", "study.json"]
    with pytest.raises(ValueError, match="unknown metrics"):
        write_outputs(run_study(tiny, PIECES_CONTEXTS), tmp_path, ["manhattan"])


def test_cli_prints_tables_and_writes_files(cli: typer.Typer, tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["compare", str(tiny_bundle), "--out", str(out), "--provider", "cpu"])
    assert result.exit_code == 0, result.stderr
    for title in ("cosine · static", "euclidean · context 2", "word vs itself across contexts", "analogy"):
        assert title in result.stdout
    assert sorted(path.name for path in out.iterdir()) == ["cosine.png", "euclidean.png", "study.json"]
    ran = json.loads((out / "study.json").read_text())["runtime"]
    assert (ran["backend"], ran["precision"]) == ("onnxruntime", "fp32")  # the exact path by default, recorded


def test_a_type_level_panel_follows_the_static_one(cli: typer.Typer, tiny: Embedder, tiny_bundle: Path,
                                                   tmp_path: Path) -> None:
    result = run_study(tiny, PIECES_CONTEXTS, type_level=True)
    assert result.kinds[:2] == ("static", "type-level") and len(result.kinds) == 2 + len(
        next(iter(PIECES_CONTEXTS.values())))
    np.testing.assert_array_equal(result.panels[1].vectors, tiny.type_vectors(list(result.words)).vectors)
    assert result.to_json()["type_level"]["method"] == "templates"
    lines = ["the king and queen rule . the man and woman are friends"]
    options = TypeLevelOptions(prior=2, context="window:2", pooling="max")  # the study's pooling wins
    result = run_study(tiny, PIECES_CONTEXTS, type_level=options, corpus=lines)
    expected = tiny.type_vectors(list(result.words), method="corpus", corpus=lines, prior=2, context="window:2")
    np.testing.assert_array_equal(result.panels[1].vectors, expected.vectors)
    assert result.to_json()["type_level"]["context"] == "window:2" and result.to_json()["type_level"]["prior"] == 2
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the king and queen rule the kingdom\nthe man and woman are friends\n", encoding="utf-8")
    out = tmp_path / "out"
    shown = CliRunner().invoke(cli, ["compare", str(tiny_bundle), "--out", str(out), "--provider", "cpu",
                                     "--type-level", "--corpus", str(corpus), "--metric", "cosine"])
    assert shown.exit_code == 0, shown.stderr
    assert "cosine · type-level" in shown.stdout and "type↔1" in shown.stdout.replace(" ", "")
    kinds = json.loads((out / "study.json").read_text())["kinds"]
    assert kinds[:2] == ["static", "type-level"]
    made = json.loads((out / "study.json").read_text())["type_level"]
    assert (made["method"], made["prior"], made["context"], made["max_contexts"], made["postprocess"]) == (
        "corpus", 5.0, "sentence", 100, "none")
    shown = CliRunner().invoke(cli, ["compare", str(tiny_bundle), "--out", str(out), "--provider", "cpu",
                                     "--type-level", "--corpus", str(corpus), "--prior", "0", "--context", "line"])
    assert shown.exit_code == 0, shown.stderr
    made = json.loads((out / "study.json").read_text())["type_level"]
    assert (made["method"], made["prior"], made["context"]) == ("corpus", 0.0, "line")
    alone = CliRunner().invoke(cli, ["compare", str(tiny_bundle), "--out", str(out), "--corpus", str(corpus)])
    assert alone.exit_code == 2 and "--corpus goes with --type-level" in alone.stderr
    alone = CliRunner().invoke(cli, ["compare", str(tiny_bundle), "--out", str(out), "--prior", "1"])
    assert alone.exit_code == 2 and "--prior goes with --type-level" in alone.stderr
    plain = CliRunner().invoke(cli, ["compare", str(tiny_bundle), "--out", str(out), "--provider", "cpu"])
    assert plain.exit_code == 0 and json.loads((out / "study.json").read_text())["type_level"] is None


def test_colour_ranges_are_fixed_per_metric() -> None:
    """A colour means one number: cosine 0..1 (or -1..1 with a negative value), distance 0..each panel's max."""
    positive = np.array([[[1.0, 0.4], [0.4, 1.0]], [[1.0, 0.9], [0.9, 1.0]]])
    assert [r.tolist() for r in color_range(positive, "cosine")] == [[0.0, 0.0], [1.0, 1.0]]
    assert color_range(positive - 0.5, "cosine")[0].tolist() == [-1.0, -1.0]
    distances = np.array([[[0.0, 2.0], [2.0, 0.0]], [[0.0, 9.0], [9.0, 0.0]]])
    assert [r.tolist() for r in color_range(distances, "euclidean")] == [[0.0, 0.0], [2.0, 9.0]]


def test_cli_reads_a_yaml_file_with_more_contexts(cli: typer.Typer, tiny_bundle: Path, tmp_path: Path) -> None:
    contexts = tmp_path / "words.yaml"
    contexts.write_text(
        "king:\n  - The king is wise.\n  - The king eats.\n  - A king!\n"
        "band:\n  - The band is great.\n  - The band eats.\n  - A band?\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    args = ["compare", str(tiny_bundle), "--contexts", str(contexts), "--out", str(out), "--metric", "cosine"]
    result = CliRunner().invoke(cli, [*args, "--pooling", "max"])
    assert result.exit_code == 0, result.stderr
    saved = json.loads((out / "study.json").read_text())
    assert saved["kinds"] == ["static", "context 1", "context 2", "context 3"]
    assert saved["pooling"] == "max" and all(panel["analogy"] is None for panel in saved["panels"])
    assert not (out / "euclidean.png").exists() and "analogy" not in result.stdout


def test_cli_without_bundle_exports_the_default_once(
    cli: typer.Typer, tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No BUNDLE: the default bundle is exported on first use, with its progress shown, then reused."""
    from bertonnx import export

    calls = []

    def fake_export(model: str | None, path: Path, force: bool, progress: Callable[[str], None]) -> SimpleNamespace:
        calls.append(model)
        progress("exporting the default model")
        shutil.copytree(tiny_bundle, path)
        return SimpleNamespace(path=path)

    monkeypatch.setenv("BERTONNX_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(export, "export_bundle", fake_export)
    args = ["compare", "--out", str(tmp_path / "out"), "--metric", "cosine"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.stderr
    assert "exporting the default model" in first.stderr
    assert (tmp_path / "home" / "bundles" / DEFAULT_BUNDLE_NAME / "manifest.json").is_file()
    second = CliRunner().invoke(cli, args)
    assert second.exit_code == 0, second.stderr
    assert calls == [None] and "exporting" not in second.stderr


BAD_FILES = [
    (
        "missing.json",
        '{"king": ["The queen is kind."], "queen": ["The queen is kind."]}',
        ["'king' does not occur", "'The queen is kind.'"],
    ),
    (
        "inside.json",
        '{"king": ["The kingdom is old."], "queen": ["The queen is kind."]}',
        ["'king' does not occur", "'The kingdom is old.'"],
    ),
    (
        "empty.json",
        '{"king": ["The king is wise.", "  "], "queen": ["a", "b"]}',
        ["context 2 of 'king' is an empty sentence"],
    ),
    ("broken.json", '{"king": ["The king is wise."', ["malformed JSON at line 1"]),
    ("broken.yaml", "king: [The king is wise.\nqueen:\n  - The queen is kind.\n", ["malformed YAML at line"]),
    ("tabs.yml", "king:\n\t- The king is wise.\n", ["malformed YAML at line 2"]),
    ("latin1.json", '{"k\xf6nig": ["Der K\xf6nig."]}', ["is not UTF-8"]),
    ("list.json", '["king", "queen"]', ["expected a mapping of word -> list of context sentences, got list"]),
    ("string.yaml", "king: The king is wise.\nqueen: [The queen is kind.]\n", ["'king' needs a non-empty list"]),
    ("bool.yaml", "yes: [The king is wise.]\nqueen: [The queen is kind.]\n", ["got True", "quote the word"]),
    (
        "uneven.json",
        '{"king": ["The king is wise.", "A king."], "queen": ["The queen is kind."]}',
        ["same number of contexts", "king has 2, queen has 1"],
    ),
    ("case.json", '{"king": ["The king."], "King": ["The king."]}', ["'King' and 'king' are the same word"]),
    ("one.json", '{"king": ["The king."]}', ["at least two words"]),
    ("two.json", '{"king.": ["The king."], "queen": ["The queen."]}', ["'king.' is 2 words", "king, ."]),
    ("words.txt", "king: [The king.]\n", ["expected a .json, .yaml or .yml file"]),
]


@pytest.mark.parametrize("name,text,fragments", BAD_FILES, ids=[name for name, _, _ in BAD_FILES])
def test_bad_context_files_fail_with_one_clear_line(
    cli: typer.Typer, tiny_bundle: Path, tmp_path: Path, name: str, text: str, fragments: list[str]
) -> None:
    path = tmp_path / name
    path.write_bytes(text.encode("latin-1" if name.startswith("latin1") else "utf-8"))
    result = CliRunner().invoke(cli, ["compare", str(tiny_bundle), "--contexts", str(path), "--out", str(tmp_path)])
    assert result.exit_code == 1
    # Progress lines may come first (the bundle was opened); the error is one line, and last.
    lines = result.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:]
    assert "Traceback" not in result.stderr
    message = lines[-1]
    for fragment in fragments:
        assert fragment in message
    assert not (tmp_path / "study.json").exists()


API_CASES = [case for case in BAD_FILES if case[0] in ("missing.json", "empty.json", "broken.json", "broken.yaml")]


@pytest.mark.parametrize("name,text,fragments", API_CASES, ids=[name for name, _, _ in API_CASES])
def test_bad_context_files_raise_value_errors_from_the_api(
    tiny: Embedder, tmp_path: Path, name: str, text: str, fragments: list[str]
) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError) as caught:
        run_study(tiny, load_contexts(path))
    assert all(fragment in str(caught.value) for fragment in fragments)


def test_contexts_built_in_code_are_checked_too(tiny: Embedder) -> None:
    with pytest.raises(ValueError, match="context 1 of 'queen' must be a sentence, got 3"):
        run_study(tiny, {"king": ["The king."], "queen": [3]})
    assert check_contexts({" king ": [" The king. "], "queen": ["The queen."]}) == {
        "king": ["The king."],
        "queen": ["The queen."],
    }


@pytest.mark.parametrize(
    "flag,expected",
    [
        ("--pooling", ["mean", "first", "last", "first_last", "max", "sum"]),
        ("--provider", ["auto", "cpu", "cuda", "tensorrt"]),
        ("--metric", ["cosine", "euclidean", "both"]),
    ],
    ids=["--pooling", "--provider", "--metric"],
)
def test_cli_choices_are_the_engine_choices(tiny_bundle: Path, tiny: Embedder, tmp_path: Path, flag: str,
                                            expected: list[str]) -> None:
    """`compare` lists exactly these values for the flag, and the study takes each one it passes on."""
    assert choices_of("compare", tiny_bundle, flag) == expected
    if flag == "--pooling":
        assert list(WORD_POOLING_MODES) == expected
        for mode in expected:  # run_study takes every word pooling the flag offers
            assert run_study(tiny, PIECES_CONTEXTS, pooling=mode).kinds[0] == "static"
    elif flag == "--provider":
        assert list(PROVIDERS) == expected
    else:
        assert [*METRICS, "both"] == expected
        study = run_study(tiny, PIECES_CONTEXTS)
        for metric in METRICS:  # each metric the flag names is one the study computes and draws
            assert study.panels[0].matrix(metric).shape == (3, 3)
            assert [path.name for path in write_outputs(study, tmp_path / metric, [metric])] == [
                f"{metric}.png", "study.json"]


# README numbers for the default model; the slow test keeps them honest.
README_MATRICES = {
    ("cosine", "static", "king", "queen"): 0.627,
    ("cosine", "context 1", "king", "queen"): 0.541,
    ("cosine", "context 2", "king", "queen"): 0.623,
    ("cosine", "context 1", "man", "woman"): 0.103,
    ("cosine", "context 2", "man", "woman"): 0.471,
    ("euclidean", "context 2", "man", "woman"): 11.30,
    ("euclidean", "context 2", "king", "queen"): 9.48,
}
README_ACROSS = {"king": 0.896, "queen": 0.982, "apple": 0.725}  # cosine, context 1 vs 2
README_ANALOGY = {"static": (1.582, 0.188), "context 1": (14.19, 0.436), "context 2": (11.73, 0.374)}  # gap, cos


@pytest.mark.slow
def test_default_model_matches_transformers(default_bundle: Path, default_model: Path) -> None:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(default_model).eval()
    result = run_study(Embedder.load(default_bundle, provider="cpu"), DEFAULT_CONTEXTS)
    assert_matches(result, reference_vectors(model, default_model, DEFAULT_CONTEXTS, "mean"))
    panels = dict(zip(result.kinds, result.panels))
    for (metric, kind, a, b), value in README_MATRICES.items():
        matrix = panels[kind].matrix(metric)
        assert matrix[result.words.index(a), result.words.index(b)] == pytest.approx(value, abs=6e-3)
    across = result.across_contexts("cosine")  # (W, 2, 2)
    for word, value in README_ACROSS.items():
        assert across[result.words.index(word), 0, 1] == pytest.approx(value, abs=6e-3)
    for kind, (gap, cosine) in README_ANALOGY.items():
        assert panels[kind].analogy.gap == pytest.approx(gap, abs=6e-3)
        assert panels[kind].analogy.cosine == pytest.approx(cosine, abs=6e-3)


@pytest.mark.slow
def test_default_model_readme_variants(default_bundle: Path) -> None:
    """The README's what-ifs: king's second sentence without queen, then a plainer band sentence."""
    embedder = Embedder.load(default_bundle, provider="cpu")
    contexts = {word: list(sentences) for word, sentences in DEFAULT_CONTEXTS.items()}
    contexts["king"][1] = "The king rules the kingdom."
    king, queen = 0, 1
    assert run_study(embedder, contexts).panels[2].cosine[king, queen] == pytest.approx(0.510, abs=6e-3)
    contexts["queen"][1] = "Queen is a rock band; their guitarist is Brian May."
    result = run_study(embedder, contexts)
    assert result.panels[2].cosine[king, queen] == pytest.approx(0.431, abs=6e-3)
    assert result.across_contexts("cosine")[queen, 0, 1] == pytest.approx(0.872, abs=6e-3)
