"""Read a window of a 2D source at the model's resolution, inside a worker.

Runs in dask tasks, so the read is computed with the synchronous scheduler: a task
must not hand its small read back to whatever scheduler is running it (a threaded
pool would spawn a pool per thread, a distributed worker would block on itself).

Resampling from the pyramid level to the target resolution uses Pillow's ``resize``
with a float source ``box``: exact sub-pixel geometry (pixels are areas: target pixel
i covers level-0 [i*ds, (i+1)*ds)) and an antialiasing filter whose support follows the
scale, in C, at a fraction of the cost of scipy/scikit-image resampling.
"""

from __future__ import annotations

import math

import numpy as np

from tessera.pipelines.sources.base import Source
from tessera.pipelines.tiling.grid import TileGrid
from tessera.pipelines.tiling.tissue import to_yxc


def default_fill(source: Source) -> int:
    """Value outside the slide: white glass for 8-bit RGB brightfield, else 0."""
    return 255 if source.is_rgb and source.dtype == np.uint8 else 0


def read_level_yxc(
    source: Source, level: int, lvl_y0: int, lvl_x0: int, h: int, w: int, *, fill: float = 0
) -> np.ndarray:
    """Pixels [y0, y0+h) x [x0, x0+w) of ``level`` as (h, w, C); outside is ``fill``."""
    arr = source.levels[level]
    iy, ix = source.axes.index("Y"), source.axes.index("X")
    big_h, big_w = arr.shape[iy], arr.shape[ix]
    y0c, x0c = max(lvl_y0, 0), max(lvl_x0, 0)
    y1c, x1c = min(lvl_y0 + h, big_h), min(lvl_x0 + w, big_w)
    n_c = 1 if "C" not in source.axes else arr.shape[source.axes.index("C")]
    out = np.full((h, w, n_c), fill, dtype=arr.dtype)
    if y1c <= y0c or x1c <= x0c:
        return out
    index: list[slice] = [slice(None)] * arr.ndim
    index[iy], index[ix] = slice(y0c, y1c), slice(x0c, x1c)
    data = arr[tuple(index)].compute(scheduler="synchronous")
    out[y0c - lvl_y0 : y1c - lvl_y0, x0c - lvl_x0 : x1c - lvl_x0] = to_yxc(data, source.axes)
    return out


def _resize(region: np.ndarray, size_hw: tuple[int, int], box: tuple[float, float, float, float]) -> np.ndarray:
    """Resample ``box`` (x0, y0, x1, y1 in region pixels) of a (Y, X, C) region to ``size_hw``."""
    from PIL import Image

    h, w = size_hw
    n_c = region.shape[-1]
    if region.dtype == np.uint8 and n_c in (1, 3, 4):
        mode = {1: "L", 3: "RGB", 4: "RGBA"}[n_c]
        img = Image.fromarray(region[..., 0] if n_c == 1 else region, mode=mode)
        out = np.asarray(img.resize((w, h), Image.Resampling.BILINEAR, box=box))
        return out[..., None] if n_c == 1 else out
    out = np.empty((h, w, n_c), dtype=np.float32)
    for c in range(n_c):
        img = Image.fromarray(np.ascontiguousarray(region[..., c], dtype=np.float32), mode="F")
        out[..., c] = np.asarray(img.resize((w, h), Image.Resampling.BILINEAR, box=box))
    if np.issubdtype(region.dtype, np.integer):
        info = np.iinfo(region.dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(region.dtype)
    return out.astype(region.dtype, copy=False)


def read_target_window(
    source: Source, grid: TileGrid, t_y0: int, t_x0: int, t_h: int, t_w: int, *, fill: float
) -> np.ndarray:
    """Window [t_y0, t_y0+t_h) x [t_x0, t_x0+t_w) in target pixels as (t_h, t_w, C).

    Reads the covering pixels of ``grid.level`` (plus a little filter support) and
    resamples only the remainder between that level and the target resolution.
    """
    dsy, dsx = grid.target_downsample_yx
    ly, lx = grid.level_downsample_yx
    ry, rx = dsy / ly, dsx / lx  # level pixels per target pixel
    fy0, fx0 = t_y0 * ry, t_x0 * rx
    fy1, fx1 = (t_y0 + t_h) * ry, (t_x0 + t_w) * rx
    exact = (
        abs(ry - 1) < 1e-9
        and abs(rx - 1) < 1e-9
        and abs(fy0 - round(fy0)) < 1e-6
        and abs(fx0 - round(fx0)) < 1e-6
    )
    if exact:
        return read_level_yxc(source, grid.level, round(fy0), round(fx0), t_h, t_w, fill=fill)
    pad_y, pad_x = math.ceil(ry) + 1, math.ceil(rx) + 1
    y0, x0 = math.floor(fy0) - pad_y, math.floor(fx0) - pad_x
    y1, x1 = math.ceil(fy1) + pad_y, math.ceil(fx1) + pad_x
    region = read_level_yxc(source, grid.level, y0, x0, y1 - y0, x1 - x0, fill=fill)
    return _resize(region, (t_h, t_w), (fx0 - x0, fy0 - y0, fx1 - x0, fy1 - y0))
