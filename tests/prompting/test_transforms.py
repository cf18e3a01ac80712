"""Preprocessing and image <-> encoder-input coordinates (numpy only)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tessera.pipelines.prompting.transforms import (
    SAM_MEAN,
    SAM_STD,
    InputTransform,
    preprocess,
    resized_shape,
    to_rgb_uint8,
)


def test_resized_shape_follows_the_official_rounding():
    # segment-anything's ResizeLongestSide.get_preprocess_shape: int(x * scale + 0.5)
    assert resized_shape(480, 640, 1024) == (768, 1024)
    assert resized_shape(375, 500, 1024) == (768, 1024)
    assert resized_shape(1, 3, 256) == (85, 256)
    assert resized_shape(333, 1000, 1024) == (341, 1024)  # 340.99 rounds up
    assert resized_shape(256, 256, 256) == (256, 256)


@given(
    h=st.integers(1, 3000), w=st.integers(1, 3000), size=st.sampled_from([256, 1024]),
    x=st.floats(0, 3000), y=st.floats(0, 3000),
)
def test_coordinates_round_trip(h, w, size, x, y):
    rh, rw = resized_shape(h, w, size)
    t = InputTransform((h, w), (rh, rw), size)
    p = np.array([x, y])
    q = t.to_input(p)
    assert q[0] == pytest.approx(x * rw / w, rel=1e-6, abs=1e-3)
    assert np.allclose(t.to_image(q), p, rtol=1e-5, atol=1e-3)


def test_sam_preprocess_normalises_then_pads():
    img = np.zeros((60, 100, 3), np.uint8)
    img[..., 0] = 200
    img[..., 1] = 10
    x, t = preprocess(img, 128)
    assert x.shape == (1, 3, 128, 128) and x.dtype == np.float32
    assert t.resized_hw == (77, 128) and t.image_hw == (60, 100)
    assert np.allclose(x[0, 0, :77, :], (200 - SAM_MEAN[0]) / SAM_STD[0], atol=1e-5)
    assert np.allclose(x[0, 1, :77, :], (10 - SAM_MEAN[1]) / SAM_STD[1], atol=1e-5)
    assert np.all(x[0, :, 77:, :] == 0)  # padding bottom, after normalising


def test_medsam_preprocess_squashes_and_min_max_scales():
    rng = np.random.default_rng(0)
    img = (rng.random((50, 200, 3)) * 100 + 50).astype(np.uint8)
    x, t = preprocess(img, 64, kind="medsam")
    assert x.shape == (1, 3, 64, 64)
    assert t.resized_hw == (64, 64) and t.kind == "medsam"
    assert x.min() == pytest.approx(0.0) and x.max() == pytest.approx(1.0)
    assert t.scale_xy == (64 / 200, 64 / 50)  # aspect not kept


def test_to_rgb_uint8_handles_grey_hu_16bit_and_rgba():
    hu = np.array([[-1000.0, 0.0], [400.0, 2000.0]], np.float32)
    out = to_rgb_uint8(hu, value_window=(-1000, 1000))
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    assert out[0, 0, 0] == 0 and out[0, 1, 0] == 128 and out[1, 1, 0] == 255
    u16 = np.linspace(0, 65535, 10000).reshape(100, 100).astype(np.uint16)
    o16 = to_rgb_uint8(u16)
    assert o16[..., 0].min() == 0 and o16[..., 0].max() == 255  # percentile stretch
    rgba = np.zeros((3, 3, 4), np.uint8)
    rgba[..., 2] = 9
    assert to_rgb_uint8(rgba).shape == (3, 3, 3) and to_rgb_uint8(rgba)[0, 0, 2] == 9
    with pytest.raises(ValueError, match="shape"):
        to_rgb_uint8(np.zeros((4, 4, 5), np.uint8))
