"""Galaxy morphology dock: a survey field -> detected galaxies, each ringed by its class
on the canvas -> catalogue table -> cutout and class probabilities of the chosen galaxy.

The work is the detect-classify runner (``tessera.pipelines.runners.detect_classify``,
the same code as ``tessera run astroformer FIELD``) in a worker thread; its outputs go
where the Tessera dock and ``tessera run`` put them (``results_dir``), so an identical
finished run is reused instantly. What the dock shows comes from those files:
``catalogue.csv`` (positions in 0-based field pixels, pixel centres at integers: the
viewer's level-0 frame), ``cutouts.h5`` (each classified cutout with its catalogue id)
and ``summary.json``.

On the canvas each galaxy is the catalogue's ellipse at 2.5 half-light radii (axis ratio
and position angle from the detection, as in ``overlay.png``) in its class colour with
``<id> <class>`` at its upper left; stars are a hidden grey Points layer. Very large
catalogues (over ``MAX_ELLIPSES`` galaxies) are drawn as Points rings without labels,
which napari draws at any count. A click on a galaxy (pan/zoom mode) or on its table
row selects it: the table row, a thicker outline, the view centred on it, and its cutout
with the class probabilities.
"""

from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from tessera.app.viewer.compat import camera, canvas_size_hw
from tessera.app.viewer.dock import notify_error, notify_info, results_dir
from tessera.app.viewer.docks.panels import (
    Column,
    ColumnTable,
    FigureJobs,
    FigurePanel,
    PluginCombo,
    RunControls,
)
from tessera.app.viewer.layers import SOURCE_KEY
from tessera.app.viewer.tasks import preload_modules

log = logging.getLogger(__name__)

TASK = "detect-classify"
DEFAULT_PLUGIN = "astroformer"
#: Outline of a galaxy: this many half-light radii (overlay.png draws the same).
R50_FACTOR = 2.5
#: Smallest outline semi-axis, field pixels (faint compact galaxies stay visible).
MIN_SEMI_AXIS_PX = 4.0
#: napari Shapes triangulates every ellipse; beyond this many galaxies Points rings are used.
MAX_ELLIPSES = 3000
STAR_COLOUR = "#9a9a9a"
CATALOGUE_KEY = "tessera_catalogue"
#: What the runner and the figure workers import lazily; imported in the UI thread first.
WORKER_MODULES = (
    "h5py", "sep", "onnxruntime", "erfa", "astropy.units", "astropy.table", "astropy.io.ascii",
    "astropy.io.fits", "astropy.io.misc.connect", "astropy.io.votable", "astropy.coordinates",
    "astropy.wcs", "astropy.wcs.utils", "astropy.visualization", "astropy.stats", "astropy.time",
    "PIL.ImageDraw", "PIL.ImageFont", "scipy.ndimage", "numcodecs", "mmap", "ssl", "http.client",
    "urllib.request", "ftplib", "tessera.pipelines.runners.detect_classify",
    "tessera.pipelines.sky.catalogue", "tessera.pipelines.sky.cutouts", "tessera.pipelines.sky.detection",
    "tessera.pipelines.sky.overlay", "tessera.pipelines.sky.survey_image", "tessera.pipelines.sky.colour",
    "tessera.pipelines.writers.preview", "tessera.pipelines.writers.table", "tessera.pipelines.writers.atomic",
    "tessera.pipelines.writers.ome_zarr", "tessera.pipelines.engines.ort_engine",
    "tessera.pipelines.plugin_system.tasks", "matplotlib.backends.backend_agg",
)
FALLBACK_COLOURS = ("#ff4d4d", "#ff9f1c", "#ffe066", "#c9f274", "#2ec4b6", "#4cc9f0", "#6f8cff",
                    "#b388ff", "#f72585", "#ff99c8")


# --------------------------------------------------------------------- catalogue (no Qt)


@dataclass
class GalaxyCatalogue:
    """One detect-classify result folder, as columns (every detected source)."""

    out_dir: Path
    ids: np.ndarray  # int, 1-based catalogue id
    x_px: np.ndarray  # 0-based field pixels, pixel centres at integers
    y_px: np.ndarray
    kind: np.ndarray  # "galaxy" / "star"
    class_id: np.ndarray  # -1: star or unclassified
    probabilities: np.ndarray  # float (N, K), NaN for stars
    columns: dict[str, np.ndarray]  # the other catalogue columns (NaN where empty)
    class_names: list[str]
    colours: list[str]
    short_names: list[str]
    summary: dict[str, Any] = field(default_factory=dict)
    cutout_ids: np.ndarray | None = None  # source_id of each cutouts.h5 row

    @property
    def galaxy_rows(self) -> np.ndarray:
        """Indices of the classified galaxies."""
        return np.flatnonzero((self.kind == "galaxy") & (self.class_id >= 0))

    def column(self, name: str) -> np.ndarray:
        return self.columns.get(name, np.full(len(self.ids), np.nan))

    @property
    def pxscale_arcsec(self) -> float | None:
        scale = self.summary.get("field", {}).get("pixel_scale_arcsec")
        return float(scale) if scale else None

    def semi_axes_px(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(major, minor, theta_rad) of the outline of ``rows``: R50_FACTOR half-light
        radii, the detection's axis ratio (at least 0.25), its position angle."""
        r50 = np.nan_to_num(self.column("r50_px")[rows], nan=MIN_SEMI_AXIS_PX / R50_FACTOR)
        a = np.nan_to_num(self.column("a_px")[rows], nan=1.0)
        b = np.nan_to_num(self.column("b_px")[rows], nan=1.0)
        major = np.maximum(R50_FACTOR * r50, MIN_SEMI_AXIS_PX)
        q = np.clip(b / np.maximum(a, 1e-6), 0.25, 1.0)
        theta = np.radians(np.nan_to_num(self.column("theta_deg")[rows], nan=0.0))
        return major, major * q, theta


def read_catalogue(out_dir: Path, *, class_names: list[str] | None = None,
                   colours: list[str] | None = None, short_names: list[str] | None = None) -> GalaxyCatalogue:
    """Read a detect-classify field result (``catalogue.csv``, ``summary.json``, the ids
    of ``cutouts.h5``). Class names come from the summary (in class order) unless given."""
    from astropy.table import Table

    from tessera.pipelines.errors import CorruptFile, UnsupportedFile
    from tessera.pipelines.sky.catalogue import class_slug

    out_dir = Path(out_dir)
    path = out_dir / "catalogue.csv"
    if not path.is_file():
        msg = "no catalogue.csv here: choose the output folder of a detect-classify run on a field"
        raise UnsupportedFile(msg, path=out_dir)
    summary: dict[str, Any] = {}
    if (out_dir / "summary.json").is_file():
        summary = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
    try:
        table = Table.read(path, format="ascii.csv")
    except Exception as exc:
        msg = f"cannot read the catalogue ({exc})"
        raise CorruptFile(msg, path=path) from exc
    names = list(class_names or summary.get("classes", {}) or [])
    if not names:
        msg = "cannot tell the class names: no summary.json and no plugin given"
        raise CorruptFile(msg, path=out_dir)
    n = len(table)

    def num(col: str) -> np.ndarray:
        if col not in table.colnames:
            return np.full(n, np.nan)
        return np.ma.filled(np.ma.asarray(table[col], dtype=np.float64), np.nan)

    def text(col: str) -> np.ndarray:
        if col not in table.colnames:
            return np.full(n, "", dtype=object)
        return np.array(["" if np.ma.is_masked(v) else str(v) for v in table[col]], dtype=object)

    for need in ("id", "x_px", "y_px", "kind", "class_id"):
        if need not in table.colnames:
            msg = f"catalogue column {need!r} is missing"
            raise CorruptFile(msg, path=path)
    probs = np.stack([num(f"prob_{class_slug(c)}") for c in names], axis=1) if n else np.zeros((0, len(names)))
    class_id = np.nan_to_num(num("class_id"), nan=-1).astype(int)
    skip = {"id", "x_px", "y_px", "kind", "class_id", "class_name"}
    columns = {c: num(c) for c in table.colnames if c not in skip and table[c].dtype.kind in "iuf"}
    cutout_ids = None
    if (out_dir / "cutouts.h5").is_file():
        import h5py

        with h5py.File(out_dir / "cutouts.h5", "r") as f:
            if "source_id" in f:
                cutout_ids = np.asarray(f["source_id"][()], dtype=np.int64)
    colours = list(colours or [])
    colours += [FALLBACK_COLOURS[i % len(FALLBACK_COLOURS)] for i in range(len(colours), len(names))]
    short = list(short_names or names)[: len(names)]
    short += names[len(short):]
    return GalaxyCatalogue(
        out_dir=out_dir, ids=np.asarray(num("id"), dtype=np.int64), x_px=num("x_px"), y_px=num("y_px"),
        kind=text("kind"), class_id=class_id, probabilities=probs, columns=columns, class_names=names,
        colours=colours, short_names=short, summary=summary, cutout_ids=cutout_ids,
    )


def read_cutout(catalogue: GalaxyCatalogue, source_id: int) -> np.ndarray | None:
    """uint8 (S, S, 3) cutout the classifier saw for catalogue id ``source_id``, or None."""
    if catalogue.cutout_ids is None:
        return None
    hit = np.flatnonzero(catalogue.cutout_ids == int(source_id))
    if not hit.size:
        return None
    import h5py

    with h5py.File(catalogue.out_dir / "cutouts.h5", "r") as f:
        return np.asarray(f["images"][int(hit[0])])


def galaxy_figure(catalogue: GalaxyCatalogue, row: int, cutout: np.ndarray | None) -> Any:
    """The selected galaxy: the cutout the model classified (on the sky scale when the
    field has one) and the class probabilities, bars in the class colours."""
    import matplotlib
    from matplotlib.figure import Figure

    k_pred = int(catalogue.class_id[row])
    probs = catalogue.probabilities[row]
    with matplotlib.rc_context({"font.size": 9, "axes.titlesize": 9.5, "xtick.direction": "in",
                                "ytick.direction": "in", "mathtext.default": "regular"}):
        fig = Figure(figsize=(6.0, 2.9), layout="constrained")
        gs = fig.add_gridspec(1, 2, width_ratios=[1.0, 1.45])
        ax_img = fig.add_subplot(gs[0])
        ax_bar = fig.add_subplot(gs[1])
        side_px = float(catalogue.column("cutout_side_px")[row])
        scale = catalogue.pxscale_arcsec
        if cutout is not None:
            if np.isfinite(side_px) and scale:
                half = side_px * scale / 2.0
                ax_img.imshow(cutout, extent=(-half, half, half, -half), interpolation="nearest")
                ax_img.set_xlabel("Δx (arcsec)")
                ax_img.set_ylabel("Δy (arcsec)")
            else:
                ax_img.imshow(cutout, interpolation="nearest")
                ax_img.set_xlabel("cutout pixel")
            size = cutout.shape[0]
            ax_img.set_title(f"model input ({size}×{size} px)")
        else:
            ax_img.text(0.5, 0.5, "no cutout stored", ha="center", va="center", transform=ax_img.transAxes)
            ax_img.set_axis_off()
        order = np.arange(len(catalogue.class_names))
        ys = order[::-1]
        ax_bar.barh(ys, np.nan_to_num(probs), color=catalogue.colours[: len(order)],
                    edgecolor=["black" if k == k_pred else "none" for k in order], linewidth=1.2)
        ax_bar.set_yticks(ys, catalogue.short_names)
        for k in order:
            if k == k_pred:
                ax_bar.get_yticklabels()[k].set_fontweight("bold")
            p = probs[k]
            if np.isfinite(p):
                ax_bar.text(min(p, 1.0) + 0.015, ys[k], f"{p:.2f}", va="center", fontsize=7.5)
        ax_bar.set_xlim(0.0, 1.12)
        ax_bar.set_xticks([0.0, 0.25, 0.5, 0.75, 1.0])
        ax_bar.set_xlabel("class probability")
        ax_bar.tick_params(axis="y", length=0)
        ax_bar.set_title(f"#{int(catalogue.ids[row])}: {catalogue.class_names[k_pred]}" if k_pred >= 0 else
                         f"#{int(catalogue.ids[row])}")
    return fig


def outline_corners_yx(y: np.ndarray, x: np.ndarray, major: np.ndarray, minor: np.ndarray,
                       theta_rad: np.ndarray) -> np.ndarray:
    """(N, 4, 2) corners (y, x) of each ellipse's bounding rectangle, rotated by
    ``theta_rad`` (major axis from +x towards +y), as napari's ellipse data wants them."""
    ux, uy = np.cos(theta_rad) * major, np.sin(theta_rad) * major
    vx, vy = -np.sin(theta_rad) * minor, np.cos(theta_rad) * minor
    signs = ((-1, -1), (1, -1), (1, 1), (-1, 1))
    return np.stack([np.stack([y + su * uy + sv * vy, x + su * ux + sv * vx], axis=-1) for su, sv in signs],
                    axis=1)


# -------------------------------------------------------------------------------- dock


class GalaxyDock(QWidget):
    """Detect and classify the galaxies of a survey field and browse them.

    Public methods are what the controls do (tests call them): ``open_field``,
    ``select_plugin``, ``run``, ``cancel``, ``show_results``, ``select_galaxy``,
    ``galaxy_at``, ``shutdown``.
    """

    PREFERRED_WIDTH_FRACTION = 0.3

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.catalogue: GalaxyCatalogue | None = None
        self.rows: np.ndarray = np.zeros(0, dtype=int)  # catalogue row of each galaxy shown
        self.selected: int | None = None  # index into self.rows
        self.galaxy_layer: Any = None
        self.star_layer: Any = None
        self._image_layer: Any = None
        self._figures = FigureJobs()
        preload_modules(WORKER_MODULES)
        import PIL.Image

        PIL.Image.init()  # PIL registers its format plugins on first save: do it here, not in a worker
        self._build()
        napari_viewer.layers.selection.events.active.connect(self._update_field_label)
        napari_viewer.layers.events.inserted.connect(self._update_field_label)
        napari_viewer.layers.events.removed.connect(self._layer_removed)
        napari_viewer.mouse_drag_callbacks.append(self._mouse_drag)
        self._update_field_label()

    # ---- layout ---------------------------------------------------------------------
    def _build(self) -> None:
        self.setMinimumWidth(420)
        root = QVBoxLayout(self)
        box = QGroupBox("Survey field")
        bl = QVBoxLayout(box)
        row = QHBoxLayout()
        self.field_label = QLabel("")
        self.field_label.setWordWrap(True)
        self.field_label.setTextFormat(Qt.TextFormat.RichText)
        open_button = QPushButton("Open field…")
        open_button.clicked.connect(self._open_dialog)
        row.addWidget(self.field_label, 1)
        row.addWidget(open_button)
        bl.addLayout(row)
        mrow = QHBoxLayout()
        mrow.addWidget(QLabel("Model"))
        self.plugin_combo = PluginCombo(TASK, DEFAULT_PLUGIN)
        mrow.addWidget(self.plugin_combo, 1)
        bl.addLayout(mrow)
        self.run_controls = RunControls("Detect and classify")
        self.run_controls.run_button.clicked.connect(self.run)
        bl.addWidget(self.run_controls)
        lrow = QHBoxLayout()
        load = QPushButton("Load results…")
        load.setToolTip("show the outputs of an earlier run (a folder with catalogue.csv)")
        load.clicked.connect(self._load_dialog)
        lrow.addStretch(1)
        lrow.addWidget(load)
        bl.addLayout(lrow)
        root.addWidget(box)

        self.legend = QLabel("")
        self.legend.setWordWrap(True)
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        root.addWidget(self.legend)
        split = QSplitter(Qt.Orientation.Vertical)
        self.table = ColumnTable()
        self.table.row_selected.connect(lambda i: self.select_galaxy(i, centre=True))
        split.addWidget(self.table)
        sel = QWidget()
        sl = QVBoxLayout(sel)
        sl.setContentsMargins(0, 0, 0, 0)
        self.galaxy_label = QLabel("Click a galaxy on the image or in the table.")
        self.galaxy_label.setWordWrap(True)
        self.galaxy_label.setTextFormat(Qt.TextFormat.RichText)
        self.galaxy_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        sl.addWidget(self.galaxy_label)
        self.figure = FigurePanel("")
        self.figure.setMinimumHeight(220)
        sl.addWidget(self.figure, 1)
        split.addWidget(sel)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 1)
        self._split = split
        root.addWidget(split, 1)

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        if not getattr(self, "_sized", False):  # first show: the cutout and bars get 55 %
            self._sized = True
            h = max(self._split.height(), 1)
            self._split.setSizes([int(h * 0.45), h - int(h * 0.45)])

    # ---- plugin and field --------------------------------------------------------------
    def refresh_plugins(self) -> None:
        self.plugin_combo.refresh()

    def select_plugin(self, plugin: Any) -> None:
        """Choose a detect-classify plugin by id, or a Plugin object."""
        self.plugin_combo.select(plugin)

    def plugin(self) -> Any | None:
        return self.plugin_combo.current()

    def field_layer(self) -> Any | None:
        """The field to run on: the active layer if it is a 2D Tessera image, else the
        top-most one."""
        def ok(layer: Any) -> bool:
            src = getattr(layer, "metadata", {}).get(SOURCE_KEY)
            return src is not None and src.ndim_spatial == 2

        active = self.viewer.layers.selection.active
        if active is not None and ok(active):
            return active
        return next((layer for layer in reversed(self.viewer.layers) if ok(layer)), None)

    def _update_field_label(self, event: Any = None) -> None:
        layer = self.field_layer()
        if layer is None:
            self.field_label.setText("Open a survey field: FITS (bands, WCS) or a PNG/JPEG/TIFF picture "
                                     "(<code>tessera synth galaxies</code> makes one).")
            return
        src = layer.metadata[SOURCE_KEY]
        h, w = src.spatial_shape(0)[-2:]
        scale = f", {src.spacing[-1]:.3g}″/px" if src.spacing is not None and src.spacing_unit == "arcsec" else ""
        self.field_label.setText(f"<b>{html.escape(Path(src.path).name)}</b>: {html.escape(src.format)}, "
                                 f"{w} × {h} px{html.escape(scale)}")

    def _open_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open survey field", "",
                                              "Survey fields (*.fits *.fit *.fts *.fits.gz *.png *.jpg *.jpeg "
                                              "*.tif *.tiff);;All files (*)")
        if path:
            self.open_field(Path(path))

    def open_field(self, path: Path | str) -> list[Any]:
        """Open a field through Tessera's reader (the same layers as File > Open)."""
        try:
            layers = self.viewer.open(str(path), plugin="tessera")
        except Exception as exc:
            notify_error(str(exc) if str(path) in str(exc) else f"{path}: {exc}")
            return []
        self.viewer.reset_view()
        self._update_field_label()
        return layers

    # ---- run ---------------------------------------------------------------------------
    def run(self) -> Any:
        """Detect and classify the galaxies of the field in a worker thread (an identical
        finished run is reused); returns the BackgroundTask, or None."""
        layer, plugin = self.field_layer(), self.plugin()
        if layer is None or plugin is None:
            notify_error("open a survey field and choose a detect-classify model first")
            return None
        from tessera.pipelines.runners.base import RunOptions
        from tessera.pipelines.runners.registry import runner_for

        try:
            runner = runner_for(TASK)
        except Exception as exc:
            notify_error(str(exc))
            return None
        plugin.processing()  # imported in the UI thread, not by the worker
        source = layer.metadata[SOURCE_KEY]
        field_path = Path(source.path)
        out_dir = results_dir(field_path, plugin.id)
        names, colours, short = self._class_style(plugin)

        def work(task: Any, reporter: Any) -> GalaxyCatalogue:
            summary = runner(field_path, plugin, out_dir, options=RunOptions(), progress=reporter, cancel=task.cancel)
            if "catalogue_csv" not in summary.get("outputs", {}):
                msg = "this input gave no field catalogue (a cutout set?); open a survey field"
                raise ValueError(msg)
            return read_catalogue(out_dir, class_names=names, colours=colours, short_names=short)

        self._image_layer = layer
        return self.run_controls.start(
            work, description=f"detecting sources in {field_path.name} and classifying them with {plugin.id}…",
            finished=self._show, name="tessera-galaxy-run",
            cancelled_text="cancelled; run again to continue")

    def cancel(self) -> None:
        self.run_controls.cancel()

    def _class_style(self, plugin: Any | None) -> tuple[list[str] | None, list[str] | None, list[str] | None]:
        if plugin is None:
            return None, None, None
        classes = getattr(plugin.manifest.output, "classes", None) or []
        names = [c.name for c in classes] or None
        colours = [c.colour for c in classes] or None
        short = plugin.manifest.params.get("short_names") if hasattr(plugin.manifest, "params") else None
        return names, colours, (list(short) if short else None)

    def show_results(self, out_dir: Path | str, *, plugin: Any = None, image_layer: Any = None) -> Any:
        """Show the outputs of a finished run (``tessera run`` or the Tessera dock) over
        ``image_layer`` (default: the field layer); reads them in a worker thread."""
        out_dir = Path(out_dir)
        if plugin is None:
            try:
                pid = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))["plugin"]["id"]
                plugin = self.plugin_combo.plugins.get(pid)
                if plugin is None:
                    from tessera.pipelines.plugin_system import get_plugin

                    plugin = get_plugin(pid)
            except Exception:  # no summary or an unknown plugin: class names from the files
                plugin = None
        names, colours, short = self._class_style(plugin)
        self._image_layer = image_layer or self.field_layer()

        def work(task: Any, reporter: Any) -> GalaxyCatalogue:
            return read_catalogue(out_dir, class_names=names, colours=colours, short_names=short)

        return self.run_controls.start(work, description=f"reading {out_dir}…", finished=self._show,
                                       name="tessera-galaxy-load")

    def _load_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder of a detect-classify run (catalogue.csv)")
        if path:
            self.show_results(Path(path))

    # ---- results on the canvas and in the table ------------------------------------------------
    def _show(self, cat: GalaxyCatalogue) -> None:
        image = self._image_layer if self._image_layer in self.viewer.layers else self.field_layer()
        self._remove_layers()
        self.catalogue = cat
        self.rows = cat.galaxy_rows
        self.selected = None
        stem = Path(cat.summary["input"]).name if cat.summary.get("input") else cat.out_dir.name
        scale = tuple(image.scale[-2:]) if image is not None else (1.0, 1.0)
        translate = tuple(image.translate[-2:]) if image is not None else (0.0, 0.0)
        units = tuple(image.units[-2:]) if image is not None else None
        common: dict[str, Any] = {"scale": scale, "translate": translate}
        if units is not None:
            common["units"] = units
        self._add_star_layer(cat, stem, common)
        self._add_galaxy_layer(cat, stem, common)
        if image is not None:
            self.viewer.layers.selection.active = image  # keep the Tessera dock on the field
        self._fill_table(cat)
        counts = np.bincount(cat.class_id[self.rows], minlength=len(cat.class_names)) if len(self.rows) else \
            np.zeros(len(cat.class_names), int)
        chips = " ".join(f"<span style='color:{c}'>■</span>&nbsp;{html.escape(n)}&nbsp;({k})"
                         for n, c, k in zip(cat.class_names, cat.colours, counts, strict=True))
        self.legend.setText(chips)
        n_star = int((cat.kind == "star").sum())
        text = (f"{len(self.rows)} galaxies classified, {n_star} stars (hidden layer) in {stem}; "
                f"outputs in {cat.out_dir}")
        self.run_controls.status.setText(text)
        notify_info(f"{len(self.rows)} galaxies classified in {stem}")
        self.galaxy_label.setText("Click a galaxy on the image or in the table.")
        self.figure.clear("")

    def _add_galaxy_layer(self, cat: GalaxyCatalogue, stem: str, common: dict[str, Any]) -> None:
        rows = self.rows
        if not len(rows):
            return
        k = cat.class_id[rows]
        colours = [cat.colours[c] for c in k]
        labels = [f"{int(i)} {cat.short_names[c]}" for i, c in zip(cat.ids[rows], k, strict=True)]
        features = {"id": cat.ids[rows], "class_name": [cat.class_names[c] for c in k], "label": labels,
                    "colour": colours}
        major, minor, theta = cat.semi_axes_px(rows)
        self._line_px = self._outline_width(common["scale"])
        meta = {CATALOGUE_KEY: str(cat.out_dir)}
        name = f"{stem}: galaxies"
        if len(rows) <= MAX_ELLIPSES:
            corners = outline_corners_yx(cat.y_px[rows], cat.x_px[rows], major, minor, theta)
            self.galaxy_layer = self.viewer.add_shapes(
                list(corners), shape_type="ellipse", name=name, edge_color=colours, face_color="transparent",
                edge_width=self._line_px, features=features, metadata=meta, opacity=0.95,
                text={"string": "{label}", "anchor": "upper_left", "size": 8, "color": {"feature": "colour"}},
                **common)
        else:
            self.galaxy_layer = self.viewer.add_points(
                np.column_stack([cat.y_px[rows], cat.x_px[rows]]), name=name, size=2 * major, symbol="o",
                face_color="transparent", border_color=colours, border_width=0.1, border_width_is_relative=True,
                features=features, metadata=meta, **common)
        self.galaxy_layer.mode = "pan_zoom"

    def _add_star_layer(self, cat: GalaxyCatalogue, stem: str, common: dict[str, Any]) -> None:
        stars = np.flatnonzero(cat.kind == "star")
        if not len(stars):
            return
        r50 = np.nan_to_num(cat.column("r50_px")[stars], nan=2.0)
        self.star_layer = self.viewer.add_points(
            np.column_stack([cat.y_px[stars], cat.x_px[stars]]), name=f"{stem}: stars", size=np.maximum(3 * r50, 6),
            face_color="transparent", border_color=STAR_COLOUR, border_width=0.08, border_width_is_relative=True,
            features={"id": cat.ids[stars]}, visible=False, metadata={CATALOGUE_KEY: str(cat.out_dir)}, **common)

    def _outline_width(self, scale: tuple[float, ...]) -> float:
        """Outline width in data units: about 1.5 screen pixels when the whole field fits
        the canvas (napari draws shape edges in data units)."""
        cat = self.catalogue
        extent = max(np.nanmax(cat.x_px) if len(cat.x_px) else 1.0, np.nanmax(cat.y_px) if len(cat.y_px) else 1.0)
        shape = cat.summary.get("field", {}).get("shape_yx")
        if shape:
            extent = max(shape)
        return float(max(1.0, extent / 700.0))

    def _fill_table(self, cat: GalaxyCatalogue) -> None:
        rows = self.rows
        k = cat.class_id[rows]
        ra, dec = cat.column("ra_deg")[rows], cat.column("dec_deg")[rows]
        cols = [
            Column("ID", cat.ids[rows].tolist(), "{}", "catalogue id (1-based)", True),
            Column("Class", [cat.class_names[c] for c in k]),
            Column("p", cat.column("prob_max")[rows].tolist(), "{:.2f}", "probability of the class", True),
            Column("x (px)", cat.x_px[rows].tolist(), "{:.1f}", "0-based field pixel, centres at integers", True),
            Column("y (px)", cat.y_px[rows].tolist(), "{:.1f}", "0-based field pixel, centres at integers", True),
        ]
        if np.isfinite(ra).any():
            cols += [Column("RA (°)", ra.tolist(), "{:.5f}", "ICRS right ascension, degrees", True),
                     Column("Dec (°)", dec.tolist(), "{:+.5f}", "ICRS declination, degrees", True)]
        if "mag_r" in cat.columns:
            cols.append(Column("r (mag)", cat.column("mag_r")[rows].tolist(), "{:.2f}", "AB magnitude, r band", True))
        if "r50_arcsec" in cat.columns:
            cols.append(Column("r50 (″)", cat.column("r50_arcsec")[rows].tolist(), "{:.2f}",
                               "half-light radius, arcsec", True))
        else:
            cols.append(Column("r50 (px)", cat.column("r50_px")[rows].tolist(), "{:.1f}",
                               "half-light radius, field pixels", True))
        cols.append(Column("S/N", cat.column("snr")[rows].tolist(), "{:.0f}", "detection signal-to-noise", True))
        self.table.set_columns(cols, colours=[cat.colours[c] for c in k])
        self.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)

    def _remove_layers(self) -> None:
        for layer in (self.galaxy_layer, self.star_layer):
            if layer is not None and layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self.galaxy_layer = self.star_layer = None

    def _layer_removed(self, event: Any = None) -> None:
        if self.galaxy_layer is not None and self.galaxy_layer not in self.viewer.layers:
            self.galaxy_layer = None
        if self.star_layer is not None and self.star_layer not in self.viewer.layers:
            self.star_layer = None
        self._update_field_label()

    # ---- selection ---------------------------------------------------------------------------
    def select_galaxy(self, index: int, *, centre: bool = True) -> int | None:
        """Select the ``index``-th galaxy shown (a table source row): table row, thicker
        outline, view centred on it (``centre``), cutout and probabilities. Returns its
        catalogue id."""
        cat = self.catalogue
        if cat is None or not (0 <= index < len(self.rows)):
            return None
        self.selected = index
        row = int(self.rows[index])
        self.table.select_source_row(index)
        self._highlight(index)
        if centre:
            self.centre_on(index)
        self._describe(row)
        self._figures.request("galaxy", lambda: galaxy_figure(cat, row, read_cutout(cat, int(cat.ids[row]))),
                              self.figure.set_figure)
        return int(cat.ids[row])

    def _highlight(self, index: int) -> None:
        layer = self.galaxy_layer
        if layer is None or layer not in self.viewer.layers:
            return
        if layer._type_string == "shapes":
            widths = [self._line_px] * len(self.rows)
            widths[index] = self._line_px * 3.0
            layer.edge_width = widths
        else:
            widths = np.full(len(self.rows), 0.1)
            widths[index] = 0.3
            layer.border_width = widths

    def world_yx(self, index: int) -> tuple[float, float]:
        """World (canvas) position of the ``index``-th galaxy shown."""
        cat, row = self.catalogue, int(self.rows[index])
        layer = self.galaxy_layer or self._image_layer
        scale = layer.scale[-2:] if layer is not None else (1.0, 1.0)
        translate = layer.translate[-2:] if layer is not None else (0.0, 0.0)
        return (float(cat.y_px[row] * scale[0] + translate[0]), float(cat.x_px[row] * scale[1] + translate[1]))

    def centre_on(self, index: int) -> None:
        """Centre the view on a galaxy; zoom in when it would be under ~40 screen pixels."""
        cam = camera(self.viewer)
        wy, wx = self.world_yx(index)
        cam.center = (wy, wx)
        major, _, _ = self.catalogue.semi_axes_px(self.rows[index : index + 1])
        layer = self.galaxy_layer or self._image_layer
        r_world = float(major[0]) * (float(layer.scale[-1]) if layer is not None else 1.0)
        if 2 * r_world * cam.zoom < 40:
            h, w = canvas_size_hw(self.viewer)
            cam.zoom = min(h, w) / (10 * r_world)

    def _describe(self, row: int) -> None:
        cat = self.catalogue
        k = int(cat.class_id[row])
        e = html.escape
        parts = [f"<b>#{int(cat.ids[row])} <span style='color:{cat.colours[k]}'>{e(cat.class_names[k])}</span></b> "
                 f"(p = {float(cat.probabilities[row, k]):.2f})"]
        ra, dec = cat.column("ra_deg")[row], cat.column("dec_deg")[row]
        if np.isfinite(ra):
            parts.append(f"RA {ra:.5f}°, Dec {dec:+.5f}°")
        parts.append(f"x {cat.x_px[row]:.1f}, y {cat.y_px[row]:.1f} px")
        mag = cat.column("mag_r")[row]
        if np.isfinite(mag):
            parts.append(f"r = {mag:.2f} mag")
        r50 = cat.column("r50_arcsec")[row]
        parts.append(f"r50 = {r50:.2f}″" if np.isfinite(r50) else f"r50 = {cat.column('r50_px')[row]:.1f} px")
        snr = cat.column("snr")[row]
        if np.isfinite(snr):
            parts.append(f"S/N {snr:.0f}")
        self.galaxy_label.setText(" · ".join(parts).replace("-", "\u2212"))

    def galaxy_at(self, world_yx: tuple[float, float], *, tolerance_screen_px: float = 6.0) -> int | None:
        """Index of the galaxy whose outline contains the world point (or whose centre is
        within a few screen pixels of it); the nearest one when several do."""
        cat = self.catalogue
        if cat is None or not len(self.rows):
            return None
        layer = self.galaxy_layer or self._image_layer
        scale = np.asarray(layer.scale[-2:], dtype=float) if layer is not None else np.ones(2)
        translate = np.asarray(layer.translate[-2:], dtype=float) if layer is not None else np.zeros(2)
        y, x = (np.asarray(world_yx[-2:], dtype=float) - translate) / scale
        d = np.hypot(cat.y_px[self.rows] - y, cat.x_px[self.rows] - x)
        major, _, _ = cat.semi_axes_px(self.rows)
        reach = np.maximum(major, tolerance_screen_px / (camera(self.viewer).zoom * scale[-1]))
        hit = d <= reach
        if not hit.any():
            return None
        return int(np.argmin(np.where(hit, d, np.inf)))

    def _mouse_drag(self, viewer: Any, event: Any) -> Any:
        """A click (press and release without a drag) on a galaxy selects it, in pan/zoom mode."""
        layer = self.galaxy_layer
        if layer is None or not layer.visible or layer not in viewer.layers:
            return
        active = viewer.layers.selection.active
        if active is not None and str(getattr(active, "mode", "pan_zoom")) != "pan_zoom":
            return  # another tool (drawing, selecting) owns the mouse
        start_pos, start_world = np.asarray(event.pos, dtype=float), tuple(event.position)
        yield
        moved = False
        while event.type == "mouse_move":
            if np.hypot(*(np.asarray(event.pos, dtype=float) - start_pos)) > 4:
                moved = True
            yield
        if moved:
            return
        index = self.galaxy_at(start_world)
        if index is not None:
            self.select_galaxy(index, centre=False)

    # ---- teardown ---------------------------------------------------------------------------
    def shutdown(self, timeout: float = 10.0) -> None:
        """Cancel a run, wait for the workers and stop listening to the viewer."""
        self.run_controls.shutdown(timeout)
        self._figures.join(timeout)
        if self._mouse_drag in self.viewer.mouse_drag_callbacks:
            self.viewer.mouse_drag_callbacks.remove(self._mouse_drag)
