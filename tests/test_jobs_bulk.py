"""bertonnx.jobs.bulk: ids on every row, slices that report progress, and the bad lines it names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_cli import one_line_error, run

from bertonnx import Embedder
from bertonnx.io.formats import ids_path, read_table
from bertonnx.jobs import bulk
from bertonnx.jobs.bulk import BulkOptions, BulkReport, Line, embed_file, embed_lines, embed_slices

TEXTS = ["the king is wise", "a queen", "  ", "music"]


@pytest.fixture(scope="module")
def tiny(tiny_bundle: Path) -> Embedder:
    return Embedder.load(tiny_bundle, provider="cpu", threads=1)


def lines(texts: list[str]) -> list[Line]:
    return [Line(number=index + 1, text=text, end_byte=10 * (index + 1)) for index, text in enumerate(texts)]


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".jsonl"])
def test_contextual_rows_keep_their_line_and_word(tiny: Embedder, tmp_path: Path, suffix: str) -> None:
    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    out = tmp_path / f"out{suffix}"
    embed_file(tiny, source, out, BulkOptions(mode="contextual", on_error="skip"))
    table = read_table(out)
    assert table.keys == ["the", "king", "is", "wise", "a", "queen", "music"]
    assert table.ids is not None
    assert table.ids.tolist() == [[1, 0], [1, 1], [1, 2], [1, 3], [2, 0], [2, 1], [4, 0]]
    if suffix == ".npy":
        assert np.load(ids_path(out)).dtype == np.int64


@pytest.mark.parametrize("mode,texts", [("static", ["king", "", "queen"]), ("sentences", ["the king", "", "a queen"])])
def test_static_and_sentence_rows_are_word_0_of_their_line(tiny: Embedder, mode: str, texts: list[str]) -> None:
    rows = embed_lines(tiny, lines(texts), BulkOptions(mode=mode, on_error="skip"), BulkReport())
    assert rows.ids.tolist() == [[1, 0], [3, 0]] and rows.ids.dtype == np.int64


def test_jsonl_to_stdout_carries_ids(tiny_bundle: Path) -> None:
    result = run("embed", tiny_bundle, "--contextual", stdin="the king\nqueen\n")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["key"], r["line"], r["word"]) for r in records] == [("the", 1, 0), ("king", 1, 1), ("queen", 2, 0)]


def test_slices_report_progress_within_a_chunk_and_change_no_row(
    tiny: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunk = lines([TEXTS[i % 2] + f" {i % 7}" for i in range(50)])
    options = BulkOptions(mode="contextual")
    whole = embed_lines(tiny, chunk, options, BulkReport())
    monkeypatch.setattr(bulk, "SLICE_LINES", 8)
    heard: list[tuple[int, int]] = []
    sliced = embed_slices(tiny, chunk, options, BulkReport(), lambda done, count: heard.append((done, count)), 100)
    assert heard == [(10 * n, 100 + n) for n in (8, 16, 24, 32, 40, 48)]  # the last slice is the caller's to report
    assert sliced.keys == whole.keys and sliced.ids.tolist() == whole.ids.tolist()
    np.testing.assert_allclose(sliced.vectors, whole.vectors, rtol=0, atol=1e-6)


def test_a_file_job_reports_progress_before_its_one_chunk_is_done(
    tiny: Embedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue: 2,000 lines in one chunk sat at 0 % until the chunk was done."""
    source = tmp_path / "in.txt"
    source.write_text("".join(f"the king {i}\n" for i in range(40)), encoding="utf-8")
    monkeypatch.setattr(bulk, "SLICE_LINES", 16)
    heard: list[int] = []
    options = BulkOptions(mode="contextual")
    embed_file(tiny, source, tmp_path / "out.npy", options, progress=lambda _, count: heard.append(count))
    assert heard == [16, 32, 40]


def test_static_refuses_a_line_of_several_words(tiny_bundle: Path, tmp_path: Path) -> None:
    one_line_error(run("embed", tiny_bundle, "--static", "-o", tmp_path / "out.npy", stdin="hello world\n"),
                   "line 1 holds 2 words ('hello world'); --static takes one word a line "
                   "(use --on-error skip to skip such lines)")
    assert not (tmp_path / "out.npy").exists()
    skipped = run("embed", tiny_bundle, "--static", "-o", tmp_path / "out.npy", "--on-error", "skip",
                  stdin="king\nnew york\nqueen\n")
    assert skipped.exit_code == 0, skipped.output
    assert "skipped line 2: holds 2 words ('new york'); --static takes one word a line" in skipped.stderr
    assert read_table(tmp_path / "out.npy").keys == ["king", "queen"]


def test_an_unknown_word_is_quoted_with_one_hint(tiny_bundle: Path, tmp_path: Path) -> None:
    emoji = "\N{GRINNING FACE}"
    result = run("embed", tiny_bundle, "--static", "-o", tmp_path / "out.npy", stdin=f"king\nqueen\n{emoji}\n")
    one_line_error(result, f"line 3 maps to the unknown token ('{emoji}') (--unknown unk|zero embeds it anyway)")
    assert "--on-error" not in result.stderr
    long_word = "\N{GRINNING FACE}" * 100
    result = run("embed", tiny_bundle, "--static", "-o", tmp_path / "out.npy", stdin=long_word + "\n")
    one_line_error(result, "(100 characters)")


def test_max_length_cuts_sentences_as_the_embedder_does(tiny: Embedder, tiny_bundle: Path, tmp_path: Path) -> None:
    texts = ["the king is wise and kind and strong", "a queen"]
    result = run("embed", tiny_bundle, "--sentences", "--max-length", "5", "--provider", "cpu", "--threads", "1", "-o",
                 tmp_path / "out.npy", stdin="\n".join(texts) + "\n")
    assert result.exit_code == 0, result.output
    expected = tiny.sentences(texts, max_length=5)
    np.testing.assert_allclose(read_table(tmp_path / "out.npy").vectors, expected, rtol=0, atol=1e-6)
    assert not np.allclose(expected[0], tiny.sentences(texts[:1])[0], atol=1e-4)  # the cut changed something


@pytest.mark.parametrize(
    "args,message,code",
    [
        (["--contextual", "--max-length", "8"], "max_length applies to sentences only, not contextual", 2),
        (["--sentences", "--max-length", "0"], "--max-length", 2),
        (["--sentences", "--max-length", "100000"], "max_length must leave room for text and be at most", 2),
    ],
)
def test_max_length_refusals(tiny_bundle: Path, tmp_path: Path, args: list[str], message: str, code: int) -> None:
    result = run("embed", tiny_bundle, *args, "-o", tmp_path / "out.npy", stdin="the king\n")
    assert result.exit_code == code, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert "%" not in result.stderr  # no bar before an error that comes at once


def test_help_says_one_mode_is_required() -> None:
    for command in ("embed", "embed-distributed"):
        result = run(command, "--help")
        assert "Required: exactly one of --static, --contextual, --sentences." in result.stdout
    assert "--max-length" in run("embed", "--help").stdout
