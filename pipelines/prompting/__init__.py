"""Interactive prompt segmentation (SAM and relatives) on any image, numpy + ONNX Runtime.

- ``transforms``: preprocessing (SAM longest-side + mean/std + pad; MedSAM squash +
  min-max) and image <-> encoder-input coordinates;
- ``runtime.SamRuntime``: encoder graph once per image, decoder graph per prompt;
- ``cache.EmbeddingCache``: embeddings in memory (LRU) and on disk (zarr + signature);
- ``regions``: the region read at a level, windows with a halo, exact level-0 mapping;
- ``polygons``: exact pixel-edge polygons (GeoJSON via ``writers.geojson``);
- ``session.PromptSession``: the thread-safe, Qt-free object the viewer and CLI drive.

No torch here: the models live in ``tessera.plugins.sam``.
"""

from tessera.pipelines.prompting.cache import (
    EmbeddingCache,
    EmbeddingKey,
    EmbeddingMismatch,
    EmbeddingStore,
)
from tessera.pipelines.prompting.polygons import Polygon, mask_to_polygons
from tessera.pipelines.prompting.regions import LevelMask, LevelWindow, read_window, tile_windows
from tessera.pipelines.prompting.runtime import Embedding, Prediction, SamRuntime
from tessera.pipelines.prompting.session import (
    PromptResult,
    PromptSession,
    as_source,
    extend_through_slices,
)
from tessera.pipelines.prompting.transforms import InputTransform, preprocess, to_rgb_uint8

__all__ = [
    "Embedding",
    "EmbeddingCache",
    "EmbeddingKey",
    "EmbeddingMismatch",
    "EmbeddingStore",
    "InputTransform",
    "LevelMask",
    "LevelWindow",
    "Polygon",
    "Prediction",
    "PromptResult",
    "PromptSession",
    "SamRuntime",
    "as_source",
    "extend_through_slices",
    "mask_to_polygons",
    "preprocess",
    "read_window",
    "tile_windows",
    "to_rgb_uint8",
]
