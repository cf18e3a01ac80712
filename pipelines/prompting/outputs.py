"""Prompts from the command line or JSON, and masks written as PNG, TIFF, NPY or GeoJSON.

Shared by ``tessera sam`` and the prompt-segment runner (``tessera run sam ...``).

Prompt JSON (a list, or ``{"prompts": [...]}``), coordinates in level-0 pixels::

    [{"name": "tumour", "points": [[1200, 800, 1], [1300, 820, 0]]},
     {"box": [1000, 700, 1500, 1000]}]

Raster outputs hold the mask at the prompted level over the *output extent*: the whole
level when it is at most ``MAX_FULL_LEVEL_PX`` on its long side (the usual case for
photos, CT slices and coarse slide levels), otherwise the encoder window that answered
the prompt. A JSON sidecar (``OUT.json``) always gives the extent's level-0 origin and
downsample, so every raster maps back to level 0 exactly. GeoJSON is in level-0
coordinates (QuPath annotations).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tessera.pipelines.prompting.regions import LevelWindow, whole_level
from tessera.pipelines.prompting.session import PromptResult
from tessera.pipelines.sources.base import Source

MAX_FULL_LEVEL_PX = 8192
RASTER_SUFFIXES = (".png", ".tif", ".tiff", ".npy")
OUTPUT_SUFFIXES = (*RASTER_SUFFIXES, ".geojson", ".json")


@dataclass(frozen=True)
class PromptSpec:
    """One object to segment: points (level-0 x, y with labels 1/0) and/or a box."""

    points_l0_xy: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    box_l0_xyxy: tuple[float, float, float, float] | None = None
    name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.points_l0_xy and self.box_l0_xyxy is None:
            msg = "a prompt needs at least one point or a box"
            raise ValueError(msg)
        if len(self.labels) != len(self.points_l0_xy):
            msg = "each point needs a label (1 positive, 0 negative)"
            raise ValueError(msg)
        if any(lab not in (0, 1) for lab in self.labels):
            msg = f"point labels must be 1 (positive) or 0 (negative), got {list(self.labels)}"
            raise ValueError(msg)
        if self.box_l0_xyxy is not None:
            x0, y0, x1, y1 = self.box_l0_xyxy
            if not (x1 > x0 and y1 > y0):
                msg = f"a box is X0,Y0,X1,Y1 with X1 > X0 and Y1 > Y0, got {self.box_l0_xyxy}"
                raise ValueError(msg)

    def points_array(self) -> np.ndarray | None:
        return np.asarray(self.points_l0_xy, np.float64) if self.points_l0_xy else None

    def labels_array(self) -> np.ndarray | None:
        return np.asarray(self.labels, np.float32) if self.labels else None


def parse_point(text: str) -> tuple[float, float, int]:
    """``"X,Y"`` or ``"X,Y,LABEL"`` (label 1 positive, default; 0 negative)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 3):
        msg = f"a point is X,Y or X,Y,LABEL, got {text!r}"
        raise ValueError(msg)
    x, y = float(parts[0]), float(parts[1])
    label = int(float(parts[2])) if len(parts) == 3 else 1
    if label not in (0, 1):
        msg = f"a point's label is 1 (positive) or 0 (negative), got {parts[2]!r}"
        raise ValueError(msg)
    return x, y, label


def parse_box(text: str) -> tuple[float, float, float, float]:
    """``"X0,Y0,X1,Y1"``."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 4:
        msg = f"a box is X0,Y0,X1,Y1, got {text!r}"
        raise ValueError(msg)
    x0, y0, x1, y1 = (float(p) for p in parts)
    return x0, y0, x1, y1


def spec_from_cli(points: Sequence[str], box: str | None, name: str | None = None) -> PromptSpec:
    parsed = [parse_point(p) for p in points]
    return PromptSpec(
        points_l0_xy=tuple((x, y) for x, y, _ in parsed),
        labels=tuple(lab for _, _, lab in parsed),
        box_l0_xyxy=None if box is None else parse_box(box),
        name=name,
    )


def specs_from_json(data: Any) -> list[PromptSpec]:
    """Prompt specs from parsed JSON (see the module docstring)."""
    if isinstance(data, dict):
        data = data.get("prompts", [data])
    if not isinstance(data, list) or not data:
        msg = "prompts JSON must be a non-empty list of {points: [[x, y, label]...], box: [x0, y0, x1, y1]}"
        raise ValueError(msg)
    specs = []
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            msg = f"prompt {i} is not an object"
            raise ValueError(msg)
        pts = []
        for p in item.get("points", []):
            if len(p) not in (2, 3):
                msg = f"prompt {i}: a point is [x, y] or [x, y, label], got {p}"
                raise ValueError(msg)
            pts.append((float(p[0]), float(p[1]), int(p[2]) if len(p) == 3 else 1))
        box = item.get("box")
        specs.append(
            PromptSpec(
                points_l0_xy=tuple((x, y) for x, y, _ in pts),
                labels=tuple(lab for _, _, lab in pts),
                box_l0_xyxy=None if box is None else tuple(float(v) for v in box),  # type: ignore[arg-type]
                name=item.get("name"),
                extra={k: v for k, v in item.items() if k not in ("points", "box", "name")},
            )
        )
    return specs


def output_extent(source: Source, level: int, result: PromptResult) -> LevelWindow:
    """The whole level when it is small enough to write, else the answering window."""
    full = whole_level(source, level)
    return full if max(full.lvl_hw) <= MAX_FULL_LEVEL_PX else result.mask.window


def write_outputs(
    path: Path,
    results: Sequence[PromptResult],
    *,
    source: Source,
    level: int,
    names: Sequence[str | None] = (),
    z: int | None = None,
) -> dict[str, Any]:
    """Write the masks of ``results`` to ``path`` (format from the suffix) and return
    what was written. Several results: a label raster (1, 2, ... in prompt order, later
    prompts drawn over earlier ones) or one GeoJSON feature per object and part."""
    from tessera.pipelines.writers.atomic import atomic_path

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        msg = f"unknown output type {suffix!r}; use one of {', '.join(OUTPUT_SUFFIXES)}"
        raise ValueError(msg)
    info: dict[str, Any] = {"path": str(path), "level": level, "z": z, "objects": []}
    for i, r in enumerate(results):
        bbox = r.mask.l0_bbox_xyxy()
        info["objects"].append(
            {"name": names[i] if i < len(names) else None, "score": round(r.score, 4),
             "area_l0_px": r.mask.area_l0_px, "bbox_l0_xyxy": None if bbox is None else list(bbox)}
        )
    if suffix in (".geojson", ".json"):
        from tessera.pipelines.writers.geojson import write_feature_collection

        features = []
        for i, r in enumerate(results):
            name = names[i] if i < len(names) else None
            for f in r.to_features(class_name=name or "SAM"):
                features.append(f)
        info["features"] = write_feature_collection(path, features)
        return info
    extent = output_extent(source, level, results[0]) if results else whole_level(source, level)
    labels = np.zeros(extent.lvl_hw, np.uint16 if len(results) > 255 else np.uint8)
    for i, r in enumerate(results, start=1):
        labels[r.mask.paste(extent)] = i if len(results) > 1 else 255
    if suffix == ".npy":
        data = labels > 0 if len(results) == 1 else labels
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, data)
    elif suffix == ".png":
        from PIL import Image

        with atomic_path(path) as tmp:
            Image.fromarray(labels).save(tmp, format="PNG")
    else:
        import tifffile

        meta = _extent_info(extent)
        with atomic_path(path) as tmp:
            tifffile.imwrite(tmp, labels, compression="zlib", description=json.dumps(meta))
    info.update(_extent_info(extent))
    info["foreground_value"] = 255 if len(results) == 1 and suffix != ".npy" else "prompt index (1..n)"
    sidecar = path.with_name(path.name + ".json")
    from tessera.pipelines.writers.atomic import write_text_atomic

    write_text_atomic(sidecar, json.dumps(info, indent=2) + "\n")
    info["sidecar"] = str(sidecar)
    return info


def _extent_info(extent: LevelWindow) -> dict[str, Any]:
    oy, ox = extent.l0_origin_yx
    return {
        "extent_level": extent.level,
        "extent_lvl_yx": list(extent.lvl_yx),
        "size_px_hw": list(extent.lvl_hw),
        "l0_origin_xy": [ox, oy],
        "downsample_yx": list(extent.downsample_yx),
        "frame": "raster pixel (row i, col j) covers level-0 [x0 + j*dx, x0 + (j+1)*dx) x "
        "[y0 + i*dy, y0 + (i+1)*dy)",
    }
