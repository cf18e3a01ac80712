"""Where to look on a slide: tissue/foreground masks, tile grids at a model's µm/px,
the pyramid level to read, and reading tiles resampled to that resolution."""

from tessera.pipelines.tiling.grid import TileGrid, make_tile_grid
from tessera.pipelines.tiling.tissue import TissueMask, TissueOptions, detect_tissue

__all__ = ["TileGrid", "TissueMask", "TissueOptions", "detect_tissue", "make_tile_grid"]
