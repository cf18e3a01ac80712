"""The tile grid a 2D model is run over, at the model's µm/px, in the level-0 frame.

Three resolutions meet here:
- level 0 of the slide (``l0_`` coordinates, ``mpp`` µm/px),
- the pyramid level that is read (``lvl_``): the coarsest one not coarser than the
  model's resolution (``Source.best_level_for_downsample``), so only the remainder
  is resampled,
- the model's resolution (``target`` pixels, ``target_mpp``): tiles, strides and the
  output rasters of segment-2d live here. ``target_downsample_yx`` converts it to level 0.

Tile (r, c) *owns* the stride cell ``[r*stride, (r+1)*stride)`` (target px) and sees a
window of ``tile_px`` centred on it (``margin_px`` of context before the cell). With no
overlap the window is the cell. Segment-2d keeps only each tile's cell (the
"overlap-tile" strategy of U-Net): every output pixel comes from exactly one tile, at
least ``margin_px`` away from that tile's border, so no seams appear when the margin
covers the model's receptive field, and each output chunk is written by one task
(which is what makes chunk-wise resume simple and exact).

Tasks take a block of ``block_shape`` tiles, so reads of neighbouring tiles share the
file's tiles and each task amortises its scheduling cost over many tiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tessera.pipelines.sources.base import Source
from tessera.pipelines.tiling.tissue import TissueMask

_UM_PER_UNIT = {"µm": 1.0, "um": 1.0, "mm": 1000.0, "nm": 1e-3}


def source_mpp_yx(source: Source) -> tuple[float, float] | None:
    """Level-0 µm/px along y and x, or None when the source has no physical spacing."""
    if source.spacing is None or source.spacing_unit not in _UM_PER_UNIT:
        return None
    k = _UM_PER_UNIT[source.spacing_unit]
    sy, sx = source.spacing[-2:]
    if not (sy and sx) or sy <= 0 or sx <= 0:
        return None
    return float(sy) * k, float(sx) * k


@dataclass(frozen=True)
class Block:
    """One task's worth of tiles: grid rows/cols it spans and the selected tiles in it."""

    block_rc: tuple[int, int]
    tile_rc: np.ndarray  # (n, 2) int32, selected tiles (row, col) in grid coordinates

    @property
    def chunk_id(self) -> str:
        return f"b{self.block_rc[0]:05d}_{self.block_rc[1]:05d}"


@dataclass(frozen=True, eq=False)
class TileGrid:
    """Tiles at the model's resolution over one 2D source.

    Attributes:
        l0_shape_yx: level-0 size of the slide, pixels.
        level: the pyramid level tiles are read from.
        level_downsample_yx: level-0 pixels per pixel of ``level``.
        target_downsample_yx: level-0 pixels per model (target) pixel.
        target_mpp_yx: µm per target pixel (None when the slide's spacing is unknown).
        tile_px: model input (h, w), target pixels.
        stride_px: distance between neighbouring tiles (h, w), target pixels.
        grid_shape: (rows, cols) of the grid, covering the whole slide.
        tissue_fraction: float32 (rows, cols), foreground fraction of each stride cell.
        selected: bool (rows, cols), tiles that are processed.
        block_shape: (rows, cols) of tiles per task.
        notes: warnings worth reporting (unknown spacing, upsampling...).
    """

    l0_shape_yx: tuple[int, int]
    level: int
    level_downsample_yx: tuple[float, float]
    target_downsample_yx: tuple[float, float]
    target_mpp_yx: tuple[float, float] | None
    tile_px: tuple[int, int]
    stride_px: tuple[int, int]
    grid_shape: tuple[int, int]
    tissue_fraction: np.ndarray
    selected: np.ndarray
    block_shape: tuple[int, int]
    notes: list[str] = field(default_factory=list)

    # ---- geometry --------------------------------------------------------------------
    @property
    def margin_px(self) -> tuple[int, int]:
        """Context before each stride cell inside its window, target pixels."""
        return ((self.tile_px[0] - self.stride_px[0]) // 2, (self.tile_px[1] - self.stride_px[1]) // 2)

    @property
    def target_shape_yx(self) -> tuple[int, int]:
        """Size of the slide at the model's resolution (the segment-2d output raster)."""
        return (
            max(1, math.ceil(self.l0_shape_yx[0] / self.target_downsample_yx[0] - 1e-9)),
            max(1, math.ceil(self.l0_shape_yx[1] / self.target_downsample_yx[1] - 1e-9)),
        )

    @property
    def n_selected(self) -> int:
        return int(self.selected.sum())

    @property
    def cell_l0_size_yx(self) -> tuple[float, float]:
        """Level-0 size of one stride cell (the area a tile stands for), pixels."""
        return (
            self.stride_px[0] * self.target_downsample_yx[0],
            self.stride_px[1] * self.target_downsample_yx[1],
        )

    def cell_l0_boxes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(y0, x0, y1, x1) level-0 boxes of every stride cell, each (rows, cols), clipped."""
        rows, cols = self.grid_shape
        cy, cx = self.cell_l0_size_yx
        r = np.arange(rows, dtype=np.float64)[:, None] * np.ones((1, cols))
        c = np.ones((rows, 1)) * np.arange(cols, dtype=np.float64)[None, :]
        y0, x0 = r * cy, c * cx
        y1 = np.minimum(y0 + cy, self.l0_shape_yx[0])
        x1 = np.minimum(x0 + cx, self.l0_shape_yx[1])
        return y0, x0, y1, x1

    def window_target_yx(self, tile_r: int | np.ndarray, tile_c: int | np.ndarray):
        """Top-left of tile windows in target pixels (may be negative at the slide edge)."""
        my, mx = self.margin_px
        return (
            np.asarray(tile_r) * self.stride_px[0] - my,
            np.asarray(tile_c) * self.stride_px[1] - mx,
        )

    def window_l0_yx(self, tile_r: int | np.ndarray, tile_c: int | np.ndarray):
        """Top-left of tile windows in level-0 pixels (floats, may be negative)."""
        ty, tx = self.window_target_yx(tile_r, tile_c)
        return ty * self.target_downsample_yx[0], tx * self.target_downsample_yx[1]

    @property
    def window_l0_size_yx(self) -> tuple[float, float]:
        return (
            self.tile_px[0] * self.target_downsample_yx[0],
            self.tile_px[1] * self.target_downsample_yx[1],
        )

    # ---- tasks -----------------------------------------------------------------------
    def blocks(self) -> list[Block]:
        """Blocks holding at least one selected tile, in row-major order."""
        rows, cols = self.grid_shape
        bh, bw = self.block_shape
        out: list[Block] = []
        for bi in range(math.ceil(rows / bh)):
            for bj in range(math.ceil(cols / bw)):
                sel = self.selected[bi * bh : (bi + 1) * bh, bj * bw : (bj + 1) * bw]
                rr, cc = np.nonzero(sel)
                if rr.size == 0:
                    continue
                rc = np.stack([rr + bi * bh, cc + bj * bw], axis=1).astype(np.int32)
                out.append(Block(block_rc=(bi, bj), tile_rc=rc))
        return out

    def describe(self) -> dict:
        """JSON-ready description (summary.json, resume signature)."""
        return {
            "l0_shape_yx": list(self.l0_shape_yx),
            "level": self.level,
            "level_downsample_yx": [round(v, 6) for v in self.level_downsample_yx],
            "target_downsample_yx": [round(v, 6) for v in self.target_downsample_yx],
            "target_mpp_yx": None if self.target_mpp_yx is None else [round(v, 6) for v in self.target_mpp_yx],
            "tile_px": list(self.tile_px),
            "stride_px": list(self.stride_px),
            "margin_px": list(self.margin_px),
            "grid_shape": list(self.grid_shape),
            "block_shape": list(self.block_shape),
            "n_tiles": int(self.grid_shape[0] * self.grid_shape[1]),
            "n_selected": self.n_selected,
        }


def make_tile_grid(
    source: Source,
    *,
    tile_px: tuple[int, int],
    target_mpp: float | None,
    overlap: float = 0.0,
    tissue: TissueMask | None = None,
    min_tile_fraction: float = 0.1,
    tiles_per_task: int = 64,
) -> TileGrid:
    """The grid of tiles of ``tile_px`` at ``target_mpp`` µm/px over ``source``.

    ``overlap`` is the fraction of a tile shared with each neighbour (segment-2d uses it
    as context; tile-classify usually 0). Tiles whose stride cell holds less than
    ``min_tile_fraction`` foreground in ``tissue`` are not selected (all are when
    ``tissue`` is None). When the slide has no physical spacing, or the model no target
    resolution, tiles are read at level 0 as they are and a note says so.
    """
    if source.ndim_spatial != 2:
        msg = f"a tile grid needs a 2D image; {source.path} has axes {source.axes!r}"
        raise ValueError(msg)
    if not 0.0 <= overlap < 1.0:
        msg = f"overlap must be in [0, 1), got {overlap}"
        raise ValueError(msg)
    th, tw = int(tile_px[0]), int(tile_px[1])
    if th < 1 or tw < 1:
        msg = f"tile size must be positive, got {tile_px}"
        raise ValueError(msg)
    notes: list[str] = []
    l0_shape = tuple(int(s) for s in source.spatial_shape(0)[-2:])
    mpp = source_mpp_yx(source)
    if mpp is None or target_mpp is None:
        target_ds = (1.0, 1.0)
        target_mpp_yx = mpp
        if target_mpp is not None:
            notes.append(
                f"the image has no physical pixel size; tiles are read at level 0 as if it "
                f"were {target_mpp} µm/px (the model's resolution)"
            )
    else:
        target_ds = (target_mpp / mpp[0], target_mpp / mpp[1])
        target_mpp_yx = (float(target_mpp), float(target_mpp))
        if min(target_ds) < 0.99:
            notes.append(
                f"the image ({mpp[1]:.4g} µm/px) is coarser than the model's {target_mpp:.4g} "
                f"µm/px; tiles are upsampled {1 / min(target_ds):.2f}x"
            )
    level = source.best_level_for_downsample(min(target_ds))
    level_ds = tuple(float(d) for d in source.downsamples[level][-2:])
    oy, ox = round(th * overlap), round(tw * overlap)
    stride = (max(1, th - oy), max(1, tw - ox))
    target_shape = (
        max(1, math.ceil(l0_shape[0] / target_ds[0] - 1e-9)),
        max(1, math.ceil(l0_shape[1] / target_ds[1] - 1e-9)),
    )
    grid_shape = (math.ceil(target_shape[0] / stride[0]), math.ceil(target_shape[1] / stride[1]))
    side = max(1, round(math.sqrt(max(1, tiles_per_task))))
    grid = TileGrid(
        l0_shape_yx=l0_shape,  # type: ignore[arg-type]
        level=level,
        level_downsample_yx=level_ds,  # type: ignore[arg-type]
        target_downsample_yx=target_ds,
        target_mpp_yx=target_mpp_yx,
        tile_px=(th, tw),
        stride_px=stride,
        grid_shape=grid_shape,
        tissue_fraction=np.ones(grid_shape, dtype=np.float32),
        selected=np.ones(grid_shape, dtype=bool),
        block_shape=(side, side),
        notes=notes,
    )
    if tissue is not None:
        fractions = tissue.fractions_in_l0_boxes(*grid.cell_l0_boxes())
        grid.tissue_fraction[...] = fractions
        grid.selected[...] = fractions >= min_tile_fraction
    return grid
