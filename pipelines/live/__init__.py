"""The live overlay, as plain Python: what the viewer's Qt adapter drives.

``LiveOverlay`` schedules a plugin's tiles for the region in view (centre first,
dropping what left the view), runs them on worker threads, caches results in a
bytes-bounded LRU (``ResultCache``), reuses ``tessera run`` outputs (``run_outputs``)
and publishes ``OverlayUpdate`` objects; ``OverlayRaster`` turns those into the image
the viewer paints. Nothing here imports Qt or napari.
"""

from tessera.pipelines.live.cache import CacheStats, ResultCache
from tessera.pipelines.live.controller import (
    LIVE_TASKS,
    LiveOverlay,
    LiveStats,
    OverlayUpdate,
    ViewBox,
)
from tessera.pipelines.live.raster import OverlayRaster
from tessera.pipelines.live.run_outputs import RunOutput, find_run_output

__all__ = [
    "LIVE_TASKS",
    "CacheStats",
    "LiveOverlay",
    "LiveStats",
    "OverlayRaster",
    "OverlayUpdate",
    "ResultCache",
    "RunOutput",
    "ViewBox",
    "find_run_output",
]
