"""The live overlay: a model's results appear over the part of a slide the user looks at.

``LiveOverlay`` is plain Python (no Qt): the viewer's thin adapter tells it what is in
view (``set_view``, a level-0 box) and repaints what it publishes (``on_update``). It

- works on the model's own tile grid (``tiling.grid.make_tile_grid`` at the plugin's
  µm/px, tissue tiles only), whatever the zoom: zoomed out, more tiles are visible, but
  they are still the tiles the model was trained on, read from the pyramid level nearest
  the model's resolution;
- schedules only tiles inside the view, nearest the view's centre first, and re-plans
  on every view change: queued tiles that left the view are dropped (a batch already
  running finishes and is kept);
- runs reads and inference on its own worker threads, never the caller's;
- keeps results in a bytes-bounded LRU (``ResultCache``): a tile seen before is not
  computed again until it is evicted;
- reuses what ``tessera run`` wrote for this file and plugin (``run_outputs``);
- publishes progress as ``OverlayUpdate`` objects from its worker threads (the adapter
  hands them to the UI thread), including a ``"view-complete"`` update when every
  tile of the current view has a result.

``close()`` stops the workers and joins them; nothing keeps running after it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tessera.pipelines.errors import PluginError
from tessera.pipelines.live.cache import ResultCache
from tessera.pipelines.live.run_outputs import RunOutput, find_run_output
from tessera.pipelines.runners.base import ModelInfo, PluginPredictor, TilePredictor, plugin_ref
from tessera.pipelines.runners.tiled import predict_batches, read_block_tiles
from tessera.pipelines.sources.base import Source
from tessera.pipelines.tiling.grid import TileGrid, make_tile_grid
from tessera.pipelines.tiling.read import default_fill
from tessera.pipelines.tiling.tissue import TissueOptions, detect_tissue

log = logging.getLogger(__name__)

LIVE_TASKS = ("tile-classify", "segment-2d")
DEFAULT_CACHE_BYTES = 256 * 1024 * 1024

UpdateKind = Literal["ready", "tiles", "view-complete"]


@dataclass(frozen=True)
class ViewBox:
    """What is on screen, in level-0 pixels: [y0, y1) x [x0, x1) (may extend past the slide)."""

    l0_y0: float
    l0_x0: float
    l0_y1: float
    l0_x1: float

    @property
    def centre_yx(self) -> tuple[float, float]:
        return ((self.l0_y0 + self.l0_y1) / 2, (self.l0_x0 + self.l0_x1) / 2)

    @classmethod
    def around(cls, centre_yx: tuple[float, float], size_yx: tuple[float, float]) -> ViewBox:
        """The box of ``size_yx`` level-0 pixels centred on ``centre_yx``."""
        cy, cx = centre_yx
        h, w = size_yx
        return cls(cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2)


@dataclass(frozen=True)
class OverlayUpdate:
    """One thing the overlay has to tell the viewer.

    kind:
        "ready": the grid is known (``LiveOverlay.grid``/``model`` are set); ``tile_rc``
            and ``results`` carry any results reused from a ``tessera run`` output.
        "tiles": results for ``tile_rc`` (computed, or read from a run output).
        "view-complete": every tissue tile of view ``generation`` has a result.
    tile_rc: int32 (N, 2) grid rows/cols.
    results: tile-classify: float32 (N, K) class probabilities; segment-2d: a list of N
        uint8 (K, h, w) probability cells (0..255) at the model's resolution.
    l0_box_yx: the level-0 region (y0, x0, y1, x1) these results cover (to repaint).
    origin: "model", "run" (a tessera run output) or "" (no results).
    view_done / view_total: tissue tiles of the current view with a result / in all.
    generation: the view this update was planned for (increases with every set_view).
    """

    kind: UpdateKind
    tile_rc: np.ndarray
    results: Any
    l0_box_yx: tuple[float, float, float, float] | None
    origin: str
    view_done: int
    view_total: int
    generation: int


@dataclass
class LiveStats:
    """Counters for tests, benchmarks and the dock's status line."""

    tiles_computed: int = 0
    tiles_from_run: int = 0
    cache_hits: int = 0
    dropped: int = 0
    batches: int = 0
    failed: int = 0
    infer_s: float = 0.0
    read_s: float = 0.0
    prepare_s: float = 0.0
    run_output: str | None = None
    notes: list[str] = field(default_factory=list)


class LiveOverlay:
    """Schedules, runs, caches and publishes a plugin's results for the tiles in view.

    Args:
        source: a 2D Source (slide, picture, single-plane microscopy).
        plugin: a ``Plugin`` (tile-classify or segment-2d).
        engine, device, engine_threads: how the model runs (``create_engine`` through
            ``PluginPredictor``); ``engine_threads`` defaults to cores / workers.
        workers: worker threads (each reads and infers a batch at a time).
        batch_size: tiles per model call; smaller batches repaint more often. Default:
            the manifest's, at most 16.
        cache_bytes: budget of the result LRU.
        tissue: how glass is told from tissue (only tissue tiles run; the batch
            runner's defaults); None runs every tile.
        reuse: look for ``tessera run`` outputs for this file (True: near the file;
            paths: those folders too; False: never).
        predictor: a stand-in for the plugin's model (``uint8 [N,H,W,C] -> float32``),
            for tests.
        on_update / on_error: called from worker threads; must not block (the Qt
            adapter queues them for the UI thread).
        background_priority: run the workers at a lower OS priority than the rest of
            the process (Linux), so on a machine with few cores the viewer's UI thread
            wins the CPU and inference takes what is left.
    """

    def __init__(
        self,
        source: Source,
        plugin: Any,
        *,
        engine: str = "onnx",
        device: str = "cpu",
        workers: int = 2,
        engine_threads: int | None = None,
        batch_size: int | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        tissue: TissueOptions | None = TissueOptions(),
        reuse: bool | Iterable[Path] = True,
        predictor: TilePredictor | None = None,
        on_update: Callable[[OverlayUpdate], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        background_priority: bool = True,
    ) -> None:
        if source.ndim_spatial != 2:
            msg = f"the live overlay needs a 2D image; {source.path} has axes {source.axes!r}"
            raise PluginError(msg, path=source.path)
        self.source = source
        self.plugin = plugin
        self.model = ModelInfo.from_manifest(plugin.manifest)
        if self.model.task not in LIVE_TASKS or len(self.model.size_px) != 2:
            msg = (f"plugin {self.model.id!r} ({self.model.task}) cannot run live; the live overlay "
                   f"runs {' and '.join(LIVE_TASKS)} models (use Run for the others)")
            raise PluginError(msg)
        self.workers = max(1, int(workers))
        if engine_threads is None:
            from tessera.pipelines.engines.devices import physical_cores

            engine_threads = max(1, physical_cores() // self.workers)
        self.predictor: TilePredictor = predictor or PluginPredictor(
            plugin_ref(plugin), self.model.task, engine, device, threads=engine_threads)
        self.batch_size = int(batch_size or min(self.model.batch_size, 16))
        self.tissue_options = tissue
        self._reuse = reuse
        self.on_update = on_update
        self.on_error = on_error
        self.background_priority = background_priority
        self.stats = LiveStats()

        self.grid: TileGrid | None = None
        self.state: Literal["new", "preparing", "ready", "failed", "closed"] = "new"
        self.error: BaseException | None = None
        self._run: RunOutput | None = None
        self._run_tiles: np.ndarray | None = None  # bool (rows, cols): the run has this tile
        self._run_raster: Any = None  # segment-2d: zarr (K, Y, X) of the run
        self._run_probs: np.ndarray | None = None  # tile-classify: (rows, cols, K) of the run
        self._fill = default_fill(source)

        self._cond = threading.Condition()
        self._stop = False
        self._view: ViewBox | None = None
        self._generation = 0
        self._planned = -1
        self._pending: deque[tuple[int, int]] = deque()
        self._view_index: tuple[int, int, int, int] | None = None  # (r0, r1, c0, c1)
        self._done: np.ndarray | None = None  # bool (rows, cols): has a result
        self._inflight: np.ndarray | None = None
        self._failed: np.ndarray | None = None
        self._busy = 0  # workers running a batch
        self._completed_generation = -1
        self._evicted_keys: deque[tuple[int, int]] = deque()
        self.cache = ResultCache(cache_bytes, on_evict=self._evicted_keys.append)
        self._threads: list[threading.Thread] = []
        self._prepare_lock = threading.Lock()

    # ---- lifetime ------------------------------------------------------------------
    def start(self) -> LiveOverlay:
        """Start the workers (the first prepares grid, tissue mask, engine, reuse)."""
        with self._cond:
            if self._threads or self.state == "closed":
                return self
            self.state = "preparing"
            for i in range(self.workers):
                t = threading.Thread(target=self._work, name=f"tessera-live-{i}", daemon=True)
                self._threads.append(t)
        for t in self._threads:
            t.start()
        return self

    def close(self, timeout: float = 30.0) -> None:
        """Drop queued tiles, stop the workers and wait for them (a running batch ends first)."""
        with self._cond:
            self._stop = True
            self.stats.dropped += len(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout)
        self._threads = [t for t in self._threads if t.is_alive()]
        self.state = "closed"

    def __enter__(self) -> LiveOverlay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def threads(self) -> list[threading.Thread]:
        """The worker threads (alive until ``close``)."""
        return list(self._threads)

    # ---- the view ------------------------------------------------------------------
    def set_view(self, view: ViewBox) -> int:
        """Say what is on screen; returns the view's generation. Cheap: the plan is made
        by a worker, so the caller (the UI thread) never waits on tiles."""
        with self._cond:
            self._view = view
            self._generation += 1
            self._cond.notify_all()
            return self._generation

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until the current view is complete (or the overlay failed/closed);
        False on timeout. For tests and benchmarks, never the UI thread."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._idle_locked():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def _idle_locked(self) -> bool:
        if self.state in ("failed", "closed") or self._stop:
            return True
        if self.state != "ready":
            return False
        return (self._planned == self._generation and not self._pending and self._busy == 0)

    def view_progress(self) -> tuple[int, int]:
        """(tissue tiles of the current view with a result, tissue tiles in it)."""
        with self._cond:
            return self._view_counts_locked()

    def _view_counts_locked(self) -> tuple[int, int]:
        if self._view_index is None or self.grid is None or self._done is None:
            return 0, 0
        r0, r1, c0, c1 = self._view_index
        sel = self.grid.selected[r0:r1, c0:c1]
        return int((sel & self._done[r0:r1, c0:c1]).sum()), int(sel.sum())

    def visible_tiles(self, view: ViewBox) -> tuple[int, int, int, int]:
        """Grid index range (r0, r1, c0, c1) of the cells ``view`` touches."""
        assert self.grid is not None
        cy, cx = self.grid.cell_l0_size_yx
        rows, cols = self.grid.grid_shape
        r0 = min(max(math.floor(view.l0_y0 / cy), 0), rows)
        r1 = min(max(math.ceil(view.l0_y1 / cy), 0), rows)
        c0 = min(max(math.floor(view.l0_x0 / cx), 0), cols)
        c1 = min(max(math.ceil(view.l0_x1 / cx), 0), cols)
        return r0, max(r0, r1), c0, max(c0, c1)

    # ---- results -------------------------------------------------------------------
    def result(self, tile_rc: tuple[int, int]) -> np.ndarray | None:
        """The cached result of one tile, or None."""
        return self.cache.get((int(tile_rc[0]), int(tile_rc[1])))

    def tile_l0_box(self, tile_rc: np.ndarray) -> tuple[float, float, float, float]:
        """Level-0 box (y0, x0, y1, x1) covering the stride cells of ``tile_rc``."""
        assert self.grid is not None
        cy, cx = self.grid.cell_l0_size_yx
        r0, c0 = tile_rc.min(axis=0)
        r1, c1 = tile_rc.max(axis=0) + 1
        h, w = self.grid.l0_shape_yx
        return (float(r0 * cy), float(c0 * cx), float(min(r1 * cy, h)), float(min(c1 * cx, w)))

    # ---- workers -------------------------------------------------------------------
    def _work(self) -> None:
        if self.background_priority:
            lower_thread_priority()
        try:
            self._ensure_prepared()
        except BaseException as exc:  # reported, never raised in a worker thread
            self._fail(exc)
            return
        while True:
            with self._cond:
                batch = self._next_batch_locked()
                if batch is None:
                    return
                generation = self._generation
            if not batch:  # the plan needs no work: tell the viewer the view is complete
                self._maybe_complete()
                continue
            try:
                self._run_batch(batch, generation)
            except BaseException as exc:
                log.exception("live overlay batch failed")
                with self._cond:
                    for r, c in batch:
                        self._failed[r, c] = True
                    self.stats.failed += len(batch)
                self._report(exc)
            finally:
                with self._cond:
                    for r, c in batch:
                        self._inflight[r, c] = False
                    self._busy -= 1
                    self._cond.notify_all()
            self._maybe_complete()

    def _next_batch_locked(self) -> list[tuple[int, int]] | None:
        """Wait for work; None when stopping. Re-plans first if the view changed."""
        while True:
            if self._stop:
                return None
            if self._planned != self._generation:
                self._plan_locked()
                if not self._pending and self._busy == 0:
                    return []
                continue
            if self._pending:
                batch = [self._pending.popleft() for _ in range(min(self.batch_size, len(self._pending)))]
                for r, c in batch:
                    self._inflight[r, c] = True
                self._busy += 1
                return batch
            self._cond.wait()

    def _plan_locked(self) -> None:
        """Queue the current view's tissue tiles without a result, nearest its centre first."""
        assert self.grid is not None and self._done is not None
        self._planned = self._generation
        while self._evicted_keys:
            r, c = self._evicted_keys.popleft()
            self._done[r, c] = False
        self.stats.dropped += len(self._pending)
        self._pending.clear()
        view = self._view
        if view is None:
            self._view_index = None
            return
        r0, r1, c0, c1 = self._view_index = self.visible_tiles(view)
        sel = self.grid.selected[r0:r1, c0:c1]
        done = self._done[r0:r1, c0:c1]
        hits = sel & done
        if hits.any():
            rr, cc = np.nonzero(hits)
            for r, c in zip(rr + r0, cc + c0, strict=True):
                self.cache.touch((int(r), int(c)))  # keep what is on screen hot
            self.stats.cache_hits += int(hits.sum())
        want = sel & ~done & ~self._inflight[r0:r1, c0:c1] & ~self._failed[r0:r1, c0:c1]
        rr, cc = np.nonzero(want)
        if rr.size == 0:
            return
        rr, cc = rr + r0, cc + c0
        cy, cx = self.grid.cell_l0_size_yx
        vy, vx = view.centre_yx
        d2 = ((rr + 0.5) * cy - vy) ** 2 + ((cc + 0.5) * cx - vx) ** 2
        order = np.lexsort((cc, rr, d2))
        self._pending.extend(zip(rr[order].tolist(), cc[order].tolist(), strict=True))

    def _run_batch(self, batch: list[tuple[int, int]], generation: int) -> None:
        assert self.grid is not None
        rc = np.asarray(batch, dtype=np.int32)
        from_run = np.zeros(len(rc), dtype=bool)
        if self._run_tiles is not None:
            from_run = self._run_tiles[rc[:, 0], rc[:, 1]]
        for origin, part in (("run", rc[from_run]), ("model", rc[~from_run])):
            if len(part) == 0:
                continue
            t0 = time.perf_counter()
            if origin == "run":
                results = [self._run_cell(r, c) for r, c in part]
                t1 = t2 = time.perf_counter()
            else:
                tiles = read_block_tiles(self.source, self.grid, part, fill=self._fill)
                t1 = time.perf_counter()
                probs = predict_batches(self.predictor, tiles, self.batch_size)
                t2 = time.perf_counter()
                results = self._results_from_model(part, probs)
            for (r, c), res in zip(part, results, strict=True):
                self.cache.put((int(r), int(c)), res)
            with self._cond:
                for r, c in part:
                    self._done[r, c] = True
                self.stats.batches += 1
                self.stats.read_s += t1 - t0
                self.stats.infer_s += t2 - t1
                if origin == "run":
                    self.stats.tiles_from_run += len(part)
                else:
                    self.stats.tiles_computed += len(part)
                done, total = self._view_counts_locked()
            payload = np.stack(results) if self.model.task == "tile-classify" else results
            self._publish(OverlayUpdate("tiles", part, payload, self.tile_l0_box(part), origin,
                                        done, total, generation))

    def _results_from_model(self, rc: np.ndarray, probs: np.ndarray) -> list[np.ndarray]:
        k = len(self.model.classes)
        if self.model.task == "tile-classify":
            if probs.ndim != 2 or probs.shape[1] != k:
                msg = f"{self.model.id}: the model returned {probs.shape}; expected (N, {k})"
                raise PluginError(msg)
            return [p.astype(np.float32) for p in probs]
        grid = self.grid
        assert grid is not None
        if probs.ndim != 4 or probs.shape[1] != k or probs.shape[2:] != tuple(grid.tile_px):
            msg = f"{self.model.id}: the model returned {probs.shape}; expected (N, {k}, {grid.tile_px[0]}, {grid.tile_px[1]})"
            raise PluginError(msg)
        my, mx = grid.margin_px
        out = []
        for (r, c), p in zip(rc, probs, strict=True):
            h, w = self._cell_size(int(r), int(c))
            cell = p[:, my : my + h, mx : mx + w]
            out.append(np.clip(np.rint(cell * 255.0), 0, 255).astype(np.uint8))
        return out

    def _cell_size(self, r: int, c: int) -> tuple[int, int]:
        """Target-pixel size of tile (r, c)'s stride cell, clipped at the raster edge."""
        assert self.grid is not None
        sy, sx = self.grid.stride_px
        H, W = self.grid.target_shape_yx
        return min(sy, H - r * sy), min(sx, W - c * sx)

    def _run_cell(self, r: int, c: int) -> np.ndarray:
        """One tile's result read back from the reused run output."""
        if self.model.task == "tile-classify":
            assert self._run_probs is not None
            return self._run_probs[r, c]
        assert self.grid is not None
        sy, sx = self.grid.stride_px
        h, w = self._cell_size(r, c)
        return np.asarray(self._run_raster[:, r * sy : r * sy + h, c * sx : c * sx + w], dtype=np.uint8)

    # ---- preparation ---------------------------------------------------------------
    def _ensure_prepared(self) -> None:
        with self._prepare_lock:
            if self.grid is not None:
                return
            t0 = time.perf_counter()
            stride = max(1.0, min(self.model.size_px) * (1.0 - self.model.overlap))
            grid = make_tile_grid(self.source, tile_px=tuple(self.model.size_px), target_mpp=self.model.target_mpp,
                                  overlap=self.model.overlap, tissue=None)
            if self.tissue_options is not None:
                ds = grid.target_downsample_yx[0]
                tissue = detect_tissue(self.source, self.tissue_options, cell_l0_px=stride * ds)
                grid = make_tile_grid(self.source, tile_px=tuple(self.model.size_px),
                                      target_mpp=self.model.target_mpp, overlap=self.model.overlap,
                                      tissue=tissue, min_tile_fraction=self.tissue_options.min_tile_fraction)
            shape = grid.grid_shape
            done = np.zeros(shape, dtype=bool)
            reused = self._load_run_output(grid)
            # Load the model now, so a broken plugin is reported before any tile.
            description = getattr(self.predictor, "description", None)
            with self._cond:
                self.grid = grid
                self._done = done
                self._inflight = np.zeros(shape, dtype=bool)
                self._failed = np.zeros(shape, dtype=bool)
                self.stats.notes.extend(grid.notes)
                self.stats.prepare_s = time.perf_counter() - t0
                if description:
                    self.stats.notes.append(f"engine: {description}")
                if reused is not None:
                    rc, probs = reused
                    for (r, c), p in zip(rc, probs, strict=True):
                        self.cache.put((int(r), int(c)), p)
                    done[rc[:, 0], rc[:, 1]] = True
                    self.stats.tiles_from_run += len(rc)
                self.state = "ready"
                self._cond.notify_all()
            if reused is not None and len(reused[0]):
                rc, probs = reused
                self._publish(OverlayUpdate("ready", rc, probs, self.tile_l0_box(rc), "run", 0, 0, -1))
            else:
                empty = np.zeros((0, 2), dtype=np.int32)
                self._publish(OverlayUpdate("ready", empty, None, None, "", 0, 0, -1))

    def _load_run_output(self, grid: TileGrid) -> tuple[np.ndarray, np.ndarray] | None:
        """Find a usable ``tessera run`` output; tile-classify results come back to be
        cached now, segment-2d tiles are read from its raster when first needed."""
        if self._reuse is False:
            return None
        search = [] if self._reuse is True else [Path(p) for p in self._reuse]  # type: ignore[union-attr]
        manifest = self.plugin.manifest
        run = find_run_output(Path(self.source.path), manifest.id, manifest.version, search=search)
        if run is None:
            return None
        if run.task != self.model.task or not run.grid_matches(grid):
            self.stats.notes.append(f"not reusing {run.folder}: made on a different tile grid")
            return None
        try:
            rc, probs = run.tile_probabilities(self.model.class_names)
        except (OSError, KeyError, ValueError) as exc:
            self.stats.notes.append(f"not reusing {run.folder}: {exc}")
            return None
        inside = (rc[:, 0] < grid.grid_shape[0]) & (rc[:, 1] < grid.grid_shape[1]) & (rc >= 0).all(axis=1)
        rc, probs = rc[inside], probs[inside]
        self._run = run
        self.stats.run_output = str(run.folder)
        self._run_tiles = np.zeros(grid.grid_shape, dtype=bool)
        self._run_tiles[rc[:, 0], rc[:, 1]] = True  # an evicted tile is read back, not recomputed
        if self.model.task == "tile-classify":
            self._run_probs = np.full((*grid.grid_shape, len(self.model.classes)), np.nan, dtype=np.float32)
            self._run_probs[rc[:, 0], rc[:, 1]] = probs
            return rc, probs
        raster = run.segmentation_array()
        if raster is None:
            self.stats.notes.append(f"not reusing {run.folder}: no segmentation raster")
            self._run = self._run_tiles = None
            self.stats.run_output = None
            return None
        self._run_raster = raster
        return None

    # ---- reporting -----------------------------------------------------------------
    def _maybe_complete(self) -> None:
        with self._cond:
            if (not self._idle_locked() or self._completed_generation == self._generation
                    or self._view is None or self.state != "ready"):
                return
            self._completed_generation = generation = self._generation
            done, total = self._view_counts_locked()
            self._cond.notify_all()
        empty = np.zeros((0, 2), dtype=np.int32)
        self._publish(OverlayUpdate("view-complete", empty, None, None, "", done, total, generation))

    def _publish(self, update: OverlayUpdate) -> None:
        if self.on_update is None:
            return
        try:
            self.on_update(update)
        except Exception:  # a broken listener must not kill the workers
            log.exception("live overlay listener failed")

    def _report(self, exc: BaseException) -> None:
        self.error = exc
        if self.on_error is not None:
            try:
                self.on_error(exc)
            except Exception:
                log.exception("live overlay error listener failed")

    def _fail(self, exc: BaseException) -> None:
        with self._cond:
            self.state = "failed"
            self._stop = True
            self._cond.notify_all()
        self._report(exc)


def lower_thread_priority(step: int = 10) -> bool:
    """Raise the calling thread's niceness by ``step`` (Linux schedules threads as tasks,
    so ``setpriority`` on the thread id affects this thread only); False where the OS
    does not allow it. Runtime threads started from here (ONNX Runtime with one intra-op
    thread runs in the caller) inherit it."""
    import os
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        tid = threading.get_native_id()
        now = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, now + step))
    except (OSError, AttributeError):
        return False
    return True
