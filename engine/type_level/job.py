"""Type-level jobs: a vocabulary file (+ corpus files) -> one vector per word, in constant memory, resumable.

The corpus is read as a stream of lines cut into the bulk path's slices; only
running sums per vocabulary word are kept (bertonnx.type_level.TypeSums). Every
`chunk_lines` lines, or once `checkpoint_seconds` (60 s) have passed since the
last, at a slice boundary, a checkpoint saves the sums, the counts and the input
position (file, line, byte offset) in `.<OUT>.partial/`; a killed job resumes
there and, because slices depend on the input alone and the sums are added in
input order, writes the same bytes as an uninterrupted run. The templates pass
(every word for the templates method, the words the corpus never saw otherwise)
checkpoints the same way, after every chunk of `chunk_lines` texts' words, or
after a step of at most TEMPLATE_WORDS words once the time has passed: steps lie
on a grid fixed by the chunk alone, so a resume batches the words as an
uninterrupted run does. An interrupted job (KeyboardInterrupt) that kept nothing
yet removes its work folder, so the same command can simply run again.

Outputs: the vectors in any bulk format, keyed by the vocabulary words; the
context counts in `<stem>.counts.tsv` beside it (a `#` line saying how the
vectors were made, then word, contexts, source) and, in an .npz, as `counts`
and `fallback` arrays beside 0-d fields saying how (TypeVectors.record: method,
prior, context, max_contexts, postprocess, ...).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bertonnx.embedder import Embedder
from bertonnx.errors import BadLineError, InputError, OptionError
from bertonnx.io.atomic import write_atomic
from bertonnx.io.checkpoints import (
    CHECKPOINT_SECONDS,
    check_same_job,
    claim,
    has_state,
    load_arrays,
    partial_dir,
    read_state,
    save_arrays,
    write_state,
)
from bertonnx.io.formats import output_files, suffix_of, write_vectors
from bertonnx.io.paths import check_file
from bertonnx.jobs.fingerprints import input_fingerprint, runtime_fingerprint
from bertonnx.jobs.lines import read_lines, slices
from bertonnx.tokenize import Tokenizer, preview
from bertonnx.type_level.postprocess import check_postprocess_rows, parse_postprocess
from bertonnx.type_level.vectors import (
    TEMPLATE_WORDS,
    Templates,
    TypeLevelOptions,
    TypeSums,
    TypeVectors,
    Vocabulary,
    check_unknown,
    finish,
    kept_slots,
    template_slots,
)

Progress = Callable[[str, int, int, int], None]
"""Called with (pass, done, total, lines): ("corpus", bytes read, corpus bytes, lines read), then
("templates", words done, words, words done)."""
STATE_VERSION = 2  # 2: the templates' sums apart from the corpus's (the prior)


@dataclass
class TypeLevelReport:
    words: int = 0
    method: str = "templates"  # templates | corpus
    from_corpus: int = 0  # words with at least one corpus context
    fallback: int = 0  # corpus method: words never seen, embedded from templates
    unknown: int = 0
    corpus_lines: int = 0  # lines read, this run and the killed one
    contexts: int = 0  # occurrences averaged
    stopped_early: bool = False  # every word reached max_contexts before the corpus ended
    resumed_lines: int = 0
    seconds: float = 0.0
    output: Path | None = None
    files: list[Path] = field(default_factory=list)


def counts_path(out: Path) -> Path:
    """Where a type-level output keeps its context counts: `<stem>.counts.tsv` beside it."""
    return out.with_name(f"{out.stem}.counts.tsv")


def read_vocabulary(path: Path) -> list[str]:
    """One word a line, UTF-8; a blank line or a line of several words is a bad line naming its number."""
    words: list[str] = []
    with path.open("rb") as stream:
        for line in read_lines(stream, str(path)):
            text = line.text.strip()
            if not text:
                raise BadLineError(f"{path}: line {line.number} is blank; the vocabulary takes one word a line")
            if len(text.split()) > 1:
                raise BadLineError(f"{path}: line {line.number} holds {len(text.split())} words "
                                   f"({preview(text)}); the vocabulary takes one word a line")
            words.append(text)
    if not words:
        raise InputError(f"{path}: the vocabulary is empty")
    return words


def vocabulary_of(tokenizer: Tokenizer, path: Path, words: list[str], unknown: str) -> Vocabulary:
    """The vocabulary read from `path`, its words named by their line; a word mapping to the unknown token is
    refused unless `unknown` says what it gets.

    Raises:
        UnknownWordError: unknown="error" and a word maps to the unknown token; names the fix.
    """
    line = f"{path}: line {{}}"  # the vocabulary has no blank line: entry i is line i + 1
    vocabulary = Vocabulary.of(tokenizer, words, name=lambda i: line.format(i + 1))
    check_unknown(vocabulary, unknown, name=lambda i: line.format(i + 1), remedy="{unknown} embeds it anyway")
    return vocabulary


def read_templates(path: Path) -> tuple[str, ...]:
    """One template a line (blank lines skipped), each with {} where the word goes, checked here so that an
    error names the file and line."""
    if not path.is_file():
        raise InputError(f"{path}: no such templates file")
    found, numbers = [], []
    with path.open("rb") as stream:
        for line in read_lines(stream, str(path)):
            if line.text.strip():
                found.append(line.text.strip())
                numbers.append(line.number)
    if not found:
        raise InputError(f"{path}: no templates; write one a line, with {{}} where the word goes")
    for text, number in zip(found, numbers):
        if text.count("{}") != 1:
            raise OptionError(f"{path}: line {number} ({preview(text)}) must hold {{}} exactly once, where the "
                              "word goes")
    return tuple(found)


@dataclass
class _Position:
    phase: str = "corpus"  # corpus | templates | done
    file: int = 0  # corpus file index
    line: int = 0  # lines of that file done
    byte: int = 0  # bytes of that file done
    lines_total: int = 0  # corpus lines done over every file
    template_done: int = 0  # template slots done


class TypeLevelJob:
    """One type-level job from start (or its last checkpoint) to the finished output."""

    def __init__(self, embedder: Embedder, vocabulary_path: Path, corpus: Sequence[Path], out: Path,
                 options: TypeLevelOptions, checkpoint_seconds: float = CHECKPOINT_SECONDS) -> None:
        """`checkpoint_seconds`: a checkpoint also falls at the next boundary once this long has passed since the
        last (besides every `options.chunk_lines` lines); it never changes the output."""
        suffix_of(out)
        self.embedder, self.out, self.options = embedder, out, options
        self.checkpoint_seconds = checkpoint_seconds
        self.corpus = list(corpus)
        self.vocabulary = vocabulary_of(embedder.tokenizer, vocabulary_path, read_vocabulary(vocabulary_path),
                                        options.unknown)
        self.templates = Templates.of(embedder.tokenizer, options.templates)
        self.sums = TypeSums(embedder.runner, self.vocabulary, options.pooling, options.max_contexts,
                             options.context)
        self.postprocess = parse_postprocess(options.postprocess, self.sums.sums.shape[1])
        check_postprocess_rows(self.postprocess, kept_slots(self.vocabulary, options.unknown))
        self.method = "corpus" if self.corpus else "templates"
        for path in self.corpus:
            check_file(path, "corpus")
        if self.corpus and all(path.stat().st_size == 0 for path in self.corpus):
            raise InputError("the corpus is empty: every corpus file has 0 bytes")
        self.fingerprint = {
            **input_fingerprint(vocabulary_path),
            **runtime_fingerprint(embedder),
            "kind": "type-level",
            "corpus": [input_fingerprint(path) for path in self.corpus],
            "method": self.method,
            **options.numbers(),
            "state": STATE_VERSION,
        }
        self.position = _Position()
        self.saved = _Position()  # the position of the last checkpoint on disk
        self.saved_at = time.monotonic()
        self.need: NDArray[np.int64] | None = None  # template slots, fixed when the corpus pass ends
        self.report = TypeLevelReport(words=len(self.vocabulary.words), method=self.method, output=out)

    @property
    def kept_lines(self) -> int:
        """Corpus lines a resume would not read again: those up to the last checkpoint on disk."""
        return self.saved.lines_total

    @property
    def kept_words(self) -> int:
        """Words of the templates pass a resume would not embed again."""
        return self.saved.template_done

    @property
    def total_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.corpus)

    def open(self, resume: bool, force: bool) -> TypeLevelJob:
        """Refuse what must not be overwritten (bertonnx.io.checkpoints.claim); pick up a killed run's checkpoint
        with `resume`.

        Raises:
            OutputError: an existing output (without force), a killed job's work (without resume or force), or
                (resume) the work of another job: the message names what differs.
        """
        work = partial_dir(self.out)
        if claim(self.out, output_files(self.out) + [counts_path(self.out)], resume, force,
                 unfinished="a killed job's work:"):
            self._load(work)
        elif work.exists():
            shutil.rmtree(work)  # a killed job's work when forced, or a folder left before its first checkpoint
        return self

    def run(self, progress: Progress | None = None) -> TypeLevelReport:
        """The job from its start or its last checkpoint to the finished output.

        Raises:
            KeyboardInterrupt: after a checkpoint that kept work, the work stays for a resume (`kept_lines`,
                `kept_words`); with nothing kept yet the work folder is removed.
        """
        started = time.monotonic()
        work = partial_dir(self.out)
        work.mkdir(exist_ok=True)
        if not has_state(work):
            self._checkpoint(work)  # a kill from here on leaves something a resume can continue
        try:
            self._passes(work, progress or (lambda what, done, total, lines: None))
        except KeyboardInterrupt:
            if not (self.kept_lines or self.kept_words):  # nothing a resume could skip: the same command runs again
                shutil.rmtree(work, ignore_errors=True)
            raise
        found = finish(self.vocabulary, self.sums, self.method, self.options, self.postprocess)
        self._write(found)
        shutil.rmtree(work, ignore_errors=True)
        self.report.from_corpus = int((self.sums.counts[self.vocabulary.slot] > 0).sum())
        self.report.fallback = int(found.fallback.sum())
        self.report.unknown = int(found.unknown.sum())
        self.report.contexts = int(found.counts.sum())
        self.report.corpus_lines = self.position.lines_total
        self.report.seconds = time.monotonic() - started
        return self.report

    # -- the passes ------------------------------------------------------------------------------

    def _passes(self, work: Path, tick: Progress) -> None:
        if self.position.phase == "corpus" and self.method == "corpus":
            try:
                self._corpus_pass(work, tick)
            except (BadLineError, InputError):
                shutil.rmtree(work, ignore_errors=True)  # the same corpus fails at the same line again
                raise
        if self.position.phase in ("corpus", "templates"):
            if self.need is None:
                self.need = template_slots(self.sums, self.method, self.options)
                self.position.phase = "templates"
                self._checkpoint(work)
            self._templates_pass(work, tick)

    def _due(self) -> bool:
        """Whether `checkpoint_seconds` have passed since the last checkpoint."""
        return time.monotonic() - self.saved_at >= self.checkpoint_seconds

    def _corpus_pass(self, work: Path, tick: Progress) -> None:
        done_before = sum(path.stat().st_size for path in self.corpus[: self.position.file])
        since = 0
        for index in range(self.position.file, len(self.corpus)):
            path = self.corpus[index]
            with path.open("rb") as stream:
                stream.seek(self.position.byte)
                lines = read_lines(stream, str(path), self.position.line + 1, self.position.byte)
                for chunk in slices(lines):
                    self.sums.add_corpus([line.text for line in chunk])
                    self.position.line, self.position.byte = chunk[-1].number, chunk[-1].end_byte
                    self.position.lines_total += len(chunk)
                    since += len(chunk)
                    tick("corpus", done_before + self.position.byte, self.total_bytes, self.position.lines_total)
                    if not self.sums.wanting:
                        self.report.stopped_early = True
                        break
                    if since >= self.options.chunk_lines or self._due():
                        self._checkpoint(work)
                        since = 0
            if self.report.stopped_early:
                break
            done_before += path.stat().st_size
            self.position.file, self.position.line, self.position.byte = index + 1, 0, 0
        if self.position.lines_total == 0:
            raise InputError("the corpus is empty: no line in any corpus file")

    def _templates_pass(self, work: Path, tick: Progress) -> None:
        assert self.need is not None
        chunk = max(1, self.options.chunk_lines // len(self.templates.texts))  # words between checkpoints
        while self.position.template_done < self.need.size:
            done = self.position.template_done
            # The step's end on a grid fixed by `chunk` alone (chunks, and TEMPLATE_WORDS steps from each chunk's
            # start: add_templates' own batches), so that a resume after any step batches as an unbroken run.
            start = done // chunk * chunk
            stop = min(start + chunk, start + ((done - start) // TEMPLATE_WORDS + 1) * TEMPLATE_WORDS, self.need.size)
            self.sums.add_templates(self.need[done:stop], self.templates)
            self.position.template_done = stop
            if stop < self.need.size and (stop % chunk == 0 or self._due()):
                self._checkpoint(work)
            tick("templates", stop, int(self.need.size), stop)

    # -- checkpoints --------------------------------------------------------------------------------

    def _checkpoint(self, work: Path) -> None:
        """Arrays first, each atomically; state.json last, with their sha256: a torn checkpoint is refused."""
        arrays = {"sums.npy": self.sums.sums, "counts.npy": self.sums.counts,
                  "template_sums.npy": self.sums.template_sums, "template_counts.npy": self.sums.template_counts}
        if self.need is not None:
            arrays["need.npy"] = self.need
        hashes = save_arrays(work, arrays)
        write_state(work, {"fingerprint": self.fingerprint, "position": asdict(self.position), "sha256": hashes})
        self.saved, self.saved_at = replace(self.position), time.monotonic()

    def _load(self, work: Path) -> None:
        state = read_state(work)
        saved = state.get("fingerprint")
        check_same_job(saved if isinstance(saved, dict) else {}, self.fingerprint)
        arrays = load_arrays(work, state.get("sha256") or {})
        self.sums.sums[...] = arrays["sums.npy"]
        self.sums.counts[...] = arrays["counts.npy"]
        self.sums.template_sums[...] = arrays["template_sums.npy"]
        self.sums.template_counts[...] = arrays["template_counts.npy"]
        self.need = arrays.get("need.npy")
        self.position = _Position(**state["position"])
        self.saved = replace(self.position)
        self.report.resumed_lines = self.position.lines_total

    # -- the output -----------------------------------------------------------------------------------

    def _write(self, found: TypeVectors) -> None:
        self.report.files = write_type_vectors(self.out, found)


def record_line(record: dict[str, object]) -> str:
    """The counts file's first line: how the vectors were made, `# bertonnx type-level: key=value ...` (the
    templates left out: they can be long; an .npz keeps them)."""
    fields = " ".join(f"{key}={_plain(value)}" for key, value in record.items() if key != "templates")
    return f"# bertonnx type-level: {fields}"


def _plain(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def write_type_vectors(out: Path, found: TypeVectors) -> list[Path]:
    """The counts beside the vectors first, then the vectors (in any bulk format), each atomically."""
    unknown = found.options.unknown
    source = np.where(found.fallback | (found.method == "templates"), "templates", "corpus")
    source = np.where(found.unknown & (unknown == "zero"), "zero", source)
    rows = [record_line(found.record()), "word\tcontexts\tsource"] + [
        f"{word}\t{count}\t{kind}" for word, count, kind in zip(found.words, found.counts.tolist(), source)
    ]
    write_atomic(counts_path(out), _writer(("\n".join(rows) + "\n").encode("utf-8")))
    extra: dict[str, NDArray[np.generic]] = {"counts": found.counts, "fallback": found.fallback}
    extra.update({key: np.array(json.dumps(value) if isinstance(value, list) else value)  # 0-d fields
                  for key, value in found.record().items()})
    ids = np.column_stack([np.arange(1, len(found.words) + 1), np.zeros(len(found.words))]).astype(np.int64)
    write_vectors(out, list(found.words), found.vectors, ids=ids, unknown=found.unknown, extra=extra)
    return [counts_path(out), out]


def _writer(data: bytes) -> Callable[[object], object]:
    return lambda stream: stream.write(data)  # type: ignore[attr-defined]
