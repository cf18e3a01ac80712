"""The Tessera window: napari with Tessera's reader, dock, status bar and file handling.

``TesseraWindow`` wraps a ``napari.Viewer`` titled "Tessera":
- opens every Source (``tessera.open``) as lazy layers (``layers.source_layer_data``);
  errors become notifications and the window keeps working;
- File menu: "Open with Tessera…" and "Open Recent"; dropped files open through Tessera;
- a scale bar in the image's unit; a permanent status-bar field with the cursor's
  level-0 pixel, its physical position, the on-screen µm/px and the magnification;
- the Tessera dock on the right.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QFileDialog, QLabel, QMenu

from tessera.app.viewer.compat import camera, scale_bar
from tessera.app.viewer.dock import TesseraDock, notify_error, open_tool
from tessera.app.viewer.frame import describe_position
from tessera.app.viewer.layers import FRAME_KEY, SOURCE_KEY, source_layer_data
from tessera.app.viewer.recent import add_recent, load_recent
from tessera.app.viewer.tasks import preload_modules

log = logging.getLogger(__name__)

TITLE = "Tessera"


class _DropFilter(QObject):
    """Opens dropped files with Tessera instead of napari's reader chooser."""

    def __init__(self, window: TesseraWindow) -> None:
        super().__init__()
        self.window = window

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if event.type() in (QEvent.Type.DragEnter, QEvent.Type.DragMove) and event.mimeData().hasUrls():
            event.acceptProposedAction()
            return True
        if event.type() == QEvent.Type.Drop and event.mimeData().hasUrls():
            paths = [Path(u.toLocalFile()) for u in event.mimeData().urls() if u.isLocalFile()]
            event.acceptProposedAction()
            for p in paths:
                self.window.open(p)
            return True
        return False


class TesseraWindow:
    """One Tessera viewer window (a napari Viewer plus Tessera's parts)."""

    def __init__(self, viewer: Any | None = None, *, show: bool = True) -> None:
        import napari

        self.viewer = viewer if viewer is not None else napari.Viewer(title=TITLE, show=show)
        self.viewer.title = TITLE
        preload_modules()  # at start-up, so no worker thread imports while Qt runs
        from tessera.pipelines.runners.base import bound_heap

        bound_heap()  # big slice buffers in their own mappings, returned to the OS when freed
        self.dock = TesseraDock(self.viewer)
        self.viewer.window.add_dock_widget(self.dock, name="Tessera", area="right")
        bar = scale_bar(self.viewer)
        bar.visible = True
        bar.box = True
        self.status_label = QLabel("")
        self.viewer.window._qt_window.statusBar().addPermanentWidget(self.status_label)
        self.viewer.mouse_move_callbacks.append(self._mouse_moved)
        camera(self.viewer).events.zoom.connect(self._zoom_changed)
        self._cursor_world: tuple[float, ...] | None = None
        self._add_menus()
        self._add_tools_menu()
        self._drop_filter = _DropFilter(self)
        qt_viewer = self.viewer.window._qt_viewer
        qt_viewer.installEventFilter(self._drop_filter)
        self.viewer.window._qt_window.destroyed.connect(lambda *_: self.dock.shutdown(timeout=5))

    # ---- files -------------------------------------------------------------------------
    def open(self, path: Path | str) -> list[Any]:
        """Open ``path`` with Tessera and add its layers; [] (and a notification) on error."""
        import tessera

        path = Path(path)
        try:
            source = tessera.open(path)
            tuples = source_layer_data(source)
        except Exception as exc:
            notify_error(str(exc) if str(path) in str(exc) else f"{path}: {exc}")
            return []
        added: list[Any] = []
        first = not any(SOURCE_KEY in getattr(layer, "metadata", {}) for layer in self.viewer.layers)
        for data, kwargs, kind in tuples:
            if kind != "image":
                continue
            layers = self.viewer.add_image(data, **kwargs)
            added.extend(layers if isinstance(layers, list) else [layers])
        if source.ndim_spatial == 3:
            self.viewer.dims.ndisplay = 2
            z_axis = self.viewer.dims.ndim - 3
            self.viewer.dims.set_current_step(z_axis, source.spatial_shape(0)[0] // 2)
        if first:
            self.viewer.reset_view()
        add_recent(path)
        self._refresh_recent()
        return added

    def open_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.viewer.window._qt_window, "Open with Tessera")
        if path:
            self.open(path)

    def _add_menus(self) -> None:
        menu = self.viewer.window.file_menu
        first = menu.actions()[0] if menu.actions() else None
        self._open_action = menu.addAction("Open with Tessera…")
        self._open_action.setShortcut("Ctrl+Shift+T")
        self._open_action.triggered.connect(self.open_dialog)
        self._recent_menu = QMenu("Open Recent (Tessera)", menu)
        if first is not None:
            menu.insertAction(first, self._open_action)
            menu.insertMenu(first, self._recent_menu)
            menu.insertSeparator(first)
        else:
            menu.addMenu(self._recent_menu)
        self._refresh_recent()

    def _add_tools_menu(self) -> None:
        bar = self.viewer.window._qt_window.menuBar()
        menu = bar.addMenu("Tessera")
        for task, title in (("prompt-segment", "Prompt segmentation (SAM)"),
                            ("segment-3d", "CT airways and vessels"),
                            ("detect-classify", "Galaxy morphology"),
                            ("spectra-regress", "Catalyst screening")):
            action = menu.addAction(title)
            action.triggered.connect(lambda _=False, t=task: self.open_tool(t))
        self._tools_menu = menu

    def open_tool(self, task: str) -> Any:
        """Show the dock for a task kind (SAM, CT, galaxies, catalysts)."""
        dock = open_tool(self.viewer, task)
        if dock is None:
            notify_error(f"no dock for {task} models in this installation")
        return dock

    def _refresh_recent(self) -> None:
        self._recent_menu.clear()
        recent = load_recent()
        for p in recent:
            action = self._recent_menu.addAction(str(p))
            action.triggered.connect(lambda _=False, p=p: self.open(p))
        self._recent_menu.setEnabled(bool(recent))

    # ---- status bar ----------------------------------------------------------------------
    def image_layer(self) -> Any | None:
        return self.dock.image_layer()

    def _mouse_moved(self, viewer: Any, event: Any) -> None:
        self._cursor_world = tuple(float(v) for v in event.position)
        self._update_status()

    def _zoom_changed(self, event: Any = None) -> None:
        self._update_status()

    def _update_status(self) -> None:
        layer = self.image_layer()
        if layer is None:
            self.status_label.setText("")
            return
        world = self._cursor_world or tuple(float(v) for v in camera(self.viewer).center)
        text = describe_position(layer.metadata[SOURCE_KEY], layer.metadata[FRAME_KEY], world,
                                 float(camera(self.viewer).zoom))
        self.status_label.setText(text)

    def close(self) -> None:
        self.dock.shutdown()
        self.viewer.close()


def open_viewer(path: Path | None = None, plugin: str | None = None, live: bool = False) -> int:
    """Open the Tessera window (optionally on ``path``, with ``plugin`` chosen and its live
    overlay on) and block until it is closed; returns the exit code."""
    import napari

    window = TesseraWindow()
    if plugin:
        try:
            window.dock.select_plugin(plugin)
        except Exception as exc:
            notify_error(str(exc))
    if path is not None:
        window.open(path)
        if live and plugin:
            window.dock.set_live(True)
    napari.run()
    window.dock.shutdown(timeout=5)
    return 0
