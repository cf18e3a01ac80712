"""Tessera: digital pathology and scientific imaging toolkit.

>>> import tessera
>>> src = tessera.open("slide.svs")           # doctest: +SKIP
>>> tile = src.levels[0][0:512, 0:512]        # doctest: +SKIP
"""

from importlib.metadata import PackageNotFoundError, version

from tessera.pipelines.errors import (
    CorruptFile,
    ModelFileRefused,
    PluginError,
    TesseraError,
    UnsupportedFile,
)
from tessera.pipelines.sources import Source
from tessera.pipelines.sources import open_source as open

try:
    __version__ = version("tessera")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "CorruptFile",
    "ModelFileRefused",
    "PluginError",
    "Source",
    "TesseraError",
    "UnsupportedFile",
    "__version__",
    "open",
]
