r"""Vector file formats, chosen by suffix: rows encoded as they come, files assembled at the end, and readers.

Formats (a job with no rows writes a valid empty file):
    .npy    (N, dim) float32, plus `<stem>.keys.txt` (one key a line, see
            bertonnx.io.keys), with ids `<stem>.ids.npy` ((N, 2) int64) and with
            unknown flags `<stem>.unknown.npy` ((N,) bool).
    .npz    arrays `vectors` (N, dim) float32, `keys` (N,) numpy unicode and, when
            the rows carry them, `ids` (N, 2) int64 and `unknown` (N,) bool;
            stored uncompressed, loads with `allow_pickle=False`. Keys ending in
            NUL are refused (numpy drops trailing NULs). `keys` takes N * longest
            key * 4 bytes: prefer another format for long sentences.
    .txt    word2vec text: `N dim` header, then `key v1 ... vdim` per row. No ids
            or flags (no room for them).
    .bin    word2vec binary: `N dim` header, then `key`, a space, dim
            little-endian float32 and a newline per row. No ids or flags.
    .jsonl  `{"key":...,"line":L,"word":W,"unknown":false,"vector":[...]}` per row
            (line and word with ids only, unknown with flags only). An empty file
            reads back with dim 0.

Text numbers (.txt, .jsonl) are the shortest decimal that reads back as the same
float32 (orjson's), -0.0 included: every float32 round-trips exactly.

Ids: row i's id is (line, word): the 1-based input line it came from and its
index among that line's rows, so 0 for a static word or a sentence, which give
one row a line (the numbering `bertonnx embed-distributed` uses, minus its file).
Unknown: True where the row's word (a sentence: any of its words) maps to the
tokenizer's unknown token, e.g. most emoji with an uncased English vocabulary.

The modules, along the seams of the work:
    bertonnx.io.files      what an output is: suffixes, its files, RowBlock and Table, check_rows
    bertonnx.io.encoders   rows -> bytes: binary arrays, word2vec rows, JSON lines
    bertonnx.io.assembly   writing: the parts rows are appended to, assembled into the files atomically
    bertonnx.io.tables     reading any output back (read_table, read_vectors)
This module is their face: everything a caller needs is importable from here.
"""

from __future__ import annotations

from bertonnx.io.assembly import Part, assemble, npy_header, parts, write_vectors
from bertonnx.io.encoders import jsonl_records
from bertonnx.io.files import (
    ENCODE_ROWS,
    ID_SUFFIXES,
    SUPPORTED_SUFFIXES,
    RowBlock,
    Table,
    check_rows,
    ids_path,
    output_files,
    sidecar_path,
    suffix_of,
    unknown_path,
)
from bertonnx.io.tables import read_table, read_vectors

__all__ = [
    "ENCODE_ROWS", "ID_SUFFIXES", "SUPPORTED_SUFFIXES", "Part", "RowBlock", "Table", "assemble", "check_rows",
    "ids_path", "jsonl_records", "npy_header", "output_files", "parts", "read_table", "read_vectors",
    "sidecar_path", "suffix_of", "unknown_path", "write_vectors",
]
