"""The one progress display: rich bars on stderr when enabled, no-ops otherwise (stdout stays clean)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator


class Task:
    """One bar. Call it as `task(done, total)` (a chunked loop's callback) or `task.advance(n, note)`."""

    def __init__(self, progress=None, label: str = "", total: int | None = None):
        self.progress, self.label = progress, label
        self.id = None if progress is None else progress.add_task(label, total=total)

    def __call__(self, done: int, total: int | None) -> None:
        if self.progress is not None:
            self.progress.update(self.id, completed=done, total=total)

    def advance(self, n: int = 1, note: str | None = None) -> None:
        if self.progress is not None:
            label = self.label if note is None else f"{self.label} {note}"
            self.progress.update(self.id, advance=n, description=label)


@contextmanager
def progress(enabled: bool) -> Iterator[Callable[..., Task]]:
    """Yields `bar(label, total=None) -> Task`; every bar lives until the block ends."""
    if not enabled:
        yield lambda label, total=None: Task()
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True)) as prog:
        yield lambda label, total=None: Task(prog, label, total)
