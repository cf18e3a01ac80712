"""Writers: atomic replacement, QuPath GeoJSON, exact region outlines, NIfTI and OME-Zarr
that reopen through Tessera's readers with the right frame, previews."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tessera
from tessera.pipelines.runners.regions import find_regions
from tessera.pipelines.writers.atomic import (
    atomic_dir,
    atomic_path,
    is_temporary,
    remove_temporaries,
)
from tessera.pipelines.writers.geojson import box_ring, qupath_feature, write_feature_collection
from tessera.pipelines.writers.nifti import write_nifti_labels
from tessera.pipelines.writers.ome_zarr import level_transforms, write_small_image
from tessera.pipelines.writers.preview import probability_overlay, write_preview


def test_atomic_path_never_leaves_half_files(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with atomic_path(target) as tmp:
        assert is_temporary(tmp) and tmp.parent == tmp_path
        tmp.write_text("new")
    assert target.read_text() == "new"
    folder = tmp_path / "x.zarr"
    folder.mkdir()
    (folder / "old").write_text("1")
    with atomic_dir(folder) as tmp:
        (tmp / "new").write_text("2")
    assert sorted(p.name for p in folder.iterdir()) == ["new"]
    (tmp_path / ".left.tmp-123-abcd").write_text("x")  # a killed writer's leftover
    assert remove_temporaries(tmp_path) == 1


def test_qupath_feature_collection(tmp_path):
    feats = [
        qupath_feature([box_ring(10, 20, 110, 220)], object_type="detection", class_name="tumour",
                       colour="#e6194b", measurements={"prob tumour": np.float32(0.75)}),
        qupath_feature([box_ring(0, 0, 5, 5), box_ring(1, 1, 2, 2)], object_type="annotation",
                       class_name="stroma", colour="#3cb44b", name="region 1"),
    ]
    n = write_feature_collection(tmp_path / "a.geojson", iter(feats))
    data = json.loads((tmp_path / "a.geojson").read_text())
    assert n == 2 and data["type"] == "FeatureCollection" and len(data["features"]) == 2
    det, ann = data["features"]
    assert det["geometry"] == {"type": "Polygon", "coordinates": [[[10, 20], [110, 20], [110, 220], [10, 220], [10, 20]]]}
    assert det["properties"] == {"objectType": "detection", "classification": {"name": "tumour", "color": [230, 25, 75]},
                                 "measurements": {"prob tumour": 0.75}}
    assert ann["properties"]["objectType"] == "annotation" and len(ann["geometry"]["coordinates"]) == 2
    assert det["id"] != ann["id"]


def _shoelace(ring) -> float:
    r = np.asarray(ring, float)
    return 0.5 * abs(np.dot(r[:-1, 0], r[1:, 1]) - np.dot(r[1:, 0], r[:-1, 1]))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(1.0, 50.0), st.floats(1.0, 50.0))
def test_region_outlines_follow_pixel_edges_exactly(seed, fy, fx):
    rng = np.random.default_rng(seed)
    mask = rng.random((12, 15)) > 0.45
    for reg in find_regions(mask, l0_per_px_yx=(fy, fx), mpp_yx=(0.5, 0.5)):
        outer, *holes = reg.polygon_l0
        area = _shoelace(outer) - sum(_shoelace(h) for h in holes)
        assert area == pytest.approx(reg.area_px * fy * fx, rel=1e-9)
        xs = [p[0] for p in outer]
        ys = [p[1] for p in outer]
        x, y, w, h = reg.bbox_l0_xywh
        assert min(xs) == pytest.approx(x) and max(xs) == pytest.approx(x + w)
        assert min(ys) == pytest.approx(y) and max(ys) == pytest.approx(y + h)
        assert reg.area_mm2 == pytest.approx(reg.area_px * fy * fx * 0.25e-6)


def test_nifti_labels_reopen_with_the_same_frame(tmp_path):
    affine_zyx = np.array([[0.0, 0.0, -0.8, 100.0], [0.0, 0.7, 0.0, -20.0], [2.5, 0.0, 0.0, 30.0], [0, 0, 0, 1]])
    labels = np.zeros((6, 9, 11), np.uint8)
    labels[1:3, 2:7, 4:10] = 2
    labels[4, 0, 0] = 1
    write_nifti_labels(tmp_path / "l.nii.gz", labels, affine_zyx)
    src = tessera.open(tmp_path / "l.nii.gz")
    assert src.axes == "ZYX"
    assert np.array_equal(np.asarray(src.levels[0].compute(scheduler="sync")), labels)
    assert np.allclose(src.metadata["affine"], affine_zyx)
    assert src.spacing == pytest.approx((2.5, 0.7, 0.8))


def test_ome_zarr_image_frame_and_labels(tmp_path):
    heat = np.zeros((2, 40, 70), np.uint8)
    heat[1, 10:20, 50:60] = 255
    labels = (heat[1] > 0).astype(np.uint8) + 1
    write_small_image(tmp_path / "h.ome.zarr", heat, axes="cyx", spacing=(0.25, 0.25), l0_per_px=(64, 64),
                      unit="µm", name="heat", channels=[("benign", "#00ff00"), ("tumour", "#ff0000")],
                      labels={"classes": (labels, [(1, "benign", "#00ff00"), (2, "tumour", "#ff0000")])}, chunk=32)
    src = tessera.open(tmp_path / "h.ome.zarr")
    assert src.axes == "CYX" and src.spacing == pytest.approx((16.0, 16.0)) and src.spacing_unit == "µm"
    assert np.array_equal(np.asarray(src.levels[0].compute(scheduler="sync")), heat)
    attrs = json.loads((tmp_path / "h.ome.zarr" / ".zattrs").read_text())
    ds0 = attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"]
    # Heatmap pixel (0, 0) stands for level-0 pixels 0..63: its centre is at 31.5 px.
    assert ds0[1]["translation"] == pytest.approx([0.0, 31.5 * 0.25, 31.5 * 0.25])
    assert attrs["omero"]["channels"][1]["label"] == "tumour"
    lab = tessera.open(tmp_path / "h.ome.zarr" / "labels" / "classes")
    assert np.array_equal(np.asarray(lab.levels[0].compute(scheduler="sync")), labels)
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    nodes = list(Reader(parse_url(str(tmp_path / "h.ome.zarr")))())
    assert nodes[0].data[0].shape == (2, 40, 70)
    assert any("image-label" in str(n.zarr.root_attrs) for n in nodes)


def test_level_transforms_keep_pixel_centres_aligned():
    t = level_transforms("yx", (0.5, 0.5), (4, 4), [[1, 1], [2, 2]])
    for k, f in enumerate((4, 8)):
        scale = t[k][0]["scale"]
        trans = t[k][1]["translation"]
        # pixel i of this level covers level-0 [i f, (i+1) f): centre (i + 0.5) f - 0.5 level-0 px
        assert scale == [0.5 * f] * 2 and trans == [0.5 * (f - 1) / 2] * 2


def test_preview_overlay_lands_on_its_quadrant(tmp_path):
    from PIL import Image

    thumb = np.full((60, 80, 3), 250, np.uint8)
    prob = np.zeros((3, 4))
    prob[2, 3] = 1.0  # bottom-right cell of the grid
    write_preview(tmp_path / "p.png", thumb, probability_overlay(prob, "#ff0000"))
    img = np.asarray(Image.open(tmp_path / "p.png")).astype(int)
    assert img.shape == (60, 80, 3)
    assert img[50, 70, 0] > 240 and img[50, 70, 1] < 150  # red there
    assert (img[:40, :60] == 250).all()  # nowhere else
