"""bertonnx.cli.progress: bars that move and say lines/s; no spinner debris off a terminal."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from helpers.cli import one_line_error, run
from rich.console import Console

from bertonnx.cli import embed as embed_command
from bertonnx.cli.progress import LineProgress, status_spinner

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def console(terminal: bool) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=terminal, width=160, color_system=None), buffer


def test_off_a_terminal_a_spinner_prints_one_plain_line_per_step() -> None:
    """The issue: `✓ writing the bundle` followed by a stray `⠴ writing the bundle 0:00:10` in a log."""
    plain, buffer = console(terminal=False)
    with status_spinner(plain, "exporting") as step:
        step("loading the model")
        step("writing the bundle [v2]")  # brackets are text, not markup
    assert buffer.getvalue() == "✓ loading the model\n✓ writing the bundle [v2]\n"


def test_on_a_terminal_a_spinner_leaves_only_the_ticks() -> None:
    terminal, buffer = console(terminal=True)
    with status_spinner(terminal, "exporting") as step:
        step("loading the model")
        step("writing the bundle")
    last = ANSI.sub("", buffer.getvalue()).strip().splitlines()[-1]
    assert last.strip() == "✓ writing the bundle"


def test_off_a_terminal_a_bar_prints_nothing() -> None:
    plain, buffer = console(terminal=False)
    with LineProgress(plain, "embedding (static)", 100) as bar:
        bar.update(50, 5)
    assert buffer.getvalue() == ""


@pytest.mark.parametrize("total", [1000, None])
def test_a_bar_shows_lines_per_second_and_an_eta_when_the_size_is_known(total: int | None) -> None:
    terminal, buffer = console(terminal=True)
    with LineProgress(terminal, "embedding (contextual)", total) as bar:
        bar.update(500, 1234)
    text = ANSI.sub("", buffer.getvalue())
    assert "1,234 lines" in text and "lines/s" in text
    assert ("50.0%" in text and "ETA" in text) if total else ("%" not in text and "?" not in text)


def test_a_bar_appears_only_once_work_is_reported() -> None:
    terminal, buffer = console(terminal=True)
    with pytest.raises(RuntimeError), LineProgress(terminal, "embedding", 10):
        raise RuntimeError("failed at once")
    assert buffer.getvalue() == ""


@pytest.fixture()
def terminal_err(monkeypatch: pytest.MonkeyPatch) -> None:
    """`bertonnx embed` drawing on a (forced) terminal, its stderr still captured by CliRunner."""
    monkeypatch.setattr(embed_command, "err", Console(stderr=True, force_terminal=True, width=160, color_system=None))


def test_piped_stdin_shows_lines_and_a_rate_not_a_count_of_unknown(
    terminal_err: None, tiny_bundle: Path, tmp_path: Path
) -> None:
    result = run("embed", tiny_bundle, "--static", "-o", tmp_path / "out.npy", stdin="king\nqueen\n")
    assert result.exit_code == 0, result.output
    text = ANSI.sub("", result.stderr)
    assert "2 lines" in text and "lines/s" in text and "/?" not in text


def test_a_file_shows_its_percentage(terminal_err: None, tiny_bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("king\nqueen\n", encoding="utf-8")
    result = run("embed", tiny_bundle, "--static", "-i", tmp_path / "in.txt", "-o", tmp_path / "out.npy")
    assert result.exit_code == 0, result.output
    assert "100.0%" in ANSI.sub("", result.stderr)


@pytest.mark.parametrize("stdin,out", [("king\n", "out.csv"), ("\n", "out.npy")], ids=["bad suffix", "bad line 1"])
def test_no_bar_before_an_error_that_comes_at_once(
    terminal_err: None, tiny_bundle: Path, tmp_path: Path, stdin: str, out: str
) -> None:
    result = run("embed", tiny_bundle, "--static", "-o", tmp_path / out, stdin=stdin)
    if out.endswith(".csv"):
        one_line_error(result, "unsupported suffix", code=2)  # a value the option does not take
    else:
        one_line_error(result, "line 1 is blank")
    assert "%" not in result.stderr and "lines/s" not in result.stderr


def test_a_slow_load_says_why_once_and_a_quick_one_says_nothing(tiny_bundle: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A first `fastest` load quantises and times for a minute: silence there reads as a hang."""
    import time

    from bertonnx.cli import progress
    from bertonnx.embedder import Embedder

    real = Embedder.load.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(Embedder, "load", classmethod(lambda cls, *a, **k: time.sleep(0.5) or real(cls, *a, **k)))
    monkeypatch.setattr(progress, "SLOW_LOAD_SECONDS", 0.05)
    slow = run("embed", tiny_bundle, "--sentences", "--backend", "onnxruntime", stdin="the king\n")
    assert slow.exit_code == 0, slow.output
    assert slow.stderr.count("a first load on this machine compiles") == 1
    assert slow.stdout.count("\n") == 1  # the rows alone on stdout
    monkeypatch.setattr(progress, "SLOW_LOAD_SECONDS", 60.0)
    quick = run("embed", tiny_bundle, "--sentences", "--backend", "onnxruntime", stdin="the king\n")
    assert quick.exit_code == 0 and "first load" not in quick.stderr
