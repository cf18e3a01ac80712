"""Lazy, picklable level arrays and the per-process, per-thread file handles behind them.

Every reader builds its levels the same way: a small array-like object
(``LazyLevel``) that knows the file's path, what to read and how, wrapped by
``as_dask`` into a dask array whose chunks are the file's native tiles. The object
pickles to just its parameters (no open handle), so a dask graph can travel to
dask.distributed workers in other processes; there it opens the file on first use.

Handles are kept in registries owned by this module, keyed by the file (path, size
and modification time), never by the object: every unpickled copy of a level, and
every level of one file, share them in a process. Two kinds exist:

- ``read_at``: positional reads (``os.pread``) on one descriptor per process and
  file, safe from any number of threads, for readers that decode raw tiles
  themselves (TIFF tiles, DICOM slices).
- ``thread_handle``: one library handle per process and thread, for libraries
  whose handles are not thread-safe (tifffile's TiffFile, astropy, nibabel) or die
  after an error (OpenSlide: ``discard_thread_handle`` and open again).

A fork copies the registries into the child; they are reset there on first use
(a descriptor shared with the parent would share its file offset).
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import dask.array as da
import numpy as np

from tessera.pipelines.errors import CorruptFile

T = TypeVar("T")


# ---- file identity -------------------------------------------------------------------------


@dataclass(frozen=True)
class FileSignature:
    """What a file was when it was opened: size in bytes and modification time in ns.

    A worker that opens the file later checks it is still the same file, so a slide
    replaced on disk mid-run fails loudly instead of mixing pixels of two files.
    """

    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileSignature:
        st = path.stat()
        return cls(int(st.st_size), int(st.st_mtime_ns))

    def check(self, path: Path) -> None:
        """Raise ``CorruptFile`` if ``path`` is no longer the file this signature describes."""
        try:
            now = FileSignature.of(path)
        except OSError as exc:
            msg = f"the file can no longer be read ({exc.strerror}); was it moved or deleted?"
            raise CorruptFile(msg, path=path) from exc
        if now != self:
            msg = (
                "the file changed on disk after it was opened "
                f"(size {self.size} -> {now.size} bytes); open it again"
            )
            raise CorruptFile(msg, path=path)


# ---- registries ----------------------------------------------------------------------------

_lock = threading.Lock()
_pid = os.getpid()
_fds: dict[Hashable, Any] = {}  # key -> fd (int) or, without os.pread, per-thread file objects
_thread_handles: dict[Hashable, dict[int, Any]] = {}
_closers: dict[Hashable, Callable[[Any], None] | None] = {}


def _after_fork_reset() -> None:
    global _pid
    if os.getpid() != _pid:
        with _lock:
            if os.getpid() != _pid:
                _fds.clear()
                _thread_handles.clear()
                _closers.clear()
                _pid = os.getpid()


def read_at(path: Path, offset: int, size: int, *, key: Hashable | None = None) -> bytes:
    """``size`` bytes of ``path`` from byte ``offset``; thread-safe, no shared file position.

    Raises:
        CorruptFile: the file ends before ``offset + size`` (a truncated copy).
    """
    _after_fork_reset()
    key = ("fd", str(path)) if key is None else key
    if hasattr(os, "pread"):
        fd = _fds.get(key)
        if fd is None:
            with _lock:
                fd = _fds.get(key)
                if fd is None:
                    fd = os.open(path, os.O_RDONLY)
                    _fds[key] = fd
        data = os.pread(fd, size, offset)
    else:  # pragma: no cover - Windows: a file object per thread, seek + read
        fh = thread_handle(key, lambda: open(path, "rb"), lambda f: f.close())  # noqa: SIM115
        fh.seek(offset)
        data = fh.read(size)
    if len(data) != size:
        msg = (
            f"the file ends before byte {offset + size} (needed {size} bytes at offset "
            f"{offset}); it is truncated: copy it again"
        )
        raise CorruptFile(msg, path=path)
    return data


def close_fd(path: Path, *, key: Hashable | None = None) -> None:
    """Close this process's descriptor for ``path`` (reopened by the next ``read_at``)."""
    key = ("fd", str(path)) if key is None else key
    with _lock:
        fd = _fds.pop(key, None)
    if isinstance(fd, int):
        os.close(fd)
    close_handles(key)


def thread_handle(
    key: Hashable, opener: Callable[[], T], closer: Callable[[T], None] | None = None
) -> T:
    """The calling thread's handle for ``key`` in this process, made by ``opener`` once.

    Handles of threads that have ended are closed when a new thread opens one.
    """
    _after_fork_reset()
    tid = threading.get_ident()
    per_thread = _thread_handles.get(key)
    if per_thread is not None:
        handle = per_thread.get(tid)
        if handle is not None:
            return handle
    handle = opener()  # outside the lock: opening can be slow
    with _lock:
        per_thread = _thread_handles.setdefault(key, {})
        _closers[key] = closer
        alive = {t.ident for t in threading.enumerate()}
        dead = [t for t in per_thread if t not in alive]
        stale = [per_thread.pop(t) for t in dead]
        per_thread[tid] = handle
    for old in stale:
        _close_quietly(old, closer)
    return handle


def discard_thread_handle(key: Hashable) -> None:
    """Close and forget the calling thread's handle (after an error made it unusable)."""
    with _lock:
        handle = _thread_handles.get(key, {}).pop(threading.get_ident(), None)
        closer = _closers.get(key)
    if handle is not None:
        _close_quietly(handle, closer)


def close_handles(key: Hashable) -> None:
    """Close every thread's handle for ``key`` in this process; later reads reopen."""
    with _lock:
        per_thread = _thread_handles.pop(key, {})
        closer = _closers.pop(key, None)
    for handle in per_thread.values():
        _close_quietly(handle, closer)


def _close_quietly(handle: Any, closer: Callable[[Any], None] | None) -> None:
    try:
        if closer is not None:
            closer(handle)
        elif hasattr(handle, "close"):
            handle.close()
    except Exception:  # closing a handle that is already broken
        pass


# ---- lazy levels -----------------------------------------------------------------------------


_built_lock = threading.Lock()
_built: dict[Hashable, Any] = {}


def per_process(key: Hashable, build: Callable[[], T]) -> T:
    """``build()``'s result, made once per process for ``key`` (e.g. a parsed tile index).

    For read-only values that are cheap to keep and costly to rebuild; unlike handles
    they are safe to share between threads and to keep after a fork.
    """
    found = _built.get(key)
    if found is None:
        with _built_lock:
            found = _built.get(key)
            if found is None:
                found = build()
                _built[key] = found
    return found


class LazyLevel(ABC):
    """An array-like over one level of a file, for ``dask.array.from_array``.

    Subclasses hold only picklable parameters (path, signature, level index, shape,
    dtype) and implement ``read(start, stop)``: the box ``[start, stop)`` per axis,
    read from the file through this module's handle registries. ``__getitem__``
    accepts the slices and integers dask passes. Those that need a library handle
    set ``handle_kind``, implement ``open_handle`` and read through ``handle()``.
    """

    handle_kind: str = "file"

    def __init__(self, path: Path, signature: FileSignature, shape: tuple, dtype: Any) -> None:
        self.path = Path(path)
        self.signature = signature
        self.shape: tuple[int, ...] = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)

    @property
    def handle_key(self) -> tuple:
        """The registry key of this file's handles (shared by all levels of the file)."""
        return (self.handle_kind, str(self.path), self.signature)

    def open_handle(self) -> Any:
        """A new library handle on the file (called once per process and thread)."""
        raise NotImplementedError

    def close_handle(self, handle: Any) -> None:
        """Close a handle made by ``open_handle`` (default: its ``close()``, if any)."""
        if hasattr(handle, "close"):
            handle.close()

    def handle(self) -> Any:
        """The calling thread's handle, opened (after checking the file) on first use."""

        def opener() -> Any:
            self.signature.check(self.path)
            return self.open_handle()

        return thread_handle(self.handle_key, opener, self.close_handle)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @abstractmethod
    def read(self, start: tuple[int, ...], stop: tuple[int, ...]) -> np.ndarray:
        """Pixels of the box ``[start, stop)`` (per axis, clipped to the shape already)."""

    def __getitem__(self, index: Any) -> np.ndarray:
        start, stop, post = box_of_index(index, self.shape)
        if any(b <= a for a, b in zip(start, stop, strict=True)):
            shape = [b - a for a, b in zip(start, stop, strict=True)]
            out = np.zeros(shape, self.dtype)
        else:
            out = self.read(tuple(start), tuple(stop))
        if any(p != slice(None) for p in post):
            out = out[post]
        return out


def box_of_index(index: Any, shape: tuple[int, ...]) -> tuple[list[int], list[int], tuple[Any, ...]]:
    """A numpy basic index (ints, slices with positive steps, one Ellipsis) as the box
    ``[start, stop)`` to read per axis and the index that finishes the result from that box
    (steps, and 0 where an integer drops the axis). For array-likes that read boxes lazily
    (levels here, the viewer's display cache): numpy has no public helper for this."""
    ndim = len(shape)
    if not isinstance(index, tuple):
        index = (index,)
    if any(i is Ellipsis for i in index):
        at = next(k for k, i in enumerate(index) if i is Ellipsis)
        index = index[:at] + (slice(None),) * (ndim - len(index) + 1) + index[at + 1 :]
    index = index + (slice(None),) * (ndim - len(index))
    start, stop, post = [], [], []
    for i, n in zip(index, shape, strict=True):
        if isinstance(i, slice):
            a, b, step = i.indices(n)
            if step < 0:
                msg = "negative steps are not supported by lazy levels"
                raise IndexError(msg)
            start.append(a)
            stop.append(max(a, b))
            post.append(slice(None, None, step) if step != 1 else slice(None))
        else:
            k = int(i)
            k = k + n if k < 0 else k
            if not 0 <= k < n:
                msg = f"index {i} out of range for axis of length {n}"
                raise IndexError(msg)
            start.append(k)
            stop.append(k + 1)
            post.append(0)
    return start, stop, tuple(post)


def as_dask(level: LazyLevel, chunks: tuple[int, ...], *, name: str) -> da.Array:
    """Wrap ``level`` as a dask array with ``chunks`` (the file's native tile shape).

    The level object is inlined into each task (``inline_array``): slicing a small
    window out of a 100k x 100k level then costs milliseconds, not a walk over all
    its chunks, and each task carries what it needs to reopen the file.
    """
    chunks = tuple(
        max(1, min(int(c), int(s))) if s else 1 for c, s in zip(chunks, level.shape, strict=True)
    )
    return da.from_array(
        level,
        chunks=chunks,
        name=name,
        asarray=False,
        fancy=False,
        lock=False,
        inline_array=True,
        meta=np.empty((0,) * level.ndim, dtype=level.dtype),
    )


def level_name(reader: str, path: Path, signature: FileSignature, *parts: object) -> str:
    """A deterministic dask name for one level: same file and level, same name."""
    from dask.base import tokenize

    return f"tessera-{reader}-{tokenize(str(path), signature, *parts)}"


def tile_grid_boxes(
    start: tuple[int, int], stop: tuple[int, int], tile_yx: tuple[int, int]
) -> list[tuple[int, int]]:
    """The (row, col) tile indices covering the level box ``[start, stop)`` (y, x)."""
    th, tw = tile_yx
    rows = range(start[0] // th, (stop[0] - 1) // th + 1)
    cols = range(start[1] // tw, (stop[1] - 1) // tw + 1)
    return [(r, c) for r in rows for c in cols]


def grouped_chunk(native_px: int, *, minimum_px: int = 128, maximum_px: int = 2048) -> int:
    """Chunk length along one axis for native tiles/strips of ``native_px`` (0: unknown).

    Whole tiles, grouped up to at least ``minimum_px`` (formats with tiny tiles or
    one-row strips would make huge graphs) and at most ``maximum_px`` (formats that
    report whole strips or images as one tile).
    """
    if native_px <= 0:
        return 512
    if native_px > maximum_px:
        return maximum_px
    return native_px * max(1, -(-minimum_px // native_px))
