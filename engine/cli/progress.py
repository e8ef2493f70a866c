"""Progress display on stderr: a spinner for staged work, a bar for bulk jobs.

Both draw only on a terminal. Redirected to a file or a pipe, rich would print
the last frame of a live display when it stops (a spinner after its ✓ line),
so there a spinner prints one plain line per finished step and a bar prints
nothing: the job's summary line says what was done.
"""

from __future__ import annotations

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
    unknown (stdin) it shows lines, lines/s and the time so far.
    """

    def __init__(self, console: Console, description: str, total: int | None) -> None:
        self.description = description
        self.total = total
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
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task(self.description, total=self.total, lines=0)
        self.progress.update(self.task, completed=done, lines=lines)

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.task is not None:
            self.progress.stop()
