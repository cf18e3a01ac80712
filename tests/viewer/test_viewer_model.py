"""The viewer's plain-Python parts (no Qt): world frame, layer data, display cache,
annotations in QuPath's format."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tessera.app.viewer import annotation_shapes as ann
from tessera.app.viewer.display_levels import CachedLevel, display_levels
from tessera.app.viewer.frame import SourceFrame, describe_position, magnification, view_box
from tessera.app.viewer.layers import CT_WINDOW_HU, FRAME_KEY, SOURCE_KEY, source_layer_data
from tessera.pipelines.live.cache import ResultCache


@pytest.fixture(scope="module")
def slide_file(tmp_path_factory, synth, slide):
    path = tmp_path_factory.mktemp("viewer-model") / "slide.tif"
    return synth.write_slide_file(path, slide.image, mpp=slide.mpp)


def test_view_box_and_raster_placement(synth):
    src = synth.memory_source(np.zeros((1000, 2000, 3), np.uint8), mpp=0.25)
    frame = SourceFrame.of(src)
    assert frame.unit == "µm" and frame.yx_spacing == (0.25, 0.25)
    # a 400 x 800 canvas at 2 screen px per µm centred on world (100, 200) µm shows
    # 200 x 400 µm = 800 x 1600 level-0 px around level-0 pixel (400, 800)
    box = view_box(frame, (100.0, 200.0), 2.0, (400, 800))
    assert box.l0_y1 - box.l0_y0 == pytest.approx(800) and box.l0_x1 - box.l0_x0 == pytest.approx(1600)
    assert box.centre_yx == pytest.approx((400.5, 800.5))  # pixel 400 spans [400, 401)
    # a raster pixel standing for 128 level-0 px: its first pixel centre sits at the
    # centre of level-0 pixels 0..127, i.e. world (127/2) * 0.25
    scale, translate = frame.raster_placement((128.0, 128.0))
    assert scale == (32.0, 32.0) and translate == pytest.approx((15.875, 15.875))
    assert magnification(0.25) == pytest.approx(40.0)
    text = describe_position(src, frame, (25.0, 50.0), 4.0)
    assert "px y 100, x 200" in text and "0.25 µm/px" in text and "40x" in text


def test_rgb_slide_layer_is_multiscale_with_fixed_contrast(slide_file):
    import tessera

    src = tessera.open(slide_file)
    [(data, kw, kind)] = source_layer_data(src)
    assert kind == "image" and kw["rgb"] is True and kw["multiscale"] is True
    assert kw["contrast_limits"] == (0.0, 255.0)  # never computed over the data
    assert kw["scale"] == pytest.approx((src.spacing[0], src.spacing[1])) and kw["units"] == ("um", "um")
    assert kw["metadata"][SOURCE_KEY] is src and kw["metadata"][FRAME_KEY].unit == "µm"
    assert [lv.shape for lv in data] == [lv.shape for lv in src.levels]
    assert all(isinstance(lv, CachedLevel) for lv in data)  # no dask graph per pan


def test_cached_level_reads_like_the_source_and_stays_bounded(slide_file):
    import tessera

    src = tessera.open(slide_file)
    tile_bytes = int(np.prod(src.levels[0].chunksize))
    cache = ResultCache(6 * (tile_bytes + 200))
    level = display_levels(src.levels, cache, key="t")[0]
    rng = np.random.default_rng(0)
    for _ in range(8):
        y0, x0 = int(rng.integers(0, 1200)), int(rng.integers(0, 2000))
        box = (slice(y0, y0 + 300), slice(x0, x0 + 250))
        np.testing.assert_array_equal(level[box], np.asarray(src.levels[0][box]))
        assert cache.stats().nbytes <= cache.max_bytes
    np.testing.assert_array_equal(level[5, 7:20:3, 1], np.asarray(src.levels[0][5, 7:20:3, 1]))
    reads = level.reads
    level[0:10, 0:10]
    level[0:10, 0:10]
    assert level.reads - reads <= 1  # the second read of the same tile is a cache hit


def test_ct_volume_gets_hu_window_and_mm_scale(synth):
    vol = synth.make_volume()
    src = synth.volume_source(vol)
    src.spacing_unit = "mm"
    [(_data, kw, _)] = source_layer_data(src)
    assert kw["scale"] == (2.0, 1.0, 1.0) and kw["units"] == ("mm", "mm", "mm")
    assert kw["contrast_limits"] == CT_WINDOW_HU
    assert kw["rendering"] == "mip"


def test_fits_gets_an_asinh_stretch(tmp_path):
    from astropy.io import fits

    import tessera

    rng = np.random.default_rng(1)
    img = rng.normal(100.0, 5.0, (256, 256)).astype(np.float32)
    img[100:110, 100:110] += 5000.0  # a bright star
    path = tmp_path / "field.fits"
    fits.PrimaryHDU(img).writeto(path)
    src = tessera.open(path)
    [(data, kw, _)] = source_layer_data(src)
    assert kw["metadata"]["stretch"] == "asinh"
    (sky, soft), = kw["metadata"]["asinh"]
    assert sky == pytest.approx(100.0, abs=1.0) and soft == pytest.approx(15.0, rel=0.2)
    shown = np.asarray(data)
    # noise stays near linear around 0, the star is compressed logarithmically
    assert abs(float(np.median(shown))) < 0.1
    assert float(shown[105, 105]) == pytest.approx(np.arcsinh((5100 - sky) / soft), rel=0.05)
    lo, hi = kw["contrast_limits"]
    assert lo < 0 < hi < float(shown.max())


def test_annotations_round_trip_in_qupath_frame(tmp_path, synth):
    src = synth.memory_source(np.zeros((400, 400, 3), np.uint8), mpp=0.5)
    frame = SourceFrame.of(src)
    shapes = ann.ShapeSet()
    # a rectangle covering level-0 pixels 10..19 x 30..49: QuPath x 30..50, y 10..20
    rect = np.array([[9.5, 29.5], [9.5, 49.5], [19.5, 49.5], [19.5, 29.5]]) * 0.5
    shapes.add(rect, "rectangle", "gland 1", "tumour")
    shapes.add(np.array([[50.0, 50.0], [50.0, 70.0], [80.0, 60.0]]), "ellipse", "", "")
    shapes.add(np.array([[1.0, 1.0], [5.0, 9.0]]), "path", "cut", "")
    path = tmp_path / "ann.geojson"
    n = ann.write_annotations(path, shapes, frame, {"tumour": "#e6194b"})
    assert n == 3
    doc = json.loads(path.read_text())
    first = doc["features"][0]
    assert first["properties"]["objectType"] == "annotation"
    assert first["properties"]["classification"] == {"name": "tumour", "color": [230, 25, 75]}
    assert first["properties"]["name"] == "gland 1"
    ring = np.asarray(first["geometry"]["coordinates"][0])
    assert ring[:, 0].min() == pytest.approx(30) and ring[:, 0].max() == pytest.approx(50)
    assert ring[:, 1].min() == pytest.approx(10) and ring[:, 1].max() == pytest.approx(20)
    assert len(doc["features"][1]["geometry"]["coordinates"][0]) == ann.ELLIPSE_POINTS + 1
    assert doc["features"][2]["geometry"]["type"] == "LineString"
    back, colours = ann.features_to_shapes(ann.read_features(path), frame)
    assert back.shape_types == ["polygon", "polygon", "path"]
    assert back.names[0] == "gland 1" and back.classes[0] == "tumour" and colours == {"tumour": "#e6194b"}
    np.testing.assert_allclose(back.data[0], rect)
    with pytest.raises(Exception, match="GeoJSON"):
        bad = tmp_path / "bad.geojson"
        bad.write_text("{not json")
        ann.read_features(bad)


def test_region_shapes_follow_prediction_pixels(synth):
    src = synth.memory_source(np.zeros((512, 512, 3), np.uint8), mpp=0.5)
    frame = SourceFrame.of(src)
    labels = np.zeros((8, 8), np.uint8)
    labels[2:4, 3:6] = 2  # class index 1 -> label 2, raster pixel = 64 level-0 px
    shapes = ann.region_shapes(labels, None, 1, "tumour", (64.0, 64.0), frame, (0.5, 0.5))
    assert len(shapes) == 1 and shapes.classes == ["tumour"]
    xy = ann.world_to_qupath(shapes.data[0], frame)
    assert xy[:, 0].min() == pytest.approx(192) and xy[:, 0].max() == pytest.approx(384)
    assert xy[:, 1].min() == pytest.approx(128) and xy[:, 1].max() == pytest.approx(256)
    assert "0.0" in shapes.names[0]  # area in mm² in the name
