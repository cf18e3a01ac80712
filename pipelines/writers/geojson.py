"""GeoJSON in the form QuPath imports (File > Import objects from file).

A FeatureCollection of Features whose geometry is in level-0 pixel coordinates (x to the
right, y down, origin at the top-left of the full-resolution image) and whose
properties carry QuPath's fields: ``objectType`` ("annotation" for regions, "detection"
for tiles), ``classification`` ({"name", "color": [r, g, b]}) and ``measurements``
(name -> number). QuPath 0.4+ reads and writes exactly this.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tessera.pipelines.writers.atomic import atomic_path
from tessera.pipelines.writers.ome_zarr import hex_rgb


def qupath_feature(
    rings_l0_xy: Sequence[Sequence[tuple[float, float]]],
    *,
    object_type: str,
    class_name: str | None,
    colour: str | None,
    measurements: dict[str, float] | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """One QuPath object: a polygon (outer ring, then holes) in level-0 pixels."""
    props: dict[str, Any] = {"objectType": object_type}
    if name:
        props["name"] = name
    if class_name is not None:
        props["classification"] = {"name": class_name, "color": hex_rgb(colour or "#ff0000")}
    if object_type == "annotation":
        props["isLocked"] = False
    if measurements:
        props["measurements"] = {k: float(v) for k, v in measurements.items()}
    return {
        "type": "Feature",
        "id": str(uuid.uuid4()),
        "geometry": {"type": "Polygon", "coordinates": [[[float(x), float(y)] for x, y in ring] for ring in rings_l0_xy]},
        "properties": props,
    }


def box_ring(x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
    """A closed axis-aligned rectangle ring (level-0 x, y)."""
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]


def write_feature_collection(path: Path, features: Iterable[dict[str, Any]]) -> int:
    """Write a FeatureCollection atomically, streaming features; returns how many."""
    n = 0
    with atomic_path(Path(path)) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write('{"type": "FeatureCollection", "features": [\n')
        for feat in features:
            if n:
                fh.write(",\n")
            fh.write(json.dumps(feat, separators=(",", ":"), ensure_ascii=False))
            n += 1
        fh.write("\n]}\n")
    return n
