"""bertonnx.jobs.bulk: ids on every row, slices that report progress, and the bad lines it names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers.cli import one_line_error, run
from helpers.texts import MEGABYTE, PROPERTY, SHORT_MESSAGE, TOLERANCE, WORDS, texts
from hypothesis import given
from hypothesis import strategies as st

from bertonnx import Embedder
from bertonnx.io.formats import ids_path, read_table
from bertonnx.io.sinks import read_vectors
from bertonnx.jobs import lines as lines_module
from bertonnx.jobs.bulk import BulkOptions, BulkReport, Line, embed_file, embed_lines, slices

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


def test_slices_change_no_row(tiny: Embedder, monkeypatch: pytest.MonkeyPatch) -> None:
    chunk = lines([TEXTS[i % 2] + f" {i % 7}" for i in range(50)])
    options = BulkOptions(mode="contextual")
    whole = embed_lines(tiny, chunk, options, BulkReport())
    monkeypatch.setattr(lines_module, "SLICE_LINES", 8)
    sliced = embed_lines(tiny, chunk, options, BulkReport())
    assert sliced.keys == whole.keys and sliced.ids.tolist() == whole.ids.tolist()
    np.testing.assert_allclose(sliced.vectors, whole.vectors, rtol=0, atol=1e-6)


def test_slices_hold_a_bounded_number_of_lines_and_characters() -> None:
    """The memory unit: a slice ends at its line or character budget, whichever comes first."""
    texts = ["a" * 10] * 5 + ["b" * 100] + ["c"] * 3
    cut = [[line.text[0] for line in piece] for piece in slices(iter(lines(texts)), max_lines=4, max_chars=35)]
    assert cut == [["a", "a", "a", "a"], ["a", "b"], ["c", "c", "c"]]
    resumed = [[line.number for line in piece] for piece in slices(iter(lines(texts)[4:]), max_lines=4, max_chars=35)]
    assert resumed == [[5, 6], [7, 8, 9]]  # from a slice boundary on, the same cuts as the whole run


def test_a_file_job_reports_progress_before_its_one_chunk_is_done(
    tiny: Embedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue: 2,000 lines in one chunk sat at 0 % until the chunk was done."""
    source = tmp_path / "in.txt"
    source.write_text("".join(f"the king {i}\n" for i in range(40)), encoding="utf-8")
    monkeypatch.setattr(lines_module, "SLICE_LINES", 16)
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


@pytest.mark.parametrize("mode,choices,message", [
    ("static", {"normalize": True}, "normalize applies to sentences only, not static"),
    ("contextual", {"normalize": True}, "normalize applies to sentences only, not contextual"),
    ("contextual", {"unknown": "zero"}, "unknown applies to static vectors only, not contextual"),
    ("sentences", {"unknown": "unk"}, "unknown applies to static vectors only, not sentences"),
])
def test_an_option_of_another_mode_is_refused_by_the_library_too(mode: str, choices: dict[str, object],
                                                                message: str) -> None:
    from bertonnx.errors import OptionError
    from bertonnx.jobs.rows import BulkOptions

    with pytest.raises(OptionError, match=message):
        BulkOptions(mode=mode, **choices)  # type: ignore[arg-type]


def test_help_says_one_mode_is_required() -> None:
    for command in ("embed", "embed-distributed"):
        result = run(command, "--help")
        assert "Required: exactly one of --static, --contextual, --sentences, --type-level." in result.stdout
    assert "--max-length" in run("embed", "--help").stdout


HOSTILE_LINES = "king\n\n \t \n\x00\n\u200b\u200d\nqueen\n...\n"


@pytest.mark.parametrize("mode", ["static", "contextual", "sentences"])
def test_cli_skips_lines_without_words_and_names_each(tiny: Embedder, tiny_bundle: Path, tmp_path: Path,
                                                     mode: str) -> None:
    source = tmp_path / "lines.txt"
    source.write_text(HOSTILE_LINES, encoding="utf-8")
    out = tmp_path / "out.npy"
    result = run("embed", tiny_bundle, f"--{mode}", "-i", source, "-o", out, "--on-error", "skip",
                 "--backend", "onnxruntime")  # as `tiny` runs
    assert result.exit_code == 0, result.output
    skipped = [line for line in result.stderr.splitlines() if line.startswith("skipped line")]
    assert skipped == [
        "skipped line 2: is blank",
        "skipped line 3: is blank",
        "skipped line 4: contains a NUL byte (binary or UTF-16 input?)",
        "skipped line 5: has no words (only characters the tokenizer drops)",
    ]
    keys, vectors = read_vectors(out)
    good = ["king", "queen", "..."]
    if mode == "static":
        assert keys == good
        np.testing.assert_array_equal(vectors, tiny.static(good))
    elif mode == "sentences":
        assert keys == good
        np.testing.assert_allclose(vectors, tiny.sentences(good), atol=1e-6)
    else:
        assert keys == ["king", "queen", ".", ".", "."]
        np.testing.assert_allclose(vectors, np.concatenate([r.vectors for r in tiny.contextual(good)]), atol=1e-6)


@pytest.mark.parametrize(
    "content,message",
    [
        ("king\n\u200b\nqueen\n", "line 2 has no words"),
        ("king\nqu\x00een\n", "line 2 contains a NUL byte"),
        ("king\n\u0301\n\n", "line 2 has no words"),  # reported in line order, before line 3's blank
    ],
)
@pytest.mark.parametrize("mode", ["static", "contextual", "sentences"])
def test_cli_stops_at_the_first_line_without_words(tiny_bundle: Path, tmp_path: Path, mode: str, content: str,
                                                   message: str) -> None:
    source = tmp_path / "lines.txt"
    source.write_text(content, encoding="utf-8")
    out = tmp_path / "out.jsonl"
    one_line_error(run("embed", tiny_bundle, f"--{mode}", "-i", source, "-o", out), message)
    assert not out.exists()


def test_a_megabyte_line_on_the_command_line(tiny_bundle: Path, tmp_path: Path) -> None:
    source = tmp_path / "big.txt"
    source.write_text(f"king\n{'b' * MEGABYTE}\nqueen\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    failed = run("embed", tiny_bundle, "--static", "-i", source, "-o", out)
    one_line_error(failed, "line 2 maps to the unknown token")
    assert all(len(line) < SHORT_MESSAGE for line in failed.stderr.splitlines())
    skipped = run("embed", tiny_bundle, "--static", "-i", source, "-o", out, "--on-error", "skip")
    assert skipped.exit_code == 0 and read_vectors(out)[0] == ["king", "queen"]


def test_non_utf8_in_a_later_chunk_names_line_and_byte_offset(tiny_bundle: Path, tmp_path: Path) -> None:
    """CRLF endings and multi-byte characters before the bad byte are counted in bytes."""
    source = tmp_path / "mixed.txt"
    source.write_bytes("king\r\nqueen\r\ncafé\r\nman\r\n".encode() + b"wom\xe4n\r\n")
    out = tmp_path / "out.npy"
    one_line_error(run("embed", tiny_bundle, "--static", "-i", source, "-o", out, "--chunk-lines", "2",
                       "--unknown", "unk"),
                   "line 5 is not valid UTF-8 (byte 28 of the input)")
    assert not out.exists()


def test_non_utf8_on_stdin_names_line_and_byte_offset(tiny_bundle: Path) -> None:
    one_line_error(run("embed", tiny_bundle, "--contextual", stdin=b"the king\n\xff queen\n"),
                   "stdin: line 2 is not valid UTF-8 (byte 9 of the input)")


@pytest.mark.parametrize("mode", ["static", "contextual", "sentences"])
def test_on_error_skip_skips_a_line_that_is_not_utf8_and_names_it(tiny_bundle: Path, tmp_path: Path,
                                                                  mode: str) -> None:
    """One bad byte in a million lines need not stop a job that was told to skip bad lines; never a vector of
    replacement characters."""
    source = tmp_path / "bad.txt"
    source.write_bytes(b"king\nqu\xe9en\nqueen\n")
    out = tmp_path / "out.jsonl"
    result = run("embed", tiny_bundle, f"--{mode}", "--backend", "onnxruntime", "-i", source, "-o", out,
                 "--on-error", "skip")
    assert result.exit_code == 0, result.output
    assert "skipped line 2: is not valid UTF-8 (byte 7 of the input)" in result.stderr
    assert [json.loads(row)["line"] for row in out.read_text(encoding="utf-8").splitlines()] == [1, 3]
    piped = run("embed", tiny_bundle, f"--{mode}", "--backend", "onnxruntime", "--on-error", "skip",
                stdin=b"king\nqu\xe9en\nqueen\n")
    assert piped.exit_code == 0 and [json.loads(row)["line"] for row in piped.stdout.splitlines()] == [1, 3]


def test_a_byte_order_mark_is_not_part_of_the_first_word(tiny_bundle: Path, tmp_path: Path) -> None:
    source = tmp_path / "bom.txt"
    source.write_bytes(b"\xef\xbb\xbfking\r\nqueen\r\n")
    out = tmp_path / "out.txt"
    assert run("embed", tiny_bundle, "--static", "-i", source, "-o", out).exit_code == 0
    assert read_vectors(out)[0] == ["king", "queen"]
    source.write_bytes(b"\xef\xbb\xbfcaf\xe9\n")  # offsets still count the mark's three bytes
    one_line_error(run("embed", tiny_bundle, "--static", "-i", source, "-o", out, "--force"),
                   "line 1 is not valid UTF-8 (byte 6 of the input)")


@pytest.mark.parametrize("mode", ["contextual", "sentences"])
def test_crlf_and_a_missing_final_newline_change_nothing(tiny_bundle: Path, tmp_path: Path, mode: str) -> None:
    texts = ["The king is wise.", "How much is an Apple music account?", "queen"]
    unix, windows = tmp_path / "unix.txt", tmp_path / "windows.txt"
    unix.write_bytes(("\n".join(texts) + "\n").encode())
    windows.write_bytes("\r\n".join(texts).encode())
    outputs = []
    for source in (unix, windows):
        out = tmp_path / f"{source.stem}.jsonl"
        assert run("embed", tiny_bundle, f"--{mode}", "-i", source, "-o", out).exit_code == 0
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] and b"\\r" not in outputs[1]


@pytest.mark.parametrize("mode", ["contextual", "sentences"])
@pytest.mark.parametrize("content", [b"", b"\n\n\r\n"], ids=["empty file", "only blank lines"])
def test_a_file_without_text_writes_an_empty_output(tiny_bundle: Path, tmp_path: Path, mode: str,
                                                    content: bytes) -> None:
    source = tmp_path / "nothing.txt"
    source.write_bytes(content)
    out = tmp_path / "out.npy"
    result = run("embed", tiny_bundle, f"--{mode}", "-i", source, "-o", out, "--on-error", "skip",
                 "--backend", "onnxruntime")  # as `tiny` runs
    assert result.exit_code == 0, result.output
    keys, vectors = read_vectors(out)
    assert keys == [] and vectors.shape == (0, 32)


def test_bulk_output_does_not_depend_on_chunk_lines(tiny: Embedder, tmp_path: Path) -> None:
    source = tmp_path / "words.txt"
    source.write_text("\n".join(f"{WORDS[i % 16]}{i % 50}" for i in range(40)) + "\n")
    outputs = set()
    for chunk_lines in (1, 7, 40, 20_000):
        out = tmp_path / f"out{chunk_lines}.txt"
        embed_file(tiny, source, out, BulkOptions(mode="static", chunk_lines=chunk_lines))
        outputs.add(out.read_bytes())
    assert len(outputs) == 1


@PROPERTY
@given(lines=st.lists(texts.map(lambda text: text if isinstance(text, str) else " ".join(text)) | st.just("  "),
                      min_size=1, max_size=12),
       mode=st.sampled_from(["contextual", "sentences", "static"]))
def test_each_bulk_row_names_the_line_it_came_from(tiny: Embedder, lines: list[str], mode: str) -> None:
    """Rows.ids maps every row back to its line and word: each kept line's rows, in order, equal the line alone."""
    chunk = [Line(number=10 + index, text=text, end_byte=0) for index, text in enumerate(lines)]
    options = BulkOptions(mode=mode, on_error="skip", unknown="unk" if mode == "static" else "error")
    report = BulkReport()
    rows = embed_lines(tiny, chunk, options, report)
    skipped = {number for number, _ in report.skipped}
    several_words = mode == "static"  # --static takes one word a line
    assert skipped == {line.number for line in chunk if not line.text.strip() or
                       (several_words and len(line.text.split()) > 1)}
    expected_lines, expected_words, expected_keys = [], [], []
    for line in chunk:
        if line.number in skipped:
            continue
        alone = embed_lines(tiny, [line], options, BulkReport())
        expected_lines += [line.number] * len(alone)
        expected_words += list(range(len(alone)))
        expected_keys += alone.keys
        np.testing.assert_allclose(rows.vectors[rows.ids[:, 0] == line.number], alone.vectors, rtol=0, atol=TOLERANCE)
    assert rows.ids[:, 0].tolist() == expected_lines and rows.ids[:, 1].tolist() == expected_words
    assert rows.keys == expected_keys
