"""Widgets the task docks share: an embedded matplotlib figure, a sortable table over
columns of values, and the run controls (Run / Cancel / progress / status).

- ``FigurePanel``: a ``matplotlib.figure.Figure`` (built anywhere with the object API,
  e.g. by ``tessera.pipelines.catalysis.plots``) shown with ``FigureCanvasQTAgg`` and
  matplotlib's toolbar (zoom, pan, save as PNG/SVG/PDF). Clicks arrive as ``clicked``;
  markers that follow a selection are *animated* artists redrawn by blitting, so moving
  them costs a copy of the cached background instead of a full redraw (matplotlib's
  own recipe for interactive figures; a volcano map takes most of a second to draw).
- ``ColumnTable``: a ``QTableView`` over a ``QAbstractTableModel`` of columns (numbers
  sort as numbers), so a catalogue of thousands of rows costs no per-cell widgets.
  ``row_selected(int)`` reports the *source* row whatever the sort order.
- ``RunControls``: runs a function in a ``BackgroundTask`` (``tasks.py``: results come
  back to the UI thread through the UI queue) with a ``QtProgress`` reporter and a
  cancel event; failures become napari notifications, never dialogs from a worker.
- ``PluginCombo``: the installed plugins of one task kind, the dock's default first.
- ``FigureJobs``: builds figures in worker threads, latest request wins (clicking fast
  through a table never queues stale figures).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg, NavigationToolbar2QT
from qtpy.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from tessera.app.viewer.dock import notify_error
from tessera.app.viewer.tasks import BackgroundTask, QtProgress
from tessera.pipelines.progress import Cancelled

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- figures


#: Embedded figures are drawn at up to this many dots per inch (matplotlib's default) ...
FIGURE_DPI = 100.0
#: ... and at fewer, down to this, when the panel is smaller than the size the figure was
#: designed for, so its text and spacing keep their proportions instead of crowding.
MIN_FIGURE_DPI = 78.0


class FittedCanvas(FigureCanvasQTAgg):
    """A Qt canvas that lowers the figure's dpi (within ``MIN_FIGURE_DPI..FIGURE_DPI``)
    when the widget is smaller than the figure's designed size: matplotlib keeps the
    dpi and shrinks the inches, so labels and titles written for, say, an 8-inch volcano
    plot overlap in a 6-inch panel."""

    def __init__(self, figure: Any) -> None:
        self.design_in = tuple(float(v) for v in figure.get_size_inches())
        super().__init__(figure)

    def resizeEvent(self, event: Any) -> None:
        w, h = event.size().width(), event.size().height()
        dw, dh = self.design_in
        if w > 0 and h > 0 and dw > 0 and dh > 0:
            dpi = float(np.clip(min(w / dw, h / dh), MIN_FIGURE_DPI, FIGURE_DPI))
            self.figure.set_dpi(dpi * self.device_pixel_ratio)
        super().resizeEvent(event)


class FigurePanel(QWidget):
    """One matplotlib figure in Qt, replaceable, with click reporting and blitted marks."""

    clicked = Signal(object)  # the matplotlib MouseEvent (inaxes, xdata, ydata, x, y)

    def __init__(self, placeholder: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(0)
        self.placeholder = QLabel(placeholder)
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setWordWrap(True)
        self._layout.addWidget(self.placeholder)
        self.canvas: FittedCanvas | None = None
        self.toolbar: NavigationToolbar2QT | None = None
        self.figure: Any = None
        self._marks: list[Any] = []
        self._background: Any = None
        self._cids: list[int] = []

    def set_figure(self, figure: Any) -> None:
        """Show ``figure`` (a matplotlib Figure not shown anywhere else)."""
        self.clear()
        self.figure = figure
        self.canvas = FittedCanvas(figure)
        self.canvas.setMinimumHeight(120)
        self.toolbar = NavigationToolbar2QT(self.canvas, self)
        self.toolbar.setIconSize(self.toolbar.iconSize() * 0.8)
        self._layout.addWidget(self.toolbar)
        self._layout.addWidget(self.canvas, 1)
        self.placeholder.hide()
        # a child added to a shown widget is shown by a queued call that can be lost when
        # the panel is re-filled before the event loop runs: show it now
        self.toolbar.show()
        self.canvas.show()
        self._cids = [
            self.canvas.mpl_connect("button_press_event", self._pressed),
            self.canvas.mpl_connect("draw_event", self._drawn),
        ]
        self.canvas.draw_idle()

    def clear(self, message: str | None = None) -> None:
        """Remove the figure (and show ``message`` instead, when given)."""
        for a in self._marks:
            with contextlib.suppress(ValueError, NotImplementedError):  # already gone with its axes
                a.remove()
        if self.canvas is not None:
            for cid in self._cids:
                self.canvas.mpl_disconnect(cid)
            for w in (self.toolbar, self.canvas):
                self._layout.removeWidget(w)
                w.setParent(None)
                w.deleteLater()
        self.canvas = self.toolbar = self.figure = None
        self._marks, self._background, self._cids = [], None, []
        if message is not None:
            self.placeholder.setText(message)
        self.placeholder.show()

    # ---- interaction -------------------------------------------------------------------
    def _pressed(self, event: Any) -> None:
        if self.toolbar is not None and str(self.toolbar.mode):  # zooming/panning with the toolbar
            return
        if event.inaxes is not None and event.button == 1:
            self.clicked.emit(event)

    def set_marks(self, artists: Sequence[Any]) -> None:
        """Replace the selection marks: artists (already added to the figure's axes) drawn
        over the cached background. The previous marks are removed from the figure."""
        for a in self._marks:
            if a not in artists:
                a.remove()
        self._marks = list(artists)
        for a in self._marks:
            a.set_animated(True)
        self.refresh_marks()

    def refresh_marks(self) -> None:
        if self.canvas is None:
            return
        if self._background is None:
            self.canvas.draw_idle()  # the first full draw caches the background
            return
        self.canvas.restore_region(self._background)
        self._draw_marks()
        self.canvas.blit(self.figure.bbox)

    def _drawn(self, event: Any) -> None:
        self._background = self.canvas.copy_from_bbox(self.figure.bbox)
        self._draw_marks()

    def _draw_marks(self) -> None:
        for a in self._marks:
            self.figure.draw_artist(a)


class FigureJobs:
    """Figures built in worker threads; for each slot only the latest request is shown."""

    def __init__(self) -> None:
        self._latest: dict[str, int] = {}
        self._tasks: list[BackgroundTask] = []
        self._n = 0

    def request(self, slot: str, build: Callable[[], Any], show: Callable[[Any], None]) -> BackgroundTask:
        self._n += 1
        token = self._n
        self._latest[slot] = token
        task = BackgroundTask(build, name=f"tessera-figure-{slot}")

        def done(fig: Any) -> None:
            self._forget(task)
            if self._latest.get(slot) == token:
                show(fig)

        def failed(exc: BaseException) -> None:
            self._forget(task)
            if self._latest.get(slot) == token:
                notify_error(f"cannot draw the {slot} figure: {exc}")

        task.finished.connect(done)
        task.failed.connect(failed)
        self._tasks.append(task)
        return task.start()

    def _forget(self, task: BackgroundTask) -> None:
        if task in self._tasks:
            self._tasks.remove(task)

    def busy(self) -> bool:
        return any(t.running for t in self._tasks)

    def join(self, timeout: float = 10.0) -> None:
        for t in list(self._tasks):
            t.join(timeout)


# ---------------------------------------------------------------------------- tables


@dataclass
class Column:
    """One table column: header, values (numbers sort as numbers), display format."""

    header: str
    values: Sequence[Any]
    fmt: str = "{}"
    tooltip: str = ""
    align_right: bool = field(default=False)

    def text(self, i: int) -> str:
        v = self.values[i]
        if v is None or (isinstance(v, float) and not np.isfinite(v)) or v == "":
            return ""
        try:
            return self.fmt.format(v).replace("-", "\u2212") if self.align_right else self.fmt.format(v)
        except (ValueError, TypeError):
            return str(v)


class ColumnModel(QAbstractTableModel):
    SORT_ROLE = Qt.ItemDataRole.UserRole + 1

    def __init__(self) -> None:
        super().__init__()
        self.columns: list[Column] = []
        self.n_rows = 0
        self.colours: list[str | None] = []

    def set_columns(self, columns: list[Column], colours: list[str | None] | None = None) -> None:
        self.beginResetModel()
        self.columns = columns
        self.n_rows = len(columns[0].values) if columns else 0
        self.colours = colours or []
        self.endResetModel()

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else self.n_rows

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.columns)

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        col = self.columns[index.column()]
        if role == Qt.ItemDataRole.DisplayRole:
            return col.text(index.row())
        if role == self.SORT_ROLE:
            v = col.values[index.row()]
            if isinstance(v, (int, float, np.integer, np.floating)):
                f = float(v)
                return f if np.isfinite(f) else float("inf")
            return str(v)
        if role == Qt.ItemDataRole.TextAlignmentRole and col.align_right:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.DecorationRole and index.column() == 0 and self.colours:
            c = self.colours[index.row()]
            if c:
                from qtpy.QtGui import QColor

                return QColor(c)
        return None

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation != Qt.Orientation.Horizontal or section >= len(self.columns):
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return self.columns[section].header
        if role == Qt.ItemDataRole.ToolTipRole:
            return self.columns[section].tooltip or None
        return None


class _RowFilter(QSortFilterProxyModel):
    def __init__(self) -> None:
        super().__init__()
        self.hidden: np.ndarray | None = None  # bool per source row

    def filterAcceptsRow(self, source_row: int, source_parent: QModelIndex) -> bool:
        return self.hidden is None or source_row >= len(self.hidden) or not self.hidden[source_row]

    def set_hidden(self, hidden: np.ndarray | None) -> None:
        """Hide source rows where ``hidden`` is True (Qt >= 6.10 brackets the change;
        ``invalidateFilter`` is deprecated there)."""
        if hasattr(self, "beginFilterChange"):
            self.beginFilterChange()
            self.hidden = hidden
            self.endFilterChange()
        else:
            self.hidden = hidden
            self.invalidateFilter()


class ColumnTable(QTableView):
    """A read-only, sortable table; ``row_selected`` gives the source row."""

    row_selected = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.source = ColumnModel()
        self.proxy = _RowFilter()
        self.proxy.setSourceModel(self.source)
        self.proxy.setSortRole(ColumnModel.SORT_ROLE)
        self.setModel(self.proxy)
        self.setSortingEnabled(True)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(22)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.horizontalHeader().setStretchLastSection(True)
        self.selectionModel().currentRowChanged.connect(self._current_changed)
        self._quiet = False

    def set_columns(self, columns: list[Column], colours: list[str | None] | None = None) -> None:
        self.source.set_columns(columns, colours)
        self.proxy.set_hidden(None)
        self.resizeColumnsToContents()

    def set_hidden(self, hidden: np.ndarray | None) -> None:
        """Hide source rows where ``hidden`` is True."""
        self.proxy.set_hidden(None if hidden is None else np.asarray(hidden, dtype=bool))

    def row_count(self) -> int:
        """Rows shown (after hiding)."""
        return self.proxy.rowCount()

    def shown_text(self, view_row: int, column: int) -> str:
        """What the table shows at (row, column) in display order."""
        return str(self.proxy.data(self.proxy.index(view_row, column)))

    def source_row(self, view_row: int) -> int:
        return self.proxy.mapToSource(self.proxy.index(view_row, 0)).row()

    def select_source_row(self, row: int, *, quiet: bool = True) -> None:
        """Select and scroll to source ``row``; ``quiet`` does not emit ``row_selected``."""
        index = self.proxy.mapFromSource(self.source.index(row, 0))
        if not index.isValid():
            self.clearSelection()
            return
        self._quiet = quiet
        try:
            self.selectRow(index.row())
            self.setCurrentIndex(index)
            self.scrollTo(index, QAbstractItemView.ScrollHint.EnsureVisible)
        finally:
            self._quiet = False

    def _current_changed(self, current: QModelIndex, previous: QModelIndex) -> None:
        if self._quiet or not current.isValid():
            return
        self.row_selected.emit(self.proxy.mapToSource(current).row())


# ------------------------------------------------------------------------------- runs


class RunControls(QWidget):
    """Run / Cancel buttons, a progress bar and a status line around one BackgroundTask."""

    def __init__(self, run_text: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        self.run_button = QPushButton(run_text)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        row.addWidget(self.run_button, 1)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        layout.addWidget(self.progress)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.status)
        self.task: BackgroundTask | None = None
        self._reporter: QtProgress | None = None

    @property
    def running(self) -> bool:
        return self.task is not None and self.task.running

    def start(self, work: Callable[[BackgroundTask, QtProgress], Any], *, description: str,
              finished: Callable[[Any], None], name: str = "tessera-dock-run",
              cancelled_text: str = "cancelled") -> BackgroundTask | None:
        """Run ``work(task, reporter)`` in a worker thread; ``finished(result)`` in the UI
        thread. Returns None (with a notification) when a run is already going."""
        if self.running:
            notify_error("a run is already in progress; cancel it first")
            return None
        reporter = QtProgress()
        reporter.changed.connect(self._progress)
        holder: dict[str, BackgroundTask] = {}
        task = BackgroundTask(lambda: work(holder["task"], reporter), name=name)
        holder["task"] = task

        def done(result: Any) -> None:
            self._ended()
            finished(result)

        def failed(exc: BaseException) -> None:
            self._ended()
            if isinstance(exc, Cancelled):
                self.status.setText(cancelled_text)
                return
            self.status.setText(f"failed: {exc}")
            notify_error(str(exc))

        task.finished.connect(done)
        task.failed.connect(failed)
        self.task, self._reporter = task, reporter
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)  # busy until the work reports a total
        self.status.setText(description)
        return task.start()

    def _progress(self, done: int, total: int, text: str) -> None:
        if total <= 0:
            self.progress.setRange(0, 0)
        else:
            self.progress.setRange(0, total)
            self.progress.setValue(min(done, total))
        if text:
            self.status.setText(f"{text}: {done}/{total}" if total > 0 else f"{text}…")

    def _ended(self) -> None:
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(1)

    def cancel(self) -> None:
        if self.running:
            self.task.cancel.set()
            self.status.setText("cancelling…")

    def shutdown(self, timeout: float = 10.0) -> None:
        if self.task is not None and self.task.running:
            self.task.cancel.set()
            self.task.join(timeout)


# ---------------------------------------------------------------------------- plugins


class PluginCombo(QComboBox):
    """The installed plugins of one task kind (``default`` first, then by id)."""

    def __init__(self, task: str, default: str | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.task, self.default = task, default
        self.plugins: dict[str, Any] = {}
        self.refresh()

    def refresh(self) -> None:
        """List the plugins again (a failure to list them is a notification)."""
        from tessera.pipelines.plugin_system import list_plugins

        self.clear()
        self.plugins.clear()
        try:
            found = [p for p in list_plugins() if p.manifest.task == self.task]
        except Exception as exc:
            notify_error(f"cannot list plugins: {exc}")
            found = []
        for p in sorted(found, key=lambda p: (p.id != self.default, p.id)):
            self.add(p)

    def add(self, plugin: Any) -> None:
        self.plugins[plugin.id] = plugin
        if self.findData(plugin.id) < 0:
            self.addItem(f"{plugin.manifest.name} ({plugin.id} {plugin.manifest.version})", plugin.id)

    def select(self, plugin: Any) -> Any:
        """Choose a plugin by id or Plugin object (added when not listed); ValueError for
        a plugin of another task kind. Returns the Plugin."""
        if isinstance(plugin, str):
            from tessera.pipelines.plugin_system import get_plugin

            plugin = self.plugins.get(plugin) or get_plugin(plugin)
        if plugin.manifest.task != self.task:
            msg = f"{plugin.id} is a {plugin.manifest.task} plugin; this dock runs {self.task} models"
            raise ValueError(msg)
        self.add(plugin)
        self.setCurrentIndex(self.findData(plugin.id))
        return plugin

    def current(self) -> Any | None:
        """The chosen Plugin, or None when there is none."""
        pid = self.currentData()
        return self.plugins.get(pid) if pid else None
