"""One encoding worker of bertonnx.io.encode_pool (`python -m bertonnx.io.encode_worker`), and the frames it speaks.

The runtime never unpickles, not even from its own children: a frame is an 8-byte
length and its bytes; a block is a JSON header (its keys and which arrays follow)
and its arrays' raw bytes; an answer is a JSON header and the bytes of each part.
The worker reads a PartsSpec, then blocks, answering each; it leaves when its
input closes. It runs in a session of its own (a terminal's Ctrl-C is its
parent's to handle) and ignores SIGINT besides.
"""

from __future__ import annotations

import signal
import struct
import sys
from typing import IO

import numpy as np
import orjson

from bertonnx.io.assembly import parts
from bertonnx.io.files import FLAG_DTYPE, ID_DTYPE, VECTOR_DTYPE, RowBlock

PartsSpec = tuple[str, int, bool, bool, "str | None"]
"""What a worker rebuilds its encoders from: suffix, dim, with_ids, with_unknown, key_by (io.assembly.parts)."""
_LENGTH = struct.Struct("<Q")


def write_frame(stream: IO[bytes], data: bytes | memoryview) -> None:
    view = memoryview(data)
    view = view.cast("B") if view.nbytes else memoryview(b"")  # an array's buffer as its bytes, uncopied
    stream.write(_LENGTH.pack(view.nbytes))
    stream.write(view)


def read_frame(stream: IO[bytes]) -> bytes:
    """The next frame's bytes. Raises EOFError where the stream ends, even inside a frame."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        raise EOFError("the stream ended")
    (length,) = _LENGTH.unpack(head)
    data = stream.read(length)
    if len(data) < length:
        raise EOFError("the stream ended inside a frame")
    return data


def write_spec(stream: IO[bytes], spec: PartsSpec) -> None:
    write_frame(stream, orjson.dumps(list(spec)))
    stream.flush()


def read_spec(stream: IO[bytes]) -> PartsSpec:
    suffix, dim, with_ids, with_unknown, key_by = orjson.loads(read_frame(stream))
    return str(suffix), int(dim), bool(with_ids), bool(with_unknown), key_by


def write_block(stream: IO[bytes], block: RowBlock) -> None:
    header = {"keys": list(block.keys), "ids": block.ids is not None, "unknown": block.unknown is not None}
    write_frame(stream, orjson.dumps(header))
    write_frame(stream, np.ascontiguousarray(block.vectors, dtype=VECTOR_DTYPE).data)
    if block.ids is not None:
        write_frame(stream, np.ascontiguousarray(block.ids, dtype=ID_DTYPE).data)
    if block.unknown is not None:
        write_frame(stream, np.ascontiguousarray(block.unknown, dtype=FLAG_DTYPE).data)
    stream.flush()


def read_block(stream: IO[bytes], dim: int) -> RowBlock:
    header = orjson.loads(read_frame(stream))
    keys: list[str] = header["keys"]
    vectors = np.frombuffer(read_frame(stream), dtype=VECTOR_DTYPE).reshape(len(keys), dim)
    ids = np.frombuffer(read_frame(stream), dtype=ID_DTYPE).reshape(len(keys), 2) if header["ids"] else None
    unknown = np.frombuffer(read_frame(stream), dtype=FLAG_DTYPE) if header["unknown"] else None
    return RowBlock(keys, vectors, ids, unknown)


def write_answer(stream: IO[bytes], encoded: list[bytes] | None, error: str | None = None) -> None:
    write_frame(stream, orjson.dumps({"parts": len(encoded or []), "error": error}))
    for data in encoded or []:
        write_frame(stream, data)
    stream.flush()


def read_answer(stream: IO[bytes]) -> tuple[list[bytes], str | None]:
    """(the bytes of every part, None), or ([], the worker's error)."""
    header = orjson.loads(read_frame(stream))
    return [read_frame(stream) for _ in range(int(header["parts"]))], header["error"]


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    try:
        spec = read_spec(source)
    except EOFError:
        return
    encoders = [part.encode for part in parts(*spec)]  # type: ignore[arg-type]
    while True:
        try:
            block = read_block(source, spec[1])
        except EOFError:
            return
        try:
            encoded, error = [encode(block) for encode in encoders], None
        except Exception as failure:  # reported to the parent, which raises it as the job's error
            encoded, error = None, f"{type(failure).__name__}: {failure}"
        try:
            write_answer(sink, encoded, error)
        except BrokenPipeError:
            return  # the parent is gone


if __name__ == "__main__":
    main()
