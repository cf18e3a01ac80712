"""Cutouts around sources, resampled to a model's pixel scale, as Galaxy10-like colour images.

A classifier trained on Galaxy10 DECaLS sees 256 x 256 px at 0.262"/px (a 67" box);
a demo model may see the same box at a coarser scale (64 px at 1.048"/px). A cutout
therefore always spans ``size_px * pxscale_arcsec`` on the sky, whatever the field's
pixel scale: it is resampled by the ratio of scales (Gaussian anti-aliasing with
sigma = (f - 1) / 2 output pixels as scikit-image's ``rescale`` does, then bilinear
interpolation, which preserves surface brightness).

Pictures with no pixel scale (PNG/JPEG/TIFF without WCS) cannot be put on the sky
scale; each cutout is then sized so the source's half-light radius covers as many
model pixels as a typical training galaxy's does (``typical_r50_arcsec``).

Flux images become colour with the Galaxy10/Legacy Survey asinh stretch
(``colour.grz_to_rgb``); uncalibrated ones are first scaled so their sky noise matches
DECaLS'. Pictures keep their own colours.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from tessera.pipelines.sky.colour import (
    DECALS_PXSCALE_ARCSEC,
    DECALS_SKY_SIGMA_NMGY,
    grz_to_rgb,
)
from tessera.pipelines.sky.detection import Detections
from tessera.pipelines.sky.survey_image import SurveyImage

#: Smallest cutout side (field pixels) for pictures without a pixel scale.
MIN_SIDE_PX = 16.0


def cutout_sides_px(
    image: SurveyImage,
    r50_px: np.ndarray,
    *,
    size_px: int,
    pxscale_arcsec: float,
    typical_r50_arcsec: float,
    field_pxscale_arcsec: float | None = None,
) -> np.ndarray:
    """Side of each cutout in field pixels.

    With a pixel scale (``field_pxscale_arcsec``, else the image's), every cutout spans
    ``size_px * pxscale_arcsec`` arcsec. Without one, the side follows the source's
    half-light radius: ``size_px * r50_px / (typical_r50_arcsec / pxscale_arcsec)``.
    """
    r50_px = np.asarray(r50_px, dtype=np.float64)
    scale = field_pxscale_arcsec or image.pxscale_arcsec
    if scale:
        return np.full(r50_px.shape, size_px * pxscale_arcsec / scale)
    typical_px = typical_r50_arcsec / pxscale_arcsec  # model pixels
    sides = size_px * np.nan_to_num(r50_px, nan=1.0) / typical_px
    return np.clip(sides, MIN_SIDE_PX, 4.0 * max(image.shape_yx))


def resample_cutouts(
    planes: np.ndarray, x: np.ndarray, y: np.ndarray, sides_px: np.ndarray, out_px: int
) -> np.ndarray:
    """Square cutouts (N, C, out_px, out_px) float32 of ``planes`` (C, Y, X).

    Cutout i is centred on (x[i], y[i]) (0-based field pixels) and spans ``sides_px[i]``
    field pixels; pixels beyond the image edge are 0.
    """
    planes = np.asarray(planes, dtype=np.float32)
    c, h, w = planes.shape
    out = np.zeros((len(x), c, out_px, out_px), dtype=np.float32)
    grid = (np.arange(out_px, dtype=np.float64) - (out_px - 1) / 2.0)
    for i, (xc, yc, side) in enumerate(zip(x, y, sides_px, strict=True)):
        f = float(side) / out_px  # field pixels per output pixel
        sigma = max(0.0, (f - 1.0) / 2.0)
        half = side / 2.0 + math.ceil(3 * sigma) + 2
        x0, x1 = math.floor(xc - half), math.ceil(xc + half) + 1
        y0, y1 = math.floor(yc - half), math.ceil(yc + half) + 1
        crop = np.zeros((c, y1 - y0, x1 - x0), dtype=np.float32)
        sy0, sy1, sx0, sx1 = max(0, y0), min(h, y1), max(0, x0), min(w, x1)
        if sy1 > sy0 and sx1 > sx0:
            crop[:, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = planes[:, sy0:sy1, sx0:sx1]
        if sigma > 0:
            crop = ndi.gaussian_filter(crop, (0, sigma, sigma), mode="constant")
        yy = (yc - y0) + grid[:, None] * f
        xx = (xc - x0) + grid[None, :] * f
        coords = np.broadcast_arrays(yy, xx)
        for b in range(c):
            out[i, b] = ndi.map_coordinates(crop[b], coords, order=1, mode="constant", cval=0.0)
    return out


def flux_scale_to_nanomaggies(image: SurveyImage, band_rms: np.ndarray | None) -> np.ndarray:
    """Per-plane factors that bring the g, r, z planes to nanomaggies (or, uncalibrated,
    to DECaLS-like units: sky noise equal to the survey's at this pixel scale)."""
    if image.calibrated or band_rms is None:
        return np.ones(3, dtype=np.float32)
    native = (image.pxscale_arcsec or DECALS_PXSCALE_ARCSEC) / DECALS_PXSCALE_ARCSEC
    rms = np.asarray(band_rms, dtype=np.float64)
    names = [b.lower() for b in image.bands]
    if all(b in names for b in "grz"):
        rms = rms[[names.index(b) for b in "grz"]]
    elif rms.size >= 3:
        rms = rms[:3]
    else:
        rms = np.repeat(rms[:1], 3)
    return (np.asarray(DECALS_SKY_SIGMA_NMGY) * native / np.maximum(rms, 1e-30)).astype(np.float32)


def colour_cutouts(
    image: SurveyImage,
    detections: Detections,
    index: np.ndarray,
    sides_px: np.ndarray,
    out_px: int,
) -> np.ndarray:
    """uint8 (N, out_px, out_px, 3) colour cutouts of the sources ``index`` of ``detections``."""
    index = np.asarray(index, dtype=np.int64)
    x, y = detections.x[index], detections.y[index]
    if image.kind == "flux":
        if detections.sky_subtracted is not None and detections.sky_subtracted.shape[0] == image.data.shape[0]:
            sub = SurveyImage(image.path, detections.sky_subtracted, image.bands, "flux")
            planes = sub.grz_planes()
        else:
            planes = image.grz_planes()
        planes = planes * flux_scale_to_nanomaggies(image, detections.band_rms)[:, None, None]
        cut = resample_cutouts(planes, x, y, sides_px, out_px)
        scale = image.pxscale_arcsec or DECALS_PXSCALE_ARCSEC  # values stay per field pixel
        return np.stack([grz_to_rgb(c, scale) for c in cut]) if len(cut) else np.zeros(
            (0, out_px, out_px, 3), np.uint8)
    rgb = image.data if image.data.shape[0] == 3 else np.repeat(image.data[:1], 3, axis=0)
    cut = resample_cutouts(rgb, x, y, sides_px, out_px)
    peak = float(image.metadata.get("max_value", 255.0)) or 255.0
    return np.clip(np.rint(cut * (255.0 / peak)), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def display_image(image: SurveyImage, detections: Detections | None = None) -> np.ndarray:
    """uint8 (Y, X, 3) picture of the whole field (for overlays): the asinh colour
    composite of a flux image, or the picture itself."""
    if image.kind == "flux":
        planes = image.grz_planes()
        rms = None
        if detections is not None and detections.sky_subtracted is not None and \
                detections.sky_subtracted.shape[0] == image.data.shape[0]:
            planes = SurveyImage(image.path, detections.sky_subtracted, image.bands, "flux").grz_planes()
            rms = detections.band_rms
        planes = planes * flux_scale_to_nanomaggies(image, rms)[:, None, None]
        return grz_to_rgb(planes, image.pxscale_arcsec or DECALS_PXSCALE_ARCSEC)
    rgb = image.data if image.data.shape[0] == 3 else np.repeat(image.data[:1], 3, axis=0)
    peak = float(image.metadata.get("max_value", 255.0)) or 255.0
    return np.clip(np.rint(rgb * (255.0 / peak)), 0, 255).astype(np.uint8).transpose(1, 2, 0)
