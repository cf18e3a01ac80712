"""Dock widgets for plain napari (npe2 ``widgets``): each takes the viewer napari passes."""

from __future__ import annotations

from typing import Any


def tessera_dock(napari_viewer: Any) -> Any:
    """The Tessera dock: models, live overlay, runs, export, annotations."""
    from tessera.app.viewer.dock import TesseraDock

    return TesseraDock(napari_viewer)
