"""detect-classify with the shipped Astroformer demo weights (ONNX Runtime; no torch).

Fields and cutouts come from the synthetic generator with known truth; the Hubble Deep
Field picture that ships with scikit-image is the real-data smoke test.
"""

from __future__ import annotations

import csv
import json
import threading

import numpy as np
import pytest

from tessera.pipelines.progress import RecordingProgress
from tessera.pipelines.runners.base import RunOptions
from tessera.pipelines.runners.detect_classify import run
from tessera.pipelines.synthetic import galaxies as G


@pytest.fixture(scope="module")
def plugin():
    from tessera.pipelines.plugin_system import get_plugin

    return get_plugin("astroformer")


@pytest.fixture(scope="module")
def field_run(plugin, tmp_path_factory):
    src = tmp_path_factory.mktemp("dc_field")
    truth = G.synth_galaxy_field(src, size_px=1536, n_galaxies=30, n_stars=30, seed=21)
    out = tmp_path_factory.mktemp("dc_field_out")
    progress = RecordingProgress()
    summary = run(truth.fits_path, plugin, out, options=RunOptions(truth=truth.catalogue_path),
                  progress=progress, cancel=threading.Event())
    return truth, out, summary, progress


@pytest.mark.slow
def test_field_recall_and_classes_match_the_truth(field_run):
    _, _, summary, progress = field_run
    t = summary["truth"]
    assert t["galaxies"] == 30
    assert t["recall"] >= 0.95  # every galaxy here has r < 17.8
    assert t["class_agreement_of_found"] >= 0.8
    assert progress.closed and progress.done == summary["detection"]["galaxies"]


@pytest.mark.slow
def test_field_outputs(field_run, plugin):
    from astropy.table import Table
    from PIL import Image

    _truth, out, summary, _ = field_run
    assert summary["field"]["wcs"] and summary["field"]["calibrated"]
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"
    with (out / "catalogue.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    gal = [r for r in rows if r["kind"] == "galaxy"]
    assert len(gal) == summary["detection"]["galaxies"] and all(r["ra_deg"] for r in rows)
    probs = np.array([[float(r[k]) for k in r if k.startswith("prob_") and k != "prob_max"] for r in gal])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    names = [c.name for c in plugin.manifest.output.classes]
    assert all(r["class_name"] == names[int(np.argmax(p))] for r, p in zip(gal, probs, strict=True))
    table = Table.read(out / "catalogue.fits")
    assert len(table) == len(rows)
    overlay = np.asarray(Image.open(out / "overlay.png").convert("RGB"))
    assert overlay.shape == (1536, 1536, 3)
    # a galaxy's ring is drawn in its class colour
    g = gal[0]
    colour = plugin.manifest.output.classes[int(g["class_id"])].colour
    rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    x, y, r = float(g["x_px"]), float(g["y_px"]), 2.5 * float(g["r50_px"])
    box = overlay[max(0, int(y - r - 3)) : int(y + r + 4), max(0, int(x - r - 3)) : int(x + r + 4)]
    assert (np.abs(box.astype(int) - rgb).sum(axis=-1) < 30).sum() > 10
    import h5py

    with h5py.File(out / "cutouts.h5") as f:
        assert f["images"].shape == (len(gal), 64, 64, 3)
        assert list(f["source_id"][:]) == [int(r["id"]) for r in gal]


@pytest.mark.slow
def test_rerun_resumes(field_run, plugin):
    truth, out, summary, _ = field_run
    again = run(truth.fits_path, plugin, out, options=RunOptions(truth=truth.catalogue_path),
                progress=RecordingProgress(), cancel=threading.Event())
    assert again.get("skipped") and again["signature"] == summary["signature"]


def test_galaxy10_h5_and_folder(plugin, tmp_path):
    from PIL import Image

    cut = G.render_cutouts(40, seed=5, start=500_000)  # 256 px at 0.262"/px, as Galaxy10
    h5 = tmp_path / "g10.h5"
    G.write_galaxy10_h5(h5, cut)
    summary = run(h5, plugin, tmp_path / "out_h5", options=RunOptions(),
                  progress=RecordingProgress(), cancel=threading.Event())
    assert summary["cutouts"] == 40 and summary["truth"]["top1"] >= 0.8
    with (tmp_path / "out_h5" / "classes.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 40 and [int(r["truth_class_id"]) for r in rows] == list(cut.labels)

    folder = tmp_path / "cutouts"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(cut.images[i]).save(folder / f"g{i}.png")
    (folder / "notes.txt").write_text("not an image")
    summary = run(folder, plugin, tmp_path / "out_dir", options=RunOptions(),
                  progress=RecordingProgress(), cancel=threading.Event())
    with (tmp_path / "out_dir" / "classes.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["name"] for r in rows] == [f"g{i}.png" for i in range(5)]
    h5_rows = list(csv.DictReader((tmp_path / "out_h5" / "classes.csv").open()))
    assert [r["class_id"] for r in rows] == [r["class_id"] for r in h5_rows[:5]]


@pytest.mark.slow
def test_hubble_deep_field_end_to_end(plugin, tmp_path):
    """The real-data check: scikit-image's Hubble Deep Field picture (no WCS, no scale)."""
    from PIL import Image
    from skimage import data

    png = tmp_path / "hubble_deep_field.png"
    Image.fromarray(data.hubble_deep_field()).save(png)
    summary = run(png, plugin, tmp_path / "out", options=RunOptions(),
                  progress=RecordingProgress(), cancel=threading.Event())
    det = summary["detection"]
    assert summary["field"]["wcs"] is False and summary["field"]["kind"] == "display"
    assert det["sources"] > 300 and det["galaxies"] > 50
    assert sum(summary["classes"].values()) == det["galaxies"]
    with (tmp_path / "out" / "catalogue.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == det["sources"] and all(r["ra_deg"] == "" for r in rows)
    assert (tmp_path / "out" / "overlay.png").stat().st_size > 0
