"""The generated corpus: prose taken out of Python sources, lines drawn in seeded passes, written as a stream."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from bertonnx.benchmarks.corpus import Pool, corpus_lines, prose_blocks, sentences_of, write_corpus

SOURCE = '''#!/usr/bin/env python
"""Module words go here. They are prose.

A second paragraph of the module docstring."""
import os  # noqa: F401

# A comment block that spans
# two lines of the file.
x = 1


def f():
    """Return the answer to everything asked."""
    return 42
'''


def test_prose_blocks_are_docstring_paragraphs_and_comment_blocks() -> None:
    blocks = list(prose_blocks(SOURCE))
    assert blocks[:3] == ["Module words go here. They are prose.", "A second paragraph of the module docstring.",
                          "Return the answer to everything asked."]
    assert "A comment block that spans two lines of the file." in blocks
    assert not any(b.startswith("!") or "noqa" in b for b in blocks)
    assert list(prose_blocks("def broken(:\n")) == []


def test_sentences_keep_prose_and_drop_code_and_fragments() -> None:
    block = "The first sentence reads well. Too short. Call self.run(x) to start it all. The last one ends here!"
    assert sentences_of(block) == ["The first sentence reads well.", "The last one ends here!"]
    assert sentences_of("value = compute the thing now") == []


def _pool() -> Pool:
    sentences = [f"Sentence number {i} of block {i // 5} here." for i in range(20)]
    return Pool(sentences, np.repeat(np.arange(5, 21, 5), 5), {"test": "0"})


def test_lines_are_seeded_passes_and_paragraphs_stay_in_their_block() -> None:
    pool = _pool()
    first = list(corpus_lines(pool, 50, seed=3))
    assert first == list(corpus_lines(pool, 50, seed=3))
    assert first != list(corpus_lines(pool, 50, seed=4))
    assert len(first) == 50
    starts = [next(i for i, sentence in enumerate(pool.sentences) if line.startswith(sentence)) for line in first]
    assert sorted(starts[:20]) == list(range(20))  # the first pass starts at every sentence once
    for line, start in zip(first, starts):
        blocks = {int(part.split("block ")[1].split()[0]) for part in line.split(" here.") if "block" in part}
        assert blocks == {start // 5}  # a paragraph never runs into the next block
    assert any(line.count("Sentence") > 1 for line in first) and any(line.count("Sentence") == 1 for line in first)


def test_write_corpus_streams_the_lines_and_describes_them(tmp_path: Path) -> None:
    out = tmp_path / "corpus.txt"
    info = write_corpus(out, _pool(), 30, seed=1)
    data = out.read_bytes()
    assert data.decode().splitlines() == list(corpus_lines(_pool(), 30, seed=1))
    assert info.sha256 == hashlib.sha256(data).hexdigest() and info.lines == 30 and info.pool_sentences == 20
    assert json.loads((tmp_path / "corpus.txt.json").read_text())["sha256"] == info.sha256
