"""Catalyst screening dock: eDOS dataset -> predicted energies -> volcano, periodic tables,
ranked candidates; a click on a candidate shows its free-energy diagram and its DOS.

Everything scientific is ``tessera.pipelines.catalysis`` (the same code as ``tessera
screen``): ``predict_dataset`` with the plugin's engine (``PluginPredictor``),
``screen_energies`` (CHE free energies, hybrid scaling fits, limiting potentials), and
the matplotlib figures of ``plots``. The dock runs the prediction and the slow figures
(the volcano map takes about a second to draw) in worker threads and embeds the figures
with ``FigureCanvasQTAgg``. The selected candidate is ringed in the volcano plane and
framed in the periodic table; its DOS is shown for the reactant of its limiting step
(the adsorbate whose binding decides U_L), or any adsorbate the dataset holds for it.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from tessera.app.viewer.dock import notify_error, notify_info
from tessera.app.viewer.docks.panels import (
    Column,
    ColumnTable,
    FigureJobs,
    FigurePanel,
    PluginCombo,
    RunControls,
)
from tessera.app.viewer.tasks import preload_modules
from tessera.pipelines.catalysis import plots
from tessera.pipelines.catalysis.che import PATH_ADSORBATES
from tessera.pipelines.catalysis.io import EdosDataset, open_edos
from tessera.pipelines.catalysis.layout import ADSORBATES, METALS
from tessera.pipelines.catalysis.screening import (
    Candidate,
    ScreeningResult,
    predict_dataset,
    ranked_rows,
    screen_energies,
)
from tessera.pipelines.progress import check_cancelled

log = logging.getLogger(__name__)

TASK = "spectra-regress"
DEFAULT_PLUGIN = "sac-cnn"
#: Ring/frame colour of the selected candidate (distinct from the red "best" frames).
SELECTED_COLOUR = "#e6007e"
#: At least this many candidates with *CO and *OH: the hybrid scaling fit needs them
#: (the spectra-regress runner's rule).
MIN_DESCRIPTOR_CANDIDATES = 4
#: What the workers import lazily; imported in the UI thread first (see tasks.py).
WORKER_MODULES = (
    "h5py", "zarr", "onnxruntime", "contourpy", "matplotlib.patheffects", "matplotlib.patches",
    "matplotlib.colors", "matplotlib.backends.backend_agg", "tessera.pipelines.engines.ort_engine",
    "tessera.pipelines.plugin_system.tasks", "tessera.pipelines.catalysis.volcano",
    "tessera.pipelines.catalysis.scaling",
)
DATASET_FILTER = "eDOS datasets (*.h5 *.hdf5 *.hdf *.npz *.npy *.zarr);;All files (*)"


def limiting_reactant(candidate: Candidate) -> str | None:
    """The adsorbate that starts the potential-limiting step ('CO' for *CO -> *CHO;
    'CO2' for the first step), or None when the candidate was not screened."""
    k = candidate.step_index
    if k < 0:
        return None
    return "CO2" if k == 0 else PATH_ADSORBATES[k - 1]


@dataclass
class Screening:
    """What one screening run produced (built in the worker)."""

    dataset_path: Path
    plugin_id: str
    predictions_ev: np.ndarray
    result: ScreeningResult
    supports: list[str]
    volcano: Any
    tables: Any


class CatalystDock(QWidget):
    """Screen an eDOS dataset with a spectra-regress plugin and explore the candidates.

    Public methods are what the controls do (tests call them): ``open_dataset``,
    ``select_plugin``, ``screen``, ``cancel``, ``select_candidate``, ``show_support``,
    ``show_dos``, ``shutdown``.
    """

    #: The canvas has nothing to show for an eDOS dataset: the dock takes most of the window.
    PREFERRED_WIDTH_FRACTION = 0.7

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.dataset: EdosDataset | None = None
        self.screening: Screening | None = None
        self.selected: tuple[str, str] | None = None
        self._figures = FigureJobs()
        preload_modules(WORKER_MODULES)
        self._build()

    # ---- layout ---------------------------------------------------------------------
    def _build(self) -> None:
        self.setMinimumWidth(480)
        root = QVBoxLayout(self)
        data_box = QGroupBox("eDOS dataset")
        dl = QVBoxLayout(data_box)
        row = QHBoxLayout()
        self.dataset_label = QLabel("No dataset: open an HDF5/zarr/npz eDOS dataset "
                                    "(<code>tessera synth edos</code> makes one)")
        self.dataset_label.setWordWrap(True)
        self.dataset_label.setTextFormat(Qt.TextFormat.RichText)
        open_button = QPushButton("Open dataset…")
        open_button.clicked.connect(self._open_dialog)
        row.addWidget(self.dataset_label, 1)
        row.addWidget(open_button)
        dl.addLayout(row)
        mrow = QHBoxLayout()
        mrow.addWidget(QLabel("Model"))
        self.plugin_combo = PluginCombo(TASK, DEFAULT_PLUGIN)
        mrow.addWidget(self.plugin_combo, 1)
        dl.addLayout(mrow)
        self.run = RunControls("Screen candidates")
        self.run.run_button.clicked.connect(self.screen)
        dl.addWidget(self.run)
        root.addWidget(data_box)

        # left: the screening's figures and table; right: the selected candidate
        split = QSplitter(Qt.Orientation.Horizontal)
        self.tabs = QTabWidget()
        self.volcano = FigurePanel("The volcano plot appears here after screening.")
        self.volcano.clicked.connect(self._volcano_clicked)
        self.tabs.addTab(self.volcano, "Volcano")
        table_page = QWidget()
        tl = QVBoxLayout(table_page)
        tl.setContentsMargins(0, 0, 0, 0)
        srow = QHBoxLayout()
        srow.addWidget(QLabel("Support"))
        self.support_combo = QComboBox()
        self.support_combo.currentIndexChanged.connect(lambda _i: self.show_support(self.support_combo.currentData()))
        srow.addWidget(self.support_combo, 1)
        tl.addLayout(srow)
        self.periodic = FigurePanel("Limiting-potential periodic tables appear here after screening.")
        self.periodic.clicked.connect(self._periodic_clicked)
        tl.addWidget(self.periodic, 1)
        self.tabs.addTab(table_page, "Periodic table")
        self.table = ColumnTable()
        self.table.row_selected.connect(self._row_selected)
        self.tabs.addTab(self.table, "Ranked candidates")
        split.addWidget(self.tabs)

        cand = QWidget()
        cl = QVBoxLayout(cand)
        cl.setContentsMargins(0, 0, 0, 0)
        self.candidate_label = QLabel("Click a candidate in the volcano plot, the periodic table or the table.")
        self.candidate_label.setWordWrap(True)
        self.candidate_label.setTextFormat(Qt.TextFormat.RichText)
        cl.addWidget(self.candidate_label)
        cand_split = QSplitter(Qt.Orientation.Vertical)
        self.free_energy = FigurePanel("")
        cand_split.addWidget(self.free_energy)
        dos_page = QWidget()
        dpl = QVBoxLayout(dos_page)
        dpl.setContentsMargins(0, 0, 0, 0)
        arow = QHBoxLayout()
        arow.addWidget(QLabel("DOS with adsorbate"))
        self.adsorbate_combo = QComboBox()
        self.adsorbate_combo.currentIndexChanged.connect(lambda _i: self.show_dos(self.adsorbate_combo.currentData()))
        arow.addWidget(self.adsorbate_combo, 1)
        dpl.addLayout(arow)
        self.dos = FigurePanel("")
        dpl.addWidget(self.dos, 1)
        cand_split.addWidget(dos_page)
        cl.addWidget(cand_split, 1)
        split.addWidget(cand)
        split.setStretchFactor(0, 11)
        split.setStretchFactor(1, 9)
        cand_split.setStretchFactor(0, 9)
        cand_split.setStretchFactor(1, 10)
        self._splits = (split, cand_split)
        root.addWidget(split, 1)
        self._update_buttons()

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        if not getattr(self, "_sized", False):  # first show: share the width 55:45
            self._sized = True
            split, cand_split = self._splits
            w = max(split.width(), 1)
            split.setSizes([int(w * 0.55), w - int(w * 0.55)])
            h = max(cand_split.height(), 1)
            cand_split.setSizes([int(h * 0.46), h - int(h * 0.46)])

    # ---- plugin and dataset -------------------------------------------------------------
    def refresh_plugins(self) -> None:
        self.plugin_combo.refresh()
        self._update_buttons()

    def select_plugin(self, plugin: Any) -> None:
        """Choose a spectra-regress plugin by id, or a Plugin object."""
        self.plugin_combo.select(plugin)
        self._update_buttons()

    def plugin(self) -> Any | None:
        return self.plugin_combo.current()

    def _open_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open eDOS dataset", "", DATASET_FILTER)
        if path:
            self.open_dataset(Path(path))

    def open_dataset(self, path: Path | str) -> EdosDataset | None:
        """Open a dataset (lazily: arrays are read when screened); None and a
        notification when it cannot be opened."""
        if self.run.running:
            notify_error("a screening is running; cancel it before opening another dataset")
            return None
        try:
            ds = open_edos(Path(path))
        except Exception as exc:
            notify_error(str(exc) if str(path) in str(exc) else f"{path}: {exc}")
            return None
        if self.dataset is not None:
            self.dataset.close()
        self.dataset = ds
        self._clear_results()
        cands = ds.candidates()
        metals = sorted({m for m, _ in cands}, key=lambda m: METALS.get(m, (9, 99))[::-1])
        supports = plots.ordered_supports(s for _, s in cands)
        ads = [a for a in ADSORBATES if a in set(ds.adsorbate)]
        known = int(np.isfinite(ds.e_ads_ev).sum())
        e = html.escape
        text = (f"<b>{e(Path(path).name)}</b>: {len(ds)} samples, {len(cands)} candidates "
                f"({len(metals)} metals × {len(supports)} supports), adsorbates "
                f"{e(', '.join(ads))}; reference energies: {known if known else 'none'}")
        n_descr = self._descriptor_candidates()
        if n_descr < MIN_DESCRIPTOR_CANDIDATES:
            text += (f"<br><span style='color:#e06c00'>Only {n_descr} candidates have both *CO and *OH: "
                     f"the scaling-relation screening needs at least {MIN_DESCRIPTOR_CANDIDATES}.</span>")
        self.dataset_label.setText(text)
        self.dataset_label.setToolTip(str(path))
        self.run.status.setText("")
        self._update_buttons()
        return ds

    def _descriptor_candidates(self) -> int:
        ds = self.dataset
        if ds is None:
            return 0
        have: dict[tuple[str, str], set[str]] = {}
        for m, s, a in zip(ds.metal, ds.support, ds.adsorbate, strict=True):
            have.setdefault((m, s), set()).add(a)
        return sum(1 for v in have.values() if {"CO", "OH"} <= v)

    def _update_buttons(self) -> None:
        ok = (self.dataset is not None and self.plugin() is not None
              and self._descriptor_candidates() >= MIN_DESCRIPTOR_CANDIDATES)
        self.run.run_button.setEnabled(ok and not self.run.running)

    # ---- screening ----------------------------------------------------------------------
    def screen(self) -> Any:
        """Predict every sample's energy and screen the candidates in a worker thread;
        returns the BackgroundTask (None when nothing can run)."""
        ds, plugin = self.dataset, self.plugin()
        if ds is None or plugin is None:
            notify_error("open an eDOS dataset and choose a spectra-regress model first")
            return None
        from tessera.pipelines.runners.base import PluginPredictor, plugin_ref

        plugin.processing()  # imported here, in the UI thread, not by the worker
        predictor = PluginPredictor(plugin_ref(plugin), TASK)
        batch_size = int(plugin.manifest.input.batch_size or 32)
        path = Path(ds.path) if ds.path is not None else Path("dataset")
        reference = ds.e_ads_ev if np.isfinite(ds.e_ads_ev).any() else None

        def work(task: Any, reporter: Any) -> Screening:
            pred = predict_dataset(ds, predictor, batch_size=batch_size, progress=reporter, cancel=task.cancel)
            reporter.start(0, "fitting scaling relations and limiting potentials")
            result = screen_energies(ds.metal, ds.support, ds.adsorbate, pred, reference_ev=reference)
            check_cancelled(task.cancel)
            reporter.start(0, "drawing the volcano plot")
            volcano = plots.volcano_figure(result)
            check_cancelled(task.cancel)
            reporter.start(0, "drawing the periodic tables")
            supports = plots.ordered_supports(c.support for c in result.candidates)
            tables = plots.periodic_tables_figure(result, supports)
            check_cancelled(task.cancel)
            return Screening(path, plugin.id, pred, result, supports, volcano, tables)

        self._clear_results()
        task = self.run.start(work, description=f"screening {path.name} with {plugin.id}…",
                              finished=self._screened, name="tessera-catalyst-screen",
                              cancelled_text="cancelled; nothing was changed")
        self._update_buttons()
        return task

    def cancel(self) -> None:
        self.run.cancel()

    def _screened(self, screening: Screening) -> None:
        self.screening = screening
        result = screening.result
        self.volcano.set_figure(screening.volcano)
        self.periodic.set_figure(screening.tables)
        self.support_combo.blockSignals(True)
        self.support_combo.clear()
        self.support_combo.addItem("All supports (shared colour scale)", None)
        for s in screening.supports:
            self.support_combo.addItem(s, s)
        self.support_combo.blockSignals(False)
        self._fill_table(result)
        best = next((c for c in result.candidates if np.isfinite(c.u_l_v)), None)
        text = f"{len(result.candidates)} candidates screened with {screening.plugin_id}"
        if best is not None:
            text += f"; best {best.name}: U_L = {plots.num(best.u_l_v)} V vs RHE ({best.limiting_step})"
        if result.reference_mae_ev.get("all") is not None:
            text += f"; prediction MAE vs the dataset's energies {result.reference_mae_ev['all']:.3f} eV"
        self.run.status.setText(text)
        notify_info(text)
        self._update_buttons()
        if best is not None:
            self.select_candidate(best.metal, best.support)

    def _fill_table(self, result: ScreeningResult) -> None:
        rows = ranked_rows(result)
        col = lambda key: [r[key] for r in rows]  # noqa: E731
        self.table.set_columns([
            Column("Rank", col("rank"), "{}", "rank by limiting potential (highest U_L first)", True),
            Column("Metal", col("metal")),
            Column("Support", col("support")),
            Column("U_L (V)", col("U_L_V_vs_RHE"), "{:.3f}", "limiting potential, V vs RHE (CHE)", True),
            Column("η (V)", col("overpotential_V"), "{:.3f}",
                   "overpotential: equilibrium potential of CO2→CH4 minus U_L", True),
            Column("Limiting step", col("limiting_step")),
            Column("ΔG*CO (eV)", col("G_CO_eV"), "{:.3f}", "free energy of *CO (descriptor)", True),
            Column("ΔG*OH (eV)", col("G_OH_eV"), "{:.3f}", "free energy of *OH (descriptor)", True),
            Column("Source", col("source"), "{}", "direct: every path intermediate predicted; "
                   "scaling: missing ones from the hybrid scaling relations"),
        ])
        self.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self._table_keys = [(r["metal"], r["support"]) for r in rows]

    def _clear_results(self) -> None:
        self.screening = None
        self.selected = None
        self.volcano.clear("The volcano plot appears here after screening.")
        self.periodic.clear("Limiting-potential periodic tables appear here after screening.")
        self.free_energy.clear("")
        self.dos.clear("")
        self.table.set_columns([])
        self._table_keys: list[tuple[str, str]] = []
        self.support_combo.blockSignals(True)
        self.support_combo.clear()
        self.support_combo.blockSignals(False)
        self.adsorbate_combo.blockSignals(True)
        self.adsorbate_combo.clear()
        self.adsorbate_combo.blockSignals(False)
        self.candidate_label.setText("Click a candidate in the volcano plot, the periodic table or the table.")

    # ---- periodic tables --------------------------------------------------------------------
    def show_support(self, support: str | None) -> Any:
        """Show all supports' periodic tables (None) or one support's, larger."""
        s = self.screening
        if s is None:
            return None
        if support is None:
            self.periodic.set_figure(s.tables)
            self._mark_selected()
            return None
        result = s.result

        def show(fig: Any) -> None:
            self.periodic.set_figure(fig)
            self._mark_selected()

        return self._figures.request("periodic", lambda: plots.periodic_table_figure(result, support), show)

    def _periodic_supports(self) -> list[str]:
        s = self.screening
        if s is None:
            return []
        current = self.support_combo.currentData()
        return [current] if current else list(s.supports)

    # ---- selection --------------------------------------------------------------------------
    def select_candidate(self, metal: str, support: str) -> Candidate | None:
        """Show one candidate: ring it in the volcano, frame it in the periodic table,
        select its table row, and draw its free-energy diagram and DOS."""
        s = self.screening
        if s is None:
            return None
        try:
            c = s.result.candidate(metal, support)
        except KeyError as exc:
            notify_error(str(exc))
            return None
        self.selected = (metal, support)
        if (metal, support) in self._table_keys:
            self.table.select_source_row(self._table_keys.index((metal, support)))
        self._mark_selected()
        e = html.escape
        if np.isfinite(c.u_l_v):
            how = "all intermediates predicted" if c.source == "direct" else \
                "missing intermediates from the scaling relations"
            self.candidate_label.setText(
                f"<b>#{c.rank} {e(c.name)}</b>: U<sub>L</sub> = {e(plots.num(c.u_l_v))} V vs RHE, "
                f"limiting step {e(c.limiting_step)} ({how}); ΔG<sub>*CO</sub> = "
                f"{e(plots.num(c.g_ev.get('CO', np.nan)))} eV, ΔG<sub>*OH</sub> = "
                f"{e(plots.num(c.g_ev.get('OH', np.nan)))} eV. "
                f"<span style='color:{SELECTED_COLOUR}'>Selected: ringed in the plots.</span>")
            settings = s.result.settings
            self._figures.request("free energy", lambda: plots.free_energy_figure(c, settings),
                                  self.free_energy.set_figure)
        else:
            self.candidate_label.setText(f"<b>{e(c.name)}</b> was not screened: the dataset lacks its "
                                         "*CO or *OH energy.")
            self.free_energy.clear("No free-energy path: *CO or *OH is missing for this candidate.")
        self._fill_adsorbates(c)
        return c

    def _fill_adsorbates(self, c: Candidate) -> None:
        ds = self.dataset
        have = {a for m, sp, a in zip(ds.metal, ds.support, ds.adsorbate, strict=True)
                if (m, sp) == (c.metal, c.support)} if ds is not None else set()
        ads = [a for a in ADSORBATES if a in have]
        want = limiting_reactant(c)
        current = want if want in ads else (ads[0] if ads else None)
        self.adsorbate_combo.blockSignals(True)
        self.adsorbate_combo.clear()
        for a in ads:
            tag = " (starts the limiting step)" if a == want else ""
            self.adsorbate_combo.addItem(f"*{a}{tag}", a)
        if current is not None:
            self.adsorbate_combo.setCurrentIndex(ads.index(current))
        self.adsorbate_combo.blockSignals(False)
        self.show_dos(current)

    def show_dos(self, adsorbate: str | None) -> Any:
        """Draw the selected candidate's eDOS with ``adsorbate`` (read in a worker)."""
        ds, sel = self.dataset, self.selected
        if ds is None or sel is None or adsorbate is None:
            self.dos.clear("No eDOS sample for this candidate.")
            return None
        i = ds.find(sel[0], sel[1], adsorbate)
        if i is None:
            self.dos.clear(f"The dataset has no *{adsorbate} sample of {sel[0]}/{sel[1]}.")
            return None
        title = f"{sel[0]}/{plots.support_label(sel[1])} with {plots.formula(adsorbate)}"
        return self._figures.request(
            "DOS", lambda: plots.dos_figure(ds.read(i, i + 1)[0], adsorbate=adsorbate, title=title), self.dos.set_figure)

    def _mark_selected(self) -> None:
        """Ring the selected candidate in the volcano plane and frame it in the periodic table(s)."""
        s, sel = self.screening, self.selected
        if s is None or sel is None:
            return
        c = s.result.candidate(*sel)
        if self.volcano.figure is not None and "CO" in c.g_ev and "OH" in c.g_ev:
            ax = self.volcano.figure.axes[0]
            (ring,) = ax.plot([c.g_ev["CO"]], [c.g_ev["OH"]], marker="o", markersize=15, markerfacecolor="none",
                              markeredgecolor=SELECTED_COLOUR, markeredgewidth=2.4, linestyle="none", zorder=6)
            self.volcano.set_marks([ring])
        if self.periodic.figure is not None and c.metal in METALS:
            from matplotlib.patches import Rectangle

            periods = sorted({p for p, _ in METALS.values()})
            period, group = METALS[c.metal]
            marks = []
            for ax, support in zip(self.periodic.figure.axes, self._periodic_supports(), strict=False):
                if support != c.support:
                    continue
                rect = Rectangle((group - 3 - 0.04, periods.index(period) - 0.04), 1.08, 1.08, fill=False,
                                 edgecolor=SELECTED_COLOUR, linewidth=2.6, zorder=6, clip_on=False)
                ax.add_patch(rect)
                marks.append(rect)
            self.periodic.set_marks(marks)

    def _row_selected(self, row: int) -> None:
        if 0 <= row < len(self._table_keys):
            self.select_candidate(*self._table_keys[row])

    def candidate_near(self, x_px: float, y_px: float, max_px: float = 10.0) -> Candidate | None:
        """The candidate plotted nearest the display point (x, y) in the volcano plane,
        within ``max_px`` display pixels, or None."""
        s = self.screening
        if s is None or self.volcano.figure is None:
            return None
        ax = self.volcano.figure.axes[0]  # volcano_figure's first axes is the (G_CO, G_OH) plane
        cands = [c for c in s.result.candidates if "CO" in c.g_ev and "OH" in c.g_ev]
        if not cands:
            return None
        pts = ax.transData.transform(np.array([[c.g_ev["CO"], c.g_ev["OH"]] for c in cands]))
        d = np.hypot(pts[:, 0] - x_px, pts[:, 1] - y_px)
        j = int(np.argmin(d))
        return cands[j] if d[j] <= max_px else None

    def _volcano_clicked(self, event: Any) -> None:
        if self.volcano.figure is None or event.inaxes is not self.volcano.figure.axes[0]:
            return
        c = self.candidate_near(event.x, event.y)
        if c is not None:
            self.select_candidate(c.metal, c.support)

    def _periodic_clicked(self, event: Any) -> None:
        s = self.screening
        if s is None or self.periodic.figure is None or event.xdata is None:
            return
        supports = self._periodic_supports()
        axes = list(self.periodic.figure.axes)[: len(supports)]
        if event.inaxes not in axes:
            return
        support = supports[axes.index(event.inaxes)]
        periods = sorted({p for p, _ in METALS.values()})
        col, row = int(np.floor(event.xdata)), int(np.floor(event.ydata))
        if not (0 <= row < len(periods)):
            return
        metal = next((m for m, (p, g) in METALS.items() if p == periods[row] and g - 3 == col), None)
        if metal is None:
            return
        if any((c.metal, c.support) == (metal, support) for c in s.result.candidates):
            self.select_candidate(metal, support)

    # ---- teardown ---------------------------------------------------------------------------
    def shutdown(self, timeout: float = 10.0) -> None:
        """Cancel a running screening and wait for the workers (dock closing)."""
        self.run.shutdown(timeout)
        self._figures.join(timeout)
        if self.dataset is not None:
            self.dataset.close()
            self.dataset = None
