"""Save what the live overlay has computed so far, in the batch runner's formats.

The files are those ``tessera run`` writes (OME-Zarr probabilities + class labels that
overlay the slide, QuPath GeoJSON, a PNG preview), made from an ``OverlayRaster``:
tiles the overlay has not computed yet are "not analysed" (label 0, no feature).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tessera.pipelines.live.raster import OverlayRaster
from tessera.pipelines.runners.regions import find_regions
from tessera.pipelines.sources.base import Source
from tessera.pipelines.tiling.grid import source_mpp_yx
from tessera.pipelines.writers.atomic import atomic_dir
from tessera.pipelines.writers.geojson import box_ring, qupath_feature, write_feature_collection
from tessera.pipelines.writers.ome_zarr import write_small_image
from tessera.pipelines.writers.preview import label_overlay, probability_overlay, write_preview


def export_ome_zarr(raster: OverlayRaster, source: Source, path: Path) -> Path:
    """Probabilities (c, y, x) uint8 0..255 and ``labels/classes`` (class + 1, 0 = not
    analysed) as NGFF, placed over the slide like ``tessera run``'s heatmap."""
    probs, labels = raster.snapshot()
    heat = np.where(np.isnan(probs), 0, np.rint(np.nan_to_num(probs) * 255)).astype(np.uint8)
    mpp = source_mpp_yx(source)
    model = raster.model
    path = Path(path)
    with atomic_dir(path) as tmp:
        write_small_image(
            tmp, heat, axes="cyx", spacing=mpp or (1.0, 1.0), l0_per_px=raster.l0_per_px_yx,
            unit="µm" if mpp else None, name=f"{model.id} probabilities (live)",
            channels=list(model.classes),
            labels={"classes": (labels, [(k + 1, n, c) for k, (n, c) in enumerate(model.classes)])},
        )
    return path


def export_geojson(raster: OverlayRaster, source: Source, path: Path, *, tiles: bool = True) -> int:
    """QuPath GeoJSON: one detection per analysed tile (tile-classify, ``tiles``) and one
    annotation per connected region of each outlined class; returns the feature count."""
    probs, labels = raster.snapshot()
    model = raster.model
    names = model.class_names
    colours = [c for _, c in model.classes]
    fy, fx = raster.l0_per_px_yx
    mpp = source_mpp_yx(source)
    h, w = raster.grid.l0_shape_yx
    outline = [model.positive_index] if model.positive_index is not None else list(range(1, len(names)))

    def features():
        if tiles and raster.task == "tile-classify":
            rows, cols = np.nonzero(labels)
            for r, c in zip(rows, cols, strict=True):
                k = int(labels[r, c]) - 1
                meas = {f"prob {n}": float(probs[j, r, c]) for j, n in enumerate(names)}
                ring = box_ring(c * fx, r * fy, min((c + 1) * fx, w), min((r + 1) * fy, h))
                yield qupath_feature([ring], object_type="detection", class_name=names[k],
                                     colour=colours[k], measurements=meas)
        for k in outline:
            for reg in find_regions(labels == k + 1, l0_per_px_yx=(fy, fx), mpp_yx=mpp,
                                    probability=np.nan_to_num(probs[k])):
                meas = {"area_mm2": reg.area_mm2 or 0.0, f"mean prob {names[k]}": reg.mean_probability or 0.0}
                yield qupath_feature(reg.polygon_l0, object_type="annotation", class_name=names[k],
                                     colour=colours[k], measurements=meas, name=f"{names[k]} region {reg.label}")

    return write_feature_collection(Path(path), features())


def export_png(raster: OverlayRaster, source: Source, path: Path, *, max_px: int = 2048) -> Path:
    """A thumbnail of the slide with the overlay drawn over it (as ``tessera run``'s
    preview: the small overlay raster stretched over the thumbnail)."""
    from tessera.pipelines.tiling.tissue import thumbnail_yxc

    thumb = thumbnail_yxc(source, max_px, max_px // 2)
    probs, labels = raster.snapshot()
    model = raster.model
    pos = model.positive_index
    if pos is not None:
        overlay = probability_overlay(probs[pos], model.classes[pos][1])
    else:
        overlay = label_overlay(labels, {k + 1: c for k, (_, c) in enumerate(model.classes)})
    h, w = raster.grid.l0_shape_yx
    fy, fx = raster.l0_per_px_yx
    write_preview(Path(path), thumb, overlay, overlay_box=(0, 0, w / fx, h / fy))
    return Path(path)
