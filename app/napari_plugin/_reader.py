"""npe2 reader: any file or folder ``tessera.open`` takes, as lazy multiscale layers.

``get_reader`` returns None for files Tessera does not open (so napari tries its other
readers); for a file Tessera recognises but cannot read (corrupt, truncated), it returns
a reader that raises the one-line error, which napari shows as a notification.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from tessera.app.viewer.layers import LayerDataTuple, source_layer_data
from tessera.pipelines.errors import TesseraError, UnsupportedFile

log = logging.getLogger(__name__)

ReaderFunction = Callable[[str | list[str]], list[LayerDataTuple]]


def get_reader(path: str | list[str]) -> ReaderFunction | None:
    """The reader for ``path`` (one path, or a list napari passes for a stack), or None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None  # stacks of separate files are napari's builtins' job
        path = path[0]
    import tessera

    try:
        source = tessera.open(Path(path))
    except UnsupportedFile:
        return None
    except TesseraError as exc:  # ours, but broken: say why instead of trying other readers
        error = exc

        def fail(_path: str | list[str]) -> list[LayerDataTuple]:
            raise error

        return fail

    def read(_path: str | list[str]) -> list[LayerDataTuple]:
        return source_layer_data(source)

    return read
