"""Aligned-tile read throughput: the tiff-tiles fast path vs ``openslide.read_region``.

Both paths read the same native tiles of one level and hand back decoded RGB:
- fast path: ``TiffTileLevel.read_tile`` (``os.pread`` + imagecodecs decode), what
  Tessera's levels call for each chunk;
- OpenSlide: ``OpenSlide.read_region`` of the tile's box, converted to an RGB array
  (what a user of openslide-python gets), one OpenSlide handle per thread.

Fairness: every round reads tiles no round has read before (OpenSlide's tile cache
cannot serve repeats; a warm-up pass puts all of them in the OS page cache first, so
neither path waits on the disk), rounds alternate which path goes first, and the
figures are medians over rounds. Process CPU time per tile is reported next to the
wall-clock throughput: on a machine shared with other jobs it is the steadier
measure of what a tile costs. The pixels of both paths are compared too, so a
fast wrong decoder shows. On a shared or busy machine the absolute numbers move;
the ratio, measured side by side, is the figure to read.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tessera.pipelines.errors import UnsupportedFile
from tessera.pipelines.progress import NullProgress, ProgressReporter

FAST = "tiff-tiles"
OPENSLIDE = "openslide"


@dataclass
class PathTiming:
    """One path at one thread count: seconds per round of ``n_tiles`` tiles."""

    path: str
    threads: int
    n_tiles: int
    tile_bytes: int
    round_times_s: list[float] = field(default_factory=list)
    round_cpu_s: list[float] = field(default_factory=list)

    @property
    def cpu_ms_per_tile(self) -> float:
        """Median CPU time of this process per tile, in ms: the cost of a tile, which other
        jobs on a busy machine change much less than they change wall-clock throughput."""
        return statistics.median(self.round_cpu_s) / self.n_tiles * 1e3

    @property
    def median_s(self) -> float:
        return statistics.median(self.round_times_s)

    @property
    def tiles_per_s(self) -> float:
        return self.n_tiles / self.median_s

    @property
    def mb_per_s(self) -> float:
        """Decoded RGB megabytes (10^6 bytes) per second."""
        return self.n_tiles * self.tile_bytes / self.median_s / 1e6


@dataclass
class ReadBench:
    """Result of ``bench_read``: timings per path and thread count, ratios, pixel check."""

    slide: str
    level: int
    tile_yx: tuple[int, int]
    compression: str
    n_tiles: int
    repeats: int
    threads: list[int]
    identical_pixels: bool
    checked_tiles: int
    timings: list[PathTiming]

    def timing(self, path: str, threads: int) -> PathTiming:
        return next(t for t in self.timings if t.path == path and t.threads == threads)

    def ratio(self, threads: int) -> float:
        """Fast-path throughput / OpenSlide throughput at ``threads`` threads."""
        return self.timing(FAST, threads).tiles_per_s / self.timing(OPENSLIDE, threads).tiles_per_s

    def scaling(self, path: str, threads: int) -> float:
        """Throughput at ``threads`` threads / throughput at the fewest threads measured."""
        base = self.timing(path, min(self.threads)).tiles_per_s
        return self.timing(path, threads).tiles_per_s / base

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["timings"] = [
            asdict(t)
            | {
                "median_s": t.median_s,
                "tiles_per_s": t.tiles_per_s,
                "mb_per_s": t.mb_per_s,
                "cpu_ms_per_tile": t.cpu_ms_per_tile,
            }
            for t in self.timings
        ]
        out["ratio_fast_over_openslide"] = {str(n): self.ratio(n) for n in self.threads}
        out["cpu_ratio_openslide_over_fast"] = {
            str(n): self.timing(OPENSLIDE, n).cpu_ms_per_tile / self.timing(FAST, n).cpu_ms_per_tile
            for n in self.threads
        }
        out["scaling"] = {
            p: {str(n): self.scaling(p, n) for n in self.threads} for p in (FAST, OPENSLIDE)
        }
        return out


def _pick_tiles(
    grid_rc: tuple[int, int], full_rc: tuple[int, int], count: int, seed: int
) -> list[tuple[int, int]]:
    """``count`` distinct full (non-edge) tiles, in random order (with repeats only if the
    level has fewer full tiles than asked for)."""
    rows, cols = full_rc
    if rows < 1 or cols < 1:
        rows, cols = grid_rc
    rng = np.random.default_rng(seed)
    total = rows * cols
    flat = rng.permutation(total) if count <= total else rng.integers(0, total, count)
    return [(int(i) // cols, int(i) % cols) for i in flat[:count]]


def _run(
    fn: Callable[[tuple[int, int]], Any], tiles: list, pool: ThreadPoolExecutor | None
) -> tuple[float, float]:
    """(wall, process CPU) seconds to read every tile of ``tiles`` with ``fn`` (in
    ``pool``'s threads if given)."""
    start, cpu = time.perf_counter(), time.process_time()
    if pool is None:
        for t in tiles:
            fn(t)
    else:
        for _ in pool.map(fn, tiles):
            pass
    return time.perf_counter() - start, time.process_time() - cpu


def bench_read(
    slide: Path,
    *,
    tiles: int = 200,
    threads: tuple[int, ...] = (1, 2),
    repeats: int = 5,
    level: int = 0,
    seed: int = 0,
    progress: ProgressReporter | None = None,
) -> ReadBench:
    """Time reading ``tiles`` aligned tiles of ``level`` with both paths, ``repeats`` rounds
    per thread count, each round on tiles not read before (see the module docstring).

    Raises:
        UnsupportedFile: the fast path declines the slide (nothing to compare).
    """
    import openslide

    from tessera.pipelines.sources.lazy import close_handles, thread_handle
    from tessera.pipelines.sources.tiff_tiles import COMPRESSIONS, TiffTileReader

    slide = Path(slide)
    levels = TiffTileReader().open_levels(slide)
    if levels is None:
        msg = "the fast path does not read this slide (not SVS/generic tiled TIFF it can decode)"
        raise UnsupportedFile(msg, path=slide)
    if not 0 <= level < len(levels):
        msg = f"level {level} does not exist; the slide has levels 0..{len(levels) - 1}"
        raise UnsupportedFile(msg, path=slide)
    lazy = levels[level]
    th, tw = lazy.tile_yx
    with openslide.OpenSlide(str(slide)) as probe:
        ds = probe.level_downsamples[level]
    if abs(ds - round(ds)) > 1e-9:
        msg = f"level {level} has a non-integer downsample ({ds:.4f}): OpenSlide resamples there"
        raise UnsupportedFile(msg, path=slide)
    ds_int = round(ds)
    full_rc = (lazy.shape[0] // th, lazy.shape[1] // tw)
    threads = tuple(sorted(set(int(n) for n in threads)))
    rounds = [_pick_tiles(lazy.grid_rc, full_rc, tiles, seed + 1000 * k) for k in range(repeats)]
    if full_rc[0] * full_rc[1] >= tiles * repeats:  # distinct tiles across all rounds
        every = _pick_tiles(lazy.grid_rc, full_rc, tiles * repeats, seed)
        rounds = [every[k * tiles : (k + 1) * tiles] for k in range(repeats)]
    key = ("bench-openslide", str(slide))

    def fast(tile_rc: tuple[int, int]) -> np.ndarray:
        return lazy.read_tile(tile_rc)

    def slow(tile_rc: tuple[int, int]) -> np.ndarray:
        handle = thread_handle(key, lambda: openslide.OpenSlide(str(slide)), lambda h: h.close())
        r, c = tile_rc
        region = handle.read_region((c * tw * ds_int, r * th * ds_int), level, (tw, th))
        return np.asarray(region)[..., :3]

    progress = progress if progress is not None else NullProgress()
    progress.start(len(threads) * repeats * 2 + 1, f"reading {tiles} tiles per round")
    checked = rounds[0][: min(16, tiles)]
    identical = all(np.array_equal(fast(t), slow(t)) for t in checked)
    for tiles_k in rounds:  # warm the OS page cache for every tile, untimed
        for t in tiles_k:
            fast(t)
    progress.advance()
    timings = {
        (p, n): PathTiming(p, n, tiles, th * tw * 3) for p in (FAST, OPENSLIDE) for n in threads
    }
    try:
        for n in threads:
            with ThreadPoolExecutor(n, thread_name_prefix="tessera-bench-read") as pool:
                use = None if n == 1 else pool
                for k, tiles_k in enumerate(rounds):
                    order = [(FAST, fast), (OPENSLIDE, slow)]
                    for name, fn in order if k % 2 == 0 else order[::-1]:
                        wall, cpu = _run(fn, tiles_k, use)
                        timings[(name, n)].round_times_s.append(wall)
                        timings[(name, n)].round_cpu_s.append(cpu)
                        progress.advance()
    finally:
        close_handles(key)  # every thread's OpenSlide handle
        progress.close()
    return ReadBench(
        slide=str(slide),
        level=level,
        tile_yx=(th, tw),
        compression=COMPRESSIONS[lazy.codec.compression],
        n_tiles=tiles,
        repeats=repeats,
        threads=list(threads),
        identical_pixels=identical,
        checked_tiles=len(checked),
        timings=list(timings.values()),
    )
