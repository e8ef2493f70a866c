"""A damaged or foreign bundle is caught at load, with an error naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.bundles import edit_manifest, reseal
from helpers.cli import one_line_error, run

from bertonnx import BundleError, Embedder, ProviderError, load_bundle


def test_a_good_bundle_loads(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    assert bundle.hidden_size == 32 and bundle.precision == "fp32"


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no bundle here"):
        load_bundle(tmp_path / "absent")


def test_missing_model_file(bundle_copy: Path) -> None:
    (bundle_copy / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"model\.onnx: missing from the bundle"):
        load_bundle(bundle_copy)


def test_truncated_model_file(bundle_copy: Path) -> None:
    data = (bundle_copy / "model.onnx").read_bytes()
    (bundle_copy / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match=r"model\.onnx: \d+ bytes, the manifest says \d+"):
        load_bundle(bundle_copy)


def test_corrupted_file_fails_its_checksum(bundle_copy: Path) -> None:
    path = bundle_copy / "tokenizer.json"
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"tokenizer\.json: checksum does not match"):
        load_bundle(bundle_copy)
    assert load_bundle(bundle_copy, verify=False).hidden_size == 32  # sizes still agree


def test_table_of_the_wrong_shape(bundle_copy: Path) -> None:
    np.save(bundle_copy / "static_table.npy", np.zeros((3, 32), np.float32))
    reseal(bundle_copy, "static_table.npy")
    with pytest.raises(BundleError, match=r"static_table\.npy: expected a float32 table of shape"):
        Embedder.load(bundle_copy, provider="cpu")


def test_pickled_table_is_never_loaded(bundle_copy: Path) -> None:
    np.save(bundle_copy / "static_table.npy", np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    reseal(bundle_copy, "static_table.npy")
    with pytest.raises(BundleError, match="not a plain numpy array"):
        Embedder.load(bundle_copy, provider="cpu")


def test_newer_format_version(bundle_copy: Path) -> None:
    edit_manifest(bundle_copy, lambda m: m.update(format_version=99))
    with pytest.raises(BundleError, match="bundle format 99 is newer than this bertonnx reads"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("name", ["../outside.json", "/etc/passwd", "sub/../../x"])
def test_manifest_paths_cannot_escape_the_bundle(bundle_copy: Path, name: str) -> None:
    edit_manifest(bundle_copy, lambda m: m["files"].update({name: {"sha256": "0" * 64}}))
    with pytest.raises(BundleError, match="points outside the bundle"):
        load_bundle(bundle_copy)


def test_manifest_that_is_not_json(bundle_copy: Path) -> None:
    (bundle_copy / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match=r"manifest\.json: not valid JSON"):
        load_bundle(bundle_copy)


def test_graph_that_onnxruntime_cannot_read(bundle_copy: Path) -> None:
    (bundle_copy / "model.onnx").write_bytes(b"\x00garbage" * 100)
    reseal(bundle_copy, "model.onnx")
    with pytest.raises(ProviderError, match=r"model\.onnx: ONNX Runtime cannot load it"):
        Embedder.load(bundle_copy, provider="cpu")


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
