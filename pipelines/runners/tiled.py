"""The 2D tiled engine behind tile-classify and segment-2d.

``run_tiled(source, predictor, work_dir, spec=..., options=...)``: tissue mask -> tile grid
at the model's resolution -> one dask task per block of tiles (read + resample + infer +
write + completion mark, all inside the worker) -> per-tile results (tile-classify) or
probability/label rasters at the model's resolution (segment-2d, zarr, chunk = block).

Works with any predictor ``tiles [N, H, W, C] -> float32 [N, K]`` (tile-classify) or
``[N, K, H, W]`` (segment-2d); runners pass a ``PluginPredictor``.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tessera.pipelines.progress import ProgressReporter
from tessera.pipelines.runners.base import (
    RunOptions,
    SourceRef,
    TilePredictor,
    bound_heap,
    release_free_memory,
    signature_of,
)
from tessera.pipelines.runners.execution import run_jobs
from tessera.pipelines.runners.resume import ChunkLedger
from tessera.pipelines.sources.base import Source
from tessera.pipelines.tiling.grid import Block, TileGrid, make_tile_grid
from tessera.pipelines.tiling.read import default_fill, read_target_window
from tessera.pipelines.tiling.tissue import TissueMask, detect_tissue

RASTER_NAME = "segmentation.ome.zarr"  # segment-2d work raster, published as-is at the end


@dataclass(frozen=True)
class TiledSpec:
    """What the model needs: task kind, input tile size at ``target_mpp``, overlap, classes."""

    kind: Literal["tile-classify", "segment-2d"]
    tile_px: tuple[int, int]
    target_mpp: float | None
    n_classes: int
    overlap: float = 0.0
    batch_size: int = 16


@dataclass
class TiledResult:
    """What a tiled run produced.

    Attributes:
        grid, tissue: the tile grid and mask used.
        tile_probs: float32 (rows, cols, K) class probabilities per tile, NaN where no
            tile ran (tile-classify).
        tile_class_fraction: float32 (rows, cols, K) fraction of each tile's cell given
            each class (segment-2d), NaN where no tile ran.
        raster_path: segment-2d: zarr group with ``0`` = probabilities uint8 (K, Y, X)
            and ``labels/classes/0`` = argmax labels uint8 (Y, X), at the model's
            resolution (``grid.target_shape_yx``).
        n_computed, n_resumed: tiles computed now / found finished from an earlier run.
        signature: identity of this result (model, input, settings).
        timings: seconds: tissue, read (summed over tasks), infer (summed), wall.
    """

    grid: TileGrid
    tissue: TissueMask
    tile_probs: np.ndarray | None
    tile_class_fraction: np.ndarray | None
    raster_path: Path | None
    n_computed: int
    n_resumed: int
    signature: str
    timings: dict[str, float] = field(default_factory=dict)


def plan_grid(source: Source, spec: TiledSpec, options: RunOptions) -> tuple[TissueMask, TileGrid]:
    """Tissue mask and tile grid for ``source`` (cheap: reads only a thumbnail)."""
    from tessera.pipelines.tiling.grid import source_mpp_yx

    mpp = source_mpp_yx(source)
    ds = 1.0 if mpp is None or spec.target_mpp is None else spec.target_mpp / max(mpp)
    stride = max(1.0, min(spec.tile_px) * (1.0 - spec.overlap))
    tissue = detect_tissue(source, options.tissue, cell_l0_px=stride * ds)
    grid = make_tile_grid(
        source,
        tile_px=spec.tile_px,
        target_mpp=spec.target_mpp,
        overlap=spec.overlap,
        tissue=tissue,
        min_tile_fraction=options.tissue.min_tile_fraction,
        tiles_per_task=options.effective_tiles_per_task(spec.batch_size),
    )
    if options.tiles_per_task is None:
        # Automatic task size: at least ~4 tasks per worker, so no worker idles through
        # a long last task (a 10k slide has only ~250 tissue tiles), never below a batch.
        want = max(spec.batch_size, grid.n_selected // (4 * options.effective_workers()))
        side = max(1, round(math.sqrt(want)))
        if side < grid.block_shape[0]:
            grid = dataclasses.replace(grid, block_shape=(side, side))
    return tissue, grid


def run_tiled(
    source: Source,
    predictor: TilePredictor,
    work_dir: Path,
    *,
    spec: TiledSpec,
    options: RunOptions,
    identity: dict[str, Any],
    progress: ProgressReporter,
    cancel: threading.Event | None,
) -> TiledResult:
    """Run ``predictor`` over the tissue tiles of ``source``; resumable in ``work_dir``.

    ``identity`` says what produced the results (input and model fingerprints); with the
    grid and spec it forms the signature finished chunks are kept under.
    """
    t_start = time.perf_counter()
    bound_heap()
    tissue, grid = plan_grid(source, spec, options)
    release_free_memory()
    t_tissue = time.perf_counter() - t_start
    signature = signature_of({
        "identity": identity,
        "spec": spec.__dict__ | {"batch_size": None},
        "grid": grid.describe(),
        "tissue": options.tissue.as_dict(),
        "engine": options.engine,
    })
    ledger, _ = ChunkLedger.open(Path(work_dir), signature, resume=options.resume)
    raster = Path(work_dir) / RASTER_NAME if spec.kind == "segment-2d" else None
    if raster is not None and ledger.done_ids() and not (raster / "0").exists():
        # Killed after the raster was published but before the summary: the marks
        # describe pixels that are no longer here, so start this input again.
        ledger.discard()
        ledger, _ = ChunkLedger.open(Path(work_dir), signature, resume=False)
    blocks = grid.blocks()
    done = ledger.done_ids()
    todo = [b for b in blocks if b.chunk_id not in done]
    n_resumed = sum(len(b.tile_rc) for b in blocks if b.chunk_id in done)

    if raster is not None and not done:
        _create_raster(raster, grid, spec.n_classes)

    progress.start(grid.n_selected, f"{Path(source.path).name}: {grid.n_selected} tiles")
    if n_resumed:
        progress.advance(n_resumed)
    shared = {
        "source": SourceRef.of(source),
        "predictor": predictor,
        "grid": grid,
        "spec": spec,
        "ledger": ledger,
        "raster": None if raster is None else str(raster),
        "fill": default_fill(source),
    }
    results = run_jobs(
        process_block,
        todo,
        shared,
        scheduler=options.scheduler,
        workers=options.effective_workers(),
        progress=progress,
        cancel=cancel,
        weight=lambda b: len(b.tile_rc),
    )
    release_free_memory()
    out = _collect(ledger, blocks, grid, spec)
    timings = {
        "tissue_s": round(t_tissue, 3),
        "read_s": round(sum(r["read_s"] for r in results), 3),
        "infer_s": round(sum(r["infer_s"] for r in results), 3),
        "write_s": round(sum(r["write_s"] for r in results), 3),
        "tiles_wall_s": round(time.perf_counter() - t_start - t_tissue, 3),
    }
    return TiledResult(
        grid=grid,
        tissue=tissue,
        tile_probs=out if spec.kind == "tile-classify" else None,
        tile_class_fraction=out if spec.kind == "segment-2d" else None,
        raster_path=raster,
        n_computed=sum(len(b.tile_rc) for b in todo),
        n_resumed=n_resumed,
        signature=signature,
        timings=timings,
    )


# ---- inside the workers ------------------------------------------------------------------
def process_block(
    job: Block,
    *,
    source: SourceRef,
    predictor: TilePredictor,
    grid: TileGrid,
    spec: TiledSpec,
    ledger: ChunkLedger,
    raster: str | None,
    fill: float,
) -> dict[str, Any]:
    """One task: read the block's window once, cut its tiles, infer in batches, write
    the results, then the completion mark."""
    t0 = time.perf_counter()
    tiles = read_block_tiles(source.open(), grid, job.tile_rc, fill=fill)
    t1 = time.perf_counter()
    probs = predict_batches(predictor, tiles, spec.batch_size)
    t2 = time.perf_counter()
    if spec.kind == "tile-classify":
        if probs.ndim != 2 or probs.shape[1] != spec.n_classes:
            msg = f"the model returned {probs.shape} for {len(tiles)} tiles; expected (N, {spec.n_classes})"
            raise ValueError(msg)
        ledger.save(job.chunk_id, {"tile_rc": job.tile_rc, "probs": probs})
    else:
        assert raster is not None
        class_px = _write_segmentation_block(raster, grid, job, probs, spec.n_classes)
        ledger.save(job.chunk_id, {"tile_rc": job.tile_rc, "class_px": class_px})
    t3 = time.perf_counter()
    return {"n": len(job.tile_rc), "read_s": t1 - t0, "infer_s": t2 - t1, "write_s": t3 - t2}


def read_block_tiles(source: Source, grid: TileGrid, tile_rc: np.ndarray, *, fill: float) -> np.ndarray:
    """Tiles (N, th, tw, C) for ``tile_rc``, cut from one read of their bounding window
    (neighbouring tiles share the file's tiles: each is decoded once), or, when the
    tiles fill less than half of that window (a block at the tissue's edge), from one
    read per grid row."""
    r0, c0 = (int(v) for v in tile_rc.min(axis=0))
    r1, c1 = (int(v) + 1 for v in tile_rc.max(axis=0))
    if len(tile_rc) < 0.5 * (r1 - r0) * (c1 - c0) and r1 - r0 > 1:
        rows = [tile_rc[tile_rc[:, 0] == r] for r in range(r0, r1)]
        parts = [_read_window_tiles(source, grid, rc, fill=fill) for rc in rows if len(rc)]
        order = np.concatenate([rc for rc in rows if len(rc)])
        tiles = np.concatenate(parts)
        # back to the caller's order
        index = {(int(r), int(c)): k for k, (r, c) in enumerate(order)}
        return tiles[[index[(int(r), int(c))] for r, c in tile_rc]]
    return _read_window_tiles(source, grid, tile_rc, fill=fill)


def _read_window_tiles(source: Source, grid: TileGrid, tile_rc: np.ndarray, *, fill: float) -> np.ndarray:
    r0, c0 = (int(v) for v in tile_rc.min(axis=0))
    r1, c1 = (int(v) + 1 for v in tile_rc.max(axis=0))
    sy, sx = grid.stride_px
    th, tw = grid.tile_px
    ty0, tx0 = (int(v) for v in grid.window_target_yx(r0, c0))
    t_h, t_w = (r1 - r0 - 1) * sy + th, (c1 - c0 - 1) * sx + tw
    window = read_target_window(source, grid, ty0, tx0, t_h, t_w, fill=fill)
    out = np.empty((len(tile_rc), th, tw, window.shape[-1]), dtype=window.dtype)
    for k, (r, c) in enumerate(tile_rc):
        y, x = (int(r) - r0) * sy, (int(c) - c0) * sx
        out[k] = window[y : y + th, x : x + tw]
    return out


def predict_batches(predictor: TilePredictor, tiles: np.ndarray, batch_size: int) -> np.ndarray:
    """Run ``predictor`` over ``tiles`` in batches of ``batch_size``; float32 results."""
    outs = [np.asarray(predictor(tiles[i : i + batch_size]), dtype=np.float32)
            for i in range(0, len(tiles), max(1, batch_size))]
    return np.concatenate(outs, axis=0)


def _block_box(grid: TileGrid, block_rc: tuple[int, int]) -> tuple[int, int, int, int]:
    """Target-pixel box (y0, x0, y1, x1) of a block, clipped to the raster."""
    bh, bw = grid.block_shape
    sy, sx = grid.stride_px
    H, W = grid.target_shape_yx
    y0, x0 = block_rc[0] * bh * sy, block_rc[1] * bw * sx
    return y0, x0, min(y0 + bh * sy, H), min(x0 + bw * sx, W)


def _write_segmentation_block(raster: str, grid: TileGrid, job: Block, probs: np.ndarray, n_classes: int) -> np.ndarray:
    """Write the block's cells (each tile's centre, the overlap-tile strategy) into the
    rasters; returns per-tile pixel counts per class (N, K)."""
    import zarr

    if probs.ndim != 4 or probs.shape[1] != n_classes or probs.shape[2:] != tuple(grid.tile_px):
        msg = f"the model returned {probs.shape}; expected (N, {n_classes}, {grid.tile_px[0]}, {grid.tile_px[1]})"
        raise ValueError(msg)
    y0, x0, y1, x1 = _block_box(grid, job.block_rc)
    sy, sx = grid.stride_px
    my, mx = grid.margin_px
    prob_block = np.zeros((n_classes, y1 - y0, x1 - x0), dtype=np.uint8)
    label_block = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    class_px = np.zeros((len(job.tile_rc), n_classes), dtype=np.int64)
    for k, (r, c) in enumerate(job.tile_rc):
        cy, cx = int(r) * sy - y0, int(c) * sx - x0
        h, w = min(sy, (y1 - y0) - cy), min(sx, (x1 - x0) - cx)
        cell = probs[k, :, my : my + h, mx : mx + w]
        labels = np.argmax(cell, axis=0).astype(np.uint8)
        prob_block[:, cy : cy + h, cx : cx + w] = np.clip(np.rint(cell * 255.0), 0, 255).astype(np.uint8)
        label_block[cy : cy + h, cx : cx + w] = labels
        class_px[k] = np.bincount(labels.ravel(), minlength=n_classes)[:n_classes]
    root = Path(raster)
    zarr.open_array(root / "0", mode="r+")[:, y0:y1, x0:x1] = prob_block
    zarr.open_array(root / "labels" / "classes" / "0", mode="r+")[y0:y1, x0:x1] = label_block
    return class_px


def _create_raster(raster: Path, grid: TileGrid, n_classes: int) -> None:
    """Empty level-0 arrays of the segment-2d result; chunks = one task's block."""
    import shutil

    import zarr

    shutil.rmtree(raster, ignore_errors=True)
    bh, bw = grid.block_shape
    chunk = (bh * grid.stride_px[0], bw * grid.stride_px[1])
    H, W = grid.target_shape_yx
    root = zarr.open_group(raster, mode="w", zarr_format=2)
    kw = {"chunk_key_encoding": {"name": "v2", "separator": "/"}, "fill_value": 0}
    root.create_array("0", shape=(n_classes, H, W), chunks=(1, *chunk), dtype="uint8", **kw)
    labels = root.create_group("labels").create_group("classes")
    labels.create_array("0", shape=(H, W), chunks=chunk, dtype="uint8", **kw)


def _collect(ledger: ChunkLedger, blocks: list[Block], grid: TileGrid, spec: TiledSpec) -> np.ndarray:
    """Per-tile results of all finished chunks as (rows, cols, K), NaN where none."""
    out = np.full((*grid.grid_shape, spec.n_classes), np.nan, dtype=np.float32)
    sy, sx = grid.stride_px
    H, W = grid.target_shape_yx
    for block in blocks:
        if not ledger.is_done(block.chunk_id):
            continue
        data = ledger.load(block.chunk_id)
        rc = data["tile_rc"]
        if spec.kind == "tile-classify":
            out[rc[:, 0], rc[:, 1]] = data["probs"]
        else:
            cell_px = (np.minimum(sy, H - rc[:, 0] * sy) * np.minimum(sx, W - rc[:, 1] * sx)).astype(np.float64)
            out[rc[:, 0], rc[:, 1]] = data["class_px"] / np.maximum(cell_px, 1)[:, None]
    return out
