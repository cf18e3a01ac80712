"""One rich progress bar as a ``ProgressReporter`` (pipelines/progress.py), for every command.

Commands build a ``rich.progress.Progress`` with ``progress_bar()`` and hand each long
job a ``RichReporter`` over one task of it; core code only sees start/advance/close.
"""

from __future__ import annotations

from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from tessera.app.cli.console import err_console


def progress_bar(*, quiet: bool = False, rate: bool = False, transient: bool = False) -> Progress:
    """A Progress on stderr (stdout stays clean for results/JSON); ``rate`` adds items/s + ETA."""
    columns: list[Any] = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    if rate:
        columns += [TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                    TimeRemainingColumn()]
    else:
        columns.append(TimeElapsedColumn())
    return Progress(*columns, console=err_console, disable=quiet, transient=transient)


class RichReporter:
    """ProgressReporter over one task of a rich Progress (thread-safe: rich locks).

    The task is created on ``start`` (or reused when ``task_id`` is given); with
    ``show_rate`` the task's ``rate`` field shows items per second.
    """

    def __init__(self, progress: Progress, task_id: Any = None, *, show_rate: bool = False) -> None:
        self._progress = progress
        self._task = task_id
        self._show_rate = show_rate

    def start(self, total: int | None, description: str = "") -> None:
        description = description or "working"
        if self._task is None:
            self._task = self._progress.add_task(description, total=total, rate="")
        else:
            self._progress.reset(self._task, total=total, description=description)

    def advance(self, n: int = 1) -> None:
        if self._task is None:
            return
        self._progress.advance(self._task, n)
        if self._show_rate:
            task = next((t for t in self._progress.tasks if t.id == self._task), None)
            speed = None if task is None else task.speed
            self._progress.update(self._task, rate=f"{speed:.1f}/s" if speed else "")

    def close(self) -> None:
        pass
