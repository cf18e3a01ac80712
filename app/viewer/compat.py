"""napari API differences across the versions Tessera supports (0.5.5 .. 0.9)."""

from __future__ import annotations

from typing import Any


def camera(viewer: Any) -> Any:
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def scale_bar(viewer: Any) -> Any:
    """The scale-bar overlay (``viewer.canvas.overlays.scale_bar`` since 0.9)."""
    canvas = getattr(viewer, "canvas", None)
    overlays = getattr(canvas, "overlays", None)
    bar = getattr(overlays, "scale_bar", None) if overlays is not None else None
    return bar if bar is not None else viewer.scale_bar


def canvas_size_hw(viewer: Any) -> tuple[int, int]:
    """Canvas size in screen pixels (height, width)."""
    h, w = viewer.window._qt_viewer.canvas.size
    return int(h), int(w)
