"""Annotations: napari Shapes <-> QuPath GeoJSON, and prediction contours as regions.

QuPath's frame is continuous level-0 pixels (pixel k covers [k, k+1), x right, y down);
napari draws level-0 pixel k centred at world ``k * spacing``. So a QuPath coordinate q
is world ``(q - 0.5) * spacing`` and back. Plain numpy: the dock wraps these.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tessera.app.viewer.frame import SourceFrame
from tessera.pipelines.errors import CorruptFile
from tessera.pipelines.writers.geojson import qupath_feature, write_feature_collection

ELLIPSE_POINTS = 64
DEFAULT_CLASS_COLOUR = "#ffcc00"


@dataclass
class ShapeSet:
    """What a napari Shapes layer holds, in world (y, x) coordinates."""

    data: list[np.ndarray] = field(default_factory=list)
    shape_types: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)

    def add(self, ring_world_yx: np.ndarray, shape_type: str, name: str = "", class_name: str = "") -> None:
        self.data.append(np.asarray(ring_world_yx, dtype=np.float64))
        self.shape_types.append(shape_type)
        self.names.append(name)
        self.classes.append(class_name)

    def __len__(self) -> int:
        return len(self.data)


def qupath_to_world(xy: np.ndarray, frame: SourceFrame) -> np.ndarray:
    """(N, 2) QuPath (x, y) -> (N, 2) world (y, x)."""
    sy, sx = frame.yx_spacing
    xy = np.asarray(xy, dtype=np.float64)
    return np.stack([(xy[:, 1] - 0.5) * sy, (xy[:, 0] - 0.5) * sx], axis=1)


def world_to_qupath(yx: np.ndarray, frame: SourceFrame) -> np.ndarray:
    """(N, 2) world (y, x) -> (N, 2) QuPath (x, y)."""
    sy, sx = frame.yx_spacing
    yx = np.asarray(yx, dtype=np.float64)[:, -2:]
    return np.stack([yx[:, 1] / sx + 0.5, yx[:, 0] / sy + 0.5], axis=1)


def _ellipse_ring(corners_yx: np.ndarray) -> np.ndarray:
    """napari stores an ellipse as its bounding box's 4 corners; sample its outline."""
    c = np.asarray(corners_yx, dtype=np.float64)[:, -2:]
    centre = c.mean(axis=0)
    ry = np.abs(c[:, 0] - centre[0]).max()
    rx = np.abs(c[:, 1] - centre[1]).max()
    t = np.linspace(0, 2 * np.pi, ELLIPSE_POINTS, endpoint=False)
    return np.stack([centre[0] + ry * np.sin(t), centre[1] + rx * np.cos(t)], axis=1)


def shapes_to_features(shapes: ShapeSet, frame: SourceFrame, colours: dict[str, str] | None = None
                       ) -> list[dict[str, Any]]:
    """QuPath annotation features for every shape (polygons, rectangles and ellipses as
    Polygons; paths and lines as LineStrings)."""
    colours = colours or {}
    out = []
    for data, kind, name, cls in zip(shapes.data, shapes.shape_types, shapes.names, shapes.classes, strict=True):
        pts = _ellipse_ring(data) if kind == "ellipse" else np.asarray(data)[:, -2:]
        xy = world_to_qupath(pts, frame)
        if kind in ("path", "line"):
            props: dict[str, Any] = {"objectType": "annotation", "isLocked": False}
            if name:
                props["name"] = name
            feat = qupath_feature([[(0.0, 0.0)]], object_type="annotation", class_name=cls or None,
                                  colour=colours.get(cls, DEFAULT_CLASS_COLOUR), name=name or None)
            feat["geometry"] = {"type": "LineString", "coordinates": xy.tolist()}
            out.append(feat)
            continue
        ring = [tuple(p) for p in xy] + [tuple(xy[0])]
        out.append(qupath_feature([ring], object_type="annotation", class_name=cls or None,
                                  colour=colours.get(cls, DEFAULT_CLASS_COLOUR), name=name or None))
    return out


def write_annotations(path: Path, shapes: ShapeSet, frame: SourceFrame,
                      colours: dict[str, str] | None = None) -> int:
    """Write ``shapes`` as a QuPath GeoJSON FeatureCollection; returns how many."""
    return write_feature_collection(Path(path), shapes_to_features(shapes, frame, colours))


def read_features(path: Path) -> list[dict[str, Any]]:
    """Features of a GeoJSON file as QuPath writes it (a FeatureCollection, a list of
    Features, or one Feature)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        msg = f"cannot read GeoJSON: {exc}"
        raise CorruptFile(msg, path=path) from exc
    if isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        return list(doc.get("features") or [])
    if isinstance(doc, dict) and doc.get("type") == "Feature":
        return [doc]
    if isinstance(doc, list):
        return [f for f in doc if isinstance(f, dict)]
    msg = "not GeoJSON features (expected a FeatureCollection or a list of Features)"
    raise CorruptFile(msg, path=path)


def features_to_shapes(features: Iterable[dict[str, Any]], frame: SourceFrame) -> tuple[ShapeSet, dict[str, str]]:
    """Shapes (outer rings of polygons, lines as paths) and the class colours found.
    Points and holes are not shapes; holes are dropped (napari shapes have none)."""
    shapes = ShapeSet()
    colours: dict[str, str] = {}
    for feat in features:
        geom = feat.get("geometry") or {}
        props = feat.get("properties") or {}
        cls_info = props.get("classification") or {}
        cls = str(cls_info.get("name") or "")
        if cls and isinstance(cls_info.get("color"), list | tuple) and len(cls_info["color"]) >= 3:
            r, g, b = (int(v) for v in cls_info["color"][:3])
            colours.setdefault(cls, f"#{r:02x}{g:02x}{b:02x}")
        name = str(props.get("name") or "")
        kind = geom.get("type")
        coords = geom.get("coordinates") or []
        polygons: Sequence = []
        if kind == "Polygon":
            polygons = [coords]
        elif kind == "MultiPolygon":
            polygons = coords
        elif kind in ("LineString",):
            shapes.add(qupath_to_world(np.asarray(coords)[:, :2], frame), "path", name, cls)
            continue
        for poly in polygons:
            if not poly:
                continue
            outer = np.asarray(poly[0], dtype=np.float64)[:, :2]
            if len(outer) > 1 and np.allclose(outer[0], outer[-1]):
                outer = outer[:-1]
            if len(outer) >= 3:
                shapes.add(qupath_to_world(outer, frame), "polygon", name, cls)
    return shapes, colours


def region_shapes(labels: np.ndarray, probs: np.ndarray | None, class_index: int, class_name: str,
                  l0_per_px_yx: tuple[float, float], frame: SourceFrame,
                  mpp_yx: tuple[float, float] | None) -> ShapeSet:
    """Outlines of the connected regions of one class in a prediction raster
    (``labels``: class + 1), as annotation shapes named after the class."""
    from tessera.pipelines.runners.regions import find_regions

    shapes = ShapeSet()
    regions = find_regions(labels == class_index + 1, l0_per_px_yx=l0_per_px_yx, mpp_yx=mpp_yx,
                           probability=None if probs is None else np.nan_to_num(probs))
    for reg in regions:
        outer = np.asarray(reg.polygon_l0[0], dtype=np.float64)
        if len(outer) > 1 and np.allclose(outer[0], outer[-1]):
            outer = outer[:-1]
        area = f", {reg.area_mm2:.3f} mm²" if reg.area_mm2 is not None else ""
        shapes.add(qupath_to_world(outer, frame), "polygon", f"{class_name} region {reg.label}{area}", class_name)
    return shapes
