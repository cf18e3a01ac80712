"""breast-vit processing (numpy only): preprocessing per the manifest, softmax, and stain
normalisation checked against the synthetic slides' known stain vectors."""

from __future__ import annotations

from importlib.resources import files

import numpy as np
import pytest

from tessera.pipelines.plugin_system.manifest import load_manifest
from tessera.pipelines.synthetic.histology import StainModel, scene_for, with_stain
from tessera.plugins.breast_vit import processing as proc


@pytest.fixture(scope="module")
def manifest():
    return load_manifest(files("tessera.plugins.breast_vit") / "manifest.toml")


def _with_params(manifest, **params):
    return manifest.model_copy(update={"params": {**manifest.params, **params}})


_STAIN_A = StainModel(h_od=(0.60, 0.70, 0.39), e_od=(0.26, 0.80, 0.54), h_gain=0.8, e_gain=1.3)
_STAIN_B = StainModel(h_od=(0.52, 0.74, 0.43), e_od=(0.17, 0.81, 0.56), h_gain=1.25, e_gain=0.7,
                      background_rgb=(236.0, 238.0, 241.0))


def _two_stainings(arch: str) -> tuple[np.ndarray, np.ndarray]:
    """The same tissue (1 µm/px) stained two quite different ways."""
    base = scene_for(arch, 5)
    a, b = (with_stain(base, s).render(2000, 2000, 224, 224, mpp=1.0) for s in (_STAIN_A, _STAIN_B))
    return a, b


def test_preprocess_scales_normalises_and_transposes(manifest) -> None:
    tiles = np.zeros((3, 112, 112, 3), np.uint8)
    tiles[1] = 255
    tiles[2, ..., 0] = 255
    out = proc.preprocess(tiles, manifest)
    x = out["input"]
    assert set(out) == {"input"} and x.shape == (3, 3, 112, 112) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], -1.0)  # (0/255 - 0.5) / 0.5
    np.testing.assert_allclose(x[1], 1.0)
    np.testing.assert_allclose(x[2, 0], 1.0)
    np.testing.assert_allclose(x[2, 1:], -1.0)


def test_preprocess_resizes_to_the_model_input(manifest) -> None:
    tiles = np.full((2, 224, 200, 4), 128, np.uint8)  # RGBA from OpenSlide, other size
    tiles[:, :112] = 0
    x = proc.preprocess(tiles, manifest)["input"]
    assert x.shape == (2, 3, 112, 112)
    assert x[0, 0, 10, 50] == pytest.approx(-1.0) and x[0, 0, 100, 50] == pytest.approx(
        128 / 255 * 2 - 1, abs=1e-6)


def test_postprocess_is_softmax(manifest) -> None:
    logits = np.array([[0.0, 0.0], [3.0, -1.0], [-50.0, 50.0]], np.float32)
    p = proc.postprocess({"logits": logits, "subtype_logits": np.zeros((3, 8), np.float32)},
                         manifest)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-6)
    assert p[0, 1] == pytest.approx(0.5) and p[1, 0] > 0.98 and p[2, 1] == pytest.approx(1.0)
    s = proc.subtype_probabilities({"subtype_logits": np.zeros((2, 8), np.float32)})
    np.testing.assert_allclose(s, 1 / 8)
    assert proc.subtype_probabilities({"logits": logits}) is None


def _angle_deg(u: np.ndarray, v: np.ndarray) -> float:
    c = float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))
    return float(np.degrees(np.arccos(np.clip(c, -1, 1))))


@pytest.mark.parametrize("arch", ["normal", "fibroadenoma", "ductal_carcinoma"])
def test_macenko_recovers_the_true_stain_vectors(arch: str) -> None:
    for seed in (1, 7):
        stain = StainModel.sample(seed)
        img = with_stain(scene_for(arch, 5), stain).render(2000, 2000, 224, 224, mpp=1.0)
        he, max_conc = proc.macenko_stain_matrix(img)
        assert _angle_deg(he[0], np.array(stain.h_od)) < 4
        # tumour tiles hold little pure eosin: its estimate is a mixture, as in real slides
        assert _angle_deg(he[1], np.array(stain.e_od)) < (15 if arch == "ductal_carcinoma" else 6)
        assert np.all(max_conc > 0.1)
    assert proc.macenko_stain_matrix(np.full((64, 64, 3), 240, np.uint8)) is None  # glass only


@pytest.mark.parametrize(("arch", "methods"), [("adenosis", ("macenko", "reinhard")),
                                                ("phyllodes_tumor", ("macenko", "reinhard")),
                                                ("ductal_carcinoma", ("reinhard",))])
def test_stain_normalisation_brings_two_stainings_together(arch, methods, manifest) -> None:
    """Normalised to one target, two stainings of the same tissue look alike. (Macenko
    needs enough pure eosin to find its vector: not in a tile full of tumour cells.)"""
    a, b = _two_stainings(arch)
    ref = with_stain(scene_for("adenosis", 9), StainModel()).render(0, 0, 448, 448, mpp=1.0)
    mean, std = proc.reinhard_target(ref)
    before = np.abs(a.astype(np.float32) - b).mean()
    for method in methods:
        m = _with_params(manifest, stain_normalisation=method, reinhard_target_mean=list(mean),
                         reinhard_target_std=list(std))
        na, nb = proc.normalise_stain(np.stack([a, b]), m.params)
        after = np.abs(na.astype(np.float32) - nb).mean()
        assert after < 0.5 * before, (method, before, after)
        x = proc.preprocess(np.stack([a]), m)["input"]
        assert not np.allclose(x, proc.preprocess(np.stack([a]), manifest)["input"])


def test_reinhard_hits_the_target_statistics() -> None:
    a, _ = _two_stainings("adenosis")
    out = proc.reinhard_normalise(a, (-0.3, -0.02, 0.01), (0.15, 0.03, 0.02))
    lab = proc.rgb_to_lab(out).reshape(-1, 3)
    tissue = a.reshape(-1, 3).mean(axis=1) < 215
    np.testing.assert_allclose(lab[tissue].mean(0), (-0.3, -0.02, 0.01), atol=0.02)
    rgb = np.array([[[200, 120, 160], [30, 20, 60]]], np.uint8)
    assert np.abs(proc.lab_to_rgb(proc.rgb_to_lab(rgb)).astype(int) - rgb).max() <= 1


def test_unknown_method_is_refused(manifest) -> None:
    bad = _with_params(manifest, stain_normalisation="vahadane")
    with pytest.raises(ValueError, match="stain_normalisation"):
        proc.preprocess(np.zeros((1, 112, 112, 3), np.uint8), bad)


def test_processing_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, tessera.plugins.breast_vit.processing, tessera.plugins.breast_vit; "
            "assert 'torch' not in sys.modules and 'timm' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
