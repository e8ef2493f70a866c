"""Hostile input (issue 6): every case gets a clear error or a documented, correct result.

Strings without words, tokens outside the vocabulary, megabyte strings, awkward
files, damaged bundles and impossible providers. Cases that other test files
already cover are not repeated here; the README's reliability section counts both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from test_bundle import edit_manifest, reseal
from test_cli import one_line_error, run

from bertonnx import BundleError, Embedder, EmptyWordError, OptionError, ProviderError, UnknownWordError, load_bundle
from bertonnx.batching import plan_windows
from bertonnx.io.sinks import read_vectors

MEGABYTE = 1 << 20
SHORT_MESSAGE = 300  # characters: an error about a 1 MB string must not quote it whole


def run_alone(embedder: Embedder, ids: NDArray[np.int64]) -> NDArray[np.float32]:
    """(T, H) final states of `ids` run as one sequence on its own, special tokens included."""
    encoded = embedder.tokenizer.pack([ids])
    return embedder.backend.run("last_hidden_state", encoded.feeds(embedder.backend.info.inputs))[0]


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


HOSTILE_ALPHABET = (
    "abcKQ .,!?'-\t\n\r\x00\x01\x07\x1b\x7f\u0085\u00a0\u2028\u200b\u200d\ufeff\u0301\u0308"
    "\u05d0\u05e9\u0627\u0644\u65e5\u672c\u3000\U0001f642\U0001f3fd\u0130\u00df\ufb01"
)


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


@pytest.mark.parametrize(
    "call,error,message",
    [
        (lambda e: e.static(["king", 7]), TypeError, "word 1 is int; expected str"),
        (lambda e: e.static(["king", None]), TypeError, "word 1 is NoneType; expected str"),
        (lambda e: e.static(["ki\udcffng"]), ValueError, "word 0 is not valid Unicode"),
        (lambda e: e.contextual(["king", None]), TypeError, "text 1 is NoneType; expected a str or a list of words"),
        (lambda e: e.contextual([b"king"]), TypeError, "text 0 is bytes; expected a str or a list of words"),
        (lambda e: e.contextual([["king", 3]]), TypeError, "text 0: word 1 is int; expected str"),
        (lambda e: e.contextual(["ki\udcffng"]), ValueError, "text 0 is not valid Unicode"),
        (lambda e: e.sentences(["a", "\ud800"]), ValueError, "text 1 is not valid Unicode"),
    ],
    ids=["int word", "None word", "lone surrogate word", "None text", "bytes text", "int in word list",
         "lone surrogate text", "lone surrogate sentence"],
)
def test_inputs_the_tokenizer_cannot_take_are_named(tiny: Embedder, call, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        call(tiny)


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


def test_a_megabyte_line_on_the_command_line(tiny_bundle: Path, tmp_path: Path) -> None:
    source = tmp_path / "big.txt"
    source.write_text(f"king\n{'b' * MEGABYTE}\nqueen\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    failed = run("embed", tiny_bundle, "--static", "-i", source, "-o", out)
    one_line_error(failed, "line 2 maps to the unknown token")
    assert all(len(line) < SHORT_MESSAGE for line in failed.stderr.splitlines())
    skipped = run("embed", tiny_bundle, "--static", "-i", source, "-o", out, "--on-error", "skip")
    assert skipped.exit_code == 0 and read_vectors(out)[0] == ["king", "queen"]


# -- files --------------------------------------------------------------------


def test_non_utf8_in_a_later_chunk_names_line_and_byte_offset(tiny_bundle: Path, tmp_path: Path) -> None:
    """CRLF endings and multi-byte characters before the bad byte are counted in bytes."""
    source = tmp_path / "mixed.txt"
    source.write_bytes("king\r\nqueen\r\ncafé\r\nman\r\n".encode() + b"wom\xe4n\r\n")
    out = tmp_path / "out.npy"
    one_line_error(run("embed", tiny_bundle, "--static", "-i", source, "-o", out, "--chunk-lines", "2",
                       "--unknown", "unk"),
                   "line 5 is not valid UTF-8 (byte offset 28)")
    assert not out.exists()


def test_non_utf8_on_stdin_names_line_and_byte_offset(tiny_bundle: Path) -> None:
    one_line_error(run("embed", tiny_bundle, "--contextual", stdin=b"the king\n\xff queen\n"),
                   "stdin: line 2 is not valid UTF-8 (byte offset 9)")


def test_a_byte_order_mark_is_not_part_of_the_first_word(tiny_bundle: Path, tmp_path: Path) -> None:
    source = tmp_path / "bom.txt"
    source.write_bytes(b"\xef\xbb\xbfking\r\nqueen\r\n")
    out = tmp_path / "out.txt"
    assert run("embed", tiny_bundle, "--static", "-i", source, "-o", out).exit_code == 0
    assert read_vectors(out)[0] == ["king", "queen"]
    source.write_bytes(b"\xef\xbb\xbfcaf\xe9\n")  # offsets still count the mark's three bytes
    one_line_error(run("embed", tiny_bundle, "--static", "-i", source, "-o", out),
                   "line 1 is not valid UTF-8 (byte offset 6)")


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


# -- bundles ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["static_table.npy", "tokenizer.json"])
def test_a_missing_file_is_named(bundle_copy: Path, name: str) -> None:
    (bundle_copy / name).unlink()
    with pytest.raises(BundleError, match=rf"{name}: missing from the bundle"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("name", ["model.onnx", "static_table.npy", "tokenizer.json"])
def test_a_required_file_the_manifest_does_not_list(bundle_copy: Path, name: str) -> None:
    edit_manifest(bundle_copy, lambda m: m["files"].pop(name))
    with pytest.raises(BundleError, match=rf"manifest\.json: 'files' does not list {name}"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("name", ["model.onnx", "static_table.npy", "config.json"])
def test_one_flipped_byte_fails_the_checksum(bundle_copy: Path, name: str) -> None:
    path = bundle_copy / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=rf"{name}: checksum does not match"):
        load_bundle(bundle_copy)


def test_a_truncated_table_is_named(bundle_copy: Path) -> None:
    path = bundle_copy / "static_table.npy"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(BundleError, match=r"static_table\.npy: \d+ bytes, the manifest says \d+"):
        load_bundle(bundle_copy)


def test_a_table_of_the_wrong_dtype_is_named(bundle_copy: Path) -> None:
    table = np.load(bundle_copy / "static_table.npy")
    np.save(bundle_copy / "static_table.npy", table.astype(np.float64))
    reseal(bundle_copy, "static_table.npy")
    with pytest.raises(BundleError, match=r"static_table\.npy: expected a float32 table .* found float64"):
        Embedder.load(bundle_copy, provider="cpu")


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda m: m.pop("format_version"), "format_version missing"),
        (lambda m: m.update(format_version="2"), "format_version missing"),
        (lambda m: m.update(format="other-bundle"), "not a bertonnx-bundle manifest"),
        (lambda m: m["model"].update(hidden_size="32"), "model.hidden_size must be a positive whole number"),
        (lambda m: m["model"].update(max_length=0), "model.max_length must be a positive whole number"),
        (lambda m: m["model"].update(vocab_size=True), "model.vocab_size must be a positive whole number"),
        (lambda m: m["files"].update({"a\x00b": {"sha256": "0" * 64}}), "is not a usable path"),
        (lambda m: m["files"].update({"x" * 5000: {"sha256": "0" * 64}}), "is not a usable path"),
    ],
    ids=["no version", "version as text", "foreign format", "hidden size as text", "max length 0",
         "vocabulary size true", "NUL in a file name", "file name too long"],
)
def test_a_manifest_that_does_not_make_sense_is_named(bundle_copy: Path, change, message: str) -> None:
    edit_manifest(bundle_copy, change)
    with pytest.raises(BundleError, match=rf"manifest\.json: .*{message}"):
        load_bundle(bundle_copy)


def test_a_deeply_nested_manifest_is_invalid_json_not_a_crash(bundle_copy: Path) -> None:
    (bundle_copy / "manifest.json").write_text("[" * 100_000)
    with pytest.raises(BundleError, match=r"manifest\.json: not valid JSON"):
        load_bundle(bundle_copy)


def test_a_max_length_without_room_for_text_is_refused(bundle_copy: Path) -> None:
    edit_manifest(bundle_copy, lambda m: m["model"].update(max_length=2))
    with pytest.raises(ValueError, match="max_length 2 leaves no room for text next to the 2 special tokens"):
        Embedder.load(bundle_copy, provider="cpu")


def test_the_cli_names_the_damaged_file(bundle_copy: Path, tmp_path: Path) -> None:
    (bundle_copy / "model.onnx").write_bytes(b"")
    words = tmp_path / "words.txt"
    words.write_text("king\n")
    one_line_error(run("info", bundle_copy), "model.onnx: 0 bytes, the manifest says")
    one_line_error(run("embed", bundle_copy, "--static", "-i", words), "model.onnx: 0 bytes, the manifest says")


# -- providers ----------------------------------------------------------------


@pytest.mark.parametrize(
    "provider,threads,error,message",
    [
        ("tpu", None, OptionError, "unknown provider 'tpu'; expected one of auto, cpu, cuda, tensorrt"),
        ("CPUExecutionProvider", None, OptionError, "unknown provider 'CPUExecutionProvider'"),
        ("cpu", 0, ValueError, "threads must be a positive whole number, got 0"),
        ("cpu", -4, ValueError, "threads must be a positive whole number, got -4"),
    ],
)
def test_impossible_session_requests_fail_at_load(tiny_bundle: Path, provider: str, threads: int | None,
                                                  error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        Embedder.load(tiny_bundle, provider=provider, threads=threads)


def test_cuda_build_without_a_gpu(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """onnxruntime-gpu on a machine without a GPU: ONNX Runtime quietly runs on the CPU. Asked for
    "cuda", that is an error (API and CLI); asked for "auto", a warning and the CPU."""
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(ProviderError, match="could not use it"):
        Embedder.load(tiny_bundle, provider="cuda")
    with pytest.warns(RuntimeWarning, match="running on CPUExecutionProvider"):
        assert Embedder.load(tiny_bundle, provider="auto").backend.info.device == "CPUExecutionProvider"
    words = tmp_path / "words.txt"
    words.write_text("king\n")
    one_line_error(run("embed", tiny_bundle, "--static", "--provider", "cuda", "-i", words), "could not use it")


def test_cli_refuses_unknown_providers_and_negative_threads(tiny_bundle: Path, tmp_path: Path) -> None:
    words = tmp_path / "words.txt"
    words.write_text("king\n")
    one_line_error(run("embed", tiny_bundle, "--static", "--threads", "-1", "-i", words),
                   "threads must be a positive whole number, got -1", code=2)
    one_line_error(run("embed", tiny_bundle, "--static", "--provider", "tpu", "-i", words),
                   "Invalid value for '--provider': 'tpu' is not one of 'auto', 'cpu', 'cuda', 'tensorrt'", code=2)

