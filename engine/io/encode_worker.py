"""One encoding worker of bertonnx.io.encode_pool: `python -m bertonnx.io.encode_worker`.

Reads from stdin a pickled PartsSpec, then RowBlocks; answers each with ("ok", [bytes of every part]) or
("error", message) on stdout. Leaves when stdin closes; ignores Ctrl-C, which is its parent's to handle.
"""

from __future__ import annotations

import pickle
import signal
import sys

from bertonnx.io.assembly import parts


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    try:
        suffix, dim, with_ids, with_unknown, key_by = pickle.load(source)
    except EOFError:
        return
    encoders = [part.encode for part in parts(suffix, dim, with_ids, with_unknown, key_by)]  # type: ignore[arg-type]
    while True:
        try:
            block = pickle.load(source)
        except EOFError:
            return
        try:
            answer: tuple[str, object] = ("ok", [encode(block) for encode in encoders])
        except Exception as error:  # reported to the parent, which raises it as the job's error
            answer = ("error", f"{type(error).__name__}: {error}")
        try:
            pickle.dump(answer, sink, protocol=pickle.HIGHEST_PROTOCOL)
            sink.flush()
        except BrokenPipeError:
            return  # the parent is gone


if __name__ == "__main__":
    main()
