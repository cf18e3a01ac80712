"""The Tessera dock: pick a model, read its card, run it, watch it live, export, annotate.

- Model: every plugin the registry knows (no torch import), with its model card summary
  (task, resolution, classes and colours, intended use).
- Run on view / on the whole image: the view through the live overlay controller (one
  shot, the visible tiles only); the whole image through the batch runner of the task
  kind in a worker thread (progress bar, Cancel), its outputs written where the live
  overlay finds and reuses them (``tessera-results/<stem>-<plugin>/`` next to the file,
  or Tessera's cache folder when that is not writable).
- Live overlay: follows the camera (``LiveOverlayAdapter``); opacity; per-class
  visibility and colour.
- Export what is shown: OME-Zarr, QuPath GeoJSON, PNG preview.
- Annotations: a Shapes layer with name and class per shape; prediction contours to
  annotations; GeoJSON import/export in QuPath's format.
Worker errors arrive as signals and become notifications; the dock keeps working.
"""

from __future__ import annotations

import html
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QCheckBox,
    QColorDialog,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from tessera.app.viewer import annotation_shapes as ann
from tessera.app.viewer.layers import FRAME_KEY, SOURCE_KEY
from tessera.app.viewer.live_adapter import LiveOverlayAdapter
from tessera.app.viewer.tasks import BackgroundTask, QtProgress, preload_modules
from tessera.pipelines.live import LIVE_TASKS

log = logging.getLogger(__name__)

ANNOTATION_LAYER = "Annotations"
#: What each task kind's runner imports lazily (imported in the UI thread before a run).
_TASK_MODULES: dict[str, tuple[str, ...]] = {
    "segment-3d": ("nibabel", "tessera.pipelines.runners.segment_3d", "tessera.pipelines.writers.nifti"),
    "detect-classify": ("astropy.io.fits", "astropy.wcs", "sep", "h5py", "tessera.pipelines.runners.detect_classify"),
    "spectra-regress": ("h5py", "tessera.pipelines.runners.spectra_regress"),
    "prompt-segment": ("tessera.pipelines.runners.prompt_segment",),
}


def notify_error(message: str) -> None:
    """A napari error notification (falls back to the log without a viewer)."""
    try:
        from napari.utils.notifications import show_error

        show_error(message)
    except Exception:
        log.error(message)


def notify_info(message: str) -> None:
    try:
        from napari.utils.notifications import show_info

        show_info(message)
    except Exception:
        log.info(message)


def results_dir(source_path: Path, plugin_id: str) -> Path:
    """Where the dock writes a whole-image run: next to the file when that folder is
    writable (``tessera run`` users find it there too), else Tessera's cache."""
    from tessera.pipelines.plugin_system import cache_dir

    name = Path(source_path).name.split(".")[0] or "image"
    parent = Path(source_path).parent
    if os.access(parent, os.W_OK):
        return parent / "tessera-results" / f"{name}-{plugin_id}"
    import hashlib

    digest = hashlib.sha256(str(Path(source_path).resolve()).encode()).hexdigest()[:12]
    return cache_dir("runs", digest) / f"{name}-{plugin_id}"


def model_card_html(plugin: Any) -> str:
    """A short, escaped summary of a plugin's manifest for the dock."""
    m = plugin.manifest
    e = html.escape
    lines = [f"<b>{e(m.name)}</b> <small>{e(m.id)} {e(m.version)} · {e(m.task)}</small>"]
    if m.summary:
        lines.append(e(m.summary))
    spec = m.input
    geo = []
    if getattr(spec, "size_px", None):
        geo.append("x".join(str(s) for s in spec.size_px) + " px")
    if getattr(spec, "mpp", None):
        geo.append(f"at {spec.mpp:g} µm/px")
    if getattr(spec, "target_spacing_mm", None):
        geo.append("at " + "x".join(f"{s:g}" for s in spec.target_spacing_mm) + " mm")
    if geo:
        lines.append("Input: " + " ".join(geo))
    classes = getattr(m.output, "classes", None) or []
    if classes:
        chips = " ".join(f"<span style='color:{e(c.colour)}'>■</span> {e(c.name)}" for c in classes)
        lines.append("Classes: " + chips)
    if not m.files:
        lines.append("<span style='color:#e06c00'>No model files shipped yet: this plugin cannot run.</span>")
    if m.intended_use:
        lines.append(f"<i>{e(m.intended_use)}</i>")
    return "<br>".join(lines)


class TesseraDock(QWidget):
    """The main dock. Public methods are what the buttons do (tests call them)."""

    def __init__(self, viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.adapter: LiveOverlayAdapter | None = None
        self.task: BackgroundTask | None = None
        self.last_run: dict[str, Any] | None = None
        self._live_error_text = ""
        self._plugins: dict[str, Any] = {}
        self._build()
        self.refresh_plugins()
        viewer.layers.selection.events.active.connect(self._active_changed)
        viewer.layers.events.removed.connect(self._layer_removed)
        self._active_changed()

    # ---- layout ----------------------------------------------------------------------
    def _build(self) -> None:
        root = QVBoxLayout(self)
        self.image_label = QLabel("Open an image (File > Open, or drop a file)")
        self.image_label.setWordWrap(True)
        root.addWidget(self.image_label)

        model_box = QGroupBox("Model")
        form = QVBoxLayout(model_box)
        self.plugin_combo = QComboBox()
        self.plugin_combo.currentIndexChanged.connect(self._plugin_changed)
        form.addWidget(self.plugin_combo)
        self.card = QLabel()
        self.card.setWordWrap(True)
        self.card.setTextFormat(Qt.TextFormat.RichText)
        form.addWidget(self.card)
        row = QHBoxLayout()
        self.run_view_button = QPushButton("Run on view")
        self.run_view_button.clicked.connect(self.run_on_view)
        self.run_all_button = QPushButton("Run on whole image")
        self.run_all_button.clicked.connect(self.run_whole_image)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        for b in (self.run_view_button, self.run_all_button, self.cancel_button):
            row.addWidget(b)
        form.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        form.addWidget(self.progress)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        form.addWidget(self.status)
        root.addWidget(model_box)

        overlay_box = QGroupBox("Overlay")
        oform = QFormLayout(overlay_box)
        self.live_check = QCheckBox("Live overlay (follows the view)")
        self.live_check.toggled.connect(self.set_live)
        oform.addRow(self.live_check)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(60)
        self.opacity.valueChanged.connect(self._opacity_changed)
        oform.addRow("Opacity", self.opacity)
        self.classes_box = QWidget()
        self.classes_layout = QVBoxLayout(self.classes_box)
        self.classes_layout.setContentsMargins(0, 0, 0, 0)
        oform.addRow(self.classes_box)
        erow = QHBoxLayout()
        for label, fmt in (("OME-Zarr…", "zarr"), ("GeoJSON…", "geojson"), ("PNG…", "png")):
            b = QPushButton(label)
            b.clicked.connect(lambda _=False, f=fmt: self._export_dialog(f))
            erow.addWidget(b)
        oform.addRow("Export", erow)
        root.addWidget(overlay_box)

        ann_box = QGroupBox("Annotations")
        aform = QFormLayout(ann_box)
        self.ann_name = QLineEdit()
        self.ann_name.setPlaceholderText("name of the selected shapes")
        self.ann_class = QComboBox()
        self.ann_class.setEditable(True)
        apply = QPushButton("Apply to selected")
        apply.clicked.connect(self.classify_selected)
        aform.addRow("Name", self.ann_name)
        aform.addRow("Class", self.ann_class)
        aform.addRow(apply)
        brow = QHBoxLayout()
        new = QPushButton("Draw")
        new.clicked.connect(self.draw_annotation)
        contours = QPushButton("Contours → annotations")
        contours.clicked.connect(self.contours_to_annotations)
        brow.addWidget(new)
        brow.addWidget(contours)
        aform.addRow(brow)
        io_row = QHBoxLayout()
        imp = QPushButton("Import GeoJSON…")
        imp.clicked.connect(lambda: self._annotation_dialog(save=False))
        exp = QPushButton("Export GeoJSON…")
        exp.clicked.connect(lambda: self._annotation_dialog(save=True))
        io_row.addWidget(imp)
        io_row.addWidget(exp)
        aform.addRow(io_row)
        root.addWidget(ann_box)
        root.addStretch(1)

    # ---- image and plugin --------------------------------------------------------------
    def image_layer(self) -> Any | None:
        """The image the dock works on: the active layer if it is a Tessera image, else
        the top-most Tessera image."""
        return tessera_image_layer(self.viewer)

    def _active_changed(self, event: Any = None) -> None:
        layer = self.image_layer()
        if layer is None:
            self.image_label.setText("Open an image (File > Open, or drop a file)")
            return
        src = layer.metadata[SOURCE_KEY]
        shape = " x ".join(str(s) for s in src.spatial_shape(0))
        spacing = "" if src.spacing is None else f", {src.spacing[-1]:.4g} {src.spacing_unit}/px"
        self.image_label.setText(f"<b>{html.escape(layer.name)}</b><br>{html.escape(src.format)}, "
                                 f"{shape} px{html.escape(spacing)}, {len(src.levels)} levels")

    def _layer_removed(self, event: Any = None) -> None:
        if self.adapter is not None and self.adapter.image_layer not in self.viewer.layers:
            self.stop_overlay()

    def refresh_plugins(self) -> None:
        from tessera.pipelines.plugin_system import list_plugins

        self.plugin_combo.blockSignals(True)
        self.plugin_combo.clear()
        self._plugins.clear()
        try:
            plugins = list_plugins()
        except Exception as exc:
            notify_error(f"cannot list plugins: {exc}")
            plugins = []
        for p in sorted(plugins, key=lambda p: (p.manifest.task not in LIVE_TASKS, p.id)):
            self._plugins[p.id] = p
            self.plugin_combo.addItem(f"{p.manifest.name} ({p.manifest.task})", p.id)
        self.plugin_combo.blockSignals(False)
        self._plugin_changed()

    def select_plugin(self, plugin: Any) -> None:
        """Choose a plugin by id, or a Plugin object (registered or loaded from a folder)."""
        if not isinstance(plugin, str):
            self._plugins[plugin.id] = plugin
            if self.plugin_combo.findData(plugin.id) < 0:
                self.plugin_combo.addItem(f"{plugin.manifest.name} ({plugin.manifest.task})", plugin.id)
            plugin = plugin.id
        index = self.plugin_combo.findData(plugin)
        if index < 0:
            from tessera.pipelines.plugin_system import get_plugin

            p = get_plugin(plugin)
            self._plugins[p.id] = p
            self.plugin_combo.addItem(f"{p.manifest.name} ({p.manifest.task})", p.id)
            index = self.plugin_combo.count() - 1
        self.plugin_combo.setCurrentIndex(index)

    def plugin(self) -> Any | None:
        pid = self.plugin_combo.currentData()
        return self._plugins.get(pid) if pid else None

    def _plugin_changed(self, index: int = -1) -> None:
        p = self.plugin()
        self.card.setText(model_card_html(p) if p is not None else "No plugins installed.")
        live_ok = p is not None and p.manifest.task in LIVE_TASKS
        self.live_check.setEnabled(live_ok)
        self.run_view_button.setEnabled(live_ok)
        self._rebuild_class_rows()
        self.ann_class.clear()
        if p is not None:
            for c in getattr(p.manifest.output, "classes", None) or []:
                self.ann_class.addItem(c.name)
        if self.adapter is not None and (p is None or self.adapter.plugin.id != p.id):
            was_live = self.live_check.isChecked()
            self.stop_overlay()
            if was_live and live_ok:
                self.start_overlay(follow_camera=True)

    def _rebuild_class_rows(self) -> None:
        while self.classes_layout.count():
            item = self.classes_layout.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        p = self.plugin()
        self.class_checks: list[QCheckBox] = []
        self.class_buttons: list[QPushButton] = []
        for k, c in enumerate(getattr(p.manifest.output, "classes", None) or [] if p else []):
            row = QWidget()
            h = QHBoxLayout(row)
            h.setContentsMargins(0, 0, 0, 0)
            check = QCheckBox(c.name)
            check.setChecked(True)
            check.toggled.connect(lambda on, k=k: self.set_class_visible(k, on))
            button = QPushButton()
            button.setFixedWidth(40)
            button.setStyleSheet(f"background-color: {c.colour}")
            button.clicked.connect(lambda _=False, k=k: self._pick_colour(k))
            h.addWidget(check)
            h.addWidget(button)
            self.classes_layout.addWidget(row)
            self.class_checks.append(check)
            self.class_buttons.append(button)

    # ---- live overlay and runs -----------------------------------------------------------------
    def start_overlay(self, *, follow_camera: bool, reuse: Any = True) -> LiveOverlayAdapter | None:
        """(Re)start the overlay controller for the current image and plugin."""
        self.stop_overlay()
        layer, plugin = self.image_layer(), self.plugin()
        if layer is None or plugin is None:
            notify_error("open a 2D image and choose a tile-classify or segment-2d plugin first")
            return None
        try:
            search = [results_dir(layer.metadata[SOURCE_KEY].path, plugin.id).parent]
            reuse_arg = [*search, *(reuse if isinstance(reuse, list | tuple) else [])] if reuse is not False else False
            adapter = LiveOverlayAdapter(self.viewer, layer, plugin, follow_camera=follow_camera,
                                         opacity=self.opacity.value() / 100.0, reuse=reuse_arg)
        except Exception as exc:
            notify_error(str(exc))
            self.live_check.blockSignals(True)
            self.live_check.setChecked(False)
            self.live_check.blockSignals(False)
            return None
        adapter.progress.connect(self._live_progress)
        adapter.error.connect(self._live_error)
        for k, check in enumerate(getattr(self, "class_checks", [])):
            adapter.class_visible[k] = check.isChecked()
        self.adapter = adapter.start()
        self.status.setText("loading the model and the tissue mask…")
        return self.adapter

    def stop_overlay(self, *, remove_layers: bool = True) -> None:
        if self.adapter is None:
            return
        adapter, self.adapter = self.adapter, None
        adapter.close()
        if remove_layers:
            adapter.remove_layers()
        from tessera.pipelines.runners.base import release_free_memory

        release_free_memory()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)

    def set_live(self, on: bool) -> None:
        """Turn the live overlay on (follows the camera) or off (layers removed)."""
        if self.live_check.isChecked() != bool(on):
            self.live_check.blockSignals(True)
            self.live_check.setChecked(bool(on))
            self.live_check.blockSignals(False)
        if on:
            self.start_overlay(follow_camera=True)
        else:
            self.stop_overlay()

    def run_on_view(self) -> LiveOverlayAdapter | None:
        """Compute the visible tiles once (the overlay does not follow the camera)."""
        self.set_live(False)
        return self.start_overlay(follow_camera=False)

    def _live_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        if self.adapter is not None:
            s = self.adapter.live.stats
            extra = f"; reusing {Path(s.run_output).name}" if s.run_output else ""
            failed = f"; {s.failed} failed (error: {self._live_error_text})" if s.failed else ""
            self.status.setText(f"view: {done}/{total} tiles · computed {s.tiles_computed}, "
                                f"cached {s.cache_hits}{extra}{failed}")

    def _live_error(self, message: str) -> None:
        self._live_error_text = message
        self.status.setText(f"error: {message}")

    def run_whole_image(self) -> Any:
        """Run the plugin over the whole image: tile-classify and segment-2d through the
        batch runner in a worker thread (then shown as the overlay); other task kinds in
        their own dock (CT, SAM, galaxies, catalysts), which this opens."""
        layer, plugin = self.image_layer(), self.plugin()
        if plugin is not None and plugin.manifest.task not in LIVE_TASKS:
            dock = open_tool(self.viewer, plugin.manifest.task, plugin)
            if dock is not None:
                return dock.run() if hasattr(dock, "run") and plugin.manifest.task == "segment-3d" else dock
        if layer is None or plugin is None:
            notify_error("open an image and choose a plugin first")
            return None
        if self.task is not None and self.task.running:
            notify_error("a run is already in progress; cancel it first")
            return None
        from tessera.pipelines.runners.base import RunOptions
        from tessera.pipelines.runners.registry import runner_for

        source = layer.metadata[SOURCE_KEY]
        out_dir = results_dir(source.path, plugin.id)
        try:
            runner = runner_for(plugin.manifest.task)
        except Exception as exc:
            notify_error(str(exc))
            return None
        preload_modules(_TASK_MODULES.get(plugin.manifest.task, ()))
        reporter = QtProgress()
        reporter.changed.connect(self._run_progress)
        options = RunOptions()
        holder: dict[str, Any] = {}

        def work() -> dict[str, Any]:
            return runner(Path(source.path), plugin, out_dir, options=options, progress=reporter,
                          cancel=holder["task"].cancel)

        task = BackgroundTask(work, name=f"tessera-run-{plugin.id}")
        holder["task"] = task
        task.finished.connect(self._run_finished)
        task.failed.connect(self._run_failed)
        self.task = task
        self._reporter = reporter  # keep the QObject alive while the run reports
        self._run_context = (layer, plugin, out_dir)
        self.cancel_button.setEnabled(True)
        self.run_all_button.setEnabled(False)
        self.status.setText(f"running {plugin.id} on the whole image…")
        return task.start()

    def _run_progress(self, done: int, total: int, text: str) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(min(done, max(total, 1)))
        if text:
            self.status.setText(f"{text}: {done}/{total}")

    def _run_finished(self, summary: dict[str, Any]) -> None:
        self.cancel_button.setEnabled(False)
        self.run_all_button.setEnabled(True)
        self.last_run = summary
        layer, plugin, out_dir = self._run_context
        self.status.setText(f"finished: outputs in {out_dir}")
        notify_info(f"{plugin.id}: outputs in {out_dir}")
        task = plugin.manifest.task
        if task in LIVE_TASKS and layer in self.viewer.layers:
            self.start_overlay(follow_camera=self.live_check.isChecked(), reuse=[out_dir.parent])
            if self.adapter is not None and not self.live_check.isChecked():
                # show the whole image's results: the reused run fills every tile
                self.adapter.push_view(_whole_view(layer))
        elif task == "segment-3d":
            self._add_volume_labels(layer, plugin, out_dir, summary)

    def _run_failed(self, exc: BaseException) -> None:
        self.cancel_button.setEnabled(False)
        self.run_all_button.setEnabled(True)
        from tessera.pipelines.progress import Cancelled

        if isinstance(exc, Cancelled):
            self.status.setText("cancelled; finished tiles are kept and reused next time")
            return
        self.status.setText(f"failed: {exc}")
        notify_error(f"run failed: {exc}")

    def cancel(self) -> None:
        if self.task is not None and self.task.running:
            self.task.cancel.set()
            self.status.setText("cancelling…")
        if self.adapter is not None and not self.adapter.follow_camera:
            self.stop_overlay(remove_layers=False)

    def _add_volume_labels(self, layer: Any, plugin: Any, out_dir: Path, summary: dict[str, Any]) -> Any:
        import tessera

        path = out_dir / summary.get("outputs", {}).get("labels_nifti", "labels.nii.gz")
        try:
            labels = tessera.open(path)
        except Exception as exc:
            notify_error(f"cannot open the labels: {exc}")
            return None
        from napari.utils.colormaps import DirectLabelColormap

        from tessera.app.viewer.live_adapter import hex_rgba

        colors: dict[int | None, Any] = {None: [0, 0, 0, 0], 0: [0, 0, 0, 0]}
        for k, c in enumerate(plugin.manifest.output.classes):
            if k > 0:
                colors[k] = hex_rgba(c.colour)
        frame = layer.metadata[FRAME_KEY]
        return self.viewer.add_labels(np.asarray(labels.levels[0]), name=f"{plugin.id}: labels",
                                      scale=frame.spacing, colormap=DirectLabelColormap(color_dict=colors),
                                      opacity=0.7)

    # ---- overlay styling -------------------------------------------------------------------
    def _opacity_changed(self, value: int) -> None:
        if self.adapter is not None:
            self.adapter.set_opacity(value / 100.0)

    def set_class_visible(self, index: int, visible: bool) -> None:
        if self.adapter is not None:
            self.adapter.set_class_visible(index, visible)

    def set_class_colour(self, index: int, colour: str) -> None:
        if index < len(self.class_buttons):
            self.class_buttons[index].setStyleSheet(f"background-color: {colour}")
        if self.adapter is not None:
            self.adapter.set_class_colour(index, colour)

    def _pick_colour(self, index: int) -> None:
        colour = QColorDialog.getColor(QColor(self.adapter.class_colours[index]) if self.adapter else QColor("red"),
                                       self, "Class colour")
        if colour.isValid():
            self.set_class_colour(index, colour.name())

    # ---- export ------------------------------------------------------------------------------
    def export(self, fmt: str, path: Path) -> Path:
        """Save the overlay shown now as OME-Zarr ("zarr"), GeoJSON or PNG."""
        from tessera.pipelines.live import export as live_export

        if self.adapter is None or self.adapter.raster is None:
            msg = "nothing to export yet: run the model on the view or the whole image first"
            raise RuntimeError(msg)
        raster, source = self.adapter.raster, self.adapter.source
        path = Path(path)
        if fmt == "zarr":
            live_export.export_ome_zarr(raster, source, path)
        elif fmt == "geojson":
            live_export.export_geojson(raster, source, path)
        elif fmt == "png":
            live_export.export_png(raster, source, path)
        else:
            msg = f"unknown export format {fmt!r}"
            raise ValueError(msg)
        return path

    def _export_dialog(self, fmt: str) -> None:
        filters = {"zarr": "OME-Zarr (*.ome.zarr)", "geojson": "GeoJSON (*.geojson)", "png": "PNG (*.png)"}
        suffix = {"zarr": ".ome.zarr", "geojson": ".geojson", "png": ".png"}[fmt]
        path, _ = QFileDialog.getSaveFileName(self, "Export overlay", f"overlay{suffix}", filters[fmt])
        if not path:
            return
        try:
            self.export(fmt, Path(path))
            notify_info(f"saved {path}")
        except Exception as exc:
            notify_error(f"export failed: {exc}")

    # ---- annotations ------------------------------------------------------------------------
    def annotation_layer(self) -> Any:
        """The Shapes layer annotations live in (created over the image if missing)."""
        image = self.image_layer()
        return annotation_layer(self.viewer, None if image is None else image.metadata[FRAME_KEY])

    def draw_annotation(self) -> Any:
        """Select the Annotations layer in polygon-drawing mode."""
        layer = self.annotation_layer()
        self.viewer.layers.selection.active = layer
        layer.mode = "add_polygon"
        return layer

    def classify_selected(self) -> int:
        """Give the selected shapes the name and class typed in the dock."""
        layer = self.annotation_layer()
        selected = sorted(layer.selected_data)
        if not selected:
            return 0
        feats = layer.features
        for i in selected:
            if self.ann_name.text():
                feats.loc[i, "name"] = self.ann_name.text()
            if self.ann_class.currentText():
                feats.loc[i, "class"] = self.ann_class.currentText()
        layer.features = feats
        layer.refresh_text()
        return len(selected)

    def _frame(self) -> Any:
        image = self.image_layer()
        if image is None:
            msg = "open an image first"
            raise RuntimeError(msg)
        return image.metadata[FRAME_KEY]

    def _add_shapes(self, shapes: ann.ShapeSet, colours: dict[str, str] | None = None) -> int:
        return add_annotation_shapes(self.viewer, self._frame(), shapes, colours)

    def current_shapes(self) -> ann.ShapeSet:
        """The annotation layer's shapes in world coordinates, with names and classes."""
        return layer_shapes(self.annotation_layer())

    def class_colours(self) -> dict[str, str]:
        p = self.plugin()
        colours = {c.name: c.colour for c in (getattr(p.manifest.output, "classes", None) or [])} if p else {}
        if self.adapter is not None:
            colours.update(dict(zip(self.adapter.model.class_names, self.adapter.class_colours, strict=True)))
        return colours

    def export_annotations(self, path: Path) -> int:
        return ann.write_annotations(Path(path), self.current_shapes(), self._frame(), self.class_colours())

    def import_annotations(self, path: Path) -> int:
        shapes, colours = ann.features_to_shapes(ann.read_features(Path(path)), self._frame())
        return self._add_shapes(shapes, {**colours, **self.class_colours()})

    def contours_to_annotations(self) -> int:
        """Outline the regions of the positive class (or every class but the first) of
        the overlay shown now, as named annotations."""
        if self.adapter is None or self.adapter.raster is None:
            notify_error("no prediction to outline yet: run the model first")
            return 0
        raster, model = self.adapter.raster, self.adapter.model
        probs, labels = raster.snapshot()
        from tessera.pipelines.tiling.grid import source_mpp_yx

        mpp = source_mpp_yx(self.adapter.source)
        classes = [model.positive_index] if model.positive_index is not None else range(1, len(model.classes))
        total = 0
        for k in classes:
            shapes = ann.region_shapes(labels, probs[k], k, model.class_names[k], raster.l0_per_px_yx,
                                       self.adapter.frame, mpp)
            total += self._add_shapes(shapes, self.class_colours())
        return total

    def _annotation_dialog(self, *, save: bool) -> None:
        try:
            if save:
                path, _ = QFileDialog.getSaveFileName(self, "Export annotations", "annotations.geojson",
                                                      "GeoJSON (*.geojson *.json)")
                if path:
                    n = self.export_annotations(Path(path))
                    notify_info(f"saved {n} annotations to {path}")
            else:
                path, _ = QFileDialog.getOpenFileName(self, "Import annotations", "", "GeoJSON (*.geojson *.json)")
                if path:
                    n = self.import_annotations(Path(path))
                    notify_info(f"imported {n} annotations")
        except Exception as exc:
            notify_error(str(exc))

    # ---- teardown -------------------------------------------------------------------------
    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop the overlay and any run (window closing)."""
        self.stop_overlay(remove_layers=False)
        if self.task is not None and self.task.running:
            self.task.cancel.set()
            self.task.join(timeout)


#: task kind -> (module, class, title) of the Tessera dock that drives it
TOOL_DOCKS: dict[str, tuple[str, str, str]] = {
    "prompt-segment": ("tessera.app.viewer.sam_dock", "SamDock", "Prompt segmentation (SAM)"),
    "segment-3d": ("tessera.app.viewer.ct_dock", "CtDock", "CT airways and vessels"),
}


def open_tool(viewer: Any, task: str, plugin: Any = None) -> Any | None:
    """Show (making it on first use) the dock for task kind ``task`` with ``plugin``
    selected; the galaxy and catalyst docks come from ``tessera.app.viewer.docks``.
    None when no dock drives that kind."""
    import importlib

    if task not in TOOL_DOCKS:
        try:
            from tessera.app.viewer.docks import open_task_dock
        except ImportError:
            return None
        return open_task_dock(viewer, task, plugin)
    module, name, title = TOOL_DOCKS[task]
    cls = getattr(importlib.import_module(module), name)
    dock = next((w for w in viewer.window.dock_widgets.values() if isinstance(w, cls)), None)
    if dock is None:
        dock = cls(viewer)
        viewer.window.add_dock_widget(dock, name=title, area="right", tabify=True)
    parent = dock.parent()
    if parent is not None:
        parent.show()
        parent.raise_()
    if plugin is not None and hasattr(dock, "select_plugin"):
        dock.select_plugin(plugin)
    return dock


def tessera_image_layer(viewer: Any) -> Any | None:
    """The image Tessera tools work on: the active layer if it is a Tessera image, else
    the top-most one."""
    active = viewer.layers.selection.active
    if active is not None and SOURCE_KEY in getattr(active, "metadata", {}):
        return active
    for layer in reversed(viewer.layers):
        if SOURCE_KEY in getattr(layer, "metadata", {}):
            return layer
    return None


def annotation_layer(viewer: Any, frame: Any | None) -> Any:
    """The viewer's "Annotations" Shapes layer (name and class per shape), made if missing."""
    for layer in viewer.layers:
        if layer.name == ANNOTATION_LAYER and layer._type_string == "shapes":
            return layer
    kw: dict[str, Any] = {}
    if frame is not None:
        kw = {"scale": frame.yx_spacing, "units": (frame.pint_unit,) * 2}
    layer = viewer.add_shapes(name=ANNOTATION_LAYER, edge_width=2.0, edge_color="#ffcc00",
                              face_color=[0, 0, 0, 0], features={"name": [], "class": []},
                              text={"string": "{name}", "size": 10, "color": "white"}, **kw)
    layer.feature_defaults["name"] = ""
    layer.feature_defaults["class"] = ""
    return layer


def add_annotation_shapes(viewer: Any, frame: Any, shapes: ann.ShapeSet, colours: dict[str, str] | None = None) -> int:
    """Append ``shapes`` (world coordinates) to the Annotations layer; returns how many."""
    if not len(shapes):
        return 0
    layer = annotation_layer(viewer, frame)
    scale = np.asarray(layer.scale[-2:], dtype=np.float64)  # shape data are world / layer scale
    data = [d / scale for d in shapes.data]
    edge = [(colours or {}).get(c, ann.DEFAULT_CLASS_COLOUR) for c in shapes.classes]
    n0 = len(layer.data)
    layer.add(data, shape_type=shapes.shape_types, edge_color=edge, face_color=[0, 0, 0, 0])
    feats = layer.features
    for j in range(len(shapes)):
        feats.loc[n0 + j, "name"] = shapes.names[j]
        feats.loc[n0 + j, "class"] = shapes.classes[j]
    layer.features = feats
    layer.refresh_text()
    return len(shapes)


def add_annotation_features(viewer: Any, frame: Any, features: list[dict[str, Any]]) -> int:
    """Append QuPath features (level-0 coordinates) to the Annotations layer."""
    shapes, colours = ann.features_to_shapes(features, frame)
    return add_annotation_shapes(viewer, frame, shapes, colours)


def layer_shapes(layer: Any) -> ann.ShapeSet:
    """A Shapes layer's shapes in world (y, x), with their names and classes."""
    scale = np.asarray(layer.scale[-2:], dtype=np.float64)
    feats = layer.features
    out = ann.ShapeSet()
    for i, (data, kind) in enumerate(zip(layer.data, layer.shape_type, strict=True)):
        name = str(feats["name"].iloc[i]) if "name" in feats and i < len(feats) else ""
        cls = str(feats["class"].iloc[i]) if "class" in feats and i < len(feats) else ""
        out.add(np.asarray(data)[:, -2:] * scale, kind, "" if name == "nan" else name, "" if cls == "nan" else cls)
    return out


def _whole_view(layer: Any):
    from tessera.pipelines.live import ViewBox

    h, w = layer.metadata[SOURCE_KEY].spatial_shape(0)[-2:]
    return ViewBox(0.0, 0.0, float(h), float(w))
