"""Progress reporting and cancellation for long work, free of any UI.

Core functions take a ``ProgressReporter`` and a ``threading.Event``: the CLI passes
a rich-backed reporter, the viewer one that emits Qt signals / napari progress, and
tests a recording one. ``NullProgress`` is the default so callers need not care.
"""

from __future__ import annotations

import threading
from typing import Protocol, runtime_checkable


@runtime_checkable
class ProgressReporter(Protocol):
    """start(total, description) once, advance(n) as work finishes, close() at the end."""

    def start(self, total: int | None, description: str = "") -> None: ...

    def advance(self, n: int = 1) -> None: ...

    def close(self) -> None: ...


class NullProgress:
    """A reporter that reports nothing."""

    def start(self, total: int | None, description: str = "") -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class RecordingProgress:
    """Keeps what it was told; for tests and for progress polled from another thread."""

    def __init__(self) -> None:
        self.total: int | None = None
        self.description = ""
        self.done = 0
        self.closed = False
        self._lock = threading.Lock()

    def start(self, total: int | None, description: str = "") -> None:
        with self._lock:
            self.total, self.description, self.done, self.closed = total, description, 0, False

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self.done += n

    def close(self) -> None:
        with self._lock:
            self.closed = True


class Cancelled(Exception):
    """Raised inside long work when its cancel event is set."""


def check_cancelled(cancel: threading.Event | None) -> None:
    """Raise ``Cancelled`` if ``cancel`` is set; call between units of work."""
    if cancel is not None and cancel.is_set():
        raise Cancelled
