"""The CT dock: run a segment-3d plugin (airway-av) on the open volume, see its labels in
2D slices and in 3D with per-class colours and toggles, and its metrics.

The run is the batch runner in a worker thread (progress bar, Cancel); outputs go where
``tessera run`` would put them (``volume_results``/``dock.results_dir``). With the
synthetic CT's reference labels next to the file, the run is scored against them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from tessera.app.viewer.dock import notify_error, results_dir, tessera_image_layer
from tessera.app.viewer.layers import FRAME_KEY, SOURCE_KEY
from tessera.app.viewer.live_adapter import hex_rgba
from tessera.app.viewer.tasks import BackgroundTask, QtProgress, preload_modules
from tessera.app.viewer.volume_results import load_labels, metric_rows, reference_labels_for

_MODULES = ("nibabel", "tessera.pipelines.runners.segment_3d", "tessera.pipelines.writers.nifti",
            "tessera.pipelines.metrics.atm", "tessera.pipelines.metrics.tree", "skimage.morphology")


class CtDock(QWidget):
    """Run, show and score a segment-3d model on the active volume."""

    def __init__(self, viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.task: BackgroundTask | None = None
        self.labels_layer: Any = None
        self.summary: dict[str, Any] | None = None
        self.classes: list[tuple[str, str]] = []
        self.visible: list[bool] = []
        root = QVBoxLayout(self)
        self.plugin_combo = QComboBox()
        self._plugins: dict[str, Any] = {}
        try:
            from tessera.pipelines.plugin_system import list_plugins

            for p in list_plugins():
                if p.manifest.task == "segment-3d":
                    self._plugins[p.id] = p
                    self.plugin_combo.addItem(f"{p.manifest.name} ({p.id})", p.id)
        except Exception as exc:
            notify_error(f"cannot list plugins: {exc}")
        root.addWidget(self.plugin_combo)
        self.score_check = QCheckBox("Score against reference labels next to the file")
        self.score_check.setChecked(True)
        root.addWidget(self.score_check)
        row = QHBoxLayout()
        self.run_button = QPushButton("Run on volume")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.view3d = QPushButton("2D / 3D")
        self.view3d.clicked.connect(self.toggle_3d)
        for b in (self.run_button, self.cancel_button, self.view3d):
            row.addWidget(b)
        root.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        root.addWidget(self.progress)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        root.addWidget(self.status)
        self.class_box = QVBoxLayout()
        root.addLayout(self.class_box)
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["class", "measure", "value"])
        root.addWidget(self.table)

    def select_plugin(self, plugin: Any) -> None:
        """Choose a plugin object (e.g. loaded from a folder) or a registered id."""
        if isinstance(plugin, str):
            from tessera.pipelines.plugin_system import get_plugin

            plugin = get_plugin(plugin)
        self._plugins[plugin.id] = plugin
        if self.plugin_combo.findData(plugin.id) < 0:
            self.plugin_combo.addItem(f"{plugin.manifest.name} ({plugin.id})", plugin.id)
        self.plugin_combo.setCurrentIndex(self.plugin_combo.findData(plugin.id))

    def run(self) -> BackgroundTask | None:
        layer = tessera_image_layer(self.viewer)
        plugin = self._plugins.get(self.plugin_combo.currentData())
        if layer is None or plugin is None:
            notify_error("open a CT volume and choose a segment-3d plugin")
            return None
        source = layer.metadata[SOURCE_KEY]
        if source.ndim_spatial != 3:
            notify_error(f"{source.path.name} is not a volume")
            return None
        from tessera.pipelines.runners.base import RunOptions
        from tessera.pipelines.runners.registry import runner_for

        preload_modules(_MODULES)
        runner = runner_for(plugin.manifest.task)
        truth = reference_labels_for(source.path) if self.score_check.isChecked() else None
        options = RunOptions(truth=truth)
        out_dir = results_dir(source.path, plugin.id)
        reporter = QtProgress()
        reporter.changed.connect(self._progress)
        holder: dict[str, Any] = {}

        def work() -> dict[str, Any]:
            summary = runner(Path(source.path), plugin, out_dir, options=options, progress=reporter,
                             cancel=holder["task"].cancel)
            return {"summary": summary, "labels": load_labels(out_dir, summary)}

        task = BackgroundTask(work, name="tessera-ct")
        holder["task"] = task
        task.finished.connect(lambda out: self._finished(layer, plugin, out))
        task.failed.connect(self._failed)
        self._reporter = reporter
        self.task = task
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText(f"running {plugin.id}" + (f", scoring against {truth.name}" if truth else ""))
        return task.start()

    def _progress(self, done: int, total: int, text: str) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(min(done, max(total, 1)))

    def cancel(self) -> None:
        if self.task is not None and self.task.running:
            self.task.cancel.set()

    def _failed(self, exc: BaseException) -> None:
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.status.setText(f"failed: {exc}")
        notify_error(f"CT run failed: {exc}")

    def _finished(self, layer: Any, plugin: Any, out: dict[str, Any]) -> None:
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.summary = out["summary"]
        self.classes = [(c.name, c.colour) for c in plugin.manifest.output.classes]
        self.visible = [True] * len(self.classes)
        frame = layer.metadata[FRAME_KEY]
        if self.labels_layer is not None and self.labels_layer in self.viewer.layers:
            self.viewer.layers.remove(self.labels_layer)
        self.labels_layer = self.viewer.add_labels(out["labels"], name=f"{plugin.id}: labels", scale=frame.spacing,
                                                   opacity=0.7, units=(frame.pint_unit,) * 3)
        self.labels_layer.rendering = "iso_categorical"
        self._style()
        self._class_rows()
        rows = metric_rows(self.summary)
        self.table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            for j, text in enumerate(row):
                self.table.setItem(i, j, QTableWidgetItem(text))
        self.status.setText(f"{plugin.id}: {len(rows)} measures")

    def _class_rows(self) -> None:
        while self.class_box.count():
            item = self.class_box.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.class_checks = []
        for k, (name, colour) in enumerate(self.classes):
            if k == 0:
                continue
            check = QCheckBox(name)
            check.setChecked(True)
            check.setStyleSheet(f"color: {colour}")
            check.toggled.connect(lambda on, k=k: self.set_class_visible(k, on))
            self.class_box.addWidget(check)
            self.class_checks.append(check)

    def _style(self) -> None:
        from napari.utils.colormaps import DirectLabelColormap

        colors: dict[int | None, Any] = {None: [0, 0, 0, 0], 0: [0, 0, 0, 0]}
        for k, (_, colour) in enumerate(self.classes):
            if k > 0:
                colors[k] = hex_rgba(colour, 1.0 if self.visible[k] else 0.0)
        self.labels_layer.colormap = DirectLabelColormap(color_dict=colors)

    def set_class_visible(self, index: int, visible: bool) -> None:
        self.visible[index] = bool(visible)
        if self.labels_layer is not None:
            self._style()

    def toggle_3d(self) -> None:
        self.viewer.dims.ndisplay = 3 if self.viewer.dims.ndisplay == 2 else 2


def label_counts(layer: Any) -> np.ndarray:
    """Voxels per label value of a labels layer (for tests and the status line)."""
    return np.bincount(np.asarray(layer.data).ravel())
