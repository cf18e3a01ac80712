"""The catalyst screening dock in a real window (Xvfb): a synthetic eDOS dataset screened
with the shipped sac-cnn demo weights; the volcano plot, periodic tables and ranked table
are filled from the screening, and a candidate chosen in the table or the volcano plot
gets its free-energy diagram and DOS."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui

napari = pytest.importorskip("napari")

from tessera.app.viewer.docks import open_task_dock  # noqa: E402
from tessera.app.viewer.docks.catalyst import SELECTED_COLOUR, CatalystDock, limiting_reactant  # noqa: E402
from tessera.pipelines.catalysis import plots  # noqa: E402
from tessera.pipelines.catalysis.layout import ADSORBATES, METALS  # noqa: E402


@pytest.mark.slow
def test_catalyst_dock_screens_and_explains_a_candidate(window, qtbot, edos_dataset, shot_dir):
    viewer = window.viewer
    dock = open_task_dock(viewer, "spectra-regress", "sac-cnn")
    assert isinstance(dock, CatalystDock) and dock.plugin().id == "sac-cnn"
    assert not dock.run.run_button.isEnabled()  # no dataset yet

    ds = dock.open_dataset(edos_dataset)
    assert ds is not None and len(ds) == 6 * 2 * 9
    assert "108 samples, 12 candidates (6 metals × 2 supports)" in dock.dataset_label.text()
    assert dock.run.run_button.isEnabled()
    task = dock.screen()
    assert task is not None
    qtbot.waitUntil(lambda: dock.screening is not None, timeout=120_000)
    result = dock.screening.result
    assert len(result.candidates) == 12
    assert result.reference_mae_ev["all"] < 0.25  # the demo model on unseen synthetic samples

    # ranked table: one row per candidate, ranks 1..12 by U_L (highest first)
    assert dock.table.row_count() == 12
    ranks = [int(dock.table.shown_text(r, 0)) for r in range(12)]
    assert ranks == list(range(1, 13))
    u_shown = [float(dock.table.shown_text(r, 3).replace("\u2212", "-")) for r in range(12)]
    assert u_shown == sorted(u_shown, reverse=True)
    best = result.candidates[0]
    assert (dock.table.shown_text(0, 1), dock.table.shown_text(0, 2)) == (best.metal, best.support)
    assert u_shown[0] == pytest.approx(best.u_l_v, abs=5e-4)

    # volcano: every candidate plotted at its (G_CO, G_OH); the best one is selected and ringed
    ax = dock.volcano.figure.axes[0]
    labels = {plots.support_label(sp) for sp in dock.screening.supports}
    pts = np.concatenate([c.get_offsets() for c in ax.collections if c.get_label() in labels])
    want = np.array([[c.g_ev["CO"], c.g_ev["OH"]] for c in result.candidates])
    assert len(pts) == len(want) == 12
    assert np.hypot(*(pts[:, None, :] - want[None]).transpose(2, 0, 1)).min(axis=0).max() < 1e-6
    assert dock.selected == (best.metal, best.support)
    [ring] = dock.volcano._marks
    assert ring.get_markeredgecolor() == SELECTED_COLOUR
    assert (ring.get_xdata()[0], ring.get_ydata()[0]) == pytest.approx((best.g_ev["CO"], best.g_ev["OH"]))
    assert len(dock.periodic.figure.axes) >= 2  # one periodic table per support (+ colour bar)
    assert [dock.support_combo.itemData(i) for i in range(dock.support_combo.count())] == [None, *dock.screening.supports]

    # a table row -> that candidate's free-energy diagram and DOS
    row = 5
    metal, support = dock.table.shown_text(row, 1), dock.table.shown_text(row, 2)
    dock.table.selectRow(row)
    assert dock.selected == (metal, support)
    cand = result.candidate(metal, support)
    assert f"#{cand.rank} {metal}" in dock.candidate_label.text()
    qtbot.waitUntil(lambda: dock.free_energy.figure is not None and dock.dos.figure is not None
                    and dock.dos.figure.axes[0].get_title().startswith(f"{metal}/"), timeout=30_000)
    fe_ax = dock.free_energy.figure.axes[0]
    assert fe_ax.get_title().startswith(f"{metal}/{plots.support_label(support)}: U$_L$ = {plots.num(cand.u_l_v)} V")
    black = [line for line in fe_ax.get_lines() if line.get_color() == "black" and line.get_linewidth() > 2]
    np.testing.assert_allclose([line.get_ydata()[0] for line in black], cand.states_ev, atol=1e-9)  # U = 0 V
    hot = [line for line in fe_ax.get_lines() if line.get_color() == "#d62728"]
    assert len(hot) == 1 and hot[0].get_xdata()[0] == pytest.approx(cand.step_index + 0.3)  # limiting step
    have = [dock.adsorbate_combo.itemData(i) for i in range(dock.adsorbate_combo.count())]
    assert have == list(ADSORBATES)  # every adsorbate is in the synthetic set
    want_ads = limiting_reactant(cand)
    assert dock.adsorbate_combo.currentData() == (want_ads if want_ads in have else have[0])
    i = ds.find(metal, support, dock.adsorbate_combo.currentData())
    edos = ds.read(i, i + 1)[0]
    np.testing.assert_allclose(dock.dos.figure.axes[0].get_lines()[0].get_ydata(), edos[:, 4, 0], rtol=1e-6)

    # a click on another candidate in the volcano plane selects it
    other = next(c for c in result.candidates if (c.metal, c.support) != (metal, support))
    x, y = ax.transData.transform((other.g_ev["CO"], other.g_ev["OH"]))
    assert dock.candidate_near(x, y) is other
    dock._volcano_clicked(type("E", (), {"inaxes": ax, "x": x, "y": y})())
    assert dock.selected == (other.metal, other.support)
    assert dock.table.source_row(dock.table.currentIndex().row()) == dock._table_keys.index(
        (other.metal, other.support))

    # one support's periodic table, larger, with the selection framed
    dock.support_combo.setCurrentIndex(dock.support_combo.findData(other.support))
    qtbot.waitUntil(lambda: dock.periodic.figure is not None and len(dock.periodic._marks) == 1, timeout=30_000)
    [frame] = dock.periodic._marks
    period, group = METALS[other.metal]
    periods = sorted({p for p, _ in METALS.values()})
    assert frame.get_xy() == pytest.approx((group - 3 - 0.04, periods.index(period) - 0.04))
    # a click on another metal's cell of that table selects that candidate
    third = next(c for c in result.candidates if c.support == other.support and c.metal != other.metal)
    p3, g3 = METALS[third.metal]
    table_ax = dock.periodic.figure.axes[0]
    dock._periodic_clicked(type("E", (), {"inaxes": table_ax, "xdata": g3 - 3 + 0.5,
                                          "ydata": periods.index(p3) + 0.5})())
    assert dock.selected == (third.metal, third.support)
    assert dock.periodic._marks[0].get_xy() == pytest.approx((g3 - 3 - 0.04, periods.index(p3) - 0.04))
    qtbot.waitUntil(lambda: dock.free_energy.figure is not None and dock.dos.figure is not None, timeout=30_000)
    dock.tabs.setCurrentIndex(0)
    qtbot.wait(300)
    from skimage.io import imsave

    imsave(shot_dir / "catalyst_dock.png", viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)
