"""Background work for the Qt viewer, and the one way results come back to the UI thread.

Worker threads never touch Qt: they ``post`` a call to the ``UiQueue``, a deque that a
QTimer in the UI thread drains every few milliseconds. This sidesteps cross-thread
signal emission from plain Python threads (which PySide6 6.8+ can crash on:
PYSIDE-3124), coalesces bursts of updates into one UI tick, and keeps every slot on the
UI thread. ``BackgroundTask`` runs a function in a daemon thread and reports
``finished(result)`` / ``failed(exception)`` as Qt signals emitted from the UI thread;
``QtProgress`` is a ``ProgressReporter`` (pipelines/progress.py) for the runners whose
calls become ``changed(done, total, text)``.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QObject, QTimer, Signal

log = logging.getLogger(__name__)

POLL_MS = 20

#: Modules the pipelines import lazily inside worker threads. PySide6 hooks every import
#: (shiboken's feature check); an import running in a worker thread while the UI thread
#: is inside Qt crashed here ("deallocating None"). Importing them once in the UI thread
#: first means workers only ever find them in ``sys.modules``.
PRELOAD_MODULES = (
    "distributed", "onnxruntime", "imagecodecs", "PIL.Image", "PIL.ImageFile", "scipy.ndimage",
    "scipy.linalg", "scipy.spatial", "skimage.filters", "skimage.morphology", "skimage.measure",
    "skimage.transform", "skimage.exposure", "skimage.draw", "zarr", "ome_zarr.writer",
    "ome_zarr.format", "tessera.pipelines.runners.tile_classify", "tessera.pipelines.runners.segment_2d",
    "tessera.pipelines.live.export",
)


def preload_modules(extra: tuple[str, ...] = ()) -> list[str]:
    """Import ``PRELOAD_MODULES`` (and ``extra``) in the calling (UI) thread; returns
    those that are not installed (a missing optional one is not an error here)."""
    import importlib

    missing = []
    for name in (*PRELOAD_MODULES, *extra):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


class UiQueue(QObject):
    """Calls posted from any thread, run in the UI thread in the order posted."""

    def __init__(self, interval_ms: int = POLL_MS) -> None:
        super().__init__()
        self._calls: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._timer = QTimer(self)
        self._timer.setInterval(int(interval_ms))
        self._timer.timeout.connect(self.drain)
        self._timer.start()

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Thread-safe: run ``fn(*args)`` in the UI thread soon."""
        self._calls.append((fn, args))

    def drain(self) -> int:
        """Run what is queued now (called by the timer; tests may call it). Returns how many."""
        n = 0
        for _ in range(len(self._calls)):
            try:
                fn, args = self._calls.popleft()
            except IndexError:
                break
            n += 1
            try:
                fn(*args)
            except Exception:  # a failing slot must not stop the queue
                log.exception("UI callback failed")
        return n

    def pending(self) -> int:
        return len(self._calls)


_queue: UiQueue | None = None


def ui_queue() -> UiQueue:
    """The process's UI queue (made on first use, which must be in the UI thread)."""
    global _queue
    if _queue is None:
        _queue = UiQueue()
    return _queue


class QtProgress(QObject):
    """A thread-safe ProgressReporter whose calls become ``changed(done, total, text)``
    in the UI thread."""

    changed = Signal(int, int, str)

    def __init__(self) -> None:
        super().__init__()
        self.total = 0
        self.done = 0
        self.text = ""
        self._lock = threading.Lock()
        self._ui = ui_queue()

    def start(self, total: int | None, description: str = "") -> None:
        with self._lock:
            self.total, self.done, self.text = int(total or 0), 0, description
        self._ui.post(self._emit, 0, self.total, description)

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self.done += int(n)
            done, total, text = self.done, self.total, self.text
        self._ui.post(self._emit, done, total, text)

    def close(self) -> None:
        pass

    def _emit(self, done: int, total: int, text: str) -> None:
        self.changed.emit(done, total, text)


class BackgroundTask(QObject):
    """Run ``fn()`` in a daemon thread; ``finished(result)`` or ``failed(exception)``
    is emitted in the UI thread. ``cancel`` is the event handed to runners."""

    finished = Signal(object)
    failed = Signal(object)

    def __init__(self, fn: Callable[[], Any], *, name: str = "tessera-task") -> None:
        super().__init__()
        self.fn = fn
        self.cancel = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.result: Any = None
        self.error: BaseException | None = None
        self._ui = ui_queue()

    def start(self) -> BackgroundTask:
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:  # reported to the UI thread, never raised here
            log.debug("background task failed", exc_info=True)
            self.error = exc
            self._ui.post(self._deliver_failed)
            return
        self._ui.post(self._deliver_finished)

    # the queue holds these bound methods, hence the task: it lives until it has reported
    def _deliver_finished(self) -> None:
        self.finished.emit(self.result)

    def _deliver_failed(self) -> None:
        self.failed.emit(self.error)

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    def join(self, timeout: float | None = None) -> bool:
        """For tests and shutdown only (never from a UI event handler)."""
        self.thread.join(timeout)
        return not self.thread.is_alive()
