"""Connected regions of a class in a raster, measured and outlined in level-0 pixels.

A raster pixel (i, j) stands for level-0 [i*fy, (i+1)*fy) x [j*fx, (j+1)*fx); outlines
follow pixel edges (marching squares at 0.5 on the padded mask), so a region of one
pixel becomes its exact square in level-0 coordinates. Used for the GeoJSON
annotations (QuPath) and the summary's "top regions".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Region:
    """One connected region of a class.

    Attributes:
        label: region number (1..n), largest first.
        area_px: raster pixels in the region.
        area_mm2: physical area (None when the pixel size is unknown).
        centroid_l0_xy: level-0 (x, y) of the region's centre of mass.
        bbox_l0_xywh: level-0 bounding box (x, y, width, height).
        mean_probability: mean class probability over the region (None if not given).
        polygon_l0: outer ring then holes, each a list of (x, y) level-0 coordinates.
    """

    label: int
    area_px: int
    area_mm2: float | None
    centroid_l0_xy: tuple[float, float]
    bbox_l0_xywh: tuple[float, float, float, float]
    mean_probability: float | None
    polygon_l0: list[list[tuple[float, float]]]

    def as_dict(self) -> dict:
        return {
            "area_mm2": None if self.area_mm2 is None else round(self.area_mm2, 6),
            "area_px": self.area_px,
            "centroid_l0_xy": [round(v, 1) for v in self.centroid_l0_xy],
            "bbox_l0_xywh": [round(v, 1) for v in self.bbox_l0_xywh],
            "mean_probability": None if self.mean_probability is None else round(self.mean_probability, 4),
        }


def _rings(mask: np.ndarray, fy: float, fx: float) -> list[list[tuple[float, float]]]:
    """Outer ring then hole rings of one connected ``mask``, in level-0 (x, y).

    The rings run exactly along pixel edges. Marching squares cuts pixel corners at 45
    degrees, so it runs on the mask upsampled 2x (cuts of 1/4 pixel) and its points are
    snapped to the nearest pixel edge; repeated and collinear points are dropped.
    """
    from scipy import ndimage
    from skimage import measure

    filled = ndimage.binary_fill_holes(mask)
    parts = [filled]
    holes_lab, n_holes = ndimage.label(filled & ~mask)
    parts += [holes_lab == h for h in range(1, n_holes + 1)]
    out = []
    for part in parts:
        up = np.kron(part, np.ones((2, 2), dtype=bool))
        contours = measure.find_contours(np.pad(up, 1).astype(np.float32), 0.5)
        if not contours:
            continue
        ring = max(contours, key=len)
        # padded upsampled pixel-centre coords -> pixel-edge coords of ``mask``
        edges = np.rint((ring - 0.5) / 2.0).astype(np.int64)
        pts = _simplify_rectilinear(edges)
        if len(pts) >= 4:
            out.append([(float(c * fx), float(r * fy)) for r, c in pts] + [(float(pts[0][1] * fx), float(pts[0][0] * fy))])
    return out


def _simplify_rectilinear(points: np.ndarray) -> list[tuple[int, int]]:
    """Drop repeated and collinear points of a closed integer ring (no closing point)."""
    pts: list[tuple[int, int]] = []
    for p in map(tuple, points.tolist()):
        if not pts or pts[-1] != p:
            pts.append(p)
    if len(pts) > 1 and pts[0] == pts[-1]:
        pts.pop()
    changed = True
    while changed and len(pts) >= 3:
        changed = False
        keep = []
        n = len(pts)
        for i in range(n):
            a, b, c = pts[i - 1], pts[i], pts[(i + 1) % n]
            if (b[0] - a[0]) * (c[1] - b[1]) - (b[1] - a[1]) * (c[0] - b[0]) == 0:
                changed = True
                continue
            keep.append(b)
        pts = keep
    return pts


def find_regions(
    mask: np.ndarray,
    *,
    l0_per_px_yx: tuple[float, float],
    mpp_yx: tuple[float, float] | None,
    probability: np.ndarray | None = None,
    min_area_px: int = 1,
    max_regions: int | None = None,
    outline: bool = True,
) -> list[Region]:
    """Connected regions (4-connectivity, so each has one outline) of a boolean raster,
    largest first."""
    from scipy import ndimage

    lab, n = ndimage.label(mask)
    if n == 0:
        return []
    areas = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    order = [int(i) + 1 for i in np.argsort(-areas, kind="stable") if areas[i] >= min_area_px]
    if max_regions is not None:
        order = order[:max_regions]
    fy, fx = l0_per_px_yx
    px_mm2 = None if mpp_yx is None else (fy * mpp_yx[0] * 1e-3) * (fx * mpp_yx[1] * 1e-3)
    slices = ndimage.find_objects(lab)
    regions = []
    for rank, k in enumerate(order, start=1):
        sl = slices[k - 1]
        sub = lab[sl] == k
        rr, cc = np.nonzero(sub)
        rr = rr + sl[0].start
        cc = cc + sl[1].start
        area = int(sub.sum())
        mean_p = None if probability is None else float(probability[sl][sub].mean())
        polygon = []
        if outline:
            rings = _rings(sub, fy, fx)
            polygon = [[(x + sl[1].start * fx, y + sl[0].start * fy) for x, y in ring] for ring in rings]
        regions.append(Region(
            label=rank,
            area_px=area,
            area_mm2=None if px_mm2 is None else area * px_mm2,
            centroid_l0_xy=(float((cc.mean() + 0.5) * fx), float((rr.mean() + 0.5) * fy)),
            bbox_l0_xywh=(sl[1].start * fx, sl[0].start * fy,
                          (sl[1].stop - sl[1].start) * fx, (sl[0].stop - sl[0].start) * fy),
            mean_probability=mean_p,
            polygon_l0=polygon,
        ))
    return regions
