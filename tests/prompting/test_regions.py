"""Regions at a level, windows with a halo, and the exact way back to level 0
(asymmetric offsets, non-integer downsamples)."""

from __future__ import annotations

import itertools

import dask.array as da
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from matplotlib.path import Path as MplPath

from tessera.pipelines.prompting.regions import (
    LevelMask,
    LevelWindow,
    choose_window,
    level_window_for_l0_box,
    read_window,
    region_around,
    tile_windows,
)
from tessera.pipelines.sources.base import Source

from .conftest import pyramid_source


@pytest.fixture(scope="module")
def slide():
    rng = np.random.default_rng(0)
    l0 = rng.integers(0, 255, (401, 523, 3), dtype=np.uint8)
    return pyramid_source(l0, [(200, 261), (97, 130)])


def test_downsamples_are_not_integers(slide):
    dy, dx = slide.downsamples[1]
    assert dy == pytest.approx(2.005) and dx == pytest.approx(523 / 261)


@pytest.mark.parametrize("level", [0, 1, 2])
def test_read_window_reads_exactly_the_level_pixels(slide, level):
    arr = np.asarray(slide.levels[level])
    for y0, x0, h, w in [(0, 0, 17, 33), (13, 7, 40, 21), (arr.shape[0] - 9, arr.shape[1] - 5, 9, 5)]:
        win = LevelWindow(level, (y0, x0), (h, w), slide.downsamples[level])
        assert np.array_equal(read_window(slide, win), arr[y0 : y0 + h, x0 : x0 + w])


@given(
    oy=st.integers(0, 500), ox=st.integers(0, 500), dy=st.floats(1, 40), dx=st.floats(1, 40),
    x=st.floats(-100, 5000), y=st.floats(-100, 5000),
)
def test_prompt_mapping_round_trips(oy, ox, dy, dx, x, y):
    w = LevelWindow(3, (oy, ox), (10, 10), (dy, dx))
    p = np.array([x, y])
    q = w.l0_to_window(p)
    assert np.allclose(w.window_to_l0(q), p, rtol=1e-9, atol=1e-6)
    # a level-0 click on the centre of window pixel (i, j) maps to (j, i) exactly
    centre_l0 = np.array([(ox + 4 + 0.5) * dx - 0.5, (oy + 6 + 0.5) * dy - 0.5])
    assert np.allclose(w.l0_to_window(centre_l0), [4, 6], atol=1e-6)


def test_level_mask_to_level0_hand_computed():
    win = LevelWindow(2, (7, 11), (3, 4), (2.5, 3.0))
    m = np.zeros((3, 4), bool)
    m[0, 0] = True
    lm = LevelMask(m, win)
    assert lm.l0_bbox_xyxy() == (33.0, 17.5, 36.0, 20.0)
    assert lm.area_l0_px == 7.5
    r = lm.rasterize_l0((16, 32), (6, 6))  # level-0 rows 16..21, cols 32..37
    expect = np.zeros((6, 6), bool)
    expect[1:4, 1:4] = True  # rows 17-19 (centres 17.5-19.5), cols 33-35
    assert np.array_equal(r, expect)
    (poly,) = lm.polygons_l0()
    assert sorted(map(tuple, poly.exterior[:-1].tolist())) == [(33.0, 17.5), (33.0, 20.0), (36.0, 17.5), (36.0, 20.0)]


def test_level_mask_polygons_and_raster_agree_at_level0(slide):
    """Random masks on a window with odd offsets at a level with non-integer
    downsamples: level-0 polygon area = pixel count x ds_y x ds_x, and a level-0 pixel
    is inside the level-0 polygons exactly where the level-0 raster says so."""
    rng = np.random.default_rng(1)
    win = LevelWindow(1, (37, 53), (20, 26), slide.downsamples[1])
    for _ in range(5):
        m = ndi_smooth(rng.random((20, 26))) > 0.5
        lm = LevelMask(m, win)
        polys = lm.polygons_l0()
        dy, dx = win.downsample_yx
        assert sum(p.area for p in polys) == pytest.approx(m.sum() * dy * dx, rel=1e-9)
        x0, y0, x1, y1 = win.l0_box_xyxy
        l0_yx = (int(y0) - 3, int(x0) - 2)
        l0_hw = (int(y1 - y0) + 6, int(x1 - x0) + 5)
        raster = lm.rasterize_l0(l0_yx, l0_hw)
        yy, xx = np.mgrid[0 : l0_hw[0], 0 : l0_hw[1]]
        centres = np.stack([xx.ravel() + l0_yx[1] + 0.5, yy.ravel() + l0_yx[0] + 0.5], axis=1)
        inside = np.zeros(len(centres), bool)
        for p in polys:
            hit = MplPath(p.exterior).contains_points(centres)
            for h in p.holes:
                hit &= ~MplPath(h).contains_points(centres)
            inside |= hit
        assert np.array_equal(inside.reshape(l0_hw), raster)
        assert raster.sum() > 0


def ndi_smooth(a):
    from scipy import ndimage as ndi

    return ndi.gaussian_filter(a, 2)


def test_level_window_for_l0_box_and_region_around(slide):
    w = level_window_for_l0_box(slide, 1, (100.0, 50.0, 301.0, 151.0))
    dy, dx = slide.downsamples[1]
    assert w.lvl_yx == (int(np.floor(50 / dy)), int(np.floor(100 / dx)))
    assert w.l0_box_xyxy[0] <= 100 and w.l0_box_xyxy[2] >= 301
    r = region_around(slide, 0, np.array([[500.0, 10.0]]), context_px=128, margin_px=8)
    assert r.lvl_hw == (128, 128)
    assert r.lvl_yx == (0, 523 - 128)  # shifted inside the image, not cut
    with pytest.raises(ValueError, match="does not overlap"):
        level_window_for_l0_box(slide, 0, (600, 600, 700, 700))


def test_tiles_cover_the_region_with_the_halo():
    region = LevelWindow(0, (5, 9), (700, 500), (1.0, 1.0))
    wins = tile_windows(region, 256, 32)
    cover = np.zeros(region.lvl_hw, int)
    for w in wins:
        assert w.lvl_hw == (256, 256)
        ry, rx = w.lvl_yx[0] - 5, w.lvl_yx[1] - 9
        cover[ry : ry + 256, rx : rx + 256] += 1
    assert cover.min() >= 1
    ys = sorted({w.lvl_yx[0] for w in wins})
    assert all(b - a <= 256 - 64 for a, b in itertools.pairwise(ys))  # overlap >= 2 halo
    assert ys[-1] - 5 + 256 == 700
    assert tile_windows(LevelWindow(0, (0, 0), (100, 80), (1, 1)), 256, 32)[0].lvl_hw == (100, 80)
    # a prompt box near a window border goes to the window holding it with margin
    box = (200.0, 180.0, 230.0, 200.0)  # region-relative
    best = wins[choose_window(wins, region, box)]
    ry, rx = best.lvl_yx[0] - 5, best.lvl_yx[1] - 9
    assert rx + 20 <= box[0] and box[2] <= rx + 236 and ry <= box[1] and box[3] <= ry + 256


def test_volume_slice_and_channel_reading():
    vol = np.arange(4 * 30 * 40, dtype=np.int16).reshape(4, 30, 40)
    src = Source(path="<vol>", format="test", reader="memory", levels=[da.from_array(vol)], axes="ZYX")
    w = LevelWindow(0, (3, 5), (10, 12), (1.0, 1.0))
    assert np.array_equal(read_window(src, w, z=2), vol[2, 3:13, 5:17])
    with pytest.raises(ValueError, match="slice"):
        read_window(src, w)
    cyx = np.stack([vol[0], vol[1] * 2])
    src2 = Source(path="<cyx>", format="test", reader="memory", levels=[da.from_array(cyx)], axes="CYX")
    assert np.array_equal(read_window(src2, w, channel=1), cyx[1, 3:13, 5:17])


def test_qupath_features_in_level0():
    win = LevelWindow(1, (10, 20), (5, 5), (2.0, 4.0))
    m = np.zeros((5, 5), bool)
    m[1:3, 1:4] = True
    (f,) = LevelMask(m, win).to_features(class_name="nucleus", colour="#00ff00", measurements={"score": 0.9})
    ring = f["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1]
    xs, ys = {p[0] for p in ring}, {p[1] for p in ring}
    assert xs == {84.0, 96.0} and ys == {22.0, 26.0}  # (20 + 1..4) * 4, (10 + 1..3) * 2
    assert f["properties"]["objectType"] == "annotation"
    assert f["properties"]["classification"]["name"] == "nucleus"
    assert f["properties"]["measurements"] == {"score": 0.9}
