"""A job's input as lines, and lines cut into slices: the memory unit of a bulk job.

A slice is at most SLICE_LINES lines and about SLICE_CHARS characters, so a
slice's states stay small however long its lines; a line of more than
LONG_TEXT_PIECES word pieces runs alone, a group of windows at a time
(bertonnx.jobs.rows). Slices depend on the input alone, so a job resumed at a
slice boundary cuts the rest of its input exactly as an uninterrupted run does.
"""

from __future__ import annotations

import codecs
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from bertonnx.errors import BadLineError

SLICE_LINES = 512
"""Lines per Embedder call. Batches are cut from a slice sorted by length, so a bigger slice pads less: on
20,000 mixed sentences slices of 256 lines pad 13.2 % of positions, 512 lines 7.8 %, 1024 lines 4.5 %, one
call 0.3 %. With three slices in flight (read ahead, in the model, being written), 512 lines ran at 0.96x
the library's one call for +135 MB, 1024 at 0.97x for +240 MB (benchmarks/README.md, "Bulk jobs end to end")."""
SLICE_CHARS = 1 << 18
"""Characters per slice, about 64,000 pieces: bounds a slice of long lines as SLICE_LINES bounds short ones."""
LONG_TEXT_PIECES = 1 << 14
"""A line of more pieces runs a group of windows at a time instead of with its slice."""


@dataclass(frozen=True)
class Line:
    number: int  # 1-based line number in the input
    text: str
    end_byte: int  # offset just past this line, for progress and resume
    start_byte: int = 0  # offset of its first byte, for progress inside a very long line
    bad_byte: int | None = None  # where read with undecodable="mark": the offset of its first byte that is not
    # UTF-8 (its text is then empty); None: the line is UTF-8


def read_lines(stream: BinaryIO, name: str, first_number: int = 1, offset: int = 0,
               undecodable: Literal["raise", "mark"] = "raise") -> Iterator[Line]:
    """Lines as text without their line ending (LF or CRLF); a missing final newline is fine.

    A byte-order mark at the start of the input (as Windows editors write) is
    dropped, so that it does not become part of the first word.

    Args:
        first_number, offset: the line number and byte offset `stream` starts at (a resumed job seeks).
        undecodable: a line that is not UTF-8 raises, or ("mark", for a job that skips bad lines) comes with
            its `bad_byte` set and no text: never decoded with replacement characters into a wrong vector.

    Raises:
        BadLineError: a line is not UTF-8 (undecodable="raise"), naming the line and the byte offset.
    """
    for number, raw in enumerate(stream, start=first_number):
        bom = len(codecs.BOM_UTF8) if offset == 0 and raw.startswith(codecs.BOM_UTF8) else 0
        bad = None
        try:
            text = raw[bom:].decode("utf-8")
        except UnicodeDecodeError as error:
            if undecodable == "raise":
                raise BadLineError(
                    f"{name}: line {number} is not valid UTF-8 (byte {offset + bom + error.start} of the input)"
                ) from error
            text, bad = "", offset + bom + error.start
        offset += len(raw)
        yield Line(number=number, text=text.rstrip("\r\n"), end_byte=offset, start_byte=offset - len(raw),
                   bad_byte=bad)


def slices(lines: Iterator[Line], max_lines: int | None = None, max_chars: int | None = None) -> Iterator[list[Line]]:
    """Lines cut greedily into slices of at most `max_lines` lines and about `max_chars` characters.

    A slice depends only on the lines from its first on, so slicing resumed at a
    slice boundary cuts the rest exactly as an uninterrupted run does.
    """
    max_lines = SLICE_LINES if max_lines is None else max_lines
    max_chars = SLICE_CHARS if max_chars is None else max_chars
    batch: list[Line] = []
    chars = 0
    for line in lines:
        batch.append(line)
        chars += len(line.text)
        if len(batch) >= max_lines or chars >= max_chars:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


@contextmanager
def open_input(source: Path | None, start_byte: int = 0) -> Iterator[tuple[BinaryIO, str]]:
    """The input file from `start_byte`, or stdin (left open); yields (binary stream, name for messages)."""
    if source is None:
        yield sys.stdin.buffer, "stdin"
        return
    with source.open("rb") as stream:
        stream.seek(start_byte)
        yield stream, str(source)
