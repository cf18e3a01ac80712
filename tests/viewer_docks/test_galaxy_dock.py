"""The galaxy morphology dock in a real window (Xvfb): a synthetic survey field, the
shipped Astroformer demo weights, galaxies ringed by class on the canvas, the catalogue
table, and a galaxy chosen from the table or by a click on the canvas."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui

napari = pytest.importorskip("napari")

from qtpy.QtCore import QPoint, Qt  # noqa: E402

from tessera.app.viewer.compat import camera  # noqa: E402
from tessera.app.viewer.docks import open_task_dock  # noqa: E402
from tessera.app.viewer.docks.galaxy import R50_FACTOR, GalaxyDock  # noqa: E402
from tessera.pipelines.plugin_system import get_plugin  # noqa: E402

MATCH_PX = 4.0  # a marker is on a true galaxy when its centre is this close (field px)


def _hex_rgba(colour: str) -> np.ndarray:
    return np.array([int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)] + [1.0])


def _inside_ellipse(corners_yx: np.ndarray, point_yx) -> bool:
    """Whether a point lies inside the ellipse napari draws in the box ``corners_yx``
    (4 corners in order, as the dock writes them)."""
    c = corners_yx.mean(axis=0)
    u, v = (corners_yx[1] - corners_yx[0]) / 2, (corners_yx[3] - corners_yx[0]) / 2
    p = np.asarray(point_yx, dtype=float) - c
    return float((p @ u / (u @ u)) ** 2 + (p @ v / (v @ v)) ** 2) <= 1.0


def _canvas_pos(viewer, world_yx) -> QPoint:
    """Canvas widget position (logical px) of a world point in the 2D view."""
    cam = camera(viewer)
    native = viewer.window._qt_viewer.canvas.native
    h, w = native.height(), native.width()
    y = (world_yx[0] - cam.center[-2]) * cam.zoom + h / 2
    x = (world_yx[1] - cam.center[-1]) * cam.zoom + w / 2
    return QPoint(round(x), round(y))


@pytest.mark.slow
def test_galaxy_dock_marks_classifies_and_selects(window, qtbot, galaxy_field, shot_dir):
    viewer = window.viewer
    plugin = get_plugin("astroformer")
    classes = plugin.manifest.output.classes
    dock = open_task_dock(viewer, "detect-classify", "astroformer")  # what the Tessera menu calls
    assert isinstance(dock, GalaxyDock) and dock.plugin().id == "astroformer"
    assert open_task_dock(viewer, "detect-classify") is dock  # one dock per window

    layers = dock.open_field(galaxy_field.fits_path)
    assert len(layers) >= 1
    image = dock.field_layer()
    assert "field.fits" in dock.field_label.text() and "768 × 768 px" in dock.field_label.text()
    task = dock.run()
    assert task is not None
    qtbot.waitUntil(lambda: dock.galaxy_layer is not None, timeout=120_000)
    cat = dock.catalogue

    # every true galaxy is ringed, at its position, in the colour of the class it was given
    truth = galaxy_field.galaxies()
    layer = dock.galaxy_layer
    assert layer._type_string == "shapes" and len(layer.data) == len(dock.rows) == dock.table.row_count()
    assert tuple(layer.scale[-2:]) == pytest.approx(tuple(image.scale[-2:]))
    inside = np.array([[_inside_ellipse(np.asarray(c)[:, -2:], (t.y_px, t.x_px)) for t in truth]
                       for c in layer.data])  # (markers, true galaxies)
    assert inside.any(axis=0).all()  # recall 1.0: every true galaxy's centre lies in a ring
    centres = np.array([np.asarray(c)[:, -2:].mean(axis=0) for c in layer.data])
    star_yx = np.array([[s.y_px, s.x_px] for s in galaxy_field.stars()])
    d_star = np.hypot(*(centres[:, None, :] - star_yx[None, :, :]).transpose(2, 0, 1))
    assert d_star.min() > MATCH_PX  # no star is called a galaxy
    assert len(dock.rows) <= len(truth) + 3  # deblended pieces of mergers at most
    d_true = np.hypot(*(centres[:, None, :] - np.array([[t.y_px, t.x_px] for t in truth])[None]).transpose(2, 0, 1))
    nearest = np.where(inside, d_true, np.inf).argmin(axis=0)  # the ring nearest each true centre
    given = cat.class_id[dock.rows[nearest]]
    assert np.mean(given == np.array([t.class_id for t in truth])) >= 0.75
    edge = np.asarray(layer.edge_color)
    for i, k in enumerate(cat.class_id[dock.rows]):
        np.testing.assert_allclose(edge[i], _hex_rgba(classes[k].colour), atol=0.01)
    # the outline's semi-major axis is R50_FACTOR half-light radii
    r50 = cat.column("r50_px")[dock.rows[0]]
    corners = np.asarray(layer.data[0])[:, -2:]
    assert np.linalg.norm(corners[1] - corners[0]) / 2 == pytest.approx(max(R50_FACTOR * r50, 4.0), rel=0.01)
    labels = list(layer.features["label"])
    assert labels[0] == f"{cat.ids[dock.rows[0]]} {cat.short_names[cat.class_id[dock.rows[0]]]}"
    assert layer.text.visible and list(layer.text.view_text(np.arange(len(labels)))) == labels
    assert dock.star_layer is not None and not dock.star_layer.visible
    assert len(dock.star_layer.data) == int((cat.kind == "star").sum()) > 0
    counts = np.bincount(cat.class_id[dock.rows], minlength=len(classes))
    for c, n in zip(classes, counts, strict=True):
        assert f"{c.name}&nbsp;({n})" in dock.legend.text()

    # the table: sorted by id; a row click selects that galaxy, centres and zooms on it
    assert dock.table.shown_text(0, 0) == str(int(cat.ids[dock.rows].min()))
    view_row = 2
    index = dock.table.source_row(view_row)
    zoom_before = camera(viewer).zoom
    dock.table.selectRow(view_row)
    assert dock.selected == index
    gid = int(cat.ids[dock.rows[index]])
    assert camera(viewer).center[-2:] == pytest.approx(dock.world_yx(index), abs=1e-6)
    assert camera(viewer).zoom > zoom_before
    widths = np.asarray(layer.edge_width)
    assert widths[index] == pytest.approx(3 * widths.min()) and np.sum(widths > widths.min()) == 1
    assert f"#{gid} " in dock.galaxy_label.text()
    qtbot.waitUntil(lambda: dock.figure.figure is not None, timeout=30_000)
    img_ax, bar_ax = dock.figure.figure.axes
    cutout = img_ax.images[0].get_array()
    assert cutout.shape == (64, 64, 3)
    heights = np.array([b.get_width() for b in bar_ax.patches])  # barh: class 0 at the top
    np.testing.assert_allclose(heights, np.nan_to_num(cat.probabilities[dock.rows[index]]), atol=1e-6)
    assert heights.sum() == pytest.approx(1.0, abs=1e-3)
    assert bar_ax.get_title() == f"#{gid}: {classes[cat.class_id[dock.rows[index]]].name}"

    # a click on another galaxy on the canvas selects it (and its table row)
    other = (index + 1) % len(dock.rows)
    viewer.reset_view()
    qtbot.wait(50)
    canvas = viewer.window._qt_viewer.canvas.native
    qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=_canvas_pos(viewer, dock.world_yx(other)))
    qtbot.waitUntil(lambda: dock.selected == other, timeout=5_000)
    assert dock.table.source_row(dock.table.currentIndex().row()) == other
    qtbot.waitUntil(lambda: dock.figure.figure is not None
                    and dock.figure.figure.axes[1].get_title().startswith(f"#{int(cat.ids[dock.rows[other]])}:"),
                    timeout=30_000)
    dock.table.selectRow(view_row)
    qtbot.waitUntil(lambda: dock.figure.figure is not None
                    and dock.figure.figure.axes[1].get_title().startswith(f"#{gid}:"), timeout=30_000)
    qtbot.wait(200)
    from skimage.io import imsave

    imsave(shot_dir / "galaxy_dock.png", viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)
