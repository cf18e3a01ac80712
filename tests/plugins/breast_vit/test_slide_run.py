"""``tessera run breast-vit SLIDE`` on a synthetic slide: the malignant heatmap against the
ground-truth tumour mask (Dice at tile resolution) and the slide summary against the
truth's areas. Uses the shipped ONNX weights and the real batch runner."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from tessera.app.cli.main import main
from tessera.pipelines.synthetic.histology import LABEL_GLASS, LABEL_TUMOUR
from tessera.pipelines.synthetic.slide import SlideTruth, synth_slide

pytestmark = pytest.mark.slow

SIZE_PX = 6144  # 1.5 mm at 0.25 µm/px: ~14 x 14 tiles of 112 µm
TILE_L0 = 448  # 112 px at 1 µm/px = 448 level-0 px at 0.25 µm/px


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[SlideTruth, Path]:
    d = tmp_path_factory.mktemp("breast_vit_run")
    truth = synth_slide(d / "slide.svs", size_px=SIZE_PX, seed=2024, malignant="ductal_carcinoma")
    rc = main(["run", "breast-vit", str(truth.slide_path), "--out", str(d / "out"), "--quiet"])
    assert rc == 0
    return truth, d / "out" / "slide"


def _tile_truth(truth: SlideTruth, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(tissue fraction, tumour fraction) of each tile, from the scene's ground truth on an
    8 x 8 sub-grid of the tile (exact labels, not the coarse mask)."""
    scene = truth.scene()
    k = 8
    sub = (np.arange(k) + 0.5) * (TILE_L0 / k)
    tissue, tumour = [], []
    for r, c in zip(rows, cols, strict=True):
        ys = (r * TILE_L0 + sub) * truth.mpp
        xs = (c * TILE_L0 + sub) * truth.mpp
        lab = scene.labels(ys[:, None], xs[None, :])
        tissue.append(np.mean(lab != LABEL_GLASS))
        tumour.append(np.mean(lab == LABEL_TUMOUR))
    return np.array(tissue), np.array(tumour)


def test_malignant_heatmap_matches_truth(run) -> None:
    truth, out = run
    with open(out / "tiles.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) > 60
    r = np.array([int(x["tile_row"]) for x in rows])
    c = np.array([int(x["tile_col"]) for x in rows])
    p = np.array([float(x["prob_malignant"]) for x in rows])
    assert float(rows[0]["l0_width"]) == pytest.approx(TILE_L0)
    tissue, tumour = _tile_truth(truth, r, c)
    gt = tumour >= 0.5 * np.maximum(tissue, 1e-9)
    pred = p >= 0.5
    assert 0.15 < gt.mean() < 0.6
    dice = 2 * np.sum(gt & pred) / (gt.sum() + pred.sum())
    assert dice >= 0.85, dice
    # the heatmap raster agrees with the table
    import zarr

    heat = zarr.open_group(str(out / "heatmap.ome.zarr"), mode="r")["0"][:]
    assert heat.shape[0] == 2
    np.testing.assert_allclose(heat[1, r, c] / 255.0, p, atol=1 / 255 + 1e-6)


def test_summary_reports_tumour_area_fraction_and_regions(run) -> None:
    truth, out = run
    summary = json.loads((out / "summary.json").read_text())
    mal = summary["classes"]["malignant"]
    assert summary["positive_class"] == "malignant"
    assert mal["area_mm2"] == pytest.approx(truth.tumour_area_mm2, rel=0.3)
    assert mal["fraction_of_tissue"] == pytest.approx(truth.tumour_fraction, abs=0.12)
    regions = summary["top_regions"]
    assert regions and all(reg["class"] == "malignant" for reg in regions)
    info = json.loads(truth.info_path.read_text())
    # the largest predicted region holds most of the largest true tumour region's area
    assert regions[0]["area_mm2"] >= 0.5 * info["tumour_regions"][0]["area_mm2"]
