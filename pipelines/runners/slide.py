"""One 2D input from start to finished outputs: the part tile-classify and segment-2d share.

Order matters for resume and for never reporting half-written results:
1. an earlier ``summary.json`` with the same signature means the input is finished:
   nothing is recomputed (unless ``resume`` is off);
2. otherwise the old summary is removed first, the tiles run (finished chunks of an
   interrupted run with the same signature are kept), each output is written under a
   temporary name and renamed, and ``summary.json`` is written last;
3. the work folder is deleted after the summary exists.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tessera.pipelines.progress import ProgressReporter
from tessera.pipelines.runners.base import (
    WORK_DIR_NAME,
    ModelInfo,
    RunOptions,
    TilePredictor,
    clear_summary,
    finished_summary,
    signature_of,
    write_summary,
)
from tessera.pipelines.runners.resume import ChunkLedger
from tessera.pipelines.runners.tiled import TiledResult, TiledSpec, run_tiled
from tessera.pipelines.sources.base import Source
from tessera.pipelines.tiling.grid import source_mpp_yx
from tessera.pipelines.tiling.tissue import thumbnail_yxc
from tessera.pipelines.writers.atomic import remove_temporaries

PREVIEW_PX = 1024


@dataclass
class SlideContext:
    """What a task kind's output step gets."""

    source: Source
    out_dir: Path
    model: ModelInfo
    result: TiledResult
    thumbnail: np.ndarray  # (Y, X, C) preview base
    mpp_yx: tuple[float, float] | None  # level-0 µm/px

    @property
    def l0_px_area_mm2(self) -> float | None:
        return None if self.mpp_yx is None else self.mpp_yx[0] * self.mpp_yx[1] * 1e-6


def run_slide(
    source: Source,
    predictor: TilePredictor,
    out_dir: Path,
    *,
    model: ModelInfo,
    options: RunOptions,
    identity: dict[str, Any],
    progress: ProgressReporter,
    cancel: threading.Event | None,
    write_outputs: Callable[[SlideContext], dict[str, Any]],
    engine_description: str = "",
) -> dict[str, Any]:
    """Run ``predictor`` over ``source`` and write the outputs into ``out_dir``; returns the
    summary (also written as ``out_dir/summary.json``)."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    batch_size = options.effective_batch_size(model.batch_size)
    spec = TiledSpec(
        kind=model.task,  # type: ignore[arg-type]
        tile_px=(int(model.size_px[-2]), int(model.size_px[-1])),
        target_mpp=model.target_mpp,
        n_classes=len(model.classes),
        overlap=model.overlap,
        batch_size=batch_size,
    )
    signature = signature_of({
        "identity": identity,
        "model": model.__dict__ | {"batch_size": None},
        "tissue": options.tissue.as_dict(),
        "engine": options.engine,
        "tiles_per_task": options.effective_tiles_per_task(batch_size),
    })
    if options.resume:
        done = finished_summary(out_dir, signature)
        if done is not None:
            return done | {"skipped": True}
    clear_summary(out_dir)
    remove_temporaries(out_dir)
    result = run_tiled(source, predictor, out_dir / WORK_DIR_NAME, spec=spec, options=options,
                       identity={"run": signature}, progress=progress, cancel=cancel)
    t_tiles = time.perf_counter()
    result.tissue.save(out_dir / "tissue_mask.png")
    ctx = SlideContext(
        source=source, out_dir=out_dir, model=model, result=result,
        thumbnail=thumbnail_yxc(source, PREVIEW_PX, PREVIEW_PX // 2), mpp_yx=source_mpp_yx(source),
    )
    part = write_outputs(ctx)
    grid = result.grid
    px_mm2 = ctx.l0_px_area_mm2
    summary: dict[str, Any] = {
        "status": "finished",
        "signature": signature,
        "input": str(source.path),
        "plugin": {"id": model.id, "version": model.version, "task": model.task},
        "engine": engine_description or options.engine,
        "source": {
            "format": source.format,
            "reader": source.reader,
            "l0_shape_yx": list(grid.l0_shape_yx),
            "mpp_yx": None if ctx.mpp_yx is None else [round(v, 6) for v in ctx.mpp_yx],
        },
        "grid": grid.describe(),
        "notes": list(grid.notes),
        "tissue": {
            "method": result.tissue.method,
            "threshold": result.tissue.threshold,
            "area_mm2": None if px_mm2 is None else round(result.tissue.area_l0_px2 * px_mm2, 6),
            "mask": "tissue_mask.png",
        },
        "tiles": {
            "total": int(grid.grid_shape[0] * grid.grid_shape[1]),
            "tissue": grid.n_selected,
            "computed": result.n_computed,
            "resumed": result.n_resumed,
        },
        **part,
    }
    summary["outputs"] = {"summary": "summary.json", "tissue_mask": "tissue_mask.png", **part.get("outputs", {})}
    summary["timings"] = result.timings | {
        "outputs_s": round(time.perf_counter() - t_tiles, 3),
        "total_s": round(time.perf_counter() - t0, 3),
    }
    write_summary(out_dir, summary)
    ChunkLedger(out_dir / WORK_DIR_NAME).discard()
    return summary


def class_areas(
    model: ModelInfo, class_area_l0: np.ndarray, analysed_area_l0: float, px_mm2: float | None, tiles: np.ndarray | None = None
) -> dict[str, dict[str, Any]]:
    """Per class: area (mm² when the pixel size is known, else level-0 px²) and fraction
    of the analysed tissue."""
    out = {}
    for k, name in enumerate(model.class_names):
        area = float(class_area_l0[k])
        entry: dict[str, Any] = {
            "area_mm2": None if px_mm2 is None else round(area * px_mm2, 6),
            "area_l0_px2": round(area, 1),
            "fraction_of_tissue": round(area / analysed_area_l0, 6) if analysed_area_l0 > 0 else 0.0,
        }
        if tiles is not None:
            entry["tiles"] = int(tiles[k])
        out[name] = entry
    return out

