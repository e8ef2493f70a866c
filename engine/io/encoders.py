"""Encoders: a block of rows -> the bytes a part of an output takes (binary arrays, word2vec rows, JSON lines).

Text numbers (.txt, .jsonl) are the shortest decimal that reads back as the same
float32 (orjson's), -0.0 included: every float32 round-trips exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import orjson
from numpy.typing import NDArray

from bertonnx.io.files import VECTOR_DTYPE, RowBlock
from bertonnx.io.keys import escape_token

KeyBy = Literal["line", "word"]
"""How word2vec keys carry a row's place: by line (sentence rows), or by line and word (contextual rows)."""


def array_bytes(values: NDArray[np.generic] | None, dtype: np.dtype) -> bytes:
    assert values is not None, "a part asked for ids or flags the rows do not carry"
    return np.ascontiguousarray(values, dtype=dtype).tobytes()


def vector_bytes(block: RowBlock) -> bytes:
    return array_bytes(block.vectors, VECTOR_DTYPE)


def _number_rows(vectors: NDArray[np.float32], separator: bytes = b",") -> list[memoryview]:
    """Each row's numbers as `a,b,c` (or joined by `separator`): orjson's shortest float32 decimals, -0.0 kept.

    One orjson call formats the whole block; the rows are then cut out of it where numpy finds their brackets,
    as views: no Python-level split of megabytes of text."""
    if vectors.shape[0] == 0:
        return []
    text = orjson.dumps(np.ascontiguousarray(vectors, dtype=VECTOR_DTYPE), option=orjson.OPT_SERIALIZE_NUMPY)
    if separator != b",":
        text = text.replace(b",", separator)  # numbers never hold a comma
    close = np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == ord("]"))[:-1]  # each row's "]"
    start = np.concatenate(([2], close[:-1] + 3))  # after "[[" or "],["
    view = memoryview(text)
    return [view[low:high] for low, high in zip(start.tolist(), close.tolist())]


def jsonl_records(
    keys: Sequence[str],
    vectors: NDArray[np.float32],
    ids: NDArray[np.int64] | None = None,
    unknown: NDArray[np.bool_] | None = None,
) -> bytes:
    """Rows as JSON lines `{"key":...,"line":...,"word":...,"unknown":...,"vector":[...]}`, floats exact as float32.

    The bytes of orjson.dumps on each row's dict (the definition, tested), made faster: the whole block's numbers
    in one orjson call (_number_rows), each key by orjson, and Python only joins them."""
    dumps = orjson.dumps
    numbers = _number_rows(vectors)
    if ids is None:
        places = [b""] * len(numbers)
    else:
        places = [b',"line":%d,"word":%d' % (line, word) for line, word in ids.tolist()]
    flags = [b""] * len(numbers) if unknown is None else [
        b',"unknown":true' if flag else b',"unknown":false' for flag in unknown.tolist()
    ]
    return b"".join([
        b'{"key":%b%b%b,"vector":[%b]}\n' % (dumps(key), place, flag, row)
        for key, place, flag, row in zip(keys, places, flags, numbers)
    ])


def positioned_keys(block: RowBlock, key_by: KeyBy | None) -> Sequence[str]:
    """Keys that say where each row came from, for formats with no room for ids (word2vec): "is@3:1" is word 1 of
    line 3 (words counted from 0, lines from 1, as in ids), "the king is wise.@3" is line 3. Unique where a word or a
    line repeats, which a keyed table needs; None keeps the keys as they are (static and type-level words)."""
    if key_by is None or block.ids is None:
        return block.keys
    if key_by == "line":
        return [f"{key}@{line}" for key, line in zip(block.keys, block.ids[:, 0].tolist())]
    return [f"{key}@{line}:{word}" for key, (line, word) in zip(block.keys, block.ids.tolist())]


def txt_rows(block: RowBlock, key_by: KeyBy | None = None) -> bytes:
    return b"".join([
        b"%b %b\n" % (escape_token(key).encode("utf-8"), row)
        for key, row in zip(positioned_keys(block, key_by), _number_rows(block.vectors, b" "))
    ])


def bin_rows(block: RowBlock, key_by: KeyBy | None = None) -> bytes:
    data = np.ascontiguousarray(block.vectors, dtype=VECTOR_DTYPE)
    return b"".join(
        escape_token(key).encode("utf-8") + b" " + row.tobytes() + b"\n"
        for key, row in zip(positioned_keys(block, key_by), data)
    )
