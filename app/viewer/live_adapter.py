"""The thin Qt adapter between napari and ``LiveOverlay`` (pipelines/live).

Everything slow happens in the controller's worker threads. This adapter only
- turns camera changes into ``LiveOverlay.set_view`` calls (debounced, cheap),
- receives the controller's updates through the ``UiQueue`` (run in the UI thread),
  writes them into the ``OverlayRaster`` and repaints at most every ``repaint_ms``,
- owns two napari layers placed exactly over the slide: a probability heatmap of the
  positive class (transparent at 0, the class colour at 1) and a Labels layer of the
  argmax class with per-class colours and visibility.
Errors from the workers arrive the same way and become napari notifications.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import numpy as np
from qtpy.QtCore import QObject, QTimer, Signal

from tessera.app.viewer.compat import camera, canvas_size_hw
from tessera.app.viewer.frame import SourceFrame, view_box
from tessera.app.viewer.layers import FRAME_KEY, SOURCE_KEY
from tessera.app.viewer.tasks import preload_modules, ui_queue
from tessera.pipelines.live import LiveOverlay, OverlayRaster, OverlayUpdate, ViewBox

log = logging.getLogger(__name__)

OVERLAY_KEY = "tessera_overlay"


def hex_rgba(colour: str, alpha: float = 1.0) -> list[float]:
    c = colour.lstrip("#")
    return [int(c[i : i + 2], 16) / 255.0 for i in (0, 2, 4)] + [alpha]


class LiveOverlayAdapter(QObject):
    """Drives one ``LiveOverlay`` for one image layer in one napari viewer.

    Signals (UI thread): ``progress(done, total)`` for the visible tiles,
    ``view_complete(generation)``, ``error(str)``.
    """

    progress = Signal(int, int)
    view_complete = Signal(int)
    error = Signal(str)

    def __init__(
        self,
        viewer: Any,
        image_layer: Any,
        plugin: Any,
        *,
        follow_camera: bool = True,
        opacity: float = 0.6,
        repaint_ms: int = 100,
        debounce_ms: int = 40,
        **live_kwargs: Any,
    ) -> None:
        super().__init__()
        self.viewer = viewer
        self.image_layer = image_layer
        self.source = image_layer.metadata[SOURCE_KEY]
        self.frame: SourceFrame = image_layer.metadata[FRAME_KEY]
        self.plugin = plugin
        self.follow_camera = follow_camera
        self.opacity = float(opacity)
        preload_modules()  # never let a worker thread be the first to import a module
        ui = ui_queue()  # worker threads post here; the UI thread runs the calls
        self.live = LiveOverlay(self.source, plugin,
                                on_update=lambda u: ui.post(self._on_update, u),
                                on_error=lambda e: ui.post(self._on_failure, e), **live_kwargs)
        self.model = self.live.model
        self.raster: OverlayRaster | None = None
        self.heat_layer: Any = None
        self.labels_layer: Any = None
        self.class_visible = [True] * len(self.model.classes)
        self.class_colours = [c for _, c in self.model.classes]
        self._heat: np.ndarray | None = None
        self._dirty = False
        self._last_view: ViewBox | None = None
        self.repaints = 0
        self.last_complete_s: float | None = None
        self._view_changed_at: float | None = None
        self._closed = False
        self._errors_shown: set[str] = set()

        self._repaint_timer = QTimer(self)
        self._repaint_timer.setInterval(int(repaint_ms))
        self._repaint_timer.timeout.connect(self._repaint_tick)
        self.repaint_ms = int(repaint_ms)
        self._last_tick: float | None = None
        self._late_ema_ms = 0.0
        self._view_timer = QTimer(self)
        self._view_timer.setSingleShot(True)
        self._view_timer.setInterval(int(debounce_ms))
        self._view_timer.timeout.connect(self.push_view)

    # ---- lifetime ------------------------------------------------------------------
    def start(self) -> LiveOverlayAdapter:
        if self.follow_camera:
            camera(self.viewer).events.center.connect(self._camera_moved)
            camera(self.viewer).events.zoom.connect(self._camera_moved)
        self.live.start()
        self.push_view()
        self._repaint_timer.start()
        return self

    def close(self) -> None:
        """Stop following the camera and stop the workers (layers stay until removed)."""
        self._closed = True
        self._repaint_timer.stop()
        self._view_timer.stop()
        if self.follow_camera:
            for ev in (camera(self.viewer).events.center, camera(self.viewer).events.zoom):
                with contextlib.suppress(RuntimeError, TypeError, ValueError):
                    ev.disconnect(self._camera_moved)
        self.live.close()

    def remove_layers(self) -> None:
        for layer in (self.heat_layer, self.labels_layer):
            if layer is not None and layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self.heat_layer = self.labels_layer = None

    # ---- camera ----------------------------------------------------------------------
    def _camera_moved(self, event: Any = None) -> None:
        self._view_timer.start()  # restarts: one set_view per burst of camera events

    def current_view(self) -> ViewBox:
        """The level-0 box the canvas shows now."""
        h, w = canvas_size_hw(self.viewer)
        centre = tuple(camera(self.viewer).center[-2:])
        return view_box(self.frame, centre, float(camera(self.viewer).zoom), (int(h), int(w)))

    def push_view(self, view: ViewBox | None = None) -> int:
        """Tell the controller what is in view (now, or ``view``); returns its generation."""
        view = view or self.current_view()
        self._last_view = view
        self._view_changed_at = time.perf_counter()
        return self.live.set_view(view)

    # ---- updates (UI thread) -------------------------------------------------------------
    def _on_update(self, update: OverlayUpdate) -> None:
        if self._closed:
            return  # posted before close, delivered after: nothing to paint any more
        if update.kind == "ready":
            self._create_layers()
        if self.raster is None:
            return
        if update.kind == "view-complete":
            self._repaint(thumbnail=True)
            if self._view_changed_at is not None:
                self.last_complete_s = time.perf_counter() - self._view_changed_at
            self.progress.emit(update.view_done, update.view_total)
            self.view_complete.emit(update.generation)
            return
        box = self.raster.apply(update)
        if box is not None and self._heat is not None and self.model.positive_index is not None:
            y0, x0, y1, x1 = box
            probs = self.raster.probs[self.model.positive_index, y0:y1, x0:x1]
            self._heat[y0:y1, x0:x1] = np.nan_to_num(probs, nan=0.0)
        self._dirty = True
        if update.kind == "tiles":
            self.progress.emit(update.view_done, update.view_total)

    def _on_failure(self, exc: BaseException) -> None:
        if self._closed:
            return
        message = f"{self.model.id}: {exc}"
        if message in self._errors_shown:
            return  # every failing batch says the same: tell the user once
        self._errors_shown.add(message)
        self.error.emit(message)
        try:
            from napari.utils.notifications import show_error

            show_error(message)
        except Exception:  # notifications are best effort
            log.error(message)

    def _repaint_tick(self) -> None:
        """The repaint timer: repaint, and space repaints by how busy the UI thread is.

        A timer that fires late measures the UI thread's load (mostly drawing frames:
        a few ms on a GPU, ~100-300 ms under software OpenGL). Repaints are then spaced
        to at least 3x that lateness, so the overlay never takes more than about a
        quarter of the UI thread whatever the renderer, and the user's pans get the rest.
        """
        now = time.perf_counter()
        if self._last_tick is not None:
            late = max(0.0, (now - self._last_tick) * 1000 - self._repaint_timer.interval())
            self._late_ema_ms = 0.7 * self._late_ema_ms + 0.3 * late
            interval = int(min(1000, max(self.repaint_ms, 3 * self._late_ema_ms)))
            if abs(interval - self._repaint_timer.interval()) > 10:
                self._repaint_timer.setInterval(interval)
        self._repaint()
        self._last_tick = time.perf_counter()

    def _repaint(self, thumbnail: bool = False) -> None:
        """Redraw the overlay layers if results arrived (at most every ``repaint_ms``);
        the layer-list thumbnails only when a view completes (they cost a repaint of
        the layer list each)."""
        if not self._dirty and not thumbnail:
            return
        self._dirty = False
        self.repaints += 1
        for layer in (self.heat_layer, self.labels_layer):
            if layer is not None:
                layer.refresh(thumbnail=thumbnail)

    # ---- layers ----------------------------------------------------------------------
    def _create_layers(self) -> None:
        from napari.utils.colormaps import Colormap

        grid = self.live.grid
        assert grid is not None
        self.raster = OverlayRaster(grid, self.model)
        scale, translate = self.frame.raster_placement(self.raster.l0_per_px_yx)
        base = {"scale": scale, "translate": translate, "units": (self.frame.pint_unit,) * 2,
                "metadata": {OVERLAY_KEY: self}}
        pos = self.model.positive_index
        name = self.model.id
        if pos is not None:
            self._heat = np.zeros(self.raster.shape_yx, dtype=np.float32)
            colour = self.class_colours[pos]
            cmap = Colormap(colors=[hex_rgba(colour, 0.0), hex_rgba(colour, 1.0)], controls=[0.0, 1.0],
                            name=f"tessera-{name}-{pos}")
            self.heat_layer = self.viewer.add_image(
                self._heat, name=f"{name}: {self.model.class_names[pos]} probability", colormap=cmap,
                contrast_limits=(0.0, 1.0), opacity=self.opacity, blending="translucent",
                interpolation2d="nearest", **base)
        self.labels_layer = self.viewer.add_labels(
            self.raster.labels, name=f"{name}: classes", opacity=self.opacity * 0.8,
            visible=pos is None, **base)
        self.apply_class_style()
        # keep the image layer selected: the overlay must not steal the user's tools
        self.viewer.layers.selection.active = self.image_layer

    def apply_class_style(self) -> None:
        """Colours and visibility of the classes on both layers."""
        from napari.utils.colormaps import Colormap, DirectLabelColormap

        if self.labels_layer is not None:
            colors: dict[int | None, Any] = {0: [0, 0, 0, 0], None: [0, 0, 0, 0]}
            for k, colour in enumerate(self.class_colours):
                colors[k + 1] = hex_rgba(colour, 1.0 if self.class_visible[k] else 0.0)
            self.labels_layer.colormap = DirectLabelColormap(color_dict=colors)
        pos = self.model.positive_index
        if self.heat_layer is not None and pos is not None:
            colour = self.class_colours[pos]
            self.heat_layer.colormap = Colormap(
                colors=[hex_rgba(colour, 0.0), hex_rgba(colour, 1.0)], controls=[0.0, 1.0],
                name=f"tessera-{self.model.id}-{pos}-{colour}")
            self.heat_layer.visible = self.class_visible[pos] and self.heat_layer.visible

    def set_opacity(self, opacity: float) -> None:
        self.opacity = float(opacity)
        if self.heat_layer is not None:
            self.heat_layer.opacity = self.opacity
        if self.labels_layer is not None:
            self.labels_layer.opacity = self.opacity * 0.8

    def set_class_visible(self, index: int, visible: bool) -> None:
        self.class_visible[index] = bool(visible)
        self.apply_class_style()

    def set_class_colour(self, index: int, colour: str) -> None:
        self.class_colours[index] = colour
        self.apply_class_style()
