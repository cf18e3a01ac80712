"""Where on a (possibly huge, possibly 3D) image the encoder looks, and the way back.

Frames (DESIGN.md): ``l0_`` = level-0 pixels, ``lvl_`` = pixels of the chosen level,
window-relative coordinates = pixels of one encoded window. Prompts use SAM's pixel-index
convention (a click on pixel j has x = j; the pixel's centre is j + 0.5); masks and
polygons use pixel *edges* (pixel j covers [j, j+1)). Level pixel j covers level-0
[j * ds, (j + 1) * ds) (OpenSlide), so:

- a prompt at level-0 index x maps to level index ``(x + 0.5) / ds - 0.5`` (centres
  line up; exact for any downsample, integer or not);
- a level-pixel edge e maps to level-0 ``e * ds`` (exact);
- a level-0 pixel is in a mask when its centre ``(X + 0.5) / ds`` falls in a masked
  level pixel, which is also where the level-0 polygon says it is.

Large regions are cut into windows of the encoder's input size overlapping by twice a
halo; a prompt is answered in the window that holds it with the most margin, so objects
up to the halo's size that straddle window borders come out whole.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tessera.pipelines.prompting.polygons import Polygon, mask_to_polygons
from tessera.pipelines.sources.base import Source


@dataclass(frozen=True)
class LevelWindow:
    """A rectangle of pixels of one level: origin and size in level pixels, and the
    level's downsample (level-0 pixels per level pixel, per axis, not always integer)."""

    level: int
    lvl_yx: tuple[int, int]
    lvl_hw: tuple[int, int]
    downsample_yx: tuple[float, float] = (1.0, 1.0)

    @property
    def l0_origin_yx(self) -> tuple[float, float]:
        """Level-0 position of the window's top-left pixel edge."""
        return self.lvl_yx[0] * self.downsample_yx[0], self.lvl_yx[1] * self.downsample_yx[1]

    @property
    def l0_box_xyxy(self) -> tuple[float, float, float, float]:
        """Level-0 extent (x0, y0, x1, y1) of the window's pixel edges."""
        (y0, x0), (h, w), (dy, dx) = self.lvl_yx, self.lvl_hw, self.downsample_yx
        return x0 * dx, y0 * dy, (x0 + w) * dx, (y0 + h) * dy

    def l0_to_window(self, l0_xy: np.ndarray) -> np.ndarray:
        """Level-0 prompt coordinates (x, y) -> window coordinates (pixel-index convention)."""
        p = np.asarray(l0_xy, np.float64)
        dy, dx = self.downsample_yx
        out = np.empty_like(p)
        out[..., 0] = (p[..., 0] + 0.5) / dx - 0.5 - self.lvl_yx[1]
        out[..., 1] = (p[..., 1] + 0.5) / dy - 0.5 - self.lvl_yx[0]
        return out

    def window_to_l0(self, xy: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`l0_to_window`."""
        p = np.asarray(xy, np.float64)
        dy, dx = self.downsample_yx
        out = np.empty_like(p)
        out[..., 0] = (p[..., 0] + self.lvl_yx[1] + 0.5) * dx - 0.5
        out[..., 1] = (p[..., 1] + self.lvl_yx[0] + 0.5) * dy - 0.5
        return out

    def sub(self, rel_yx: tuple[int, int], hw: tuple[int, int]) -> LevelWindow:
        """A window inside this one, ``rel_yx`` relative to its origin."""
        return LevelWindow(self.level, (self.lvl_yx[0] + rel_yx[0], self.lvl_yx[1] + rel_yx[1]), hw, self.downsample_yx)

    def contains_margin(self, rel_box_xyxy: Sequence[float], region: LevelWindow) -> float:
        """Smallest distance (level px) from a box (region-relative) to this window's
        edges, ignoring edges on the region's border (nothing lies beyond them)."""
        x0, y0, x1, y1 = rel_box_xyxy
        ry, rx = self.lvl_yx[0] - region.lvl_yx[0], self.lvl_yx[1] - region.lvl_yx[1]
        h, w = self.lvl_hw
        margins = []
        if ry > 0:
            margins.append(y0 - ry)
        if rx > 0:
            margins.append(x0 - rx)
        if ry + h < region.lvl_hw[0]:
            margins.append(ry + h - y1)
        if rx + w < region.lvl_hw[1]:
            margins.append(rx + w - x1)
        return min(margins) if margins else math.inf


def level_window_for_l0_box(
    source: Source, level: int, l0_box_xyxy: Sequence[float], *, clamp: bool = True
) -> LevelWindow:
    """The level pixels covering a level-0 box (x0, y0, x1, y1), clamped to the image."""
    dy, dx = source.downsamples[level][-2:]
    hh, ww = source.spatial_shape(level)[-2:]
    x0, y0, x1, y1 = l0_box_xyxy
    lx0, ly0 = math.floor(x0 / dx), math.floor(y0 / dy)
    lx1, ly1 = math.ceil(x1 / dx), math.ceil(y1 / dy)
    if clamp:
        lx0, ly0 = max(lx0, 0), max(ly0, 0)
        lx1, ly1 = min(lx1, ww), min(ly1, hh)
    if lx1 <= lx0 or ly1 <= ly0:
        msg = f"the region {tuple(l0_box_xyxy)} (level-0 px) does not overlap the image"
        raise ValueError(msg)
    return LevelWindow(level, (ly0, lx0), (ly1 - ly0, lx1 - lx0), (float(dy), float(dx)))


def whole_level(source: Source, level: int) -> LevelWindow:
    dy, dx = source.downsamples[level][-2:]
    h, w = source.spatial_shape(level)[-2:]
    return LevelWindow(level, (0, 0), (int(h), int(w)), (float(dy), float(dx)))


def region_around(
    source: Source, level: int, l0_xy: np.ndarray, *, context_px: int = 1024, margin_px: int = 64
) -> LevelWindow:
    """A region of at least ``context_px`` level pixels a side around prompt
    coordinates (level-0 (x, y), any number of points or box corners), clamped."""
    pts = np.asarray(l0_xy, np.float64).reshape(-1, 2)
    dy, dx = source.downsamples[level][-2:]
    hh, ww = source.spatial_shape(level)[-2:]
    lx0, ly0 = pts[:, 0].min() / dx - margin_px, pts[:, 1].min() / dy - margin_px
    lx1, ly1 = pts[:, 0].max() / dx + margin_px, pts[:, 1].max() / dy + margin_px
    cx, cy = (lx0 + lx1) / 2, (ly0 + ly1) / 2
    half_w, half_h = max(lx1 - lx0, context_px) / 2, max(ly1 - ly0, context_px) / 2
    x0, x1 = _fit(cx - half_w, cx + half_w, ww)
    y0, y1 = _fit(cy - half_h, cy + half_h, hh)
    return LevelWindow(level, (y0, x0), (y1 - y0, x1 - x0), (float(dy), float(dx)))


def _fit(a: float, b: float, limit: int) -> tuple[int, int]:
    """Integer [a, b) shifted to lie inside [0, limit) where possible, then clamped."""
    a_i, b_i = math.floor(a), math.ceil(b)
    if a_i < 0:
        b_i, a_i = b_i - a_i, 0
    if b_i > limit:
        a_i, b_i = a_i - (b_i - limit), limit
    return max(a_i, 0), min(b_i, limit)


def tile_windows(region: LevelWindow, tile_px: int, halo_px: int) -> list[LevelWindow]:
    """Windows of ``tile_px`` (clamped to the region) covering ``region``; neighbours
    overlap by ``2 * halo_px``. One window when the region fits."""
    if halo_px * 2 >= tile_px:
        msg = f"halo {halo_px} px leaves nothing of a {tile_px} px tile"
        raise ValueError(msg)
    h, w = region.lvl_hw
    ys = _starts(h, tile_px, tile_px - 2 * halo_px)
    xs = _starts(w, tile_px, tile_px - 2 * halo_px)
    return [region.sub((y, x), (min(tile_px, h), min(tile_px, w))) for y in ys for x in xs]


def _starts(length: int, tile: int, step: int) -> list[int]:
    if length <= tile:
        return [0]
    n = math.ceil((length - tile) / step) + 1
    # spread evenly so the last window ends exactly at the region's end
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def choose_window(windows: Sequence[LevelWindow], region: LevelWindow, rel_box_xyxy: Sequence[float]) -> int:
    """Index of the window holding a (region-relative) prompt box with the most margin."""
    return int(np.argmax([w.contains_margin(rel_box_xyxy, region) for w in windows]))


def read_window(
    source: Source, window: LevelWindow, *, z: int | None = None, channel: int | None = None
) -> np.ndarray:
    """The window's pixels: (H, W, 3) for RGB(A) images, (H, W) otherwise (one channel
    of multichannel images, ``channel`` or 0; Z slice ``z`` of volumes)."""
    axes = source.axes
    level = window.level
    (y0, x0), (h, w) = window.lvl_yx, window.lvl_hw
    if "Z" not in axes and axes in ("YX", "YXC", "YXS"):
        (dy, dx) = window.downsample_yx
        # read_region takes a level-0 origin and floors it by the downsample: ceil(l0)
        # lands exactly on our level pixel for any downsample >= 1.
        l0_yx = (math.ceil(y0 * dy - 1e-9), math.ceil(x0 * dx - 1e-9))
        data = source.read_region(l0_yx, (h, w), level)
    else:
        arr = source.levels[level]
        index: list[int | slice] = []
        for ax, n in zip(axes, arr.shape, strict=True):
            if ax == "Z":
                if z is None:
                    msg = f"{source.path} is a volume ({axes}); choose a slice (z)"
                    raise ValueError(msg)
                if not 0 <= z < n:
                    msg = f"slice {z} is outside the volume's {n} slices"
                    raise ValueError(msg)
                index.append(int(z))
            elif ax == "Y":
                index.append(slice(y0, y0 + h))
            elif ax == "X":
                index.append(slice(x0, x0 + w))
            elif ax in "CS":
                index.append(slice(None))
            else:
                index.append(0)
        data = np.asarray(arr[tuple(index)])
        kept = [ax for ax, i in zip(axes, index, strict=True) if isinstance(i, slice)]
        order = [kept.index(a) for a in "YX"] + [i for i, a in enumerate(kept) if a not in "YX"]
        data = np.transpose(data, order)
    if data.ndim == 3:
        c = data.shape[-1]
        if c in (3, 4) and ("C" in axes[-1:] or "S" in axes[-1:]) and source.is_rgb:
            data = data[..., :3]
        else:
            data = data[..., channel or 0]
    return data


@dataclass(frozen=True)
class LevelMask:
    """A boolean mask over one window of one level, and its exact way back to level 0."""

    mask: np.ndarray  # bool (h, w) in window pixels
    window: LevelWindow

    @property
    def area_l0_px(self) -> float:
        dy, dx = self.window.downsample_yx
        return float(self.mask.sum()) * dy * dx

    def l0_bbox_xyxy(self) -> tuple[float, float, float, float] | None:
        """Level-0 extent of the masked pixels' edges, or None when empty."""
        ys, xs = np.nonzero(self.mask)
        if len(ys) == 0:
            return None
        (oy, ox), (dy, dx) = self.window.lvl_yx, self.window.downsample_yx
        return (ox + xs.min()) * dx, (oy + ys.min()) * dy, (ox + xs.max() + 1) * dx, (oy + ys.max() + 1) * dy

    def polygons_l0(self, *, min_area_px: float = 0) -> list[Polygon]:
        """Exact pixel-edge polygons in level-0 coordinates."""
        (oy, ox), (dy, dx) = self.window.lvl_yx, self.window.downsample_yx
        return [p.transformed((ox, oy), (dx, dy)) for p in mask_to_polygons(self.mask, min_area_px=min_area_px)]

    def to_features(
        self, *, class_name: str | None = None, colour: str | None = None,
        measurements: dict[str, float] | None = None, name: str | None = None,
    ) -> list[dict]:
        """QuPath annotation features (one per connected part), level-0 coordinates."""
        from tessera.pipelines.writers.geojson import qupath_feature

        return [
            qupath_feature([p.exterior.tolist(), *(h.tolist() for h in p.holes)], object_type="annotation",
                           class_name=class_name, colour=colour, measurements=measurements, name=name)
            for p in self.polygons_l0()
        ]

    def rasterize_l0(self, l0_yx: Sequence[int], l0_hw: Sequence[int]) -> np.ndarray:
        """The mask on a level-0 grid (``l0_hw`` pixels from ``l0_yx``): a level-0 pixel
        is set when its centre lies in a masked level pixel."""
        (oy, ox), (dy, dx) = self.window.lvl_yx, self.window.downsample_yx
        h, w = self.mask.shape
        rows = np.floor((np.arange(l0_yx[0], l0_yx[0] + l0_hw[0]) + 0.5) / dy).astype(np.int64) - oy
        cols = np.floor((np.arange(l0_yx[1], l0_yx[1] + l0_hw[1]) + 0.5) / dx).astype(np.int64) - ox
        r_ok = (rows >= 0) & (rows < h)
        c_ok = (cols >= 0) & (cols < w)
        out = np.zeros((len(rows), len(cols)), bool)
        out[np.ix_(r_ok, c_ok)] = self.mask[np.ix_(rows[r_ok], cols[c_ok])]
        return out

    def paste(self, region: LevelWindow) -> np.ndarray:
        """The mask placed in a larger window of the same level (zeros elsewhere)."""
        out = np.zeros(region.lvl_hw, bool)
        ry, rx = self.window.lvl_yx[0] - region.lvl_yx[0], self.window.lvl_yx[1] - region.lvl_yx[1]
        h, w = self.mask.shape
        ys, xs = slice(max(ry, 0), min(ry + h, out.shape[0])), slice(max(rx, 0), min(rx + w, out.shape[1]))
        out[ys, xs] = self.mask[ys.start - ry : ys.stop - ry, xs.start - rx : xs.stop - rx]
        return out
