"""tessera bench volume: both sliding windows on the same model, and the peak-RSS child."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("monai")
pytestmark = pytest.mark.torch


def test_sliding_windows_side_by_side(tiny_plugin_dir: Path) -> None:
    from tessera.pipelines.bench.volume import bench_sliding_window
    from tessera.pipelines.plugin_system import load_plugin_folder

    plugin = load_plugin_folder(tiny_plugin_dir)
    r = bench_sliding_window(plugin, shape_zyx=(32, 64, 64), repeats=1, threads=1)
    assert r.window_zyx == (16, 32, 32) and r.overlap == 0.25
    # both visit a grid of windows over the whole volume (their grids may differ a little)
    assert r.tessera_windows >= 27 and r.monai_windows >= 27
    # same model, same Gaussian blending: the blended probabilities are close (the window
    # grids differ a little; random weights sit near 0.5, so labels may flip anywhere)
    assert r.mean_abs_prob_diff < 0.02
    assert 0.0 < r.label_agreement <= 1.0
    d = r.to_dict()
    assert d["ratio_tessera_over_monai"] == pytest.approx(r.monai_median_s / r.tessera_median_s)
    assert d["tessera_voxels_per_s"] == pytest.approx(32 * 64 * 64 / r.tessera_median_s)


@pytest.mark.slow
def test_peak_rss_child_runs_the_whole_flow(tiny_plugin_dir: Path, tmp_path: Path) -> None:
    import nibabel as nib

    from tessera.pipelines.bench.volume import big_ct, peak_rss_mb

    ct = big_ct(tmp_path / "ct.nii.gz", (40, 96, 96))
    assert nib.load(ct).shape == (96, 96, 40)
    result = peak_rss_mb(ct, str(tiny_plugin_dir), tmp_path / "out")
    assert 50 < result["peak_rss_mb"] < 4000
    labels = np.asarray(nib.load(tmp_path / "out" / "labels.nii.gz").dataobj)
    assert labels.shape == (96, 96, 40)
    np.testing.assert_allclose(nib.load(tmp_path / "out" / "labels.nii.gz").affine,
                               nib.load(ct).affine)
    assert (labels == 1).any()  # the stand-in finds the air-like lumen
