"""3D sliding window: the Z-slab streaming equals a whole-volume Gaussian blend, pads
small volumes, resumes from a plane, and never holds a float map of the volume."""

from __future__ import annotations

import itertools
import tracemalloc

import dask.array as da
import numpy as np
import pytest

from tessera.pipelines.progress import RecordingProgress
from tessera.pipelines.runners.sliding_window import (
    gaussian_importance,
    sliding_window_labels,
    window_starts,
)


def _context_predictor(x: np.ndarray) -> np.ndarray:
    """(N, 1, D, H, W) -> (N, 3, D, H, W): softmax of position-dependent logits, so each
    window's prediction depends on where the window sits (blending is observable)."""
    from scipy.ndimage import uniform_filter

    v = uniform_filter(x[:, 0], size=(1, 3, 3, 3), mode="constant")
    logits = np.stack([np.zeros_like(v), 6 * (v - 0.3), 6 * (v - 0.6)], axis=1)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _reference(volume, predictor, window, overlap, sigma_scale):
    """The textbook version: one float accumulator over the whole (padded) volume."""
    _c, z, y, x = volume.shape
    pads = [(max(0, w - n) // 2, max(0, w - n) - max(0, w - n) // 2) for n, w in zip((z, y, x), window, strict=True)]
    vol = np.pad(volume, [(0, 0), *pads])
    _, zp, yp, xp = vol.shape
    imp = gaussian_importance(window, sigma_scale)
    acc, wsum = None, np.zeros((zp, yp, xp), np.float32)
    for s in window_starts(zp, window[0], overlap):
        for t in window_starts(yp, window[1], overlap):
            for u in window_starts(xp, window[2], overlap):
                out = predictor(vol[None, :, s : s + window[0], t : t + window[1], u : u + window[2]])[0]
                if acc is None:
                    acc = np.zeros((out.shape[0], zp, yp, xp), np.float32)
                acc[:, s : s + window[0], t : t + window[1], u : u + window[2]] += out * imp
                wsum[s : s + window[0], t : t + window[1], u : u + window[2]] += imp
    p = (acc / wsum)[:, pads[0][0] : pads[0][0] + z, pads[1][0] : pads[1][0] + y, pads[2][0] : pads[2][0] + x]
    return np.argmax(p, axis=0).astype(np.uint8), p


@pytest.mark.parametrize(
    ("shape", "window", "overlap"),
    [((1, 37, 29, 41), (12, 16, 16), 0.5), ((1, 9, 20, 12), (16, 16, 16), 0.25), ((1, 40, 16, 16), (8, 16, 16), 0.25)],
)
def test_streaming_equals_whole_volume_blend(shape, window, overlap):
    rng = np.random.default_rng(0)
    vol = rng.random(shape, dtype=np.float32)
    ref_labels, ref_p = _reference(vol, _context_predictor, window, overlap, 0.125)
    progress = RecordingProgress()
    labels, probs = sliding_window_labels(da.from_array(vol, chunks=(1, 7, 16, 16)), _context_predictor,
                                          window_zyx=window, overlap=overlap, batch_size=3,
                                          progress=progress, keep_probabilities=(2,))
    assert labels.dtype == np.uint8 and labels.shape == shape[1:]
    assert (labels == ref_labels).mean() > 0.999  # argmax ties aside
    assert np.abs(probs[2].astype(np.float32) / 255 - ref_p[2]).max() <= 0.6 / 255 + 1e-6
    assert progress.done == progress.total


def test_resume_from_a_plane_gives_the_same_result():
    rng = np.random.default_rng(1)
    vol = rng.random((1, 45, 20, 20), dtype=np.float32)
    full, _ = sliding_window_labels(vol, _context_predictor, window_zyx=(10, 16, 16), overlap=0.4)
    slabs = []
    part, _ = sliding_window_labels(vol, _context_predictor, window_zyx=(10, 16, 16), overlap=0.4, start_z=21,
                                    on_planes=lambda a, b, lab, p: slabs.append((a, b)))
    assert np.array_equal(part[21:], full[21:])
    assert not part[:21].any()
    assert slabs[0][0] == 21 and slabs[-1][1] == 45
    assert all(b0 == a1 for (_, a1), (b0, _) in itertools.pairwise(slabs))


def test_no_float_map_of_the_whole_volume():
    """Peak traced memory stays far below one float32 class map of the volume."""
    vol = da.zeros((1, 384, 96, 96), dtype=np.float32, chunks=(1, 16, 96, 96))
    full_map = 4 * 384 * 96 * 96 * 4  # K=4 float32 maps of the whole volume: 57 MB

    def predictor(x):
        return np.repeat(x, 4, axis=1) * 0.25

    tracemalloc.start()
    labels, _ = sliding_window_labels(vol, predictor, window_zyx=(16, 64, 64), overlap=0.25, batch_size=2)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert labels.shape == (384, 96, 96)
    assert peak < full_map / 3, f"peak {peak / 1e6:.1f} MB vs whole-volume map {full_map / 1e6:.1f} MB"


def test_gaussian_importance_is_centred_and_positive():
    g = gaussian_importance((9, 16, 5), 0.125)
    assert g.shape == (9, 16, 5) and g.min() > 0 and g.max() == pytest.approx(1.0)
    assert np.unravel_index(np.argmax(g), g.shape)[0] == 4
    assert np.allclose(g, g[::-1, ::-1, ::-1])


def test_window_starts_cover_with_overlap():
    for length, window, overlap in [(100, 32, 0.25), (33, 32, 0.5), (32, 32, 0.5), (7, 32, 0.5)]:
        starts = window_starts(length, window, overlap)
        assert starts[0] == 0 and starts[-1] == max(0, length - window)
        assert all(b - a <= window * (1 - overlap) + 1 for a, b in itertools.pairwise(starts))
