"""Progress display on stderr: a spinner for staged work, a bar for bulk jobs.

Both draw only on a terminal. Redirected to a file or a pipe, rich would print
the last frame of a live display when it stops (a spinner after its ✓ line),
so there a spinner prints one plain line per finished step and a bar prints a
plain line every PLAIN_SECONDS (lines done, lines/s, and with the input's size
known, the share done and an ETA), so that a long job in a log is not silent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

SLOW_LOAD_SECONDS = 3.0
"""A load still running after this long says why it may take a while (a first load builds caches)."""


@contextmanager
def slow_load_notice(console: Console, what: str) -> Iterator[None]:
    """Inside, a load that is still running after SLOW_LOAD_SECONDS prints one line saying why, once: a first
    load on a machine compiles the graph and, under `fastest`, quantises and times its candidates (about a minute),
    and a silent minute reads as a hang. A quick load prints nothing."""
    def notice() -> None:
        console.print(f"{what}: a first load on this machine compiles, and may quantise and time its candidates "
                      "(a minute or so under --precision fastest); later loads read the cache",
                      markup=False, highlight=False, soft_wrap=True)

    timer = threading.Timer(SLOW_LOAD_SECONDS, notice)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


@contextmanager
def status_spinner(console: Console, title: str) -> Iterator[Callable[[str], None]]:
    """A spinner whose text each step replaces; finished steps stay printed with a tick."""
    current: list[str] = []

    def done() -> None:
        if current:
            console.print(Text.assemble(("✓", "green"), " ", current.pop()), highlight=False, soft_wrap=True)

    if not console.is_terminal:

        def plain_step(description: str) -> None:
            done()
            current.append(description)

        yield plain_step
        done()
        return
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False), TimeElapsedColumn(),
                        console=console, transient=True)
    with progress:
        task = progress.add_task(title, total=None)

        def step(description: str) -> None:
            done()
            current.append(description)
            progress.update(task, description=description)

        yield step
    done()


PLAIN_SECONDS = 30.0
"""Off a terminal, a bulk job's progress is a plain line on stderr this often (read when a bar is made)."""


def clock(seconds: float) -> str:
    """A duration as H:MM:SS, as the bar's own columns show it."""
    whole = max(int(round(seconds)), 0)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


class LinesPerSecond(ProgressColumn):
    """The rate of input lines, from the `lines` field a bulk job reports."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        rate = task.fields.get("lines", 0) / elapsed if elapsed > 0 else 0.0
        return Text(f"{rate:,.0f} lines/s", style="progress.data.speed")


class LineProgress:
    """A bulk job's bar: input bytes (lines vary in length; bytes give an honest ETA), lines and lines/s.

    It appears at the first `update`, so an error that comes at once (a bad
    option, a bad first line) is not preceded by an empty bar. With `total` bytes
    unknown (stdin) it shows lines, lines/s and the time so far. Off a terminal it
    prints a plain line every `every` seconds instead (default PLAIN_SECONDS);
    its rates count from the first update, so a resumed job's kept lines and the
    first slice's warm-up do not skew them.
    """

    def __init__(self, console: Console, description: str, total: int | None, every: float | None = None) -> None:
        self.console = console
        self.description = description
        self.total = total
        self.every = PLAIN_SECONDS if every is None else every
        self.plain = not console.is_terminal
        self.first: tuple[float, int, int] | None = None  # (time, bytes, lines) at the first update
        self.printed = 0.0
        columns: list[ProgressColumn | str] = [TextColumn("{task.description}", markup=False)]
        if total is not None:
            columns += [BarColumn(), TextColumn("{task.percentage:>5.1f}%")]
        columns += [TextColumn("{task.fields[lines]:,} lines"), LinesPerSecond(), TimeElapsedColumn()]
        if total is not None:
            columns += [TextColumn("ETA"), TimeRemainingColumn()]
        self.progress = Progress(*columns, console=console, disable=not console.is_terminal)
        self.task: TaskID | None = None

    def update(self, done: int, lines: int) -> None:
        """(bytes read, lines read) so far."""
        if self.plain:
            self._plain(done, lines)
            return
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task(self.description, total=self.total, lines=0)
        self.progress.update(self.task, completed=done, lines=lines)

    def _plain(self, done: int, lines: int) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = (now, done, lines)
            self.printed = now
        if now - self.printed < self.every:
            return
        self.printed = now
        self.console.print(self.line(now, done, lines), markup=False, highlight=False, soft_wrap=True)

    def line(self, now: float, done: int, lines: int) -> str:
        """The plain progress line: '<description>: 15,360 lines, 42.0% of the input, 1,204 lines/s, ETA 0:01:05'."""
        assert self.first is not None
        began, first_done, first_lines = self.first
        parts = [f"{lines:,} line{'' if lines == 1 else 's'}"]
        if self.total:
            parts.append(f"{min(done / self.total, 1.0):.1%} of the input")
        elapsed = now - began
        if elapsed > 0 and lines > first_lines:
            parts.append(f"{(lines - first_lines) / elapsed:,.0f} lines/s")
            if self.total and done > first_done:
                parts.append(f"ETA {clock(max(self.total - done, 0) / ((done - first_done) / elapsed))}")
        return f"{self.description}: {', '.join(parts)}"

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.task is not None:
            self.progress.stop()
