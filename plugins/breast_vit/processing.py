"""Pre- and post-processing of the breast ViT (numpy + Pillow only: runs without torch).

``preprocess(tiles, manifest)``: uint8 RGB tiles [N, H, W, 3] -> {"input": float32
[N, 3, h, w]}: optional stain normalisation (``params.stain_normalisation``: "none",
"macenko" or "reinhard"), resize to the model input (``input.size_px``) when the tiles
differ, then ``* scale - mean) / std`` per channel and NHWC -> NCHW (the task-kind
default, reused).

``postprocess(outputs, manifest)``: class probabilities [N, 2] (softmax of "logits");
``subtype_probabilities(outputs)`` does the same for the optional "subtype_logits".

Stain normalisation is written here, in numpy, because no small well-kept library does
it: torchstain needs torch or TensorFlow at inference, staintools is unmaintained and
needs SPAMS, TIAToolbox is a large framework. Both methods follow their papers:

- Macenko et al. 2009 ("A method for normalizing histology slides for quantitative
  analysis"): optical density of tissue pixels, the plane of its two main directions
  (SVD), the robust extreme angles (percentiles ``alpha`` and 100 - ``alpha``) give
  the H and E vectors; concentrations by least squares, scaled so their 99th
  percentiles match the target's, re-coloured with the target vectors.
- Reinhard et al. 2001 ("Color transfer between images"): Ruderman's decorrelated
  l-alpha-beta space (RGB -> LMS -> log10 -> lab); each channel's mean and standard
  deviation (over tissue pixels) are moved to the target's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tessera.pipelines.plugin_system.tasks import class_probabilities, preprocess_tiles

#: Macenko's published reference: H and E OD vectors (rows) and 99th-percentile
#: concentrations, used when the manifest gives no target.
MACENKO_REFERENCE_HE = ((0.5626, 0.7201, 0.4062), (0.2159, 0.8012, 0.5581))
MACENKO_REFERENCE_MAX_CONC = (1.9705, 1.0308)
#: Reinhard target (l, alpha, beta) tissue means and standard deviations, measured on a
#: 448 x 448 µm synthetic adenosis tile in Macenko's reference stain; fit your own with
#: ``reinhard_target(reference_tile)``.
REINHARD_REFERENCE_MEAN = (-0.496, -0.0344, 0.0238)
REINHARD_REFERENCE_STD = (0.225, 0.0443, 0.0045)

_BACKGROUND_IO = 240.0  # transmitted light of the glass in 8-bit RGB


# ---- Macenko -------------------------------------------------------------------------------


def optical_density(rgb: np.ndarray, io: float = _BACKGROUND_IO) -> np.ndarray:
    """OD = -log10(I / I0) per channel, float32, I clipped to [1, I0]."""
    i = np.clip(np.asarray(rgb, np.float32), 1.0, io)
    return -np.log10(i / np.float32(io))


def macenko_stain_matrix(
    rgb: np.ndarray, *, io: float = _BACKGROUND_IO, beta: float = 0.15, alpha: float = 1.0,
    min_pixels: int = 64,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Estimate (HE (2, 3) unit OD rows H then E, max_conc (2,)) from a tile, or None when
    it holds fewer than ``min_pixels`` stained pixels.

    Stained pixels are those whose OD vector is longer than ``beta``. (Many Macenko
    implementations require OD > beta in every channel instead; that drops light pink
    stroma, whose red-channel OD is small, and biases the eosin vector towards mixtures.)
    """
    od = optical_density(rgb, io).reshape(-1, 3)
    tissue = od[np.linalg.norm(od, axis=1) > beta]
    if tissue.shape[0] < min_pixels:
        return None
    _, vecs = np.linalg.eigh(np.cov(tissue.T.astype(np.float64)))
    plane = vecs[:, 1:3]  # the two largest eigenvectors (eigh sorts ascending)
    proj = tissue @ plane
    phi = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(phi, [alpha, 100 - alpha])
    v1 = plane @ np.array([np.cos(lo), np.sin(lo)])
    v2 = plane @ np.array([np.cos(hi), np.sin(hi)])
    v1 *= np.sign(v1.sum()) or 1.0
    v2 *= np.sign(v2.sum()) or 1.0
    # haematoxylin absorbs red more than eosin does: it is the vector with the larger R
    he = np.stack([v1, v2]) if v1[0] > v2[0] else np.stack([v2, v1])
    he /= np.linalg.norm(he, axis=1, keepdims=True)
    conc = np.linalg.lstsq(he.T, od.T.astype(np.float64), rcond=None)[0]  # (2, P)
    max_conc = np.percentile(conc, 99, axis=1)
    return he.astype(np.float32), np.maximum(max_conc, 1e-6).astype(np.float32)


def macenko_normalise(
    rgb: np.ndarray,
    target_he: Sequence[Sequence[float]] = MACENKO_REFERENCE_HE,
    target_max_conc: Sequence[float] = MACENKO_REFERENCE_MAX_CONC,
    *,
    io: float = _BACKGROUND_IO,
) -> np.ndarray:
    """One RGB tile re-stained with the target H&E vectors (uint8); unchanged when it
    has too little stained tissue to estimate its stains."""
    rgb = np.asarray(rgb)
    est = macenko_stain_matrix(rgb, io=io)
    if est is None:
        return rgb.copy()
    he, max_conc = est
    od = optical_density(rgb, io).reshape(-1, 3)
    conc = np.linalg.lstsq(he.T, od.T, rcond=None)[0]  # (2, P)
    conc *= (np.asarray(target_max_conc, np.float32) / max_conc)[:, None]
    od_new = (np.asarray(target_he, np.float32).T @ conc).T  # (P, 3)
    out = np.float32(io) * np.power(np.float32(10), -od_new)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8).reshape(rgb.shape)


# ---- Reinhard --------------------------------------------------------------------------------

_RGB2LMS = np.array([[0.3811, 0.5783, 0.0402], [0.1967, 0.7244, 0.0782], [0.0241, 0.1288, 0.8444]])
_LMS2LAB = np.diag([1 / np.sqrt(3), 1 / np.sqrt(6), 1 / np.sqrt(2)]) @ np.array(
    [[1, 1, 1], [1, 1, -2], [1, -1, 0]], dtype=np.float64
)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """Ruderman l-alpha-beta of 8-bit RGB (float32, same shape)."""
    x = np.maximum(np.asarray(rgb, np.float64) / 255.0, 1e-4)
    lms = np.log10(np.maximum(x @ _RGB2LMS.T, 1e-4))
    return (lms @ _LMS2LAB.T).astype(np.float32)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """Inverse of ``rgb_to_lab``, uint8."""
    lms = np.power(10.0, np.asarray(lab, np.float64) @ np.linalg.inv(_LMS2LAB).T)
    rgb = lms @ np.linalg.inv(_RGB2LMS).T
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _tissue_lab(rgb: np.ndarray, tissue_below: float) -> tuple[np.ndarray, np.ndarray]:
    lab = rgb_to_lab(rgb).reshape(-1, 3)
    tissue = np.asarray(rgb).reshape(-1, 3).astype(np.float32).mean(axis=1) < tissue_below
    return lab, tissue


def reinhard_target(
    reference_rgb: np.ndarray, *, tissue_below: float = 215.0
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of a reference tile's tissue in l-alpha-beta: a Reinhard target."""
    lab, tissue = _tissue_lab(reference_rgb, tissue_below)
    sel = lab[tissue] if tissue.any() else lab
    return tuple(float(v) for v in sel.mean(0)), tuple(float(v) for v in sel.std(0))


def reinhard_normalise(
    rgb: np.ndarray,
    target_mean: Sequence[float] = REINHARD_REFERENCE_MEAN,
    target_std: Sequence[float] = REINHARD_REFERENCE_STD,
    *,
    tissue_below: float = 215.0,
    min_pixels: int = 64,
) -> np.ndarray:
    """One RGB tile with its lab statistics (over tissue: mean RGB below ``tissue_below``)
    moved to the target's; glass stays as it is. Unchanged with too little tissue."""
    rgb = np.asarray(rgb)
    lab, tissue = _tissue_lab(rgb, tissue_below)
    if tissue.sum() < min_pixels:
        return rgb.copy()
    mu = lab[tissue].mean(axis=0)
    sd = lab[tissue].std(axis=0) + 1e-6
    out = (lab - mu) / sd * np.asarray(target_std, np.float32) + np.asarray(target_mean, np.float32)
    out[~tissue] = lab[~tissue]
    return lab_to_rgb(out).reshape(rgb.shape)


# ---- the plugin hooks ------------------------------------------------------------------------


def _params(manifest: Any) -> Mapping[str, Any]:
    return getattr(manifest, "params", {}) or {}


def normalise_stain(tiles: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
    """Apply the manifest's stain normalisation to each tile (uint8 [N, H, W, 3])."""
    method = str(params.get("stain_normalisation", "none")).lower()
    if method in ("none", "", "off"):
        return tiles
    if method == "macenko":
        he = params.get("stain_target_he", MACENKO_REFERENCE_HE)
        mc = params.get("stain_target_max_conc", MACENKO_REFERENCE_MAX_CONC)
        return np.stack([macenko_normalise(t, he, mc) for t in tiles])
    if method == "reinhard":
        mean = params.get("reinhard_target_mean", REINHARD_REFERENCE_MEAN)
        std = params.get("reinhard_target_std", REINHARD_REFERENCE_STD)
        return np.stack([reinhard_normalise(t, mean, std) for t in tiles])
    msg = f"params.stain_normalisation must be 'none', 'macenko' or 'reinhard', got {method!r}"
    raise ValueError(msg)


def resize_tiles(tiles: np.ndarray, size_hw: Sequence[int]) -> np.ndarray:
    """Tiles resized to (h, w) with Pillow's antialiased bilinear filter (as the slide
    runner resamples); returned as they are when already that size."""
    h, w = int(size_hw[0]), int(size_hw[1])
    if tiles.shape[1:3] == (h, w):
        return tiles
    from PIL import Image

    return np.stack([
        np.asarray(Image.fromarray(np.ascontiguousarray(t)).resize((w, h), Image.Resampling.BILINEAR))
        for t in tiles
    ])


def preprocess(tiles: np.ndarray, manifest: Any) -> dict[str, np.ndarray]:
    """uint8 RGB tiles [N, H, W, 3] -> {"input": float32 [N, 3, h, w]} (see module doc)."""
    tiles = np.asarray(tiles)
    if tiles.ndim != 4 or tiles.shape[-1] < 3:
        msg = f"tiles must be uint8 [N, H, W, 3], got shape {tiles.shape}"
        raise ValueError(msg)
    tiles = np.ascontiguousarray(tiles[..., :3]).astype(np.uint8, copy=False)
    tiles = normalise_stain(tiles, _params(manifest))
    tiles = resize_tiles(tiles, manifest.input.size_px[-2:])
    return preprocess_tiles(tiles, manifest)


def postprocess(outputs: Mapping[str, np.ndarray], manifest: Any) -> np.ndarray:
    """float32 [N, 2] probabilities (benign, malignant): softmax of "logits"."""
    return class_probabilities(outputs["logits"], len(manifest.output.classes))


def subtype_probabilities(outputs: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """float32 [N, 8] BreakHis subtype probabilities, or None without the subtype head."""
    if "subtype_logits" not in outputs:
        return None
    return class_probabilities(outputs["subtype_logits"], int(outputs["subtype_logits"].shape[1]))
