"""The Tessera desktop viewer (napari + Qt).

``open_viewer(path, plugin, live) -> int`` opens the window and blocks until it closes
(what ``tessera view`` and ``tessera demo`` call). Importing this package is light:
napari and Qt are imported only when the window is made, so the CLI can import it
lazily with ``importlib.import_module`` and still run without the gui extra.
"""

from __future__ import annotations

import os
from pathlib import Path


def open_viewer(path: Path | None = None, plugin: str | None = None, live: bool = False) -> int:
    """Open the Tessera window on ``path`` (None: empty), with ``plugin`` selected in the
    dock and its live overlay on when ``live``; blocks; returns the exit code."""
    try:
        import napari  # noqa: F401
    except ImportError:
        from tessera.pipelines.errors import MissingDependency

        raise MissingDependency("napari", "gui", "the viewer") from None
    # napari reads image chunks for the canvas on a thread pool instead of the UI thread
    # (napari's own opt-in, set for this process only, not saved in the user's settings)
    os.environ.setdefault("NAPARI_ASYNC", "1")
    from tessera.app.viewer.window import open_viewer as _open

    return _open(None if path is None else Path(path), plugin, live)


__all__ = ["open_viewer"]
