"""Dock widgets for plain napari (npe2 ``widgets``): each takes the viewer napari passes."""

from __future__ import annotations

from typing import Any


def tessera_dock(napari_viewer: Any) -> Any:
    """The Tessera dock: models, live overlay, runs, export, annotations."""
    from tessera.app.viewer.dock import TesseraDock

    return TesseraDock(napari_viewer)


def sam_dock(napari_viewer: Any) -> Any:
    """Prompt segmentation (SAM): points and boxes, live mask preview, commit."""
    from tessera.app.viewer.sam_dock import SamDock

    return SamDock(napari_viewer)


def ct_dock(napari_viewer: Any) -> Any:
    """CT airway/artery/vein segmentation: run, labels in 2D and 3D, metrics."""
    from tessera.app.viewer.ct_dock import CtDock

    return CtDock(napari_viewer)
