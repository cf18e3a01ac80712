"""segment-2d: per-pixel classes over the tissue of a slide, stitched without seams.

Tiles overlap by the manifest's ``overlap``; each keeps only its centre cell (the
overlap-tile strategy, see ``tiling.grid``), written by its task straight into the
level-0 rasters at the model's resolution, chunk = one task's block of tiles.

Outputs in the input's folder:
- ``segmentation.ome.zarr``: per-class probability (c, y, x) uint8 0..255 at the model's
  µm/px, NGFF multiscales; ``labels/classes``: argmax label (value = class index), same
  levels, with class names and colours.
- ``regions.geojson`` (QuPath): one annotation per connected region of each outlined
  class (the positive class, or every class but the first), level-0 coordinates.
- ``tiles.csv``: per analysed tile, the fraction of its cell given to each class.
- ``preview.png``, ``tissue_mask.png`` + ``.json``, and ``summary.json`` (written last).
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
from tessera.pipelines.runners.slide import SlideContext, class_areas, run_slide
from tessera.pipelines.runners.tiled import RASTER_NAME
from tessera.pipelines.sources.base import Source
from tessera.pipelines.writers.atomic import publish_dir
from tessera.pipelines.writers.geojson import qupath_feature, write_feature_collection
from tessera.pipelines.writers.ome_zarr import (
    build_pyramid,
    pyramid_levels,
    write_label_metadata,
    write_multiscales,
)
from tessera.pipelines.writers.preview import label_overlay, probability_overlay, write_preview
from tessera.pipelines.writers.table import write_csv

REGION_RASTER_PX = 2048  # regions are outlined on the first pyramid level this small
TOP_REGIONS = 10


def run(input_path: Path, plugin: Any, out_dir: Path, *, options: RunOptions,
        progress: ProgressReporter, cancel: threading.Event) -> dict[str, Any]:
    """Segment the tissue of one slide with ``plugin``; see the module docstring."""
    import tessera

    model = ModelInfo.from_manifest(plugin.manifest)
    predictor = PluginPredictor(plugin_ref(plugin), model.task, options.engine, options.device,
                                threads=options.effective_engine_threads())
    description = predictor.description
    with tessera.open(input_path) as source:
        return segment_slide(
            source, predictor, Path(out_dir), model=model, options=options, progress=progress,
            cancel=cancel, identity={"input": input_fingerprint(input_path), "model": model_fingerprint(plugin)},
            engine_description=description,
        )


def segment_slide(source: Source, predictor: TilePredictor, out_dir: Path, *, model: ModelInfo,
                  options: RunOptions, progress: ProgressReporter, cancel: threading.Event | None,
                  identity: dict[str, Any], engine_description: str = "") -> dict[str, Any]:
    """The runner on an opened Source with any predictor ``uint8 [N, H, W, C] -> [N, K, H, W]``."""
    if model.task != "segment-2d" or len(model.size_px) != 2:
        msg = f"{model.id}: segment-2d needs a 2D input size, got task {model.task!r} size {model.size_px}"
        raise ValueError(msg)
    return run_slide(source, predictor, out_dir, model=model, options=options, identity=identity,
                     progress=progress, cancel=cancel, write_outputs=write_segmentation_outputs,
                     engine_description=engine_description)


def write_segmentation_outputs(ctx: SlideContext) -> dict[str, Any]:
    """Pyramids + NGFF metadata on the work rasters, regions, CSV, preview; then publish."""
    import zarr

    grid, model, result = ctx.result.grid, ctx.model, ctx.result
    assert result.raster_path is not None and result.tile_class_fraction is not None
    names = model.class_names
    colours = [c for _, c in model.classes]
    spacing = ctx.mpp_yx or (1.0, 1.0)
    unit = "µm" if ctx.mpp_yx else None
    ds = grid.target_downsample_yx

    root = zarr.open_group(result.raster_path, mode="r+")
    labels_group = root["labels/classes"]
    n_levels = pyramid_levels(grid.target_shape_yx)
    build_pyramid(root, axes="cyx", n_levels=n_levels, kind="mean")
    build_pyramid(labels_group, axes="yx", n_levels=n_levels, kind="nearest")
    write_multiscales(root, axes="cyx", n_levels=n_levels, spacing=spacing, l0_per_px=ds, unit=unit,
                      name=f"{model.id} probabilities", channels=list(zip(names, colours, strict=True)))
    write_multiscales(labels_group, axes="yx", n_levels=n_levels, spacing=spacing, l0_per_px=ds,
                      unit=unit, name="classes")
    write_label_metadata(root, "classes", [(k, n, c) for k, (n, c) in enumerate(model.classes)])

    # Regions on the first level small enough to hold in memory.
    lvl = next((k for k in range(n_levels) if max(labels_group[str(k)].shape) <= REGION_RASTER_PX), n_levels - 1)
    f = 2**lvl
    lab = np.asarray(labels_group[str(lvl)][...])
    probs_lvl = root[str(lvl)]
    pos = model.positive_index
    outline = [pos] if pos is not None else list(range(1, len(names)))
    analysed = _analysed_mask(grid, lab.shape, f)
    regions_by_class = {
        k: find_regions((lab == k) & analysed, l0_per_px_yx=(ds[0] * f, ds[1] * f), mpp_yx=ctx.mpp_yx,
                        probability=np.asarray(probs_lvl[k], np.float32) / 255.0)
        for k in outline
    }
    n_features = write_feature_collection(ctx.out_dir / "regions.geojson", (
        qupath_feature(reg.polygon_l0, object_type="annotation", class_name=names[k], colour=colours[k],
                       measurements={"area_mm2": reg.area_mm2 or 0.0,
                                     f"mean prob {names[k]}": reg.mean_probability or 0.0},
                       name=f"{names[k]} region {reg.label}")
        for k, regions in regions_by_class.items() for reg in regions
    ))

    frac = result.tile_class_fraction
    valid = ~np.isnan(frac[..., 0])
    rows, cols = np.nonzero(valid)
    sy, sx = grid.stride_px
    H, W = grid.target_shape_yx
    cell_px = (np.minimum(sy, H - rows * sy) * np.minimum(sx, W - cols * sx)).astype(np.float64)
    class_px = (frac[rows, cols] * cell_px[:, None]).sum(axis=0)
    px_l0 = ds[0] * ds[1]
    write_csv(
        ctx.out_dir / "tiles.csv",
        ["tile_row", "tile_col", "l0_x", "l0_y", "l0_width", "l0_height", "tissue_fraction",
         *[f"fraction_{n}" for n in names]],
        ([int(r), int(c), round(c * sx * ds[1], 2), round(r * sy * ds[0], 2),
          round(min(sx, W - c * sx) * ds[1], 2), round(min(sy, H - r * sy) * ds[0], 2),
          float(grid.tissue_fraction[r, c]), *[float(v) for v in frac[r, c]]]
         for r, c in zip(rows, cols, strict=True)),
    )

    th = ctx.thumbnail.shape[0]
    prev = next((k for k in range(n_levels - 1, -1, -1) if labels_group[str(k)].shape[0] >= th), 0)
    fp = 2**prev
    if pos is not None:
        overlay = probability_overlay(np.asarray(root[str(prev)][pos], np.float32) / 255.0, colours[pos])
    else:
        overlay = label_overlay(np.asarray(labels_group[str(prev)][...]), dict(enumerate(colours)))
    write_preview(ctx.out_dir / "preview.png", ctx.thumbnail, overlay,
                  overlay_box=(0, 0, grid.l0_shape_yx[1] / (ds[1] * fp), grid.l0_shape_yx[0] / (ds[0] * fp)))

    publish_dir(Path(result.raster_path), ctx.out_dir / RASTER_NAME)
    top = pos if pos is not None else (outline[0] if outline else None)
    return {
        "classes": class_areas(model, class_px * px_l0, float(cell_px.sum() * px_l0), ctx.l0_px_area_mm2),
        "positive_class": model.positive_class,
        "top_regions": [] if top is None else [
            {"class": names[top], **r.as_dict()} for r in regions_by_class[top][:TOP_REGIONS]
        ],
        "regions_level_l0_per_px": [ds[0] * f, ds[1] * f],
        "geojson_features": n_features,
        "outputs": {
            "segmentation": RASTER_NAME,
            "geojson": "regions.geojson",
            "table": "tiles.csv",
            "preview": "preview.png",
        },
    }


def _analysed_mask(grid, shape: tuple[int, int], f: int) -> np.ndarray:
    """Which pixels of a raster level (downsample ``f`` from the model's resolution) lie in
    analysed tiles, so label 0 outside tissue is not mistaken for class 0 regions."""
    sy, sx = grid.stride_px
    r = np.minimum(((np.arange(shape[0]) + 0.5) * f // sy).astype(int), grid.grid_shape[0] - 1)
    c = np.minimum(((np.arange(shape[1]) + 0.5) * f // sx).astype(int), grid.grid_shape[1] - 1)
    return grid.selected[np.ix_(r, c)]
