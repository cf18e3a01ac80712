"""Tissue masks, tile grids and reads at the model's resolution."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.pipelines.sources.base import Source
from tessera.pipelines.tiling import TissueOptions, detect_tissue, make_tile_grid
from tessera.pipelines.tiling.read import read_target_window
from tessera.pipelines.tiling.tissue import TissueMask, mask_from_image


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _resize_nearest(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    yi = (np.arange(shape[0]) + 0.5) * mask.shape[0] / shape[0]
    xi = (np.arange(shape[1]) + 0.5) * mask.shape[1] / shape[1]
    return mask[yi.astype(int)[:, None], xi.astype(int)[None, :]]


def test_tissue_mask_matches_truth_and_records_scale(synth, slide, tmp_path):
    src = synth.memory_source(slide.image, mpp=slide.mpp, n_levels=3)
    tm = detect_tissue(src, TissueOptions(thumbnail_px=600))
    assert tm.method == "saturation"
    # Scale: level-0 px per mask px along each axis of a non-square slide.
    assert tm.l0_per_px_yx[0] == pytest.approx(slide.image.shape[0] / tm.mask.shape[0])
    assert tm.l0_per_px_yx[1] == pytest.approx(slide.image.shape[1] / tm.mask.shape[1])
    assert tm.mask.shape[1] > tm.mask.shape[0]  # not transposed
    truth = _resize_nearest(slide.tissue, tm.mask.shape)
    assert _iou(tm.mask, truth) > 0.95
    assert tm.area_l0_px2 == pytest.approx(slide.tissue.sum(), rel=0.05)
    json_path = tm.save(tmp_path / "tissue_mask.png")
    back = TissueMask.load(json_path)
    assert np.array_equal(back.mask, tm.mask)
    assert back.l0_per_px_yx == pytest.approx(tm.l0_per_px_yx)


def test_blank_slide_has_no_tissue_and_full_slide_keeps_all():
    rng = np.random.default_rng(1)
    glass = np.clip(244 + rng.normal(0, 3, (200, 300, 3)), 0, 255).astype(np.uint8)
    mask, method, _ = mask_from_image(glass, TissueOptions())
    assert method in ("saturation", "brightfield")
    assert mask.mean() < 0.01
    # Tissue everywhere, two stains: Otsu alone would split it in half.
    full = np.empty((200, 300, 3), np.uint8)
    full[:, :150] = (230, 150, 190)
    full[:, 150:] = (110, 50, 140)
    mask, method, _ = mask_from_image(full, TissueOptions())
    assert method == "saturation"
    assert mask.mean() > 0.99


def test_fluorescence_foreground_is_bright_on_dark():
    img = np.full((120, 160, 2), 30, np.uint16)
    img[20:60, 100:150, 0] = 3000  # channel 0 object, upper right
    img[80:110, 10:40, 1] = 1500  # channel 1 object, lower left
    mask, method, _ = mask_from_image(img, TissueOptions())
    assert method == "fluorescence"
    assert mask[20:60, 100:150].mean() > 0.95 and mask[80:110, 10:40].mean() > 0.95
    assert mask.sum() < 1.1 * (40 * 50 + 30 * 30)


@pytest.mark.parametrize(
    ("mpp", "expected_level", "resampled"),
    [(0.25, 1, False), (0.3, 0, True), (0.2, 1, True), (0.125, 2, False)],
)
def test_level_choice_reads_the_coarsest_sufficient_level(synth, slide, mpp, expected_level, resampled):
    src = synth.memory_source(slide.image, mpp=mpp, n_levels=3)
    grid = make_tile_grid(src, tile_px=(64, 64), target_mpp=0.5)
    assert grid.level == expected_level
    ratio = grid.target_downsample_yx[0] / grid.level_downsample_yx[0]
    assert (abs(ratio - 1) > 1e-6) == resampled
    assert grid.target_shape_yx == (
        int(np.ceil(slide.image.shape[0] * mpp / 0.5 - 1e-9)),
        int(np.ceil(slide.image.shape[1] * mpp / 0.5 - 1e-9)),
    )


@pytest.mark.parametrize("mpp", [0.25, 0.2, 0.3])
def test_target_window_puts_content_in_the_right_place(mpp):
    """A sharp rectangle at known level-0 coordinates lands at l0 / downsample in
    target pixels, through level choice + remainder resampling, on a non-square slide."""
    h, w = 1200, 2000
    img = np.full((h, w, 3), 240, np.uint8)
    l0_box = (300, 1100, 700, 1700)  # y0, x0, y1, x1: off-centre, wider than tall
    img[l0_box[0] : l0_box[2], l0_box[1] : l0_box[3]] = (90, 40, 120)
    levels = [img, img[::2, ::2], img[::4, ::4]]
    src = Source(path="t", format="test", reader="memory", axes="YXC",
                 levels=[da.from_array(lv, chunks=(256, 256, 3)) for lv in levels],
                 spacing=(mpp, mpp), spacing_unit="µm")
    grid = make_tile_grid(src, tile_px=(64, 64), target_mpp=0.5)
    th, tw = grid.target_shape_yx
    win = read_target_window(src, grid, 0, 0, th, tw, fill=255)
    dark = win[..., 1] < 140
    ys, xs = np.nonzero(dark)
    ds = 0.5 / mpp
    assert ys.min() == pytest.approx(l0_box[0] / ds, abs=1)
    assert ys.max() + 1 == pytest.approx(l0_box[2] / ds, abs=1)
    assert xs.min() == pytest.approx(l0_box[1] / ds, abs=1)
    assert xs.max() + 1 == pytest.approx(l0_box[3] / ds, abs=1)
    # A window straddling the slide's corner is filled outside it.
    corner = read_target_window(src, grid, -5, -7, 20, 20, fill=255)
    assert (corner[:4] == 255).all() and (corner[:, :6] == 255).all()  # filter support: 1 px


def test_channel_first_and_grey_sources_read_as_yxc():
    cyx = np.arange(2 * 40 * 60, dtype=np.uint16).reshape(2, 40, 60)
    src = Source(path="f", format="test", reader="memory", axes="CYX",
                 levels=[da.from_array(cyx, chunks=(1, 16, 16))], spacing=(0.5, 0.5), spacing_unit="µm")
    grid = make_tile_grid(src, tile_px=(16, 16), target_mpp=0.5)
    win = read_target_window(src, grid, 3, 5, 10, 12, fill=0)
    assert win.shape == (10, 12, 2)
    assert np.array_equal(win, cyx[:, 3:13, 5:17].transpose(1, 2, 0))


def test_tiles_are_selected_only_over_tissue(synth, slide):
    src = synth.memory_source(slide.image, mpp=slide.mpp, n_levels=3)
    tm = detect_tissue(src, TissueOptions(thumbnail_px=600))
    grid = make_tile_grid(src, tile_px=(64, 64), target_mpp=0.5, tissue=tm, min_tile_fraction=0.5)
    y0, x0, y1, x1 = grid.cell_l0_boxes()
    truth = np.array([[slide.tissue[int(a):int(c), int(b):int(d)].mean()
                       for a, b, c, d in zip(ry0, rx0, ry1, rx1, strict=True)]
                      for ry0, rx0, ry1, rx1 in zip(y0, x0, y1, x1, strict=True)])
    sure = (truth > 0.7) | (truth < 0.3)
    assert np.array_equal(grid.selected[sure], truth[sure] >= 0.5)
    blocks = grid.blocks()
    assert sum(len(b.tile_rc) for b in blocks) == grid.n_selected
    assert len({b.chunk_id for b in blocks}) == len(blocks)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(5, 40), st.integers(5, 40),
    st.floats(1.0, 9.0), st.floats(1.0, 9.0),
    st.lists(st.tuples(st.floats(0, 300), st.floats(0, 300), st.floats(1, 120), st.floats(1, 120)),
             min_size=1, max_size=6),
    st.integers(0, 2**31 - 1),
)
def test_box_fractions_match_brute_force(h, w, sy, sx, boxes, seed):
    mask = np.random.default_rng(seed).random((h, w)) > 0.5
    tm = TissueMask(mask, (sy, sx), "test", 0.5)
    y0 = np.array([b[0] for b in boxes]); x0 = np.array([b[1] for b in boxes])  # noqa: E702
    y1 = y0 + np.array([b[2] for b in boxes]); x1 = x0 + np.array([b[3] for b in boxes])  # noqa: E702
    got = tm.fractions_in_l0_boxes(y0, x0, y1, x1)
    for k in range(len(boxes)):
        i0 = min(int(np.floor(y0[k] / sy)), h); i1 = max(min(int(np.ceil(y1[k] / sy)), h), min(i0 + 1, h))  # noqa: E702
        j0 = min(int(np.floor(x0[k] / sx)), w); j1 = max(min(int(np.ceil(x1[k] / sx)), w), min(j0 + 1, w))  # noqa: E702
        sub = mask[i0:i1, j0:j1]
        expected = sub.mean() if sub.size else 0.0
        assert got[k] == pytest.approx(expected, abs=1e-6)
