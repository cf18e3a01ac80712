"""tile-classify end to end: the test plugin (P(tumour) = purple fraction) on synthetic
slides whose tumour placement is known. Non-square slides, level-0 pixel sizes unlike
the model's 0.5 µm/px and off-centre regions catch transposed axes and level scaling."""

from __future__ import annotations

import csv
import json
import threading

import numpy as np
import pytest

import tessera
from tessera.pipelines.plugin_system import get_plugin
from tessera.pipelines.progress import RecordingProgress
from tessera.pipelines.runners.base import RunOptions
from tessera.pipelines.runners.registry import runner_for


def _cell_truth(mask: np.ndarray, grid_shape, cell_l0) -> np.ndarray:
    """Fraction of each tile's level-0 cell covered by ``mask``."""
    rows, cols = grid_shape
    out = np.zeros(grid_shape)
    for r in range(rows):
        for c in range(cols):
            y0, x0 = round(r * cell_l0[0]), round(c * cell_l0[1])
            sub = mask[y0 : round(y0 + cell_l0[0]), x0 : round(x0 + cell_l0[1])]
            out[r, c] = sub.mean() if sub.size else 0.0
    return out


@pytest.fixture(scope="module", params=[0.25, 0.3])
def classified(request, synth, plugin_dirs, tmp_path_factory):
    """The runner through the registry on a slide file (0.25: level 1 read as is;
    0.3: level 0 resampled by 1.67)."""
    mpp = request.param
    root = tmp_path_factory.mktemp(f"classify-{mpp}")
    slide = synth.make_slide((1280, 1920), mpp=mpp, seed=3)
    path = synth.write_slide_file(root / "slide.svs", slide.image, mpp=mpp)
    plugin = get_plugin(plugin_dirs["tile-classify"])
    run = runner_for(plugin.manifest.task)
    summary = run(path, plugin, root / "out", options=RunOptions(), progress=RecordingProgress(),
                  cancel=threading.Event())
    return slide, summary, root / "out"


def test_heatmap_lines_up_with_the_truth(classified):
    slide, summary, out = classified
    grid = summary["grid"]
    cell = [grid["stride_px"][i] * grid["target_downsample_yx"][i] for i in (0, 1)]
    heat = tessera.open(out / "heatmap.ome.zarr")
    assert heat.axes == "CYX"
    probs = np.asarray(heat.levels[0].compute(scheduler="sync")).astype(np.float32) / 255.0
    assert probs.shape == (2, *grid["grid_shape"])
    assert probs.shape[2] > probs.shape[1]  # non-square slide: not transposed
    labels = np.asarray(tessera.open(out / "heatmap.ome.zarr/labels/classes").levels[0].compute(scheduler="sync"))
    analysed = labels > 0
    expected = _cell_truth(slide.tumour, grid["grid_shape"], cell)
    err = np.abs(probs[1] - expected)[analysed]
    assert err.max() < 0.12, f"tile probabilities off the truth by up to {err.max():.2f}"
    inside = analysed & (expected > 0.99)
    outside = analysed & (expected < 0.01)
    assert inside.sum() >= 4 and outside.sum() >= 20
    assert probs[1][inside].min() > 0.9 and probs[1][outside].max() < 0.1
    # The heatmap's physical frame overlays the slide: one pixel = one cell (µm).
    mpp = summary["source"]["mpp_yx"][0]
    assert heat.spacing == pytest.approx((cell[0] * mpp, cell[1] * mpp))


def test_summary_areas_match_truth(classified):
    slide, summary, _ = classified
    mpp = summary["source"]["mpp_yx"][0]
    truth_mm2 = slide.tumour.sum() * (mpp * 1e-3) ** 2
    tumour = summary["classes"]["tumour"]
    # Tile resolution: border tiles are all-or-nothing, so within a generous margin.
    assert tumour["area_mm2"] == pytest.approx(truth_mm2, rel=0.25)
    assert summary["tissue"]["area_mm2"] == pytest.approx(slide.tissue.sum() * (mpp * 1e-3) ** 2, rel=0.05)
    assert 0 < tumour["fraction_of_tissue"] < 1
    assert sum(c["fraction_of_tissue"] for c in summary["classes"].values()) == pytest.approx(1.0, abs=1e-4)
    top = summary["top_regions"][0]
    # The biggest tumour region is the upper-left block: its bounding box in level-0 px.
    h, w = slide.tumour.shape
    x, y, bw, bh = top["bbox_l0_xywh"]
    cell = summary["grid"]["stride_px"][0] * summary["grid"]["target_downsample_yx"][0]
    assert x == pytest.approx(0.18 * w, abs=cell) and y == pytest.approx(0.20 * h, abs=cell)
    assert x + bw == pytest.approx(0.40 * w, abs=cell) and y + bh == pytest.approx(0.42 * h, abs=cell)


def test_geojson_is_qupath_objects_in_level0_pixels(classified):
    slide, summary, out = classified
    gj = json.loads((out / "predictions.geojson").read_text())
    assert gj["type"] == "FeatureCollection"
    dets = [f for f in gj["features"] if f["properties"]["objectType"] == "detection"]
    anns = [f for f in gj["features"] if f["properties"]["objectType"] == "annotation"]
    assert len(dets) == summary["tiles"]["tissue"]
    assert anns and all(a["properties"]["classification"]["name"] == "tumour" for a in anns)
    for f in dets:
        props = f["properties"]
        assert props["classification"]["color"] in ([60, 180, 75], [230, 25, 75])
        ring = np.asarray(f["geometry"]["coordinates"][0])
        x0, y0 = ring.min(axis=0)
        x1, y1 = ring.max(axis=0)
        assert 0 <= x0 < x1 <= slide.image.shape[1] and 0 <= y0 < y1 <= slide.image.shape[0]
        truth = slide.tumour[int(y0) : int(y1), int(x0) : int(x1)].mean()
        assert props["measurements"]["prob tumour"] == pytest.approx(truth, abs=0.12)
    big = max(anns, key=lambda a: a["properties"]["measurements"]["area_mm2"])
    ring = np.asarray(big["geometry"]["coordinates"][0])
    inside = slide.tumour[int(ring[:, 1].mean()), int(ring[:, 0].mean())]
    assert inside


def test_csv_and_preview(classified):
    slide, summary, out = classified
    with open(out / "tiles.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == summary["tiles"]["tissue"]
    r = max(rows, key=lambda row: float(row["prob_tumour"]))
    x, y = float(r["l0_x"]) + float(r["l0_width"]) / 2, float(r["l0_y"]) + float(r["l0_height"]) / 2
    assert slide.tumour[int(y), int(x)]
    from PIL import Image

    prev = np.asarray(Image.open(out / "preview.png"))
    assert prev.shape[1] > prev.shape[0]
    # The overlay is red where the tumour is: the preview is redder there than elsewhere.
    ty, tx = np.nonzero(slide.tumour[:: slide.tumour.shape[0] // prev.shape[0], :: slide.tumour.shape[1] // prev.shape[1]])
    assert (out / "tissue_mask.png").exists() and (out / "tissue_mask.json").exists()
    assert ty.size > 0 and tx.size > 0
    assert not (out / ".tessera-work").exists()


def test_finished_input_is_skipped_and_no_resume_recomputes(classified, plugin_dirs):
    _slide, summary, out = classified
    plugin = get_plugin(plugin_dirs["tile-classify"])
    run = runner_for("tile-classify")
    path = out.parent / "slide.svs"
    again = run(path, plugin, out, options=RunOptions(), progress=RecordingProgress(), cancel=threading.Event())
    assert again.get("skipped") is True and again["signature"] == summary["signature"]
    fresh = run(path, plugin, out, options=RunOptions(resume=False), progress=RecordingProgress(),
                cancel=threading.Event())
    assert not fresh.get("skipped") and fresh["tiles"]["computed"] == summary["tiles"]["tissue"]
