"""A thread-safe least-recently-used store of tile results, bounded in bytes.

The live overlay keeps what the model said about each tile so a tile panned away from
and back to is not computed again. Bounding by bytes (not by count) matters because a
tile's result is 8 bytes for a classifier and a whole probability map for a segmenter.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np

#: Bookkeeping cost of one entry (key tuple, array header, dict slot), counted so a
#: cache of tiny results is bounded too.
ENTRY_OVERHEAD_BYTES = 200


@dataclass(frozen=True)
class CacheStats:
    """How the cache has served: hits, misses, evictions, and what it holds now."""

    hits: int
    misses: int
    evictions: int
    entries: int
    nbytes: int
    max_bytes: int


class ResultCache:
    """LRU of numpy arrays keyed by anything hashable (tile (row, col) here).

    ``max_bytes`` bounds the sum of the arrays' ``nbytes`` plus a fixed per-entry
    overhead; putting past it evicts the least recently used entries. An array larger
    than the whole budget is not kept. ``on_evict(key)`` is called for each entry
    pushed out (inside the cache's lock: it must only record the key).
    """

    def __init__(self, max_bytes: int, *, on_evict: Callable[[Hashable], None] | None = None) -> None:
        if max_bytes <= 0:
            msg = f"max_bytes must be positive, got {max_bytes}"
            raise ValueError(msg)
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._nbytes = 0
        self._hits = self._misses = self._evictions = 0
        self._on_evict = on_evict
        self._lock = threading.Lock()

    @staticmethod
    def cost(value: np.ndarray) -> int:
        """Bytes charged for ``value``."""
        return int(value.nbytes) + ENTRY_OVERHEAD_BYTES

    def get(self, key: Hashable) -> np.ndarray | None:
        """The value for ``key`` (marked most recently used), or None."""
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self._misses += 1
                return None
            self._items.move_to_end(key)
            self._hits += 1
            return value

    def touch(self, key: Hashable) -> bool:
        """Mark ``key`` most recently used (and count a hit) if present."""
        with self._lock:
            if key not in self._items:
                return False
            self._items.move_to_end(key)
            self._hits += 1
            return True

    def __contains__(self, key: Hashable) -> bool:
        """Membership without touching recency or the hit counters."""
        with self._lock:
            return key in self._items

    def put(self, key: Hashable, value: np.ndarray) -> None:
        """Store ``value`` (read-only from now on) and evict down to the budget."""
        value = np.asarray(value)
        value.flags.writeable = False
        cost = self.cost(value)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._nbytes -= self.cost(old)
            if cost > self.max_bytes:
                return
            self._items[key] = value
            self._nbytes += cost
            while self._nbytes > self.max_bytes:
                gone, dropped = self._items.popitem(last=False)
                self._nbytes -= self.cost(dropped)
                self._evictions += 1
                if self._on_evict is not None:
                    self._on_evict(gone)

    def keys(self) -> list[Hashable]:
        """Keys from least to most recently used."""
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._nbytes = 0

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._hits, self._misses, self._evictions, len(self._items),
                              self._nbytes, self.max_bytes)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        s = self.stats()
        return f"ResultCache({s.entries} entries, {s.nbytes}/{s.max_bytes} B)"
