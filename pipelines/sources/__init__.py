"""Readers that turn files into lazy multiscale Sources (see base.Source).

``open_source`` (``tessera.open``) picks the reader; ``array_source`` wraps arrays
already in memory as a Source; ``LazyLevel``/``as_dask`` are how readers build
picklable, lazily-reading levels (see lazy.py).
"""

from tessera.pipelines.sources.base import Reader, Source
from tessera.pipelines.sources.lazy import LazyLevel, as_dask
from tessera.pipelines.sources.memory import array_source
from tessera.pipelines.sources.registry import open_source, reader_names

__all__ = ["LazyLevel", "Reader", "Source", "array_source", "as_dask", "open_source", "reader_names"]
