"""Background, source detection, photometry and star/galaxy separation with sep.

sep (Barbary 2016) is SExtractor's core as a library: a mesh background with
median-filtered boxes, thresholding on a matched-filtered image, multi-threshold
deblending, Kron apertures and flux radii. The steps here are the SExtractor recipe:

1. Background per band on a box mesh (``background_box_px``), estimated twice: the
   second pass masks the (dilated) footprints of the sources found in the first, so
   galaxy halos do not raise the sky under them.
2. Detection on the sum of the sky-subtracted bands (flux images) or on the mean of
   R, G, B (pictures), smoothed with a Gaussian matched to the PSF when it is known,
   threshold ``thresh_sigma`` x local rms (2 for flux images, 3 for pictures), at
   least ``minarea_px`` pixels.
3. Deblending with sep's default ``deblend_cont`` = 0.005, which keeps close pairs
   and galaxies sitting in each other's halos apart. Star-forming clumps and arm knots
   that it splits off are folded back into their galaxy: a source whose centre lies
   within ``fragment_kron_factor`` (2) Kron radii of a source ``fragment_flux_ratio``
   (5) times brighter is treated as part of it, and the galaxy is measured again with
   its fragments' pixels. The price: a faint star or galaxy seen through a bright
   galaxy's disc is not catalogued separately.
4. Kron photometry (``flux_auto`` in 2.5 Kron radii, at least 3.5 px), half-light
   radius ``r50_px`` (sep.flux_radius), per-band fluxes in the same aperture, SNR.
5. Star vs extended: stars all have the PSF's half-light radius, so bright compact
   sources form a "stellar locus" in r50. Its r50 is measured from the data (the
   median r50 of the most compact high-SNR round sources); a source is extended when
   its r50 exceeds the locus by ``extended_margin`` plus a noise allowance that grows
   as 1/SNR. Without enough stars, the PSF FWHM from the header is used (r50 ~ 0.5 x
   FWHM x 1.1 for a Moffat), else the 5th percentile of the bright sources' r50.

Sources below ``min_snr`` are dropped: at that depth the noise makes up detections.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from tessera.pipelines.sky.survey_image import SurveyImage


@dataclass(frozen=True)
class DetectionSettings:
    """Knobs of ``detect_sources`` (defaults suit DECaLS-like fields and pictures alike)."""

    #: detection threshold in local sky sigmas; None: 2 for flux images, 3 for pictures
    #: (whose noise is stretched, compressed and correlated, so 2 sigma finds noise)
    thresh_sigma: float | None = None
    minarea_px: int = 10
    deblend_nthresh: int = 32
    deblend_cont: float = 0.005
    background_box_px: int = 128
    min_snr: float = 5.0
    fragment_flux_ratio: float = 5.0
    fragment_kron_factor: float = 2.0
    extended_margin: float = 0.25
    #: SNR above which sources may define the stellar locus.
    locus_min_snr: float = 50.0


@dataclass
class Detections:
    """Sources found in one image, as columns (arrays of length N).

    Positions are 0-based pixel coordinates (pixel centres at integers); ``theta_rad``
    is the major-axis angle from +x towards +y; fluxes are in image units (nanomaggies
    for calibrated FITS); ``band_flux`` is (C, N) in the same Kron aperture.
    """

    x: np.ndarray
    y: np.ndarray
    a_px: np.ndarray
    b_px: np.ndarray
    theta_rad: np.ndarray
    kron_radius: np.ndarray
    flux_auto: np.ndarray
    flux_auto_err: np.ndarray
    band_flux: np.ndarray
    r50_px: np.ndarray
    peak: np.ndarray
    npix: np.ndarray
    flag: np.ndarray
    extended: np.ndarray
    psf_r50_px: float
    background_rms: float
    segmentation: np.ndarray | None = None
    #: the measured planes after sky subtraction, (C, Y, X) float32 (for flux images the
    #: image's bands; for pictures their mean), and each plane's median sky rms
    sky_subtracted: np.ndarray | None = None
    band_rms: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def snr(self) -> np.ndarray:
        return self.flux_auto / np.maximum(self.flux_auto_err, 1e-12)

    @property
    def ellipticity(self) -> np.ndarray:
        return 1.0 - self.b_px / np.maximum(self.a_px, 1e-12)

    def subset(self, keep: np.ndarray) -> Detections:
        """The sources selected by a boolean mask or index array."""
        cols = {k: getattr(self, k)[..., keep] if k == "band_flux" else getattr(self, k)[keep]
                for k in ("x", "y", "a_px", "b_px", "theta_rad", "kron_radius", "flux_auto",
                          "flux_auto_err", "band_flux", "r50_px", "peak", "npix", "flag", "extended")}
        return Detections(**cols, psf_r50_px=self.psf_r50_px, background_rms=self.background_rms,
                          segmentation=self.segmentation, sky_subtracted=self.sky_subtracted,
                          band_rms=self.band_rms)


def _c32(a: np.ndarray) -> np.ndarray:
    """sep wants C-contiguous native-endian float32."""
    return np.ascontiguousarray(a, dtype=np.float32)


def _gaussian_kernel(fwhm_px: float) -> np.ndarray:
    sigma = fwhm_px / 2.3548
    half = max(1, math.ceil(2.0 * sigma))
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    k = np.exp(-(xx * xx + yy * yy) / (2 * sigma * sigma))
    return (k / k.sum()).astype(np.float32)


def subtract_background(
    planes: np.ndarray, *, box_px: int, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Sky-subtracted planes (C, Y, X) and the per-plane rms maps, sep mesh background."""
    import sep

    subs, rms = [], []
    for plane in planes:
        bkg = sep.Background(_c32(plane), mask=mask, bw=box_px, bh=box_px, fw=3, fh=3)
        subs.append(_c32(plane) - bkg.back())
        rms.append(bkg.rms())
    return np.stack(subs), np.stack(rms)


def detect_sources(image: SurveyImage, settings: DetectionSettings | None = None) -> Detections:
    """Find, measure and separate (star vs extended) the sources of ``image``."""
    import sep

    st = settings or DetectionSettings()
    planes = image.data if image.kind == "flux" else image.data.mean(axis=0, keepdims=True)
    h, w = image.shape_yx
    box = int(max(16, min(st.background_box_px, min(h, w) // 4)))
    sep.set_extract_pixstack(max(300_000, h * w // 2))
    sep.set_sub_object_limit(4096)

    fwhm_px = None
    if image.psf_fwhm_arcsec and image.pxscale_arcsec:
        fwhm_px = image.psf_fwhm_arcsec / image.pxscale_arcsec
    kernel = _gaussian_kernel(fwhm_px) if fwhm_px and fwhm_px > 1.5 else None

    thresh = st.thresh_sigma if st.thresh_sigma is not None else (
        2.0 if image.kind == "flux" else 3.0)

    def extract(det: np.ndarray, err: np.ndarray):
        kwargs = {"filter_kernel": kernel} if kernel is not None else {}
        return sep.extract(det, thresh, err=err, minarea=st.minarea_px,
                           deblend_nthresh=st.deblend_nthresh, deblend_cont=st.deblend_cont,
                           segmentation_map=True, **kwargs)

    # pass 1: rough sky, find sources, mask them (dilated) for the real sky estimate
    subs, rms = subtract_background(planes, box_px=box)
    det, err = _c32(subs.sum(axis=0)), _c32(np.sqrt((rms**2).sum(axis=0)))
    _, seg = extract(det, err)
    mask = ndi.binary_dilation(seg > 0, iterations=max(2, int(fwhm_px or 3)))
    subs, rms = subtract_background(planes, box_px=box, mask=mask)
    det, err = _c32(subs.sum(axis=0)), _c32(np.sqrt((rms**2).sum(axis=0)))
    objects, seg = extract(det, err)
    band_rms = np.median(rms.reshape(rms.shape[0], -1), axis=1)
    n = len(objects)
    if n == 0:
        empty = np.zeros(0)
        return Detections(empty, empty, empty, empty, empty, empty, empty, empty,
                          np.zeros((planes.shape[0], 0)), empty, empty, np.zeros(0, int),
                          np.zeros(0, int), np.zeros(0, bool), float("nan"),
                          float(np.median(err)), seg, subs, band_rms)

    x, y = objects["x"].astype(np.float64), objects["y"].astype(np.float64)
    a = np.maximum(objects["a"].astype(np.float64), 0.5)
    b = np.maximum(objects["b"].astype(np.float64), 0.5)
    theta = objects["theta"].astype(np.float64)
    seg_id = np.arange(1, n + 1, dtype=np.int32)
    found = _measure(det, err, subs, seg, seg_id, x, y, a, b, theta, objects)
    # fold fragments (clumps, arm knots) into their galaxy and measure the galaxy again
    parent = _fragment_parents(found, st.fragment_flux_ratio, st.fragment_kron_factor)
    if (parent >= 0).any():
        relabel = np.arange(n + 1, dtype=np.int32)
        frag = np.flatnonzero(parent >= 0)
        relabel[frag + 1] = parent[frag] + 1
        seg = relabel[seg]
        whole = np.flatnonzero(parent < 0)
        found = _measure(det, err, subs, seg, seg_id[whole], x[whole], y[whole], a[whole],
                         b[whole], theta[whole], objects[whole])
    found.segmentation, found.sky_subtracted, found.band_rms = seg, subs, band_rms
    found = found.subset((found.snr >= st.min_snr) & (found.flux_auto > 0))
    psf_r50 = _stellar_locus_r50(found, st, fwhm_px)
    found.psf_r50_px = psf_r50
    allowance = st.extended_margin + 2.0 / np.sqrt(np.maximum(found.snr, 1.0))
    found.extended = found.r50_px > psf_r50 * (1.0 + allowance)
    return found


def _measure(det, err, subs, seg, seg_id, x, y, a, b, theta, objects) -> Detections:
    """Kron photometry, per-band fluxes and half-light radii of the given sources."""
    import sep

    kron, kflag = sep.kron_radius(det, x, y, a, b, theta, 6.0, seg_id=seg_id, segmap=seg)
    kron = np.where(np.isfinite(kron) & (kron > 0), kron, 1.0)
    r_ap = np.maximum(2.5 * kron, 3.5 / np.sqrt(a * b))  # SExtractor's 3.5 px minimum
    flux, ferr, fflag = sep.sum_ellipse(det, x, y, a, b, theta, r_ap, err=err, subpix=1,
                                        seg_id=seg_id, segmap=seg)
    band_flux = np.stack([
        sep.sum_ellipse(_c32(p), x, y, a, b, theta, r_ap, subpix=1, seg_id=seg_id, segmap=seg)[0]
        for p in subs
    ])
    r50 = _masked_flux_radius(det, seg, seg_id, x, y, 6.0 * a, flux)
    flags = objects["flag"].astype(np.int64) | kflag.astype(np.int64) | fflag.astype(np.int64)
    return Detections(
        x=x, y=y, a_px=a, b_px=b, theta_rad=theta, kron_radius=kron, flux_auto=flux,
        flux_auto_err=ferr, band_flux=band_flux, r50_px=np.asarray(r50, dtype=np.float64),
        peak=objects["peak"].astype(np.float64), npix=objects["npix"].astype(np.int64), flag=flags,
        extended=np.zeros(len(x), dtype=bool), psf_r50_px=float("nan"),
        background_rms=float(np.median(err)),
    )


def _masked_flux_radius(det: np.ndarray, seg: np.ndarray, seg_id: np.ndarray, x: np.ndarray,
                        y: np.ndarray, rmax: np.ndarray, flux: np.ndarray) -> np.ndarray:
    """Half-light radius (px) of each source with its neighbours' pixels masked.

    sep.flux_radius has no segmentation masking, so each source is measured on a small
    crop where pixels of other sources are zeroed (otherwise a faint source next to a
    bright one gets the bright one's light and a huge radius), normalised by its
    (masked) Kron flux.
    """
    import sep

    h, w = det.shape
    out = np.full(len(x), np.nan)
    for i in range(len(x)):
        r = math.ceil(rmax[i]) + 2
        x0, x1 = max(0, int(x[i]) - r), min(w, int(x[i]) + r + 1)
        y0, y1 = max(0, int(y[i]) - r), min(h, int(y[i]) + r + 1)
        crop_seg = seg[y0:y1, x0:x1]
        crop = np.where((crop_seg == 0) | (crop_seg == seg_id[i]), det[y0:y1, x0:x1], 0.0)
        val, _ = sep.flux_radius(_c32(crop), np.array([x[i] - x0]), np.array([y[i] - y0]),
                                 np.array([rmax[i]]), 0.5, normflux=np.array([max(flux[i], 1e-12)]),
                                 subpix=5)
        out[i] = float(val[0])
    return out


def _fragment_parents(found: Detections, ratio: float, kron_factor: float) -> np.ndarray:
    """For each source, the index of the galaxy it is a fragment of (-1 if none): its
    centre is inside ``kron_factor`` Kron radii of a source ``ratio`` times brighter."""
    n = len(found)
    parent = np.full(n, -1, dtype=np.int64)
    for j in np.argsort(-found.flux_auto):  # brightest first; n is hundreds to thousands
        if parent[j] >= 0:
            continue
        dx, dy = found.x - found.x[j], found.y - found.y[j]
        c, s = math.cos(found.theta_rad[j]), math.sin(found.theta_rad[j])
        u, v = dx * c + dy * s, -dx * s + dy * c
        r = kron_factor * found.kron_radius[j]
        inside = (u / (r * found.a_px[j])) ** 2 + (v / (r * found.b_px[j])) ** 2 <= 1.0
        hit = inside & (found.flux_auto * ratio < found.flux_auto[j]) & (parent < 0)
        hit[j] = False
        parent[hit] = j
    return parent


def _stellar_locus_r50(found: Detections, st: DetectionSettings, fwhm_px: float | None) -> float:
    """Half-light radius (px) of point sources, measured from the data when possible."""
    snr = found.snr
    good = (snr >= st.locus_min_snr) & (found.ellipticity < 0.2) & (found.flag & 0x04 == 0)
    r50 = found.r50_px[good & np.isfinite(found.r50_px)]
    if r50.size >= 5:
        low = np.percentile(r50, 10)
        locus = r50[np.abs(r50 - low) <= 0.15 * low]
        if locus.size >= 3:
            return float(np.median(locus))
    if fwhm_px:
        return 0.55 * fwhm_px
    bright = found.r50_px[(snr >= 10) & np.isfinite(found.r50_px)]
    if bright.size:
        return float(np.percentile(bright, 5))
    return 1.0
