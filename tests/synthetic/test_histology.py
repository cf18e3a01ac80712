"""Synthetic H&E renderer: seamless tiling, determinism, Beer-Lambert colour, and tissue
architectures that differ the way pathology says they should."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage as ndi

from tessera.pipelines.synthetic.histology import (
    ARCHITECTURES,
    BREAKHIS_SUBTYPES,
    LABEL_GLASS,
    LABEL_TUMOUR,
    HistologyScene,
    StainModel,
    draw_nuclei,
    jittered_points,
    scene_for,
    upsample,
)
from tessera.pipelines.synthetic.slide import slide_scene


@pytest.fixture(scope="module")
def slide_like() -> HistologyScene:
    """A 2048 px (512 µm at 0.25 µm/px) slide scene: glass, benign tissue and tumour."""
    return slide_scene((2048, 2048), 4, malignant="ductal_carcinoma")


@pytest.mark.parametrize("mpp", [0.25, 1.0, 2.5])
def test_render_is_seamless_and_pure(slide_like: HistologyScene, mpp: float) -> None:
    """Any split of a region into tiles gives the very same pixels as the whole region."""
    y0, x0, h, w = int(130 / mpp), int(90 / mpp), 203, 317
    whole = slide_like.render(y0, x0, h, w, mpp=mpp)
    assert whole.shape == (h, w, 3) and whole.dtype == np.uint8
    ys, xs = [0, 37, 150, h], [0, 101, 102, 250, w]
    mosaic = np.empty_like(whole)
    for i in range(len(ys) - 1):
        for j in range(len(xs) - 1):
            mosaic[ys[i] : ys[i + 1], xs[j] : xs[j + 1]] = slide_like.render(
                y0 + ys[i], x0 + xs[j], ys[i + 1] - ys[i], xs[j + 1] - xs[j], mpp=mpp
            )
    np.testing.assert_array_equal(mosaic, whole)
    np.testing.assert_array_equal(slide_like.render(y0, x0, h, w, mpp=mpp), whole)


def test_same_seed_same_pixels_other_seed_differs() -> None:
    a = scene_for("ductal_carcinoma", 11).render(500, 700, 128, 160, mpp=0.5)
    b = scene_for("ductal_carcinoma", 11).render(500, 700, 128, 160, mpp=0.5)
    c = scene_for("ductal_carcinoma", 12).render(500, 700, 128, 160, mpp=0.5)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 10


def test_glass_white_tissue_pink_purple(slide_like: HistologyScene) -> None:
    mpp = 2.0
    img = slide_like.render(0, 0, 256, 256, mpp=mpp).astype(np.float32)
    c = (np.arange(256) + 0.5) * mpp
    labels = slide_like.labels(c[:, None], c[None, :])
    glass = labels == LABEL_GLASS
    # away from the tissue edge only
    glass_core = ndi.binary_erosion(glass, iterations=3)
    tissue_core = ndi.binary_erosion(~glass, iterations=3)
    assert glass_core.mean() > 0.05 and tissue_core.mean() > 0.3
    g = img[glass_core]
    assert g.min() > 215 and np.abs(g - g.mean(axis=1, keepdims=True)).max() < 20  # grey-white
    t = img[tissue_core]
    stained = t[t.mean(axis=1) < 215]  # tissue other than fat cells
    assert len(stained) > 0.5 * len(t)
    r, gr, b = stained[:, 0], stained[:, 1], stained[:, 2]
    # H&E: eosin pink and haematoxylin purple both absorb green most
    assert np.mean((r > gr) & (b > gr)) > 0.97
    assert stained.mean() < g.mean() - 40


def test_colour_is_beer_lambert_mixing_of_the_slide_stains() -> None:
    """Without camera noise, every pixel's optical density lies in the plane of the
    slide's two stain vectors, and unmixing recovers plausible concentrations."""
    stain = StainModel.sample(99)
    assert stain != StainModel()  # per-patient variation
    scene = replace(scene_for("ductal_carcinoma", 5, stain=stain), noise_sd=0.0)
    img = scene.render(0, 0, 160, 160, mpp=0.5).astype(np.float32)
    od = -np.log10(np.maximum(img, 1) / np.asarray(stain.background_rgb, np.float32))
    m = stain.matrix  # (2, 3)
    proj = od.reshape(-1, 3) @ np.linalg.pinv(m) @ m
    resid = np.linalg.norm(od.reshape(-1, 3) - proj, axis=1)
    dense = np.linalg.norm(od.reshape(-1, 3), axis=1) > 0.1
    assert np.median(resid[dense] / np.linalg.norm(od.reshape(-1, 3), axis=1)[dense]) < 0.02
    ch, ce = stain.concentrations(img)
    assert ch.max() > 0.7 and 0.05 < np.median(ce) < 0.5  # nuclei dark, stroma pink


def _nuclei_stats(scene: HistologyScene, mpp: float = 0.5) -> dict[str, float]:
    """Haematoxylin-dense objects: count, mean area (µm²), area fraction, mean density."""
    img = scene.render(2000, 2000, 400, 400, mpp=mpp)
    ch, _ = scene.stain.concentrations(img)
    mask = ndi.binary_opening(ch > 0.38)
    lab, n = ndi.label(mask)
    areas = np.bincount(lab.ravel())[1:] * mpp * mpp
    return {"n": n, "mean_area_um2": float(areas.mean()) if n else 0.0,
            "fraction": float(mask.mean()), "darkness": float(ch[mask].mean()) if n else 0.0}


def test_malignant_nuclei_larger_denser_darker_than_benign() -> None:
    benign = [_nuclei_stats(scene_for(a, s)) for a in ("normal", "adenosis") for s in (1, 2)]
    malignant = [_nuclei_stats(scene_for("ductal_carcinoma", s)) for s in (1, 2)]
    b_area = max(x["mean_area_um2"] for x in benign)
    m_area = min(x["mean_area_um2"] for x in malignant)
    assert m_area > 2.0 * b_area, (benign, malignant)
    assert min(x["fraction"] for x in malignant) > 1.4 * max(x["fraction"] for x in benign)
    assert min(x["darkness"] for x in malignant) > max(x["darkness"] for x in benign)


def _compartments(name: str, seed: int) -> dict[str, float]:
    scene = scene_for(name, seed, stain=StainModel())
    img = scene.render(3000, 3000, 300, 300, mpp=1.0).astype(np.float32)
    ch, ce = scene.stain.concentrations(img)
    return {
        "white": float(np.mean((ch < 0.06) & (ce < 0.09))),  # lumina, clefts, fat
        "mucin": float(np.mean((ch > 0.12) & (ch < 0.3) & (ce < 0.11))),  # blue-grey
        "pale_stroma": float(np.mean((ce > 0.09) & (ce < 0.2) & (ch < 0.14))),
        "nuclei": float(np.mean(ch > 0.38)),
    }


def test_subtypes_differ_by_construction() -> None:
    f = {n: _compartments(n, 21) for n in BREAKHIS_SUBTYPES}
    # mucinous carcinoma: lakes of blue-grey mucin
    assert f["mucinous_carcinoma"]["mucin"] > 0.3
    assert all(f[n]["mucin"] < 0.1 for n in BREAKHIS_SUBTYPES if n != "mucinous_carcinoma")
    # papillary carcinoma: fronds project into open cystic space
    others = [f[n]["white"] for n in BREAKHIS_SUBTYPES if n != "papillary_carcinoma"]
    assert f["papillary_carcinoma"]["white"] > max(0.1, 3 * max(others))
    # fibroadenoma: mostly pale loose stroma with few nuclei
    assert f["fibroadenoma"]["pale_stroma"] > 0.4 and f["fibroadenoma"]["nuclei"] < 0.08
    # phyllodes tumour: hypercellular stroma, many more nuclei than fibroadenoma
    assert f["phyllodes_tumor"]["nuclei"] > 2 * f["fibroadenoma"]["nuclei"]
    # ductal and papillary carcinoma are more cellular than any benign subtype
    benign_max = max(f[n]["nuclei"] for n in BREAKHIS_SUBTYPES if not ARCHITECTURES[n].malignant)
    for n in ("ductal_carcinoma", "papillary_carcinoma"):
        assert f[n]["nuclei"] > benign_max, (n, f)


def test_tumour_truth_matches_rendered_tumour(slide_like: HistologyScene) -> None:
    """Where the truth says tumour, the image has the tumour's dense nuclei."""
    mpp = 1.0
    img = slide_like.render(0, 0, 512, 512, mpp=mpp)
    ch, _ = slide_like.stain.concentrations(img)
    c = (np.arange(512) + 0.5) * mpp
    labels = slide_like.labels(c[:, None], c[None, :])
    tum = ndi.binary_erosion(labels == LABEL_TUMOUR, iterations=10)
    ben = ndi.binary_erosion(labels == 1, iterations=10)
    assert tum.sum() > 1000 and ben.sum() > 1000
    assert np.mean(ch[tum] > 0.38) > 3 * np.mean(ch[ben] > 0.38)


def test_nuclei_sprites_are_antialiased_ellipses() -> None:
    """A single round nucleus of radius r covers pi r^2 pixels (within a few %)."""
    from tessera.pipelines.synthetic.histology import Nuclei, NucleusStyle

    style = NucleusStyle(radius_um=(3.0, 3.0), aspect=(1.0, 1.0), pleomorphism=0.0,
                         darkness=(1.0, 0.0), texture=0.0)
    u = np.full((9, 1), 0.5, np.float32)
    n = Nuclei.from_style(style, np.array([10.3]), np.array([12.7]), u)
    canvas = np.zeros((40, 40), np.float32)
    draw_nuclei(canvas, (0, 0), n, 0.5, seed=1)
    assert canvas.sum() == pytest.approx(np.pi * 6.0**2, rel=0.04)
    assert canvas.max() == pytest.approx(1.0)


def test_jittered_points_do_not_depend_on_the_box() -> None:
    y1, x1, _ = jittered_points((0, 0, 100, 100), 10.0, seed=3)
    y2, x2, _ = jittered_points((40, 40, 250, 250), 10.0, seed=3)
    a = {(round(a, 6), round(b, 6)) for a, b in zip(y1, x1, strict=True)}
    b = {(round(a, 6), round(b, 6)) for a, b in zip(y2, x2, strict=True)}
    shared = {p for p in a if 50 <= p[0] < 100 and 50 <= p[1] < 100}
    assert shared and shared <= b


def test_upsample_is_linear_interpolation() -> None:
    c = np.array([[0.0, 4.0], [8.0, 12.0]], np.float32)
    up = upsample(c, 4, True)
    assert up.shape == (5, 5)
    np.testing.assert_allclose(up[:, 0], [0, 2, 4, 6, 8])
    np.testing.assert_allclose(up[2, 2], 6.0)
    assert upsample(c, 4, False).shape == (4, 4)
