"""Pyramid levels for the canvas: whole native tiles, decoded once, kept in a bounded LRU.

napari asks a multiscale layer for the visible box of one level on every pan. Handing
it the Source's dask arrays works, but each request then builds and schedules a dask
graph (one task per native tile; the first one in a process also imports
dask.distributed, ~3 s here), and napari's own dask cache is sized by total RAM, not by
what a viewer needs. ``CachedLevel`` reads through the reader's array-like directly
(``tiling.read.array_like_of``: the object the dask level wraps), one native tile at a
time, and keeps decoded tiles in a ``ResultCache`` bounded in bytes that all levels of a
window share: revisited regions cost a copy, RSS stays bounded whatever is panned.
Levels that are not plain reader arrays (in-memory or computed sources) stay dask.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from tessera.pipelines.live.cache import ResultCache
from tessera.pipelines.sources.lazy import box_of_index
from tessera.pipelines.tiling.read import array_like_of

DEFAULT_DISPLAY_CACHE_BYTES = 384 * 1024 * 1024


class CachedLevel:
    """A read-only array-like over one level (``shape``, ``dtype``, ``ndim``, slicing)."""

    def __init__(self, array_like: Any, chunks: tuple[tuple[int, ...], ...], cache: ResultCache, key: Any) -> None:
        self._src = array_like
        self.shape = tuple(int(s) for s in array_like.shape)
        self.dtype = np.dtype(array_like.dtype)
        self.ndim = len(self.shape)
        self._bounds = [np.concatenate([[0], np.cumsum(c)]).astype(np.int64) for c in chunks]
        self._cache = cache
        self._key = key
        self.reads = 0

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[(slice(None),) * self.ndim]
        return out if dtype is None else out.astype(dtype)

    def _chunk(self, idx: tuple[int, ...]) -> np.ndarray:
        key = (self._key, idx)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        box = tuple(slice(int(b[i]), int(b[i + 1])) for b, i in zip(self._bounds, idx, strict=True))
        data = np.asarray(self._src[box])
        self.reads += 1
        self._cache.put(key, data)
        return data

    def __getitem__(self, index: Any) -> np.ndarray:
        starts, stops, post = box_of_index(index, self.shape)
        out = np.empty([b - a for a, b in zip(starts, stops, strict=True)], dtype=self.dtype)
        if out.size:
            ranges = []
            for a, b, bounds in zip(starts, stops, self._bounds, strict=True):
                first = int(np.searchsorted(bounds, a, side="right") - 1)
                last = int(np.searchsorted(bounds, b, side="left"))
                ranges.append(range(first, last))
            for idx in itertools.product(*ranges):
                chunk = self._chunk(idx)
                src, dst = [], []
                for ax, ci in enumerate(idx):
                    c0, c1 = int(self._bounds[ax][ci]), int(self._bounds[ax][ci + 1])
                    lo, hi = max(c0, starts[ax]), min(c1, stops[ax])
                    src.append(slice(lo - c0, hi - c0))
                    dst.append(slice(lo - starts[ax], hi - starts[ax]))
                out[tuple(dst)] = chunk[tuple(src)]
        return out[post]


def display_levels(levels: list[Any], cache: ResultCache, key: Any) -> list[Any]:
    """The levels napari should draw: ``CachedLevel`` over each reader array, the dask
    level itself where there is none."""
    out = []
    for i, level in enumerate(levels):
        raw = array_like_of(level)
        # the reader's file signature (size, mtime) in the key: a file replaced on disk
        # and opened again never shows tiles of the old one
        ident = (key, getattr(raw, "signature", id(raw)), i)
        out.append(level if raw is None else CachedLevel(raw, level.chunks, cache, ident))
    return out


_shared: ResultCache | None = None


def shared_display_cache(max_bytes: int = DEFAULT_DISPLAY_CACHE_BYTES) -> ResultCache:
    """The process's cache of decoded display tiles (made on first use)."""
    global _shared
    if _shared is None:
        _shared = ResultCache(max_bytes)
    return _shared
