"""Docks for task kinds whose results are not a raster over the image.

- ``spectra-regress`` -> ``CatalystDock`` (catalyst.py): eDOS dataset, screening,
  volcano, periodic tables, ranked candidates, free-energy diagram and DOS per candidate.
- ``detect-classify`` -> ``GalaxyDock`` (galaxy.py): survey field, detection and
  classification, galaxies marked by class on the canvas, catalogue table, cutout and
  class probabilities per galaxy.

``open_task_dock(viewer, task, plugin=None)`` is the one call the main Tessera dock (or
anything else) makes when a plugin of one of these kinds is chosen; it returns the dock
already in the window when there is one. Importing this package imports no Qt: the
dock modules are imported when a dock is opened.
"""

from __future__ import annotations

import importlib
from typing import Any

#: task kind -> (module, class, dock title)
TASK_DOCKS: dict[str, tuple[str, str, str]] = {
    "spectra-regress": ("tessera.app.viewer.docks.catalyst", "CatalystDock", "Catalyst screening"),
    "detect-classify": ("tessera.app.viewer.docks.galaxy", "GalaxyDock", "Galaxy morphology"),
}


def open_task_dock(viewer: Any, task: str, plugin: Any = None) -> Any | None:
    """Show the dock of task kind ``task`` in ``viewer``'s window (made and docked on the
    right, tabbed with the other docks, on first use) with ``plugin`` (id or Plugin)
    selected; returns the dock widget, or None for a task kind without one."""
    if task not in TASK_DOCKS:
        return None
    module_name, class_name, title = TASK_DOCKS[task]
    cls = getattr(importlib.import_module(module_name), class_name)
    dock = next((w for w in viewer.window.dock_widgets.values() if isinstance(w, cls)), None)
    if dock is None:
        dock = cls(viewer)
        wrapper = viewer.window.add_dock_widget(dock, name=title, area="right", tabify=True,
                                                 add_vertical_stretch=False)
        _set_width(viewer, wrapper, dock)
    parent = dock.parent()
    if parent is not None:  # the QDockWidget around it: bring its tab to the front
        parent.show()
        parent.raise_()
    if plugin is not None:
        dock.select_plugin(plugin)
    return dock


def _set_width(viewer: Any, wrapper: Any, dock: Any) -> None:
    """Give the dock its preferred share of the window's width."""
    try:
        from qtpy.QtCore import Qt

        window = viewer.window._qt_window
        width = int(window.width() * getattr(dock, "PREFERRED_WIDTH_FRACTION", 0.3))
        window.resizeDocks([wrapper], [max(width, dock.minimumWidth())], Qt.Orientation.Horizontal)
    except Exception:  # a window without Qt docks (napari internals changed): keep napari's size
        pass


def open_catalyst_dock(viewer: Any, plugin: Any = None) -> Any:
    """The catalyst screening dock of ``viewer`` (see ``open_task_dock``)."""
    return open_task_dock(viewer, "spectra-regress", plugin)


def open_galaxy_dock(viewer: Any, plugin: Any = None) -> Any:
    """The galaxy morphology dock of ``viewer`` (see ``open_task_dock``)."""
    return open_task_dock(viewer, "detect-classify", plugin)


__all__ = ["TASK_DOCKS", "open_catalyst_dock", "open_galaxy_dock", "open_task_dock"]
