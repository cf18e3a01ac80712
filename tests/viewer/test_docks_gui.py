"""The SAM prompt dock and the CT dock in a real window (Xvfb), with stand-in models
whose answers are known: a fake SAM whose mask is a disk around the first positive
point, and the test segment-3d plugin (intensity bands)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytestmark = pytest.mark.gui

napari = pytest.importorskip("napari")

from tessera.app.viewer.ct_dock import CtDock  # noqa: E402
from tessera.app.viewer.sam_dock import SamDock  # noqa: E402
from tessera.pipelines.plugin_system import load_plugin_folder  # noqa: E402
from tessera.pipelines.prompting.runtime import SamRuntime  # noqa: E402
from tessera.pipelines.prompting.session import PromptSession  # noqa: E402
from tessera.pipelines.prompting.transforms import resized_shape  # noqa: E402

RADIUS_PX = 6.0  # disk radius in the encoded level's pixels


class DiskEncoder:
    def __init__(self) -> None:
        self.input_names = ["image"]
        self.output_names = ["image_embeddings"]
        self.calls = 0
        self.lock = threading.Lock()

    def run(self, inputs):
        with self.lock:
            self.calls += 1
        return {"image_embeddings": np.zeros((1, 3, 4, 4), np.float32)}


class DiskDecoder:
    def __init__(self, size: int) -> None:
        self.input_names = ["image_embeddings", "point_coords", "point_labels", "mask_input",
                            "has_mask_input", "orig_im_size"]
        self.output_names = ["masks", "iou_predictions", "low_res_masks"]
        self.size = size

    def run(self, inputs):
        coords, labels = inputs["point_coords"][0], inputs["point_labels"][0]
        h, w = (int(v) for v in inputs["orig_im_size"])
        rh, rw = resized_shape(h, w, self.size)
        pos = coords[labels == 1]
        cx, cy = pos[0] if len(pos) else coords[np.isin(labels, (2, 3))].mean(axis=0)
        cx, cy = cx * w / rw, cy * h / rh
        yy, xx = np.mgrid[0:h, 0:w]
        logits = RADIUS_PX - np.hypot(xx - cx, yy - cy)
        n = self.size // 4
        return {"masks": logits[None, None].astype(np.float32), "iou_predictions": np.array([[0.95]], np.float32),
                "low_res_masks": np.zeros((1, 1, n, n), np.float32)}


WINDOW_SIZE = (1300, 850)  # the window fixture (conftest) uses it


def test_sam_dock_previews_commits_and_clears(window, qtbot, tmp_path, synth, slide):
    path = synth.write_slide_file(tmp_path / "s.tif", slide.image, mpp=slide.mpp)
    [image] = window.open(path)
    encoder = DiskEncoder()
    runtime = SamRuntime(encoder, DiskDecoder(64), input_size=64, model_id="disk")
    dock = SamDock(window.viewer, session_factory=lambda: PromptSession(runtime, max_windows=4096))
    window.viewer.window.add_dock_widget(dock, name="SAM")
    assert dock.attach()
    click_l0 = np.array([700.0, 900.0])  # level-0 (y, x) pixel indices
    dock.points_layer.add(click_l0)  # a positive click (data coordinates = level 0)
    qtbot.waitUntil(lambda: dock.preview_layer is not None and dock.tool.preview is not None, timeout=60_000)
    qtbot.waitUntil(lambda: dock._task is not None and not dock._task.running, timeout=30_000)
    assert encoder.calls >= 1 and "score 0.95" in dock.status.text() and "encoded its window" in dock.status.text()
    # the preview disk is centred on the click, in world coordinates
    prev = dock.preview_layer
    ys, xs = np.nonzero(prev.data)
    centre_world = np.array([ys.mean(), xs.mean()]) * prev.scale[-2:] + prev.translate[-2:]
    click_world = click_l0 * image.scale[-2:]
    ds = dock.tool.preview.mask.window.downsample_yx[0]
    assert np.abs(centre_world - click_world).max() <= 0.75 * ds * image.scale[-1]
    assert prev.data.sum() == pytest.approx(np.pi * RADIUS_PX**2, rel=0.25)

    # the first prompt encoded only its own window; the rest of the view is warmed in the background
    assert dock._warm is not None and dock._warm.join(timeout=60)
    assert encoder.calls == len(dock.tool.session.windows) > 1
    # a second click re-runs only the decoder (the region is encoded already)
    calls = encoder.calls
    dock.toggle_label()  # T: the next point is negative
    dock.points_layer.add(click_l0 + 40)
    assert bool(dock.points_layer.features["positive"].iloc[-1]) is False
    qtbot.waitUntil(lambda: not dock._task.running and not dock._pending, timeout=30_000)
    assert encoder.calls == calls

    dock.name_edit.setText("gland")
    previewed = int(prev.data.sum())
    commit = dock.commit()
    assert commit is not None and commit.label == 1
    assert (dock.masks_layer.data == 1).sum() == pytest.approx(previewed, rel=0.01)
    ann = next(layer for layer in window.viewer.layers if layer.name == "Annotations")
    assert len(ann.data) == 1 and ann.features["name"].iloc[0] == "gland"
    assert len(dock.points_layer.data) == 0 and not dock.preview_layer.data.any()  # cleared
    features = dock.tool.features()
    assert features[0]["properties"]["classification"]["name"] == "SAM"


def _write_ct(tmp_path, synth):
    import nibabel as nib

    from tessera.pipelines.writers.nifti import write_nifti_labels

    vol = synth.make_volume()
    affine_zyx = np.zeros((4, 4))
    sz, sy, sx = vol.spacing_mm
    affine_zyx[0, 2], affine_zyx[1, 1], affine_zyx[2, 0], affine_zyx[3, 3] = sx, sy, sz, 1
    img = nib.Nifti1Image(np.ascontiguousarray(vol.hu.transpose(2, 1, 0)), affine_zyx[:, [2, 1, 0, 3]])
    img.header.set_xyzt_units("mm")
    path = tmp_path / "chest.nii.gz"
    nib.save(img, str(path))
    write_nifti_labels(tmp_path / "chest_labels.nii.gz", vol.labels, affine_zyx)
    return path, vol


def test_ct_dock_runs_shows_labels_and_scores(window, qtbot, tmp_path, synth, plugin_dirs):
    path, vol = _write_ct(tmp_path, synth)
    [image] = window.open(path)
    assert image.scale[0] == pytest.approx(2.0)  # mm, anisotropic
    dock = CtDock(window.viewer)
    window.viewer.window.add_dock_widget(dock, name="CT")
    dock.select_plugin(load_plugin_folder(plugin_dirs["segment-3d"]))
    task = dock.run()
    assert task is not None
    qtbot.waitUntil(lambda: dock.labels_layer is not None, timeout=120_000)
    labels = np.asarray(dock.labels_layer.data)
    assert labels.shape == vol.labels.shape
    agree = (labels == vol.labels).mean()
    assert agree > 0.97  # the test model recovers the spheres
    assert tuple(dock.labels_layer.scale) == pytest.approx(tuple(image.scale))
    rows = {(c, m): v for c, m, v in (
        (dock.table.item(i, 0).text(), dock.table.item(i, 1).text(), dock.table.item(i, 2).text())
        for i in range(dock.table.rowCount()))}
    assert float(rows[("soft", "dsc")]) > 0.8 and float(rows[("dense", "dsc")]) > 0.8  # resampled at 2 mm
    # per-class toggle: hidden class gets a transparent colour
    dock.set_class_visible(2, False)
    assert dock.labels_layer.colormap.map(np.array([2]))[0][-1] == 0
    assert dock.labels_layer.colormap.map(np.array([1]))[0][-1] == 1
    dock.toggle_3d()
    assert window.viewer.dims.ndisplay == 3
    qtbot.wait(100)
    shot = window.viewer.screenshot(canvas_only=True, flash=False)
    assert shot[..., :3].max() > 0  # the 3D rendering drew something
    dock.toggle_3d()
