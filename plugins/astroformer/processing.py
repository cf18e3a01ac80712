"""Astroformer pre/post-processing (numpy only, used at inference and in training).

- ``cutout_rgb``: g, r, z flux cutouts -> uint8 colour the way Galaxy10 DECaLS images
  look (Lupton asinh stretch, R = z, G = r, B = g; ``tessera.pipelines.sky.colour``),
  with the stretch constants from the manifest's ``params``.
- ``preprocess``: uint8 RGB cutouts [N, H, W, 3] -> {"input": float32 [N, 3, S, S]}:
  resampled to the model's input size S when they are not (Galaxy10 h5 files hold
  256 px cutouts at 0.262"/px; the demo model reads the same 67" box at 64 px), then
  ``x / 255``, ``- mean``, ``/ std`` from the manifest (mean = std = 0.5 per channel, the
  Astroformer training config).
- ``postprocess``: softmax of the "logits" output -> float32 [N, 10].
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tessera.pipelines.plugin_system.tasks import postprocess_probabilities, preprocess_tiles
from tessera.pipelines.sky.colour import LUPTON_Q, LUPTON_STRETCH, grz_to_rgb
from tessera.pipelines.sky.cutouts import resample_cutouts


def cutout_rgb(flux_grz: np.ndarray, pxscale_arcsec: float, manifest: Any | None = None) -> np.ndarray:
    """uint8 (H, W, 3) colour of a g, r, z flux cutout (3, H, W) in nanomaggies per pixel."""
    params = getattr(manifest, "params", {}) or {}
    return grz_to_rgb(flux_grz, pxscale_arcsec, q=float(params.get("lupton_q", LUPTON_Q)),
                      stretch=float(params.get("lupton_stretch", LUPTON_STRETCH)))


def resize_cutouts(images: np.ndarray, size_px: int) -> np.ndarray:
    """uint8 [N, H, W, C] square cutouts resampled to [N, size_px, size_px, C] over the
    same field of view (anti-aliased when shrinking)."""
    images = np.asarray(images)
    n, h, w, c = images.shape
    if h == size_px and w == size_px:
        return images
    if h != w:
        msg = f"cutouts must be square, got {h}x{w}"
        raise ValueError(msg)
    out = np.empty((n, size_px, size_px, c), dtype=np.uint8)
    centre = np.full(1, (h - 1) / 2.0)
    for i in range(n):
        r = resample_cutouts(images[i].transpose(2, 0, 1), centre, centre, np.full(1, float(h)), size_px)
        out[i] = np.clip(np.rint(r[0]), 0, 255).astype(np.uint8).transpose(1, 2, 0)
    return out


def preprocess(tiles: np.ndarray, manifest: Any) -> dict[str, np.ndarray]:
    """uint8 RGB cutouts [N, H, W, 3] -> normalised float32 [N, 3, S, S] under "input"."""
    size = int(manifest.input.size_px[-1])
    return preprocess_tiles(resize_cutouts(tiles, size), manifest)


def postprocess(outputs: dict[str, np.ndarray], manifest: Any) -> np.ndarray:
    """Class probabilities float32 [N, K] (softmax of the logits)."""
    return postprocess_probabilities(outputs, manifest)
