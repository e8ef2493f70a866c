"""Reading and checking a bundle: the directory `bertonnx export` writes.

A bundle is data only. Loading one never runs code from it: the manifest is
JSON, the table is a plain `.npy` read with `allow_pickle=False`, and every
file name in the manifest must stay inside the bundle directory.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict, cast

import numpy as np
from numpy.typing import NDArray

from bertonnx.errors import BundleError

FORMAT_NAME = "bertonnx-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL_FILE = "model.onnx"
TABLE_FILE = "static_table.npy"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "config.json"
STATIC_OUTPUT = "word_embeddings"
"""Graph output: the word-embedding row of every token, without position or segment terms."""
CONTEXTUAL_OUTPUT = "last_hidden_state"
"""Graph output: the final hidden state of every token."""


class FileEntry(TypedDict):
    sha256: str
    bytes: int


class SourceSection(TypedDict, total=False):
    model: str  # the hub id or folder exported
    model_type: str
    weights_sha256: str


class ModelSection(TypedDict, total=False):
    hidden_size: int
    vocab_size: int
    max_length: int
    embedding_size: int  # absent in bundles older than the field: = hidden_size
    num_layers: int
    num_heads: int
    sentence_transformers_max_length: int  # only where the source had a sentence-transformers config


class OnnxSection(TypedDict, total=False):
    precision: str  # fp32 | fp16 | int8
    optimized: bool
    opset: int
    outputs: dict[str, str]


class Manifest(TypedDict, total=False):
    """manifest.json, as `read_manifest` checked it: the fields the runtime relies on are present and sane."""

    format: str
    format_version: int
    source: SourceSection
    model: ModelSection
    onnx: OnnxSection
    files: dict[str, FileEntry]
    validation: dict[str, Any]


@dataclass(frozen=True)
class Bundle:
    """A checked bundle on disk. Paths are resolved; nothing heavy is loaded yet."""

    path: Path
    manifest: Manifest

    @property
    def graph_sha256(self) -> str:
        """The sha256 of model.onnx: what compiled-model caches and job records key on."""
        return self.manifest["files"][MODEL_FILE]["sha256"]

    @property
    def source_model(self) -> str:
        return str(self.manifest["source"]["model"])

    @property
    def hidden_size(self) -> int:
        return int(self.manifest["model"]["hidden_size"])

    @property
    def embedding_size(self) -> int:
        """Width of the static table; bundles written before it was recorded have it equal to hidden_size."""
        return int(self.manifest["model"].get("embedding_size", self.hidden_size))

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["model"]["vocab_size"])

    @property
    def max_length(self) -> int:
        return int(self.manifest["model"]["max_length"])

    @property
    def precision(self) -> str:
        return str(self.manifest["onnx"]["precision"])

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def tokenizer_path(self) -> Path:
        return self.path / TOKENIZER_FILE

    @property
    def table_path(self) -> Path:
        return self.path / TABLE_FILE

    def load_table(self) -> NDArray[np.float32]:
        """The static table (V, E), memory-mapped: pages load on first touch. E = H except in e.g. ELECTRA-small."""
        try:
            table = np.load(self.table_path, mmap_mode="r", allow_pickle=False)
        except ValueError as error:
            raise BundleError(f"{self.table_path}: not a plain numpy array ({error})") from error
        expected = (self.vocab_size, self.embedding_size)
        if table.shape != expected or table.dtype != np.float32:
            raise BundleError(
                f"{self.table_path}: expected a float32 table of shape {expected}, "
                f"found {table.dtype} {table.shape}"
            )
        # A plain ndarray over the same mapping: np.memmap's __getitem__ costs more than the gather.
        return table.view(np.ndarray)


def load_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Open a bundle directory and check it before anything uses it.

    Args:
        path: the bundle directory.
        verify: also compare every file's sha256 with the manifest (reads each
            file once; turn off only for bundles you just checked).

    Raises:
        BundleError: naming the file at fault.
    """
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise BundleError(f"{root}: no bundle here (not a directory)")
    manifest = read_manifest(root)
    for name, entry in manifest["files"].items():
        _check_file(root, name, entry, verify)
    return Bundle(path=root, manifest=manifest)


def read_manifest(root: Path) -> Manifest:
    """The bundle's manifest, checked: format and version, the model sizes, the files it must list.

    Raises:
        BundleError: naming the manifest and what is wrong with it.
    """
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{manifest_path}: missing; is {root} a bertonnx bundle?")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise BundleError(f"{manifest_path}: not valid JSON ({error})") from error
    _check_format(manifest, manifest_path)
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{manifest_path}: no 'files' table")
    for required in (MODEL_FILE, TABLE_FILE, TOKENIZER_FILE):
        if required not in files:
            raise BundleError(f"{manifest_path}: 'files' does not list {required}")
    return cast(Manifest, manifest)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_format(manifest: Any, manifest_path: Path) -> None:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise BundleError(f"{manifest_path}: not a {FORMAT_NAME} manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise BundleError(f"{manifest_path}: format_version missing")
    if version > FORMAT_VERSION:
        raise BundleError(
            f"{manifest_path}: bundle format {version} is newer than this bertonnx reads "
            f"({FORMAT_VERSION}); upgrade bertonnx"
        )
    for section, keys in {"model": ("hidden_size", "vocab_size", "max_length"), "onnx": ("precision",)}.items():
        block = manifest.get(section)
        if not isinstance(block, dict) or any(key not in block for key in keys):
            raise BundleError(f"{manifest_path}: section {section!r} needs {', '.join(keys)}")
    for key in ("hidden_size", "vocab_size", "max_length", "embedding_size"):
        value = manifest["model"].get(key, 1)  # embedding_size is optional
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BundleError(f"{manifest_path}: model.{key} must be a positive whole number, found {value!r}")


def _check_file(root: Path, name: str, entry: Any, verify: bool) -> None:
    try:
        target = (root / name).resolve()
        is_file = target.is_file()
    except (OSError, ValueError) as error:  # a NUL byte, a name too long for the filesystem
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise BundleError(f"{root / MANIFEST}: file name {name[:80]!r} is not a usable path ({reason})") from error
    if not target.is_relative_to(root) or target == root:
        raise BundleError(f"{root / MANIFEST}: file name {name[:80]!r} points outside the bundle")
    if not is_file:
        raise BundleError(f"{target}: missing from the bundle")
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
        raise BundleError(f"{root / MANIFEST}: entry for {name} has no sha256")
    size = target.stat().st_size
    if "bytes" in entry and size != entry["bytes"]:
        raise BundleError(f"{target}: {size} bytes, the manifest says {entry['bytes']} (truncated or replaced?)")
    if verify and sha256_file(target) != entry["sha256"]:
        raise BundleError(f"{target}: checksum does not match the manifest (corrupted or replaced)")
