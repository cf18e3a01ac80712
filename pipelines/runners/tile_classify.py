"""tile-classify: class probabilities per tile over the tissue of a slide.

Outputs in the input's folder:
- ``heatmap.ome.zarr``: per-class probability (c, y, x) uint8 0..255, one pixel per tile,
  NGFF multiscales in µm that overlay the slide; ``labels/classes``: argmax class + 1
  (0 = not analysed).
- ``predictions.geojson`` (QuPath): one detection per analysed tile (class = argmax,
  measurements = probabilities and tissue fraction) and one annotation per connected
  region of the positive class (area in mm², mean probability).
- ``tiles.csv``: one row per analysed tile (grid position, level-0 box, probabilities).
- ``preview.png``: thumbnail with the positive-class heatmap over it.
- ``tissue_mask.png`` + ``.json``, and ``summary.json`` (written last).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from tessera.pipelines.progress import ProgressReporter
from tessera.pipelines.runners.base import (
    ModelInfo,
    PluginPredictor,
    RunOptions,
    TilePredictor,
    input_fingerprint,
    model_fingerprint,
    plugin_ref,
)
from tessera.pipelines.runners.regions import find_regions
from tessera.pipelines.runners.slide import (
    SlideContext,
    class_areas,
    run_slide,
)
from tessera.pipelines.sources.base import Source
from tessera.pipelines.writers.atomic import atomic_dir
from tessera.pipelines.writers.geojson import box_ring, qupath_feature, write_feature_collection
from tessera.pipelines.writers.ome_zarr import write_small_image
from tessera.pipelines.writers.preview import label_overlay, probability_overlay, write_preview
from tessera.pipelines.writers.table import write_csv

TOP_REGIONS = 10


def run(input_path: Path, plugin: Any, out_dir: Path, *, options: RunOptions,
        progress: ProgressReporter, cancel: threading.Event) -> dict[str, Any]:
    """Classify the tissue tiles of one slide with ``plugin``; see the module docstring."""
    import tessera

    model = ModelInfo.from_manifest(plugin.manifest)
    predictor = PluginPredictor(plugin_ref(plugin), model.task, options.engine, options.device,
                                threads=options.effective_engine_threads())
    description = predictor.description  # loads the engine now: a bad model fails before any tile
    with tessera.open(input_path) as source:
        return classify_slide(
            source, predictor, Path(out_dir), model=model, options=options, progress=progress,
            cancel=cancel, identity={"input": input_fingerprint(input_path), "model": model_fingerprint(plugin)},
            engine_description=description,
        )


def classify_slide(source: Source, predictor: TilePredictor, out_dir: Path, *, model: ModelInfo,
                   options: RunOptions, progress: ProgressReporter, cancel: threading.Event | None,
                   identity: dict[str, Any], engine_description: str = "") -> dict[str, Any]:
    """The runner on an opened Source with any predictor ``uint8 [N, H, W, C] -> [N, K]``."""
    if model.task != "tile-classify" or len(model.size_px) != 2:
        msg = f"{model.id}: tile-classify needs a 2D input size, got task {model.task!r} size {model.size_px}"
        raise ValueError(msg)
    return run_slide(source, predictor, out_dir, model=model, options=options, identity=identity,
                     progress=progress, cancel=cancel, write_outputs=write_tile_outputs,
                     engine_description=engine_description)


def write_tile_outputs(ctx: SlideContext) -> dict[str, Any]:
    """Heatmap OME-Zarr, GeoJSON, CSV and preview from the per-tile probabilities."""
    grid, model = ctx.result.grid, ctx.model
    probs = ctx.result.tile_probs
    assert probs is not None
    names = model.class_names
    colours = [c for _, c in model.classes]
    valid = ~np.isnan(probs[..., 0])
    argmax = np.where(valid, np.argmax(np.nan_to_num(probs, nan=-1.0), axis=-1), -1)
    labels = np.where(valid, argmax + 1, 0).astype(np.uint8)
    heat = np.where(valid[..., None], np.rint(np.nan_to_num(probs) * 255), 0).astype(np.uint8)
    spacing = ctx.mpp_yx or (1.0, 1.0)
    unit = "µm" if ctx.mpp_yx else None
    cell = grid.cell_l0_size_yx

    with atomic_dir(ctx.out_dir / "heatmap.ome.zarr") as tmp:
        write_small_image(
            tmp, heat.transpose(2, 0, 1), axes="cyx", spacing=spacing, l0_per_px=cell, unit=unit,
            name=f"{model.id} probabilities", channels=list(zip(names, colours, strict=True)),
            labels={"classes": (labels, [(k + 1, n, c) for k, (n, c) in enumerate(model.classes)])},
        )

    # Per-tile outputs are streamed one grid row at a time: a 60k x 60k slide has ~100k
    # tissue tiles, and whole-slide columns of them would make peak memory grow with it.
    def tile_rows():
        """Per grid row: (row, cols, l0 boxes x0, y0, x1, y1, tissue fraction, class)."""
        for r in range(grid.grid_shape[0]):
            cols = np.nonzero(valid[r])[0]
            if cols.size == 0:
                continue
            y0 = r * cell[0]
            y1 = min(y0 + cell[0], grid.l0_shape_yx[0])
            x0 = cols * cell[1]
            x1 = np.minimum(x0 + cell[1], grid.l0_shape_yx[1])
            yield r, cols, x0, y0, x1, y1, grid.tissue_fraction[r, cols], argmax[r, cols]

    class_area = np.zeros(len(names))
    class_tiles = np.zeros(len(names), dtype=np.int64)
    for _, _cols, x0, y0, x1, y1, frac, k in tile_rows():
        np.add.at(class_area, k, (x1 - x0) * (y1 - y0) * frac)
        np.add.at(class_tiles, k, 1)

    write_csv(
        ctx.out_dir / "tiles.csv",
        ["tile_row", "tile_col", "l0_x", "l0_y", "l0_width", "l0_height", "tissue_fraction",
         *[f"prob_{n}" for n in names], "class"],
        ([r, int(c), round(float(a), 2), round(y0, 2), round(float(d - a), 2), round(y1 - y0, 2), float(f),
          *[float(p) for p in probs[r, c]], names[int(k)]]
         for r, cols, x0, y0, x1, y1, frac, ks in tile_rows()
         for c, a, d, f, k in zip(cols, x0, x1, frac, ks, strict=True)),
    )

    pos = model.positive_index
    outline = [pos] if pos is not None else list(range(len(names)))
    regions_by_class = {
        k: find_regions((argmax == k) & valid, l0_per_px_yx=cell, mpp_yx=ctx.mpp_yx,
                        probability=np.nan_to_num(probs[..., k]))
        for k in outline
    }

    def features():
        for r, cols, x0, y0, x1, y1, frac, ks in tile_rows():
            for c, a, d, f, k in zip(cols, x0, x1, frac, ks, strict=True):
                meas = {f"prob {n}": float(probs[r, c, j]) for j, n in enumerate(names)}
                meas["tissue fraction"] = float(f)
                yield qupath_feature([box_ring(a, y0, d, y1)], object_type="detection",
                                     class_name=names[int(k)], colour=colours[int(k)], measurements=meas)
        for k, regions in regions_by_class.items():
            for reg in regions:
                meas = {"area_mm2": reg.area_mm2 or 0.0, f"mean prob {names[k]}": reg.mean_probability or 0.0}
                yield qupath_feature(reg.polygon_l0, object_type="annotation", class_name=names[k],
                                     colour=colours[k], measurements=meas, name=f"{names[k]} region {reg.label}")

    n_features = write_feature_collection(ctx.out_dir / "predictions.geojson", features())

    if pos is not None:
        overlay = probability_overlay(np.where(valid, probs[..., pos], np.nan), colours[pos])
    else:
        overlay = label_overlay(labels, {k + 1: c for k, c in enumerate(colours)})
    write_preview(ctx.out_dir / "preview.png", ctx.thumbnail, overlay,
                  overlay_box=(0, 0, grid.l0_shape_yx[1] / cell[1], grid.l0_shape_yx[0] / cell[0]))

    px_mm2 = ctx.l0_px_area_mm2
    top_class = pos if pos is not None else None
    return {
        "classes": class_areas(model, class_area, float(class_area.sum()), px_mm2, class_tiles),
        "positive_class": model.positive_class,
        "top_regions": [] if top_class is None else [
            {"class": names[top_class], **r.as_dict()} for r in regions_by_class[top_class][:TOP_REGIONS]
        ],
        "geojson_features": n_features,
        "outputs": {
            "heatmap": "heatmap.ome.zarr",
            "geojson": "predictions.geojson",
            "table": "tiles.csv",
            "preview": "preview.png",
        },
    }
