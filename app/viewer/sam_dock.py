"""The SAM prompt dock: click or drag a box, see the mask, commit it (micro-sam's keys).

Keys (on the viewer): S segment now, C commit, Shift+C clear prompts, T toggle the label
of new points (positive/negative). Positive points are green, negative red; a rectangle
in the "SAM box" layer is the box prompt. Every change of the prompts re-runs the
decoder in a worker thread (latest prompts win); the encoder runs only when the prompts
leave the region already encoded (the view, at the level that matches the screen).
Committed masks go to a labels layer and, as polygons, to the Annotations layer. On a
CT volume the tool prompts the current slice; "Extend" carries the last committed mask
to neighbouring slices.

The logic is ``prompt_tool.PromptTool`` (no Qt); this is its thin widget.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from tessera.app.viewer.compat import camera, canvas_size_hw
from tessera.app.viewer.dock import add_annotation_features, notify_error, tessera_image_layer
from tessera.app.viewer.frame import view_box
from tessera.app.viewer.layers import FRAME_KEY, SOURCE_KEY
from tessera.app.viewer.prompt_tool import PromptTool, level_for_screen, placement
from tessera.app.viewer.tasks import BackgroundTask, preload_modules

log = logging.getLogger(__name__)

POSITIVE = "#2ecc40"
NEGATIVE = "#ff4136"


def default_session(plugin: Any = "sam") -> Any:
    """A PromptSession on a prompt-segment plugin (id or Plugin)."""
    from tessera.pipelines.prompting.session import PromptSession

    return PromptSession.from_plugin(plugin)


class SamDock(QWidget):
    """Prompt segmentation on the active Tessera image."""

    def __init__(self, viewer: Any, *, session_factory: Callable[[], Any] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self._session_factory = session_factory
        self._plugin: Any = None
        self.tool: PromptTool | None = None
        self._image: Any = None
        self.points_layer: Any = None
        self.box_layer: Any = None
        self.preview_layer: Any = None
        self.masks_layer: Any = None
        self._masks_window: Any = None
        self._task: BackgroundTask | None = None
        self._warm: BackgroundTask | None = None  # encodes the rest of the view after a first prompt
        self._pending = False
        self.last_timing: dict[str, float] = {}
        self.positive = True
        self._build()
        self._bind_keys()

    # ---- layout --------------------------------------------------------------------
    def _build(self) -> None:
        root = QVBoxLayout(self)
        form = QFormLayout()
        self.model_combo = QComboBox()
        self._fill_models()
        form.addRow("Model", self.model_combo)
        self.label_button = QPushButton()
        self.label_button.clicked.connect(self.toggle_label)
        form.addRow("New points (T)", self.label_button)
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("name of the next commit")
        form.addRow("Name", self.name_edit)
        self.class_edit = QLineEdit("SAM")
        form.addRow("Class", self.class_edit)
        root.addLayout(form)
        row = QHBoxLayout()
        for text, slot in (("Segment (S)", self.segment), ("Commit (C)", self.commit),
                           ("Clear (Shift+C)", self.clear)):
            b = QPushButton(text)
            b.clicked.connect(slot)
            row.addWidget(b)
        root.addLayout(row)
        ext = QHBoxLayout()
        self.extend_slices = QSpinBox()
        self.extend_slices.setRange(1, 500)
        self.extend_slices.setValue(10)
        self.extend_button = QPushButton("Extend to ± slices")
        self.extend_button.clicked.connect(self.extend)
        ext.addWidget(self.extend_button)
        ext.addWidget(self.extend_slices)
        root.addLayout(ext)
        self.status = QLabel("Add points (click in the SAM prompts layer) or draw a box.")
        self.status.setWordWrap(True)
        root.addWidget(self.status)
        root.addStretch(1)
        self._show_label()

    def _fill_models(self) -> None:
        try:
            from tessera.pipelines.plugin_system import list_plugins

            for p in list_plugins():
                if p.manifest.task == "prompt-segment":
                    self.model_combo.addItem(f"{p.manifest.name} ({p.id})", p.id)
        except Exception as exc:
            log.warning("cannot list plugins: %s", exc)

    def select_plugin(self, plugin: Any) -> None:
        """Use ``plugin`` (id or Plugin, task prompt-segment) for the next image."""
        pid = plugin if isinstance(plugin, str) else plugin.id
        if self.model_combo.findData(pid) < 0:
            name = pid if isinstance(plugin, str) else plugin.manifest.name
            self.model_combo.addItem(f"{name} ({pid})", pid)
        self.model_combo.setCurrentIndex(self.model_combo.findData(pid))
        self._plugin = plugin
        self.tool = None  # a new session on the next prompt

    def _bind_keys(self) -> None:
        bindings = {"s": self.segment, "c": self.commit, "Shift-C": self.clear, "t": self.toggle_label}
        for key, fn in bindings.items():
            self.viewer.bind_key(key, lambda _viewer, fn=fn: fn(), overwrite=True)

    def _show_label(self) -> None:
        colour = POSITIVE if self.positive else NEGATIVE
        self.label_button.setText("positive" if self.positive else "negative")
        self.label_button.setStyleSheet(f"color: {colour}; font-weight: bold")

    # ---- layers ----------------------------------------------------------------------
    def attach(self) -> bool:
        """Bind to the active Tessera image: make the prompt layers and the tool."""
        image = tessera_image_layer(self.viewer)
        if image is None:
            notify_error("open an image first")
            return False
        if image is self._image and self.tool is not None:
            return True
        if self.points_layer is not None and self.points_layer in self.viewer.layers:
            for layer in (self.points_layer, self.box_layer):
                self.viewer.layers.remove(layer)
        self.stop_warming()
        self._image = image
        source = image.metadata[SOURCE_KEY]
        chosen = self._plugin if self._plugin is not None else (self.model_combo.currentData() or "sam")
        session = self._session_factory() if self._session_factory else default_session(chosen)
        window = None
        if not source.is_rgb and "Z" in source.axes:
            from tessera.app.viewer.layers import intensity_window

            window = intensity_window(source)
        self.tool = PromptTool(session, source, value_window=window)
        scale = tuple(image.scale)
        self.points_layer = self.viewer.add_points(
            np.zeros((0, len(scale))), name="SAM prompts", scale=scale, size=10 / max(float(camera(self.viewer).zoom), 1e-9),
            features={"positive": np.zeros(0, bool)}, face_color="positive",
            face_color_cycle=[NEGATIVE, POSITIVE], border_color="white")
        self.points_layer.feature_defaults["positive"] = self.positive
        self.box_layer = self.viewer.add_shapes(name="SAM box", scale=scale, edge_color="#ffd400",
                                                face_color=[0, 0, 0, 0], edge_width=2, ndim=len(scale))
        self.points_layer.events.data.connect(self._prompts_changed)
        self.box_layer.events.data.connect(self._prompts_changed)
        self.viewer.layers.selection.active = self.points_layer
        self.points_layer.mode = "add"
        return True

    def _prompts_l0(self) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, int | None]:
        """(points (N, 2) x,y; labels (N,); box x0,y0,x1,y1; z) in level-0 pixel indices."""
        z = None
        if self.tool is not None and self.tool.is_volume:
            z = int(self.viewer.dims.current_step[0])
        pts = labels = box = None
        if self.points_layer is not None and len(self.points_layer.data):
            data = np.asarray(self.points_layer.data)
            if z is not None:  # only this slice's points
                keep = np.round(data[:, 0]).astype(int) == z
                data = data[keep]
                lab = np.asarray(self.points_layer.features["positive"])[keep]
            else:
                lab = np.asarray(self.points_layer.features["positive"])
            if len(data):
                pts = data[:, [-1, -2]]
                labels = lab.astype(np.int64)
        if self.box_layer is not None and len(self.box_layer.data):
            b = np.asarray(self.box_layer.data[-1])[:, -2:]
            box = np.array([b[:, 1].min(), b[:, 0].min(), b[:, 1].max(), b[:, 0].max()])
        return pts, labels, box, z

    # ---- actions -----------------------------------------------------------------------
    def toggle_label(self) -> None:
        self.positive = not self.positive
        if self.points_layer is not None:
            self.points_layer.feature_defaults["positive"] = self.positive
        self._show_label()

    def _prompts_changed(self, event: Any = None) -> None:
        self.segment()

    def segment(self) -> None:
        """Run the decoder on the current prompts (encoding the region first if needed)."""
        if not self.attach():
            return
        if self._task is not None and self._task.running:
            self._pending = True  # latest prompts win: rerun when this one returns
            return
        pts, labels, box, z = self._prompts_l0()
        if pts is None and box is None:
            self._show_preview(None)
            return
        source = self.tool.source
        frame = self._image.metadata[FRAME_KEY]
        cam = camera(self.viewer)
        vb = view_box(frame, tuple(cam.center[-2:]), float(cam.zoom), canvas_size_hw(self.viewer))
        l0_per_screen = 1.0 / (float(cam.zoom) * frame.yx_spacing[0])
        level = 0 if self.tool.is_volume else level_for_screen(source, l0_per_screen)
        prompts = np.concatenate([a for a in (pts, None if box is None else box.reshape(2, 2)) if a is not None])
        tool = self.tool
        preload_modules(("tessera.pipelines.prompting.session", "scipy.ndimage"))

        def work() -> tuple[Any, bool, float]:
            t0 = time.perf_counter()
            encoded = tool.ensure_region((vb.l0_x0, vb.l0_y0, vb.l0_x1, vb.l0_y1), level, z, prompts_l0_xy=prompts)
            result = tool.predict(pts, labels, box)
            return result, encoded, time.perf_counter() - t0

        self._task = BackgroundTask(work, name="tessera-sam")
        self._task.finished.connect(self._predicted)
        self._task.failed.connect(self._failed)
        self.status.setText("encoding the view…" if self.tool.session.region is None else "segmenting…")
        self._task.start()

    def _predicted(self, out: tuple[Any, bool, float]) -> None:
        result, encoded, wall = out
        self.last_timing = {"decode_ms": result.decode_s * 1000, "encode_s": result.encode_s, "wall_s": wall}
        self._show_preview(result)
        enc = f", encoded its window in {result.encode_s:.1f} s" if encoded else ""
        self.status.setText(f"score {result.score:.2f} · decoder {result.decode_s * 1000:.0f} ms{enc}")
        if encoded and self.tool is not None:
            self._warm_view()
        if self._pending:
            self._pending = False
            self.segment()

    def _warm_view(self) -> None:
        """Encode the view's other windows in a worker thread, so prompts elsewhere in
        the view need only the decoder; a newer region stops the previous warm-up."""
        self.stop_warming()
        tool = self.tool
        task = BackgroundTask(lambda: tool.warm(task.cancel), name="tessera-sam-warm")
        task.failed.connect(lambda exc: log.debug("warming the view failed: %s", exc))
        self._warm = task.start()

    def stop_warming(self) -> None:
        if self._warm is not None:
            self._warm.cancel.set()
            self._warm = None

    def _failed(self, exc: BaseException) -> None:
        self._pending = False
        self.status.setText(f"error: {exc}")
        notify_error(f"SAM: {exc}")

    def _mask_layer_kwargs(self, window: Any, z: int | None) -> dict[str, Any]:
        frame = self._image.metadata[FRAME_KEY]
        scale, translate = placement(window, frame)
        if z is None:
            return {"scale": scale, "translate": translate}
        sz = frame.spacing[0]
        return {"scale": (sz, *scale), "translate": (z * sz, *translate)}

    def _show_preview(self, result: Any) -> None:
        if result is None:
            if self.preview_layer is not None:
                self.preview_layer.data = np.zeros_like(self.preview_layer.data)
            return
        mask = result.mask.mask.astype(np.uint8)
        z = self.tool.session.z if self.tool.is_volume else None
        data = mask[None] if z is not None else mask
        kw = self._mask_layer_kwargs(result.mask.window, z)
        if self.preview_layer is None or self.preview_layer not in self.viewer.layers \
                or self.preview_layer.data.ndim != data.ndim:
            self.preview_layer = self.viewer.add_labels(data, name="SAM preview", opacity=0.5, **kw)
            self.viewer.layers.selection.active = self.points_layer
        else:
            self.preview_layer.data = data
            self.preview_layer.scale, self.preview_layer.translate = kw["scale"], kw["translate"]

    def commit(self) -> Any:
        """Keep the preview: a new label in "SAM masks" and polygons in Annotations."""
        if self.tool is None:
            return None
        c = self.tool.commit(self.name_edit.text(), self.class_edit.text() or "SAM")
        if c is None:
            self.status.setText("nothing to commit: segment first")
            return None
        self._paint_commit(c.label, c.result, c.z)
        frame = self._image.metadata[FRAME_KEY]
        add_annotation_features(self.viewer, frame, c.result.mask.to_features(
            class_name=c.class_name, name=c.name, measurements={"sam_score": float(c.result.score)}))
        self.name_edit.clear()
        self.clear()
        self.status.setText(f"committed {c.name}")
        return c

    def _paint_commit(self, label: int, result: Any, z: int | None) -> None:
        window = result.mask.window
        if z is not None:  # volume: one labels layer over the whole volume at this level
            shape = tuple(self.tool.source.spatial_shape(window.level))
            if self.masks_layer is None or self.masks_layer not in self.viewer.layers:
                from tessera.pipelines.prompting.regions import whole_level

                full = whole_level(self.tool.source, window.level)
                frame = self._image.metadata[FRAME_KEY]
                scale, translate = placement(full, frame)
                self.masks_layer = self.viewer.add_labels(
                    np.zeros(shape, np.uint16), name="SAM masks", opacity=0.6,
                    scale=(frame.spacing[0], *scale), translate=(0.0, *translate))
                self._masks_window = full
            plane = result.mask.paste(self._masks_window)
            self.masks_layer.data[z][plane] = label
            self.masks_layer.refresh()
            return
        region = self.tool.session.region
        if self.masks_layer is None or self.masks_layer not in self.viewer.layers or self._masks_window != region:
            kw = self._mask_layer_kwargs(region, None)
            self.masks_layer = self.viewer.add_labels(np.zeros(region.lvl_hw, np.uint16), name="SAM masks",
                                                      opacity=0.6, **kw)
            self._masks_window = region
        self.masks_layer.data[result.mask.paste(region)] = label
        self.masks_layer.refresh()
        self.viewer.layers.selection.active = self.points_layer

    def clear(self) -> None:
        """Forget the prompts and the preview (committed masks stay)."""
        if self.tool is not None:
            self.tool.clear()
        for layer in (self.points_layer, self.box_layer):
            if layer is not None and len(layer.data):
                with layer.events.data.blocker():
                    layer.data = np.zeros((0, layer.ndim)) if layer is self.points_layer else []
        self._show_preview(None)

    def extend(self) -> BackgroundTask | None:
        """Carry the last committed CT mask to ± N neighbouring slices (worker thread)."""
        if self.tool is None or not self.tool.commits or not self.tool.is_volume:
            notify_error("commit a mask on a CT slice first")
            return None
        commit = self.tool.commits[-1]
        n = self.extend_slices.value()
        tool = self.tool

        task = BackgroundTask(lambda: tool.extend(commit, n), name="tessera-sam-extend")
        task.finished.connect(lambda results, label=commit.label: self._extended(label, results))
        task.failed.connect(self._failed)
        self._task = task
        self.status.setText(f"extending {commit.name} to ±{n} slices…")
        return task.start()

    def _extended(self, label: int, results: dict[int, Any]) -> None:
        for z, result in results.items():
            self._paint_commit(label, result, z)
        zs = sorted(results)
        self.status.setText(f"mask {label} on slices {zs[0]}..{zs[-1]} ({len(zs)} slices)")
