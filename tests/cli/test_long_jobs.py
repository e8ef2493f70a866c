"""Issue 26 at the command line: what Ctrl-C says and leaves, a forgotten -i on a terminal, and long jobs that
say how they are doing off a terminal (progress lines, the output's size, a summary without noise)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers.cli import one_line_error, run
from helpers.outputs import output_files

from bertonnx.cli import embed as embed_command
from bertonnx.cli import progress as progress_module
from bertonnx.io.formats import read_table
from bertonnx.io.sinks import partial_dir
from bertonnx.jobs import lines as lines_module
from bertonnx.jobs.bulk import BulkOptions, embed_file
from bertonnx.type_level.job import TypeLevelJob

WORDS = "the king queen man woman apple music rule kingdom wise kind great band unable embedding".split()
LOAD = ("--backend", "onnxruntime", "--threads", "1")
# The CLI in a real process, its progress lines every 0 s: each slice's line on stderr is a sign the job runs.
EVERY_SLICE = [sys.executable, "-c", "import bertonnx.cli.progress as p; p.PLAIN_SECONDS = 0\n"
               "from bertonnx.cli.app import main; main()"]
CLI = [sys.executable, "-c", "from bertonnx.cli.app import main; main()"]
PROGRESS = re.compile(r"^embedding \((?:static|contextual|sentences)\): [\d,]+ lines?")


def corpus(lines: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    return "".join(" ".join(rng.choice(WORDS, size=rng.integers(3, 30))) + "\n" for _ in range(lines))


def wait_for(condition: Callable[[], bool], process: subprocess.Popen[bytes], what: str, timeout: float = 300) -> None:
    """Until `condition()` holds; a loaded machine may take long to load the bundle, so the bound is generous."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the job ended before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.02)


def signal_when(command: list[str], log: Path, ready: Callable[[str], bool], what: str,
                sig: signal.Signals) -> tuple[int, str]:
    """Run `command` (stderr to `log`) and send it `sig` once `ready(stderr so far)`: its exit status and stderr."""
    with log.open("w") as stderr:
        job = subprocess.Popen(command, stderr=stderr)
        try:
            wait_for(lambda: ready(log.read_text()), job, what)
            job.send_signal(sig)
            job.wait(timeout=300)
        finally:
            job.kill()
            job.wait()
    return job.returncode, log.read_text()


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


# -- item 3: what an interrupt keeps -------------------------------------------------------------------------


@pytest.mark.slow
def test_ctrl_c_before_the_first_checkpoint_says_nothing_was_kept_and_leaves_nothing(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    """The issue: Ctrl-C 20 s in said the work up to the last checkpoint was kept, and the folder held 0 rows."""
    source = tmp_path / "in.txt"
    source.write_text(corpus(40_000))
    out = tmp_path / "out.npy"
    log = tmp_path / "stderr.txt"
    command = [*EVERY_SLICE, "embed", str(tiny_bundle), "--contextual", "-i", str(source), "-o", str(out), *LOAD]
    # no checkpoint by lines before 20,000 lines, none by time before 60 s
    code, text = signal_when(command, log, lambda text: any(map(PROGRESS.match, text.splitlines())),
                             "progress line", signal.SIGINT)
    assert code == 130, text
    assert error_lines(text) == ["error: interrupted before the first checkpoint: nothing was kept; the same "
                                 "command starts again"], text
    assert "Traceback" not in text
    assert not partial_dir(out).exists() and not any(path.exists() for path in output_files(out))


@pytest.mark.slow
def test_sigterm_stops_a_job_as_ctrl_c_does_and_it_resumes(tiny_bundle: Path, tmp_path: Path) -> None:
    """A scheduler's SIGTERM (or `timeout`): the job keeps its last checkpoint, says so, and exits 143."""
    source = tmp_path / "in.txt"
    source.write_text(corpus(40_000))
    out = tmp_path / "out.npy"
    log = tmp_path / "stderr.txt"
    command = [*EVERY_SLICE, "embed", str(tiny_bundle), "--contextual", "-i", str(source), "-o", str(out), *LOAD,
               "--chunk-lines", "512"]
    lines_done = re.compile(r"^embedding \(contextual\): ([\d,]+) lines")

    def past_checkpoints(text: str) -> bool:
        return any(int(found.group(1).replace(",", "")) >= 1536 for found in map(lines_done.match, text.splitlines())
                   if found)

    code, text = signal_when(command, log, past_checkpoints, "1,536 lines", signal.SIGTERM)
    assert code == 143, text
    [line] = error_lines(text)
    assert re.fullmatch(rf"error: terminated: [\d,]+ lines kept in {re.escape(str(partial_dir(out)))}; the same "
                        r"command with --resume continues it", line), text
    assert "Traceback" not in text and not out.exists()
    resumed = run("embed", tiny_bundle, "--contextual", "-i", source, "-o", out, *LOAD, "--chunk-lines", "512",
                  "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "lines kept from the killed run" in resumed.stderr and "40,000 lines" in resumed.stderr


def test_a_resume_counts_the_kept_lines_with_separators(tiny_bundle: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """'15360 lines kept' lacked them: 1,024 or more lines kept say '1,0xx lines kept from the killed run'."""
    from bertonnx import Embedder

    source = tmp_path / "in.txt"
    source.write_text(corpus(1500))
    out = tmp_path / "out.npy"
    embedder = Embedder.load(tiny_bundle, backend="onnxruntime", threads=1)

    def stop(done_bytes: int, lines: int) -> None:
        if lines >= 1100:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_file(embedder, source, out, BulkOptions(mode="contextual", chunk_lines=100), progress=stop)
    resumed = run("embed", tiny_bundle, "--contextual", "-i", source, "-o", out, "--resume", *LOAD)
    assert resumed.exit_code == 0, resumed.output
    assert re.search(r"\(0 skipped, 1,\d{3} lines kept from the killed run", resumed.stderr), resumed.stderr
    assert "1,500 lines" in resumed.stderr


def test_type_level_ctrl_c_says_what_is_kept(tiny_bundle: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("king\nqueen\nzebra\n")
    source = tmp_path / "corpus.txt"
    source.write_text(corpus(1200))

    def interrupted(self: TypeLevelJob, *args: object) -> None:  # after the corpus pass's last checkpoint
        raise KeyboardInterrupt

    monkeypatch.setattr(TypeLevelJob, "_templates_pass", interrupted)
    out = tmp_path / "out.npy"
    common = ("embed", tiny_bundle, "--type-level", "-i", vocab, "-o", out, *LOAD)
    kept = run(*common, "--corpus", source, "--max-contexts", "100000")
    one_line_error(kept, f"interrupted: 1,200 corpus lines kept in {partial_dir(out)}; the same command with "
                         "--resume continues it", code=130)
    nothing = run(*common, "--force")  # the templates method: nothing is kept before its first step
    one_line_error(nothing, "interrupted before the first checkpoint: nothing was kept", code=130)
    assert not partial_dir(out).exists()


# -- item 4: a forgotten -i on a terminal ------------------------------------------------------------------


def on_a_terminal(command: list[str], log: Path, stdout: Path) -> tuple[subprocess.Popen[bytes], int]:
    """`command` with a pseudo-terminal as its stdin and controlling terminal, stderr and stdout to files; returns
    the process and the terminal's master side (what the user types goes there)."""
    master, slave = os.openpty()

    def controlling_terminal() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    with log.open("w") as stderr, stdout.open("w") as out:
        process = subprocess.Popen(command, stdin=slave, stdout=out, stderr=stderr,
                                   preexec_fn=controlling_terminal)  # noqa: PLW1509 - setsid and a tty only
    os.close(slave)
    return process, master


def hinted(log: Path) -> bool:
    return embed_command.TERMINAL_HINT in log.read_text()


@pytest.mark.slow
def test_on_a_terminal_without_i_the_job_says_it_reads_the_terminal(tiny_bundle: Path, tmp_path: Path) -> None:
    log, stdout, out = tmp_path / "stderr.txt", tmp_path / "stdout.txt", tmp_path / "out.npy"
    job, master = on_a_terminal([*CLI, "embed", str(tiny_bundle), "--static", "-o", str(out), *LOAD], log, stdout)
    try:
        wait_for(lambda: hinted(log), job, "hint on stderr")
        os.write(master, b"king\nqueen\n\x04")  # two lines, then Ctrl-D
        job.wait(timeout=300)
    finally:
        job.kill()
        job.wait()
        os.close(master)
    assert job.returncode == 0, log.read_text()
    assert read_table(out).keys == ["king", "queen"]
    assert log.read_text().splitlines()[0] == embed_command.TERMINAL_HINT


@pytest.mark.slow
def test_ctrl_c_on_a_terminal_leaves_nothing_that_blocks_the_corrected_command(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    """The issue: Ctrl-C left a work folder; the corrected command was refused as an unfinished job, and
    --resume because the input differed."""
    log, stdout, out = tmp_path / "stderr.txt", tmp_path / "stdout.txt", tmp_path / "out.npy"
    command = ["embed", str(tiny_bundle), "--contextual", "-o", str(out), *LOAD]
    job, master = on_a_terminal([*CLI, *command], log, stdout)
    try:
        wait_for(lambda: hinted(log), job, "hint on stderr")
        os.write(master, b"\x03")  # Ctrl-C, as the terminal sends it: SIGINT to the foreground job
        job.wait(timeout=300)
    finally:
        job.kill()
        job.wait()
        os.close(master)
    text = log.read_text()
    assert job.returncode == 130, text
    assert error_lines(text) == ["error: interrupted: nothing was kept, as a job reading standard input cannot "
                                 "resume; run the command again"], text
    assert "Fatal Python error" not in text and "Traceback" not in text
    assert not partial_dir(out).exists()
    source = tmp_path / "in.txt"
    source.write_text("the king is wise\n")
    corrected = run(*command, "-i", source)
    assert corrected.exit_code == 0, corrected.output


@pytest.mark.slow
def test_ctrl_c_on_a_terminal_without_o_exits_cleanly(tiny_bundle: Path, tmp_path: Path) -> None:
    log, stdout = tmp_path / "stderr.txt", tmp_path / "stdout.txt"
    job, master = on_a_terminal([*CLI, "embed", str(tiny_bundle), "--contextual", *LOAD], log, stdout)
    try:
        wait_for(lambda: hinted(log), job, "hint on stderr")
        os.write(master, b"\x03")
        job.wait(timeout=300)
    finally:
        job.kill()
        job.wait()
        os.close(master)
    text = log.read_text()
    assert job.returncode == 130 and error_lines(text) == ["error: interrupted"], text
    assert "Fatal Python error" not in text and "Aborted" not in text


def test_no_hint_when_stdin_is_not_a_terminal(tiny_bundle: Path) -> None:
    result = run("embed", tiny_bundle, "--static", *LOAD, stdin="king\n")
    assert result.exit_code == 0, result.output
    assert embed_command.TERMINAL_HINT not in result.stderr


# -- item 5: long jobs off a terminal --------------------------------------------------------------------------


@pytest.fixture()
def every_slice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Progress lines at every slice (of 64 lines), as a long job prints one every PLAIN_SECONDS."""
    monkeypatch.setattr(progress_module, "PLAIN_SECONDS", 0.0)
    monkeypatch.setattr(lines_module, "SLICE_LINES", 64)


def progress_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if PROGRESS.match(line)]


def test_off_a_terminal_a_file_job_prints_plain_progress_with_an_eta(
    every_slice: None, tiny_bundle: Path, tmp_path: Path
) -> None:
    """The issue: with stderr redirected, a 100,000-line job printed nothing for minutes."""
    source = tmp_path / "in.txt"
    source.write_text(corpus(1200))
    result = run("embed", tiny_bundle, "--contextual", "-i", source, "-o", tmp_path / "out.npy", *LOAD)
    assert result.exit_code == 0, result.output
    found = progress_lines(result.stderr)
    assert len(found) >= 10, result.stderr
    assert found[0].startswith("embedding (contextual): 64 lines, ") and "% of the input" in found[0]
    assert "lines/s" not in found[0]  # one update: no rate yet
    assert re.search(r"^embedding \(contextual\): 1,152 lines, 9\d\.\d% of the input, [\d,]+ lines/s, "
                     r"ETA \d+:\d\d:\d\d$", found[-2]), found
    assert "\x1b" not in result.stderr  # plain text, no terminal codes


def test_off_a_terminal_a_stream_job_prints_progress_on_stderr_and_data_alone_on_stdout(
    every_slice: None, tiny_bundle: Path
) -> None:
    result = run("embed", tiny_bundle, "--contextual", *LOAD, stdin=corpus(300))
    assert result.exit_code == 0, result.output
    found = progress_lines(result.stderr)
    assert found and "% of the input" not in found[-1] and "ETA" not in found[-1]  # stdin: its size unknown
    assert all("key" in json.loads(line) for line in result.stdout.splitlines())


def test_no_progress_lines_for_a_short_job(tiny_bundle: Path, tmp_path: Path) -> None:
    result = run("embed", tiny_bundle, "--contextual", "-o", tmp_path / "out.npy", *LOAD, stdin=corpus(50))
    assert result.exit_code == 0 and not progress_lines(result.stderr), result.stderr


def test_a_large_output_is_announced_before_the_job_writes_it(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embed_command, "LARGE_OUTPUT", 10**6)  # 1 MB stands for 1 GB
    source = tmp_path / "in.txt"
    source.write_text(corpus(3000))
    out = tmp_path / "out.npy"
    result = run("embed", tiny_bundle, "--contextual", "-i", source, "-o", out, *LOAD)
    assert result.exit_code == 0, result.output
    first = result.stderr.splitlines()[0]
    said = re.fullmatch(r"the output will be about ([\d.]+) MB \(estimated from the first 512 lines\)", first)
    assert said, result.stderr
    written = sum(path.stat().st_size for path in output_files(out))
    assert abs(float(said.group(1)) * 1e6 - written) < 0.1 * written
    monkeypatch.setattr(embed_command, "LARGE_OUTPUT", 10**9)
    small = run("embed", tiny_bundle, "--contextual", "-i", source, "-o", out, "--force", *LOAD)
    assert "the output will be" not in small.stderr


@pytest.mark.parametrize("count,size", [(999, "999 bytes"), (5_123_000_000, "5.1 GB"), (830_000_000, "830.0 MB"),
                                        (2_500_000_000_000, "2.5 TB")])
def test_sizes_read_as_people_say_them(count: int, size: str) -> None:
    assert embed_command._size(count) == size


def test_a_tiny_job_says_nothing_about_speed(tiny_bundle: Path) -> None:
    """The issue: '10 lines/s' for 3 words. Under 1 s or 100 lines, a rate measures start-up, not the job."""
    result = run("embed", tiny_bundle, "--static", *LOAD, stdin="king\nqueen\nman\n")
    assert result.exit_code == 0, result.output
    assert "3 vectors from 3 lines (0 skipped); from the embedding table" in result.stderr
    assert "lines/s" not in result.stderr


def test_the_summary_says_what_made_the_vectors(tiny_bundle: Path) -> None:
    result = run("embed", tiny_bundle, "--sentences", *LOAD, stdin="the king is wise\n")
    assert result.exit_code == 0, result.output
    assert "1 vector from 1 line (0 skipped); by onnxruntime fp32" in result.stderr


def test_a_job_long_enough_says_its_speed(tiny_bundle: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embed_command, "RATE_MIN_SECONDS", 0.0)
    result = run("embed", tiny_bundle, "--static", *LOAD, stdin="king\n" * 150)
    assert result.exit_code == 0 and re.search(r"150 vectors from 150 lines \(0 skipped, [\d,]+ lines/s\)",
                                               result.stderr), result.stderr


def test_every_count_in_the_summary_has_thousands_separators(tiny_bundle: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("king\n" * 1000 + "\n" * 1200 + "🙂\n" * 1100)
    result = run("embed", tiny_bundle, "--static", "-i", source, "-o", tmp_path / "out.npy", "--on-error", "skip",
                 "--unknown", "unk", *LOAD)
    assert result.exit_code == 0, result.output
    assert "2,100 vectors from 3,300 lines" in result.stderr
    assert "(1,200 skipped, 1,100 flagged unknown" in result.stderr
