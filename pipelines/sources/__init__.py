"""Readers that turn files into lazy multiscale Sources (see base.Source)."""

from tessera.pipelines.sources.base import Reader, Source
from tessera.pipelines.sources.registry import open_source, reader_names

__all__ = ["Reader", "Source", "open_source", "reader_names"]
