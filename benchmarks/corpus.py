"""A large corpus anyone can regenerate offline: `python -m bertonnx.benchmarks.corpus OUT --lines 1000000`.

The type-level corpus pass is measured on text a user's corpus resembles, yet nothing may be downloaded and
nothing large committed. So the prose is taken from what is installed: the docstrings and comments of the
standard library's own modules and its Language Reference topics (`pydoc_data.topics`; PSF licence), and of
any installed packages named with --packages (their own licences: numpy and torch BSD, sympy BSD,
transformers Apache-2.0). It is cut into sentences once (a pool of a few MB); lines are then drawn in
passes, each pass a seeded permutation of the pool: a line is one sentence, or, one time in four, a
paragraph of 2-8 consecutive sentences of the same docstring or comment starting there. The first pass is
distinct text; later passes repeat sentences (in other paragraphs), which the summary states.

The output is written as it is drawn (never held), with a JSON summary beside it: sources and their
versions, pool size, lines per pass, and the SHA-256 of the file, so two runs can be compared.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.metadata
import importlib.util
import json
import re
import sys
import sysconfig
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

PARAGRAPH_SHARE = 0.25  # of lines that are a paragraph rather than one sentence
PARAGRAPH_SENTENCES = (2, 8)  # a paragraph's sentences, inclusive
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'])")
_COMMENT = re.compile(r"^\s*#+\s?(.*)$")
_SKIP_COMMENT = re.compile(r"^(!|-\*-|noqa|type:|pragma|fmt:|XXX$|TODO$|[-=#*~ ]*$)")
_CODE = re.compile(r"self\.|\w\(|==| = |\):|^def |^if .*:|^return ")


@dataclass(frozen=True)
class Pool:
    """Distinct sentences in source order, and where each one's paragraph ends (a paragraph never crosses
    its docstring or comment block)."""

    sentences: list[str]
    block_end: np.ndarray  # (S,) int: index one past the last sentence of the sentence's block
    sources: dict[str, str]  # source name -> version


@dataclass(frozen=True)
class CorpusInfo:
    """What a generated corpus holds: written beside it as OUT.json."""

    lines: int
    seed: int
    sources: dict[str, str]
    pool_sentences: int
    pool_chars: int
    lines_per_pass: int  # lines after which sentences start to repeat
    sha256: str


def prose_blocks(source: str) -> Iterator[str]:
    """The docstrings and comment blocks of one Python file's source, each as one whitespace-joined block."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                yield from re.split(r"\n\s*\n", doc)
    block: list[str] = []
    for line in source.splitlines():
        found = _COMMENT.match(line)
        text = found.group(1).strip() if found else ""
        if text and not _SKIP_COMMENT.match(text):
            block.append(text)
        elif block:
            yield " ".join(block)
            block = []
    if block:
        yield " ".join(block)


def sentences_of(block: str) -> list[str]:
    """The sentences of a block that read as prose: four words or more, mostly letters, no call or assignment."""
    found = []
    for sentence in _SENTENCE_END.split(" ".join(block.split())):
        letters = sum(c.isalpha() or c == " " for c in sentence)
        if len(sentence.split()) >= 4 and letters >= 0.8 * len(sentence) and not _CODE.search(sentence):
            found.append(sentence)
    return found


def source_files(packages: Sequence[str]) -> Iterator[tuple[str, list[Path]]]:
    """(source name, its .py files, sorted) for the standard library, then each named installed package."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    yield "stdlib", sorted(p for p in stdlib.rglob("*.py") if "site-packages" not in p.relative_to(stdlib).parts)
    for name in packages:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit(f"--packages: {name} is not an installed package")
        yield name, sorted(p for folder in spec.submodule_search_locations for p in Path(folder).rglob("*.py"))


def build_pool(packages: Sequence[str] = ()) -> Pool:
    """Every distinct prose sentence of the sources, in a fixed order (first occurrence kept)."""
    seen: dict[str, None] = {}
    ends: list[int] = []
    sources: dict[str, str] = {}

    def add(blocks: Iterator[str]) -> None:
        for block in blocks:
            fresh = list(dict.fromkeys(s for s in sentences_of(block) if s not in seen))
            seen.update(dict.fromkeys(fresh))
            ends.extend([len(seen)] * len(fresh))

    for name, files in source_files(packages):
        sources[name] = sys.version.split()[0] if name == "stdlib" else importlib.metadata.version(name)
        for path in files:
            add(prose_blocks(path.read_text(encoding="utf-8", errors="replace")))
    from pydoc_data.topics import topics  # the Language Reference, as pydoc shows it

    add(block for key in sorted(topics) for block in re.split(r"\n\s*\n", topics[key]))
    return Pool(list(seen), np.asarray(ends, dtype=np.int64), sources)


def corpus_lines(pool: Pool, lines: int, seed: int = 0) -> Iterator[str]:
    """`lines` lines drawn from the pool in seeded passes (one sentence, or a paragraph starting there)."""
    rng = np.random.default_rng(seed)
    total = len(pool.sentences)
    emitted = 0
    while emitted < lines:
        order = rng.permutation(total)
        paragraph = rng.random(total) < PARAGRAPH_SHARE
        lengths = rng.integers(PARAGRAPH_SENTENCES[0], PARAGRAPH_SENTENCES[1] + 1, size=total)
        for index, whole, length in zip(order[: lines - emitted], paragraph, lengths):
            stop = min(int(pool.block_end[index]), index + length) if whole else index + 1
            yield " ".join(pool.sentences[index:stop])
        emitted += min(total, lines - emitted)


def write_corpus(path: Path, pool: Pool, lines: int, seed: int = 0) -> CorpusInfo:
    """Write `lines` lines drawn from `pool` to `path` (and its summary to path + .json), streaming."""
    digest = hashlib.sha256()
    with path.open("w", encoding="utf-8") as sink:
        for line in corpus_lines(pool, lines, seed):
            data = line + "\n"
            digest.update(data.encode("utf-8"))
            sink.write(data)
    info = CorpusInfo(lines, seed, pool.sources, len(pool.sentences), sum(map(len, pool.sentences)),
                      len(pool.sentences), digest.hexdigest())
    path.with_name(path.name + ".json").write_text(json.dumps(asdict(info), indent=2) + "\n", encoding="utf-8")
    return info


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the corpus file to write (one text a line)")
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--packages", default="", help="installed packages whose prose joins the stdlib's, "
                        "comma-separated (e.g. numpy,sympy,torch,transformers)")
    args = parser.parse_args(argv)
    packages = [p for p in args.packages.split(",") if p]
    info = write_corpus(args.out, build_pool(packages), args.lines, args.seed)
    print(json.dumps(asdict(info), indent=2), file=sys.stderr)


if __name__ == "__main__":
    main()
