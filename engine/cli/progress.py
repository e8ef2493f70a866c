"""Progress display on stderr: a spinner for staged work, a bar for bulk jobs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@contextmanager
def status_spinner(console: Console, title: str) -> Iterator[Callable[[str], None]]:
    """A spinner whose text each step replaces; finished steps stay printed with a tick."""
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console)
    with progress:
        task = progress.add_task(title, total=None)
        current: list[str] = []

        def step(description: str) -> None:
            if current:
                progress.console.print(f"[green]✓[/] {current[0]}")
                current.clear()
            current.append(description)
            progress.update(task, description=description)

        yield step
        if current:
            progress.console.print(f"[green]✓[/] {current[0]}")


def bytes_bar(console: Console, total: int | None, description: str) -> Progress:
    """A bar counting input bytes (lines vary in length; bytes give an honest ETA)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn() if total is None else TextColumn("{task.percentage:>5.1f}%"),
        TextColumn("{task.fields[items]} lines"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
