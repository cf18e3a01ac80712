"""Numpy processing of the airway/AV plugin: channels, priors, the two-stage flow."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from tessera.pipelines.metrics.overlap import dice
from tessera.pipelines.runners.sliding_window import sliding_window_labels
from tessera.pipelines.synthetic.ct import synth_ct
from tessera.plugins.airway_av.processing import (
    VESSEL_WINDOW,
    airway_distance,
    airway_input,
    artery_vein_input,
    coordinate_array,
    ct_warnings,
    lung_mask,
    segment_airway_vessels,
    window_hu,
)

SPACING = (1.2, 0.9, 0.9)


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    truth = synth_ct(tmp_path_factory.mktemp("av_proc") / "ct.nii.gz", shape_zyx=(64, 128, 128),
                     spacing_mm=SPACING, seed=5)
    hu = np.asarray(nib.load(truth.image_path).dataobj).transpose(2, 1, 0)
    labels = np.asarray(nib.load(truth.labels_path).dataobj).transpose(2, 1, 0)
    return truth, hu, labels


def test_window_hu() -> None:
    out = window_hu(np.array([-2000, -1000, -300, 400, 3000], dtype=np.int16))
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0])
    assert out.dtype == np.float32


def test_lung_mask_finds_two_lungs_with_their_vessels(ct) -> None:
    _truth, hu, labels = ct
    lungs = lung_mask(hu, SPACING)
    comps, n = ndi.label(lungs)
    sizes = np.sort(np.bincount(comps.ravel())[1:])[::-1]
    # two big lungs (the trachea joins them through the main bronchi, or not)
    assert n <= 3 and sizes[:2].sum() > 0.95 * lungs.sum()
    xs = np.nonzero(lungs)[2]
    mid = hu.shape[2] / 2
    assert (xs < mid).sum() > 0.3 * len(xs) and (xs > mid).sum() > 0.3 * len(xs)
    lung_ml = lungs.sum() * np.prod(SPACING) / 1000
    assert 150 < lung_ml < 600
    # vessels and airways inside the lungs belong to the lung context
    peripheral = labels.copy()
    peripheral[:, :, int(mid) - 20:int(mid) + 20] = 0  # leave out the mediastinum
    for value in (1, 2, 3):
        assert lungs[peripheral == value].mean() > 0.9
    # nothing outside the body, no fat or bone
    assert not lungs[hu > -200].any() or lungs[hu > -200].mean() < 0.2
    assert not lungs[0, :5, :5].any()


def test_airway_distance_is_exact_up_to_the_clip() -> None:
    rng = np.random.default_rng(0)
    mask = np.zeros((40, 30, 30), bool)
    mask[tuple(rng.integers(0, 30, (3, 6)))] = True
    spacing = (2.0, 0.8, 0.8)
    got = airway_distance(mask, spacing, clip_mm=10.0, slab=7)  # many slabs + halos
    ref = np.minimum(ndi.distance_transform_edt(~mask, sampling=spacing), 10.0)
    np.testing.assert_array_equal(got, np.rint(ref * 25.5).astype(np.uint8))
    assert (airway_distance(np.zeros((4, 4, 4), bool), spacing) == 255).all()


def test_coordinate_and_input_channels(ct) -> None:
    _, hu, _labels = ct
    coords = coordinate_array((5, 3, 9))
    assert coords.shape == (3, 5, 3, 9)
    np.testing.assert_allclose(coords[0, :, 0, 0], np.linspace(-1, 1, 5), atol=1e-6)
    np.testing.assert_allclose(coords[2, 0, 0, :], np.linspace(-1, 1, 9), atol=1e-6)
    x = airway_input(hu)
    assert x.shape == (4, *hu.shape) and x.dtype == np.float32
    window = np.asarray(x[:, 10:20, 5:9, 7:11])
    np.testing.assert_allclose(window[0], window_hu(hu[10:20, 5:9, 7:11]))
    np.testing.assert_allclose(window[1:], coordinate_array(hu.shape)[:, 10:20, 5:9, 7:11])
    lungs = np.zeros(hu.shape, bool)
    lungs[30] = True
    dist = np.full(hu.shape, 51, np.uint8)
    av = np.asarray(artery_vein_input(hu, lungs, dist)[:, 29:32, :2, :2])
    assert av.shape == (7, 3, 2, 2)
    np.testing.assert_allclose(av[1, :, 0, 0], [0, 1, 0])
    np.testing.assert_allclose(av[2], 0.2)
    np.testing.assert_allclose(av[3], window_hu(hu[29:32, :2, :2], VESSEL_WINDOW))
    np.testing.assert_allclose(window_hu(np.array([-1000, -200, 100, 400, 900]), VESSEL_WINDOW),
                               [0, 0, 0.5, 1, 1])


def test_ct_warnings() -> None:
    ct_like = np.full((10, 10, 10), -1000, np.int16)
    ct_like[:, 3:7] = 40
    assert ct_warnings(ct_like, {"modality": "CT"}) == []
    mr = ct_warnings(ct_like, {"modality": "MR"})
    assert len(mr) == 1 and "MR" in mr[0]
    unsigned = np.random.default_rng(0).integers(0, 1200, (10, 10, 10))
    assert any("Hounsfield" in n for n in ct_warnings(unsigned, {}))


def _oracle(labels: np.ndarray, n_image_channels: int, mapping: dict[int, int], n_classes: int):
    """A window predictor that reads its window's position from the coordinate channels
    and answers with the true labels there: the flow must put them back in place."""
    shape = np.asarray(labels.shape)

    def predict(x: np.ndarray) -> np.ndarray:
        out = np.zeros((x.shape[0], n_classes, *x.shape[2:]), np.float32)
        for i, window in enumerate(x):
            idx = [np.rint((window[n_image_channels + a] + 1) / 2 * (shape[a] - 1)).astype(int)
                   for a in range(3)]
            truth = labels[idx[0], idx[1], idx[2]]
            cls = np.zeros(truth.shape, int)
            for value, k in mapping.items():
                cls[truth == value] = k
            out[i] = np.moveaxis(np.eye(n_classes, dtype=np.float32)[cls], -1, 0)
        return out

    return predict


def test_two_stage_flow_puts_every_window_back_in_place(ct) -> None:
    _, hu, labels = ct
    calls = []

    def sliding(volume, predictor, **kw):
        calls.append(volume.shape[0])
        return sliding_window_labels(volume, predictor, **kw)

    out = segment_airway_vessels(
        hu, SPACING,
        airway_predictor=_oracle(labels, 1, {1: 1}, 2),
        av_predictor=_oracle(labels, 4, {2: 1, 3: 2}, 3),
        window_zyx=(32, 48, 48), overlap=0.25, batch_size=3, sliding_window=sliding)
    assert calls == [4, 7]  # CT + coords, then CT + lung + distance + vessel CT + coords
    pred = out["labels"]
    assert pred.dtype == np.uint8 and pred.shape == labels.shape
    # the airway is the largest 26-connected component of what the model said
    assert dice(pred == 1, labels == 1) > 0.99
    for value in (2, 3):
        assert dice(pred == value, labels == value) > 0.99
    assert out["airway_probability"].dtype == np.uint8
    # the distance prior is measured from the predicted airway
    assert (out["airway_distance"][pred == 1] == 0).all()


def test_vessel_components_that_never_touch_the_lungs_are_dropped() -> None:
    from tessera.pipelines.metrics.components import keep_components_touching

    mask = np.zeros((10, 20, 20), bool)
    mask[2:5, 2:5, 2:5] = True  # a vessel entering the lungs
    mask[5, 5, 5] = True  # its corner neighbour (26-connected)
    mask[2:5, 10:13, 10:13] = True  # a rib-like blob outside them
    lungs = np.zeros_like(mask)
    lungs[3, 3, 3] = True
    out = keep_components_touching(mask, lungs)
    assert out[2:5, 2:5, 2:5].all() and out[5, 5, 5]
    assert not out[2:5, 10:13, 10:13].any()
    assert out.sum() == 28
    assert not keep_components_touching(mask, lungs, connectivity=6)[5, 5, 5]
    assert not keep_components_touching(np.zeros_like(mask), lungs).any()
