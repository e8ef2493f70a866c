"""`bertonnx embed`: a file of words or texts -> a vector file, in chunks, resumable; or JSON lines to stdout."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bertonnx.cli.console import CliError, data_stdout, err, print_skipped, say, say_error
from bertonnx.cli.options import (
    BackendChoice,
    BackendOption,
    BatchTokensOption,
    ContextOption,
    ContextualFlag,
    JobFlags,
    LongTextChoice,
    LongTextOption,
    MaxLengthOption,
    MinFidelityOption,
    NormalizeOption,
    OnErrorChoice,
    OnErrorOption,
    PoolingChoice,
    PoolingOption,
    PrecisionChoice,
    PrecisionOption,
    PriorOption,
    ProviderChoice,
    ProviderOption,
    SentencesFlag,
    StaticFlag,
    TypeLevelFiles,
    UnknownOption,
    job_options,
    load_options,
    made_by,
)
from bertonnx.cli.progress import LineProgress, slow_load_notice
from bertonnx.errors import OptionError, OutputError
from bertonnx.io.checkpoints import partial_dir
from bertonnx.io.formats import suffix_of
from bertonnx.jobs.bulk import BulkReport, FileJob, embed_to_stream
from bertonnx.jobs.rows import BulkOptions
from bertonnx.options import DEFAULT_BATCH_TOKENS, DEFAULT_CHUNK_LINES, LoadOptions
from bertonnx.type_level import DEFAULT_CONTEXT, DEFAULT_MAX_CONTEXTS, DEFAULT_PRIOR
from bertonnx.type_level.vectors import TypeLevelOptions

if TYPE_CHECKING:
    from bertonnx.embedder import Embedder


def embed(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory")],
    static: StaticFlag = False,
    contextual: ContextualFlag = False,
    sentences: SentencesFlag = False,
    input_path: Annotated[str, typer.Option("--input", "-i", help="UTF-8 input file, or - for stdin")] = "-",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Output: .npy .npz .txt .bin (word2vec) .jsonl; "
                                  "none or - : JSON lines to stdout")
    ] = None,
    pooling: PoolingOption = PoolingChoice.mean,
    normalize: NormalizeOption = False,
    unknown: UnknownOption = None,
    long_text: LongTextOption = LongTextChoice.window,
    on_error: OnErrorOption = OnErrorChoice.fail,
    max_length: MaxLengthOption = None,
    batch_tokens: BatchTokensOption = DEFAULT_BATCH_TOKENS,
    chunk_lines: Annotated[
        int, typer.Option(help="Lines between checkpoints (one also falls each minute; a killed job resumes from the "
                          "last); memory does not grow with it", min=1)
    ] = DEFAULT_CHUNK_LINES,
    resume: Annotated[
        bool, typer.Option(help="Continue a killed job of the same settings from its last checkpoint")
    ] = False,
    force: Annotated[
        bool, typer.Option(help="Replace an existing output, or start over where a killed job left its work")
    ] = False,
    type_level: Annotated[
        bool, typer.Option("--type-level", help="One vector per vocabulary word (-i: one word a line), pooled over "
                           "its contexts in --corpus, else in templates")
    ] = False,
    corpus: Annotated[
        list[str] | None, typer.Option("--corpus", help="--type-level: UTF-8 text files or globs, one context a "
                                       "line (repeatable); words never seen fall back to templates")
    ] = None,
    templates: Annotated[
        Path | None, typer.Option(help="--type-level: templates, one a line, {} where the word goes "
                                  "(default: six neutral sentences)")
    ] = None,
    max_contexts: Annotated[
        int, typer.Option(help="--type-level: contexts averaged per word at most", min=1)
    ] = DEFAULT_MAX_CONTEXTS,
    prior: PriorOption = DEFAULT_PRIOR,
    context: ContextOption = DEFAULT_CONTEXT,
    postprocess: Annotated[
        str, typer.Option(help="--type-level: none, center, or abtt:D (centre, then remove the top D principal "
                          "directions)")
    ] = "none",
    backend: BackendOption = BackendChoice.auto,
    precision: PrecisionOption = PrecisionChoice.auto,
    provider: ProviderOption = ProviderChoice.auto,
    min_fidelity: MinFidelityOption = None,
    threads: Annotated[int | None, typer.Option(help="Inference threads (default: all cores)")] = None,
) -> None:
    """Embed a file of words or texts in bulk, streaming in chunks, written atomically.

    Required: exactly one of --static, --contextual, --sentences, --type-level.

    Each row keeps its input line and word index where the format has room (.npy, .npz, .jsonl).
    """
    from bertonnx.embedder import Embedder

    flags = JobFlags(static, contextual, sentences, type_level, pooling, normalize, unknown, long_text, on_error,
                     max_length, corpus, templates, max_contexts, postprocess, prior, context)
    options = job_options(flags, chunk_lines)
    if output == Path("-"):  # as -i - reads stdin, -o - writes stdout
        output = None
    load = load_options(backend, precision, provider, threads, batch_tokens, min_fidelity=min_fidelity)
    if isinstance(options, TypeLevelOptions):
        _type_level(bundle, TypeLevelFiles(input_path, corpus or [], output), options, load, resume, force)
        return
    if resume and force:
        raise OptionError("--resume continues a killed job and --force starts over: give one of them")
    if output is not None:
        try:
            suffix_of(output)
        except OutputError as error:
            raise OptionError(str(error)) from error
    source = None if input_path == "-" else Path(input_path)
    if source is not None and not source.is_file():
        problem = "not a regular file (use -i - for a pipe or stdin)" if source.exists() else "no such input file"
        raise CliError(f"{source}: {problem}")
    data = data_stdout() if output is None else None  # before anything loads: stdout carries vectors alone
    embedder = Embedder.table_only(bundle) if _table_only(options, load) else _load(bundle, load)
    total = source.stat().st_size if source is not None else None
    if output is None:
        assert data is not None
        try:
            with data as stream, _terminate_as_interrupt():
                _hint_terminal(source)
                # rows shown on a terminal and a bar drawn beside them would garble each other: no bar there
                bar = LineProgress(err, f"embedding ({options.mode})", total)
                with bar:
                    report = embed_to_stream(embedder, source, stream, options,
                                             progress=None if _is_terminal(stream) else bar.update)
        except BrokenPipeError:  # the reader stopped (`| head`): nothing is wrong, and nothing more to say
            _quiet_stdout()
            _leave_now()
            return
        except KeyboardInterrupt as stop:
            say_error(_stopped(stop))
            _leave_if_stranded(_exit_code(stop))
            raise typer.Exit(_exit_code(stop)) from None
        _summary(report, _served_by(embedder, options.mode))
        return
    if resume and not partial_dir(output).exists():
        say(f"nothing to resume for {output}: starting it")
    # What fails at once (the output, a resume of another job) fails before the bar appears.
    job = FileJob.open(embedder, source, output, options, resume=resume, force=force)
    try:
        _hint_terminal(source)
        with LineProgress(err, f"embedding ({options.mode})", total) as bar, _terminate_as_interrupt():
            report = job.run(progress=bar.update, expected_size=_say_if_large)
    except KeyboardInterrupt as stop:
        say_error(_interrupted(_count(job.kept_lines, "line") if job.kept_lines else "", output,
                               stdin=source is None, stopped=_stopped(stop)))
        _leave_if_stranded(_exit_code(stop))
        raise typer.Exit(_exit_code(stop)) from None
    _summary(report, _served_by(embedder, options.mode))


def _load(bundle: Path, load: LoadOptions) -> Embedder:
    """Embedder.load, saying why on stderr where a first load on this machine takes a while."""
    from bertonnx.embedder import Embedder

    with slow_load_notice(err, f"opening {bundle}"):
        return Embedder.load(bundle, load)


def _table_only(options: BulkOptions, load: LoadOptions) -> bool:
    """Static vectors are table rows: with no backend or precision asked for by name, no model is opened, compiled
    or timed, `fastest` included (the table is the fastest path; quantising for it would take a minute for
    nothing). One asked for by name is opened as asked, and fails as it would elsewhere."""
    from bertonnx.backends.base import check_threads

    check_threads(load.threads)  # a bad number is refused whether or not a backend would take it
    precision = "auto" if load.precision == "fastest" else load.precision
    asked = (load.backend, precision, load.provider, load.min_fidelity) != ("auto", "auto", "auto", None)
    return options.mode == "static" and not asked


LARGE_OUTPUT = 10**9
"""An output expected to be larger (bytes) is announced with its size before the job writes the rest."""
TERMINAL_HINT = "reading lines from the terminal; end with Ctrl-D, or pass -i FILE"
RATE_MIN_SECONDS, RATE_MIN_LINES = 1.0, 100
"""The summary shows lines/s only for a run of at least this long and this many lines: below, it measures
start-up (the first slice's warm-up, the threads starting), not the job."""


def _hint_terminal(source: Path | None) -> None:
    """Reading stdin from a terminal: say so, or a forgotten `-i` waits in silence."""
    if source is None and _is_terminal(sys.stdin):
        say(TERMINAL_HINT)


def _is_terminal(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False


def _say_if_large(expected: int, lines: int) -> None:
    if expected > LARGE_OUTPUT:
        say(f"the output will be about {_size(expected)} (estimated from the first {_count(lines, 'line')})")


def _size(count: int) -> str:
    """Bytes as people say them: 5.1 GB, 830.0 MB, 12.0 kB (powers of 1000, as disks are sold)."""
    value = float(count)
    for unit in ("bytes", "kB", "MB", "GB"):
        if value < 1000:
            return f"{value:,.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:,.1f} TB"


def _interrupted(kept: str, output: Path, stdin: bool = False, stopped: str = "interrupted") -> str:
    """What an interrupt leaves: `kept` (e.g. '15,360 lines') in the work folder for --resume, or nothing."""
    if stdin:
        return (f"{stopped}: nothing was kept, as a job reading standard input cannot resume; "
                "run the command again")
    if not kept:
        return f"{stopped} before the first checkpoint: nothing was kept; the same command starts again"
    return (f"{stopped}: {kept} kept in {partial_dir(output)}; the same command with --resume continues it")


class Terminated(KeyboardInterrupt):
    """SIGTERM during a job (a scheduler, `timeout`, `kill`): stopped as Ctrl-C stops it, with what is kept said."""


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Inside, SIGTERM raises Terminated in the main thread, as SIGINT raises KeyboardInterrupt: the job's own
    interrupt path keeps its last checkpoint and says so, instead of dying silently with a work folder."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stopped(stop: KeyboardInterrupt) -> str:
    return "terminated" if isinstance(stop, Terminated) else "interrupted"


def _exit_code(stop: KeyboardInterrupt) -> int:
    """128 + the signal's number, as a shell reports a job the signal ended: 143 for SIGTERM, 130 for SIGINT."""
    return 128 + (signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT)


def _type_level(
    bundle: Path, files: TypeLevelFiles, options: TypeLevelOptions, load: LoadOptions, resume: bool, force: bool
) -> None:
    """--type-level: the vocabulary in -i, the corpus files, the vector file in -o."""
    from bertonnx.io.paths import expand_paths
    from bertonnx.type_level.job import TypeLevelJob

    output, input_path = files.output, files.vocabulary

    if output is None:
        raise OptionError("--type-level writes a file: give -o out.npy|.npz|.txt|.bin|.jsonl")
    if resume and force:
        raise OptionError("--resume continues a killed job and --force starts over: give one of them")
    try:
        suffix_of(output)
    except OutputError as error:
        raise OptionError(str(error)) from error
    vocabulary = Path(input_path)
    if input_path == "-":
        raise OptionError("--type-level reads its vocabulary from a file: -i vocab.txt, one word a line")
    if not vocabulary.is_file():
        raise CliError(f"{vocabulary}: {'not a regular file' if vocabulary.exists() else 'no such vocabulary file'}")
    paths = expand_paths(files.corpus, "corpus")
    embedder = _load(bundle, load)
    if resume and not partial_dir(output).exists():
        say(f"nothing to resume for {output}: starting it")
    job = TypeLevelJob(embedder, vocabulary, paths, output, options).open(resume=resume, force=force)
    bars: dict[str, LineProgress] = {}

    def progress(what: str, done: int, total: int, lines: int) -> None:
        if what not in bars:
            for bar in bars.values():
                bar.__exit__(None, None, None)
            title = "type-level: corpus" if what == "corpus" else "type-level: templates (words)"
            bars[what] = LineProgress(err, title, total)
        bars[what].update(done, lines)

    try:
        with _terminate_as_interrupt():
            report = job.run(progress)
    except KeyboardInterrupt as stop:
        for bar in bars.values():  # the bar stops first, so the message is the last thing on the screen
            bar.__exit__(None, None, None)
        bars.clear()
        kept = [_count(job.kept_lines, "corpus line") if job.kept_lines else "",
                _count(job.kept_words, "word") + " from templates" if job.kept_words else ""]
        say_error(_interrupted(" and ".join(part for part in kept if part), output, stopped=_stopped(stop)))
        raise typer.Exit(_exit_code(stop)) from None
    finally:
        for bar in bars.values():
            bar.__exit__(None, None, None)
    notes = []
    if paths:
        notes.append(f"{_count(report.corpus_lines, 'corpus line')}, {report.contexts:,} contexts")
        notes.append(f"{report.fallback:,} from templates (never seen)")
        if report.stopped_early:
            notes.append(f"every word reached {options.max_contexts:,} contexts early")
    if report.unknown:
        notes.append(f"{report.unknown:,} flagged unknown")
    if options.postprocess != "none":
        notes.append(f"post-processed: {options.postprocess}")
    notes.append(made_by(report.method, options))
    if report.resumed_lines:
        notes.append(f"{report.resumed_lines:,} corpus lines kept from the killed run")
    notes.append(f"{report.seconds:,.1f} s")
    say(f"{_count(report.words, 'type-level vector')} -> {output} + {report.files[0].name} ({'; '.join(notes)}); "
        f"contextual vectors {_served_by(embedder, 'contextual')}")


def _leave_now() -> None:
    """Exit 0 at once, as `| head` expects: nothing is left to write, and a native library's threads (the
    tokenizer's, the runtime's) must not be torn down mid-call by the interpreter's shutdown. Only a real pipe
    breaks; an in-process caller (a test's captured stdout) never gets here."""
    sys.stderr.flush()
    os._exit(0)


def _leave_if_stranded(code: int) -> None:
    """Exit at once when the job's reader is still blocked on its input (Ctrl-C while a terminal or a pipe sends
    nothing): the interpreter's shutdown would wait on the stream that thread holds and abort. Everything the job
    keeps is on disk already."""
    from bertonnx.jobs.stages import stranded

    if stranded():
        sys.stderr.flush()
        os._exit(code)


def _quiet_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so that the interpreter's final flush raises nothing."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    finally:
        os.close(devnull)


def _served_by(embedder: Embedder, mode: str) -> str:
    """What made a job's vectors, for its summary: static vectors are table rows whatever backend is open."""
    if mode == "static":
        return "from the embedding table"
    return "by " + embedder.runtime_info().serves["sentences" if mode == "sentences" else "words"].label


def _summary(report: BulkReport, served_by: str) -> None:
    print_skipped([f"skipped line {number}: {reason}" for number, reason in report.skipped])
    notes = [f"{len(report.skipped):,} skipped"]
    if report.unknown_rows:
        notes.append(f"{report.unknown_rows:,} flagged unknown")
    if report.resumed_lines:
        notes.append(f"{report.resumed_lines:,} lines kept from the killed run")
    if report.seconds >= RATE_MIN_SECONDS and report.lines_this_run >= RATE_MIN_LINES:
        notes.append(f"{report.lines_per_second:,.0f} lines/s")
    where = f" -> {report.output}" if report.output else ""
    say(f"{_count(report.rows, 'vector')} from {_count(report.lines, 'line')}{where} ({', '.join(notes)}); {served_by}")


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"
