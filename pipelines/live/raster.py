"""What the viewer paints: the live overlay's results gathered into small rasters.

tile-classify: one pixel per tile of the model's grid (a 60k x 60k slide at 1 µm/px
with 112 px tiles is ~134 x 134 pixels), so the whole slide's results always fit.
segment-2d: the model's raster reduced by an integer factor so its long side stays
within ``max_side_px`` (each tile's cell is box-averaged into it).

Geometry: raster pixel (i, j) covers level-0 pixels [i*fy, (i+1)*fy) x [j*fx, (j+1)*fx)
with (fy, fx) = ``l0_per_px_yx``; a viewer drawing level-0 pixel k centred at k places
this raster with scale (fy, fx) and translate ((fy-1)/2, (fx-1)/2) (times the µm/px
when it draws in µm), exactly as the OME-Zarr heatmaps of ``tessera run`` are placed.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from tessera.pipelines.live.controller import OverlayUpdate
from tessera.pipelines.runners.base import ModelInfo
from tessera.pipelines.tiling.grid import TileGrid

MAX_SIDE_PX = 4096


class OverlayRaster:
    """Per-class probabilities (float32 (K, Y, X) in [0, 1], NaN where nothing is known
    yet) and argmax labels (uint8 (Y, X): class index + 1, 0 where unknown)."""

    def __init__(self, grid: TileGrid, model: ModelInfo, *, max_side_px: int = MAX_SIDE_PX) -> None:
        self.grid = grid
        self.model = model
        self.task = model.task
        k = len(model.classes)
        if self.task == "tile-classify":
            self.reduce = (1, 1)
            shape = grid.grid_shape
            self.l0_per_px_yx = grid.cell_l0_size_yx
        else:
            H, W = grid.target_shape_yx
            f = max(1, math.ceil(max(H, W) / max_side_px))
            # a cell must map to whole raster pixels: use a divisor of the stride
            while grid.stride_px[0] % f or grid.stride_px[1] % f:
                f += 1
            self.reduce = (f, f)
            shape = (math.ceil(H / f), math.ceil(W / f))
            self.l0_per_px_yx = (grid.target_downsample_yx[0] * f, grid.target_downsample_yx[1] * f)
        self.probs = np.full((k, *shape), np.nan, dtype=np.float32)
        self.labels = np.zeros(shape, dtype=np.uint8)
        self.version = 0
        self._lock = threading.Lock()

    @property
    def shape_yx(self) -> tuple[int, int]:
        return self.labels.shape  # type: ignore[return-value]

    def apply(self, update: OverlayUpdate) -> tuple[int, int, int, int] | None:
        """Write an update's results; returns the raster box (y0, x0, y1, x1) it changed."""
        rc = update.tile_rc
        if update.results is None or len(rc) == 0:
            return None
        with self._lock:
            if self.task == "tile-classify":
                p = np.asarray(update.results, dtype=np.float32)
                self.probs[:, rc[:, 0], rc[:, 1]] = p.T
                self.labels[rc[:, 0], rc[:, 1]] = np.argmax(p, axis=1).astype(np.uint8) + 1
                box = (int(rc[:, 0].min()), int(rc[:, 1].min()), int(rc[:, 0].max()) + 1, int(rc[:, 1].max()) + 1)
            else:
                sy, sx = self.grid.stride_px
                f = self.reduce[0]
                y0s, x0s, y1s, x1s = [], [], [], []
                for (r, c), cell in zip(rc, update.results, strict=True):
                    y0, x0 = int(r) * sy // f, int(c) * sx // f
                    small = _box_reduce(np.asarray(cell, dtype=np.float32) / 255.0, f)
                    h = min(small.shape[1], self.labels.shape[0] - y0)
                    w = min(small.shape[2], self.labels.shape[1] - x0)
                    self.probs[:, y0 : y0 + h, x0 : x0 + w] = small[:, :h, :w]
                    self.labels[y0 : y0 + h, x0 : x0 + w] = np.argmax(small[:, :h, :w], axis=0) + 1
                    y0s.append(y0)
                    x0s.append(x0)
                    y1s.append(y0 + h)
                    x1s.append(x0 + w)
                box = (min(y0s), min(x0s), max(y1s), max(x1s))
            self.version += 1
        return box

    def probability(self, class_index: int) -> np.ndarray:
        """float32 (Y, X) probability of one class, 0 where unknown (a copy)."""
        with self._lock:
            return np.nan_to_num(self.probs[class_index], nan=0.0)

    def known(self) -> np.ndarray:
        """bool (Y, X): where a result exists."""
        with self._lock:
            return self.labels > 0

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        """(probs, labels) copies, for export from another thread."""
        with self._lock:
            return self.probs.copy(), self.labels.copy()


def _box_reduce(cell: np.ndarray, f: int) -> np.ndarray:
    """(K, h, w) -> (K, ceil(h/f), ceil(w/f)) box means (edge cells average what they have)."""
    if f == 1:
        return cell
    k, h, w = cell.shape
    H, W = math.ceil(h / f), math.ceil(w / f)
    pad = np.full((k, H * f, W * f), np.nan, dtype=np.float32)
    pad[:, :h, :w] = cell
    return np.nanmean(pad.reshape(k, H, f, W, f), axis=(2, 4))
