"""Sources over arrays already in memory (or any dask arrays): for tests, previews, and
results that feed a pipeline expecting a Source (as TIAToolbox's VirtualWSIReader).

>>> import numpy as np
>>> src = array_source(np.zeros((512, 768, 3), np.uint8), axes="YXC", spacing=(0.5, 0.5),
...                    spacing_unit="µm")
>>> src.reader, src.levels[0].chunksize, src.mpp
('memory', (256, 256, 3), 0.5)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from tessera.pipelines.sources.base import Source

#: Default chunk length along Y and X (pixels); other axes are one chunk each, Z one plane.
DEFAULT_CHUNK_PX = 256


def array_source(
    levels: np.ndarray | da.Array | Sequence[np.ndarray | da.Array],
    *,
    axes: str,
    spacing: tuple[float, ...] | None = None,
    spacing_unit: str | None = None,
    chunk_px: int = DEFAULT_CHUNK_PX,
    metadata: dict[str, Any] | None = None,
    path: str | Path = "<array>",
    format: str = "in-memory array",
) -> Source:
    """A Source whose levels are the given arrays (one array: a single level).

    Args:
        levels: level 0 first; numpy arrays are wrapped lazily, dask arrays kept as they
            are (their chunks included).
        axes: axis letters of every level, e.g. "YXC", "ZYX", "CYX".
        spacing: level-0 pixel size per spatial axis, in ``spacing_unit`` ("µm", "mm",
            "arcsec"); None when unknown.
        chunk_px: chunk length along Y and X for numpy input (pixels).
    """
    arrays = [levels] if isinstance(levels, np.ndarray | da.Array) else list(levels)
    dask_levels = []
    for arr in arrays:
        if isinstance(arr, da.Array):
            dask_levels.append(arr)
            continue
        arr = np.asarray(arr)
        chunks = tuple(chunk_px if a in "YX" else 1 if a == "Z" else -1 for a in axes[: arr.ndim])
        dask_levels.append(da.from_array(arr, chunks=chunks))
    return Source(
        path=Path(path),
        format=format,
        reader="memory",
        levels=dask_levels,
        axes=axes,
        spacing=spacing,
        spacing_unit=spacing_unit if spacing is not None else None,
        metadata={"vendor": None, **(metadata or {})},
    )
