"""segment-2d: stitched probabilities equal the model applied to the whole image (no
seams), land where the truth is, and the outputs reopen through Tessera's readers."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

import tessera
from tessera.pipelines.plugin_system import get_plugin
from tessera.pipelines.progress import RecordingProgress
from tessera.pipelines.runners.base import ModelInfo, PluginPredictor, RunOptions
from tessera.pipelines.runners.segment_2d import segment_slide
from tessera.pipelines.tiling.tissue import TissueOptions


def _model(overlap: float) -> ModelInfo:
    return ModelInfo(id="test-segment-2d", version="0", task="segment-2d",
                     classes=(("background", "#000000"), ("tumour", "#e6194b")), positive_class="tumour",
                     size_px=(64, 64), target_mpp=0.5, overlap=overlap, batch_size=8)


def _segment(synth, image, mpp, out, predictor, overlap):
    src = synth.memory_source(image, mpp=mpp)
    summary = segment_slide(src, predictor, out, model=_model(overlap),
                            options=RunOptions(tissue=TissueOptions(method="none")),
                            progress=RecordingProgress(), cancel=threading.Event(), identity={"t": str(out)})
    prob = np.asarray(tessera.open(out / "segmentation.ome.zarr").levels[0][1].compute(scheduler="sync"))
    return summary, prob.astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def flat_slide(synth):
    """At the model's own 0.5 µm/px, so the whole-image reference needs no resampling."""
    return synth.make_slide((700, 1000), mpp=0.5, seed=5)


def test_stitching_has_no_seams(synth, test_plugins, plugin_dirs, flat_slide, tmp_path):
    """The model has a 9x9 context: tiles without overlap show seams along every tile
    border; with the overlap-tile strategy the result is the whole-image one."""
    predictor = PluginPredictor(str(plugin_dirs["segment-2d"]), "segment-2d")
    reference = test_plugins.segment_probability(flat_slide.image)
    _, stitched = _segment(synth, flat_slide.image, 0.5, tmp_path / "overlap", predictor, overlap=0.25)
    inner = (slice(5, -5), slice(5, -5))  # the model pads with zeros at the image border
    diff = np.abs(stitched - reference)[inner]
    assert diff.max() <= 1.5 / 255, f"stitched differs from whole-image by {diff.max() * 255:.1f}/255"
    _, seamy = _segment(synth, flat_slide.image, 0.5, tmp_path / "no-overlap", predictor, overlap=0.0)
    assert np.abs(seamy - reference)[inner].max() > 0.2  # the test can fail: seams are visible


def test_segmentation_lands_on_the_truth_with_resampling(synth, plugin_dirs, tmp_path):
    slide = synth.make_slide((1200, 1800), mpp=0.3, seed=6)  # level 0 resampled by 1.67
    path = synth.write_slide_file(tmp_path / "s.svs", slide.image, mpp=0.3)
    plugin = get_plugin(plugin_dirs["segment-2d"])
    from tessera.pipelines.runners.registry import runner_for

    summary = runner_for("segment-2d")(path, plugin, tmp_path / "out", options=RunOptions(),
                                       progress=RecordingProgress(), cancel=threading.Event())
    out = tmp_path / "out"
    seg = tessera.open(out / "segmentation.ome.zarr")
    assert seg.spacing == pytest.approx((0.5, 0.5)) and seg.spacing_unit == "µm"
    assert len(seg.levels) >= 2
    lab_src = tessera.open(out / "segmentation.ome.zarr/labels/classes")
    labels = np.asarray(lab_src.levels[0].compute(scheduler="sync"))
    h, w = labels.shape
    assert (h, w) == (int(np.ceil(1200 * 0.3 / 0.5)), int(np.ceil(1800 * 0.3 / 0.5)))
    # Truth at the model's resolution: level-0 pixel under each target pixel centre.
    yi = ((np.arange(h) + 0.5) * 0.5 / 0.3).astype(int).clip(0, 1199)
    xi = ((np.arange(w) + 0.5) * 0.5 / 0.3).astype(int).clip(0, 1799)
    truth = slide.tumour[np.ix_(yi, xi)]
    pred = labels == 1
    dice = 2 * (pred & truth).sum() / (pred.sum() + truth.sum())
    assert dice > 0.95
    mm2 = slide.tumour.sum() * (0.3e-3) ** 2
    assert summary["classes"]["tumour"]["area_mm2"] == pytest.approx(mm2, rel=0.05)
    # Regions: QuPath annotations in level-0 pixels around the truth blocks.
    gj = json.loads((out / "regions.geojson").read_text())
    anns = gj["features"]
    assert len(anns) == 2 and all(a["properties"]["objectType"] == "annotation" for a in anns)
    big = max(anns, key=lambda a: a["properties"]["measurements"]["area_mm2"])
    ring = np.asarray(big["geometry"]["coordinates"][0])
    assert ring[:, 0].min() == pytest.approx(0.18 * 1800, abs=8)
    assert ring[:, 0].max() == pytest.approx(0.40 * 1800, abs=8)
    assert ring[:, 1].min() == pytest.approx(0.20 * 1200, abs=8)
    assert ring[:, 1].max() == pytest.approx(0.42 * 1200, abs=8)
    assert summary["top_regions"][0]["bbox_l0_xywh"][0] == pytest.approx(0.18 * 1800, abs=8)
    assert not (out / ".tessera-work").exists()
