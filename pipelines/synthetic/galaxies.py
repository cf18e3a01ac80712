"""Synthetic survey fields and Galaxy10 DECaLS-style cutouts, with ground truth.

Galaxies of the ten Galaxy10 DECaLS classes are drawn from simple physical pieces,
each with its own colour (bulges red, discs bluer, arms and star-forming clumps bluest):

- Sersic profiles (bulges, ellipticals, discs with n ~ 1),
- bars (flat n = 0.5 Sersic components in the disc plane), with arms starting at
  their ends,
- logarithmic spiral arms in the disc plane (pitch 9-15 deg "tight", 24-38 deg
  "loose"), seen at the disc's inclination,
- edge-on thin discs (axis ratio 0.07-0.14) with or without a round bulge, sometimes
  with a dust lane that reddens and dims the mid-plane,
- mergers: two systems 1-2.2 radii apart with a bridge and curved tidal tails,
- disturbed: one lopsided disc with scattered blue clumps and an irregular plume.

Sizes and brightnesses follow a redshift: a physical radius (kpc) and absolute
magnitude are drawn per class and turned into arcsec and apparent magnitude with
astropy's Planck18 cosmology, and colours redden a little with redshift.

Images are in nanomaggies per pixel (AB zero point 22.5, as the Legacy Survey), in
the g, r, z bands. Every galaxy is rendered on an oversampled grid, integrated into
pixels, convolved with a per-band Moffat PSF (seeing ~1.2-1.45"), and the image gets
Gaussian sky noise at DECaLS-like depth plus source shot noise. Stars are Moffat point
sources (no diffraction spikes) with stellar colours.

Outputs (``synth_galaxy_field``): a FITS cube (3, Y, X) with a TAN WCS, a colour PNG
(the Legacy Survey asinh look, ``tessera.pipelines.sky.colour``), and a catalogue CSV
(positions in pixels and RA/Dec, kind, class, fluxes, sizes). ``render_cutouts`` makes
centred cutouts (neighbouring stars and faint galaxies included) and
``write_galaxy10_h5`` stores them in the Galaxy10 DECaLS h5 layout.

Everything is drawn from ``numpy.random.SeedSequence(seed)``, one child generator per
object, so a seed fixes every pixel and the i-th cutout does not depend on how many
were asked for.
"""

from __future__ import annotations

import csv
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import signal, special

from tessera.pipelines.progress import NullProgress, ProgressReporter
from tessera.pipelines.sky.colour import DECALS_PXSCALE_ARCSEC, DECALS_SKY_SIGMA_NMGY, grz_to_rgb

#: Galaxy10 DECaLS class names, in label order.
GALAXY10_CLASSES: tuple[str, ...] = (
    "Disturbed",
    "Merging",
    "Round Smooth",
    "In-between Round Smooth",
    "Cigar-Shaped Smooth",
    "Barred Spiral",
    "Unbarred Tight Spiral",
    "Unbarred Loose Spiral",
    "Edge-on without Bulge",
    "Edge-on with Bulge",
)
N_CLASSES = len(GALAXY10_CLASSES)
BANDS: tuple[str, str, str] = ("g", "r", "z")
ZEROPOINT_MAG = 22.5  # AB magnitude of 1 nanomaggy

#: 1-sigma sky noise per native 0.262" pixel, nanomaggies.
SKY_SIGMA_NMGY = DECALS_SKY_SIGMA_NMGY
#: Shot-noise variance per nanomaggy of source flux in a pixel (nanomaggy units).
SHOT_NOISE_NMGY = 1.0e-3
#: Median seeing FWHM per band, arcsec (each image scales all three by one factor).
PSF_FWHM_ARCSEC: tuple[float, float, float] = (1.40, 1.30, 1.25)
MOFFAT_BETA = 3.5

# Rest-frame colours (g-r, r-z) in magnitudes of the pieces galaxies are made of.
_BULGE = (0.80, 0.45)
_ELLIPTICAL = (0.82, 0.48)
_DISC = (0.55, 0.35)
_ARMS = (0.30, 0.15)
_CLUMPS = (0.12, 0.02)
#: Dust attenuation per band relative to g (a Milky-Way-like curve).
_DUST_GRZ = np.array([1.0, 0.72, 0.42], dtype=np.float32)


def mag_to_nmgy(mag: float | np.ndarray) -> float | np.ndarray:
    """AB magnitude -> flux in nanomaggies."""
    return 10.0 ** ((ZEROPOINT_MAG - np.asarray(mag, dtype=np.float64)) / 2.5)


def nmgy_to_mag(flux: float | np.ndarray) -> float | np.ndarray:
    """Flux in nanomaggies -> AB magnitude (NaN for non-positive flux)."""
    flux = np.asarray(flux, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux > 0, ZEROPOINT_MAG - 2.5 * np.log10(flux), np.nan)


def _colour_grz(colour: tuple[float, float], redshift: float) -> np.ndarray:
    """Flux ratios (g/r, 1, z/r) of a (g-r, r-z) colour, reddened by redshift."""
    g_r = colour[0] + 1.1 * redshift
    r_z = colour[1] + 0.5 * redshift
    return np.array([10 ** (-0.4 * g_r), 1.0, 10 ** (0.4 * r_z)], dtype=np.float32)


@functools.lru_cache(maxsize=1)
def _cosmology_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Redshift grid with arcsec/kpc and distance modulus (Planck18), for np.interp."""
    from astropy.cosmology import Planck18

    z = np.linspace(0.005, 0.5, 400)
    return z, Planck18.arcsec_per_kpc_proper(z).value, Planck18.distmod(z).value


def _angular_scale(redshift: float) -> tuple[float, float]:
    """(arcsec per kpc, distance modulus) at ``redshift``."""
    z, a, dm = _cosmology_table()
    return float(np.interp(redshift, z, a)), float(np.interp(redshift, z, dm))


# ---- profiles ----------------------------------------------------------------------------


def _sersic(u: np.ndarray, v: np.ndarray, re: float, n: float, q: float) -> np.ndarray:
    """Unnormalised Sersic profile on rotated coordinates (u along the major axis).

    Written out rather than through ``astropy.modeling.models.Sersic2D.evaluate``:
    that one rotates the grid again in float64 on every call, and a galaxy here
    evaluates several components on one rotated float32 grid.
    """
    b_n = float(special.gammaincinv(2.0 * n, 0.5))
    r = np.sqrt(u * u + (v / q) ** 2) / np.float32(re)
    return np.exp(-np.float32(b_n) * (np.power(r, np.float32(1.0 / n)) - 1.0)).astype(np.float32)


def _rotated(x: np.ndarray, y: np.ndarray, x0: float, y0: float, pa: float):
    """Coordinates relative to (x0, y0) rotated so that u runs along angle ``pa``."""
    c, s = np.float32(math.cos(pa)), np.float32(math.sin(pa))
    dx, dy = x - np.float32(x0), y - np.float32(y0)
    return dx * c + dy * s, -dx * s + dy * c


def _spiral_pattern(
    radius: np.ndarray, phi: np.ndarray, *, m: int, pitch_deg: float, r0: float, phase: float,
    sharpness: float,
) -> np.ndarray:
    """Logarithmic spiral arms (values 0..1) in the disc plane, ridge through (r0, phase/m)."""
    wind = np.log(np.maximum(radius, 1e-3 * r0) / r0) / math.tan(math.radians(pitch_deg))
    arg = m * (phi - wind) - phase
    return np.power((1.0 + np.cos(arg)) * 0.5, sharpness).astype(np.float32)


def _blobs(x: np.ndarray, y: np.ndarray, xs, ys, sigmas, weights) -> np.ndarray:
    """Sum of round Gaussians (clumps, tail knots), each weighted by its total flux."""
    out = np.zeros_like(x)
    for x0, y0, s, w in zip(xs, ys, sigmas, weights, strict=True):
        out += np.float32(w / (2 * math.pi * s * s)) * np.exp(
            -((x - np.float32(x0)) ** 2 + (y - np.float32(y0)) ** 2) / np.float32(2 * s * s)
        )
    return out


def moffat_fwhm_alpha(fwhm: float, beta: float = MOFFAT_BETA) -> float:
    """Moffat core width alpha for a given FWHM (same unit)."""
    return fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))


def moffat_image(
    shape_yx: tuple[int, int], centre_xy: tuple[float, float], fwhm_px: float,
    *, beta: float = MOFFAT_BETA, oversample: int = 3,
) -> np.ndarray:
    """Unit-flux Moffat point source integrated over pixels (float32, shape_yx).

    ``centre_xy`` is in pixels with pixel centres at integers (numpy convention).
    """
    h, w = shape_yx
    alpha = moffat_fwhm_alpha(fwhm_px, beta)
    sub = (np.arange(oversample, dtype=np.float32) + 0.5) / oversample - 0.5
    ys = (np.arange(h, dtype=np.float32)[:, None] + sub[None, :]).ravel() - np.float32(centre_xy[1])
    xs = (np.arange(w, dtype=np.float32)[:, None] + sub[None, :]).ravel() - np.float32(centre_xy[0])
    r2 = ys[:, None] ** 2 + xs[None, :] ** 2
    img = (beta - 1.0) / (math.pi * alpha * alpha) * np.power(1.0 + r2 / np.float32(alpha**2), -beta)
    img = img.reshape(h, oversample, w, oversample).mean(axis=(1, 3))
    return img.astype(np.float32)


def psf_kernels(fwhm_arcsec: Sequence[float], pxscale_arcsec: float) -> list[np.ndarray]:
    """Per-band Moffat PSF kernels (odd size, unit sum) for ``fwhm_arcsec`` at a pixel scale."""
    kernels = []
    for fwhm in fwhm_arcsec:
        fwhm_px = fwhm / pxscale_arcsec
        half = max(2, math.ceil(4.0 * fwhm_px))
        k = moffat_image((2 * half + 1, 2 * half + 1), (half, half), fwhm_px)
        kernels.append(k / k.sum())
    return kernels


# ---- galaxy models ------------------------------------------------------------------------


@dataclass
class _Component:
    image: np.ndarray  # unnormalised light map on the oversampled grid
    fraction: float  # share of the galaxy's r-band flux
    colour: tuple[float, float]  # (g-r, r-z) rest frame


@dataclass
class GalaxyParams:
    """What was drawn for one galaxy (the catalogue's truth)."""

    class_id: int
    redshift: float
    mag_r: float
    scale_arcsec: float  # half-light radius of the main body (disc, spheroid), arcsec
    axis_ratio: float  # of the main body as seen on the sky
    pa_deg: float  # major axis, degrees counter-clockwise from +x
    extent: float = 4.5  # stamp half-size in units of scale_arcsec
    extra: dict[str, float] = field(default_factory=dict)


#: Physical half-light radius (kpc, median and log-scatter) and absolute r magnitude
#: range per class, used with the redshift to get angular sizes and fluxes.
_SIZE_KPC = {0: (5.5, 0.25), 1: (4.0, 0.25), 2: (3.5, 0.3), 3: (3.5, 0.3), 4: (3.5, 0.25),
             5: (5.0, 0.25), 6: (4.5, 0.25), 7: (5.0, 0.25), 8: (5.5, 0.2), 9: (5.5, 0.2)}
_ABS_MAG = {0: (-22.0, -20.8), 1: (-22.5, -21.0), 2: (-22.8, -21.0), 3: (-22.5, -20.8),
            4: (-22.0, -20.5), 5: (-22.3, -20.8), 6: (-22.3, -20.8), 7: (-21.8, -20.3),
            8: (-21.8, -20.3), 9: (-22.3, -20.8)}
_EXTENT = {0: 4.0, 1: 5.5, 2: 7.0, 3: 6.5, 4: 4.5, 5: 4.0, 6: 4.0, 7: 4.0, 8: 3.5, 9: 3.5}


def sample_galaxy(
    rng: np.random.Generator,
    class_id: int,
    *,
    redshift_range: tuple[float, float] = (0.02, 0.08),
    scale_range_arcsec: tuple[float, float] = (3.0, 9.0),
    mag_range: tuple[float, float] = (13.5, 17.8),
) -> GalaxyParams:
    """Draw redshift, size, brightness and orientation of one galaxy of ``class_id``.

    The defaults mimic Galaxy10 DECaLS (Galaxy Zoo DECaLS selection: bright, resolved
    galaxies, r < 17.8, half-light radii of a few arcsec).
    """
    z = float(rng.uniform(*redshift_range))
    arcsec_per_kpc, distmod = _angular_scale(z)
    med, sig = _SIZE_KPC[class_id]
    r_kpc = med * math.exp(sig * rng.standard_normal())
    scale = float(np.clip(r_kpc * arcsec_per_kpc, *scale_range_arcsec))
    mag = float(np.clip(rng.uniform(*_ABS_MAG[class_id]) + distmod, *mag_range))
    q = {2: (0.82, 1.0), 3: (0.48, 0.72), 4: (0.22, 0.38), 8: (0.07, 0.14), 9: (0.07, 0.14)}.get(
        class_id, (0.55, 1.0)
    )
    return GalaxyParams(
        class_id=class_id,
        redshift=z,
        mag_r=mag,
        scale_arcsec=scale,
        axis_ratio=float(rng.uniform(*q)),
        pa_deg=float(rng.uniform(0.0, 180.0)),
        extent=_EXTENT[class_id],
    )


def _disc_plane(x, y, q_disc: float, pa: float, x0: float = 0.0, y0: float = 0.0):
    """Radius and azimuth in a disc plane inclined to axis ratio ``q_disc``."""
    u, v = _rotated(x, y, x0, y0, pa)
    v = v / np.float32(q_disc)
    return np.sqrt(u * u + v * v), np.arctan2(v, u), u, v


def _spiral_components(
    rng: np.random.Generator, x, y, p: GalaxyParams, *, barred: bool, pitch: tuple[float, float],
    bulge_frac: tuple[float, float], arm_frac: tuple[float, float], clumpy: bool,
) -> list[_Component]:
    s, q, pa = p.scale_arcsec, p.axis_ratio, math.radians(p.pa_deg)
    radius, phi, u, v = _disc_plane(x, y, q, pa)
    comps: list[_Component] = []
    fb = rng.uniform(*bulge_frac)
    bulge_re = s * rng.uniform(0.12, 0.22)
    comps.append(_Component(_sersic(u, v * q, bulge_re, rng.uniform(1.5, 3.0), rng.uniform(0.8, 1.0)),
                            fb, _BULGE))
    disc = _sersic(u, v * q, s, 1.0, q)
    m = 2 if (barred or rng.random() < 0.8) else 3
    phase = rng.uniform(0, 2 * math.pi)
    if barred:
        bar_len = s * rng.uniform(0.5, 0.75)
        bar_angle = rng.uniform(0, math.pi)
        bu, bv = _rotated(u, v, 0.0, 0.0, bar_angle)  # in the disc plane
        bar = _sersic(bu, bv, bar_len / 1.3, 0.5, rng.uniform(0.18, 0.28))
        # project the plane back onto the sky: the grid already is the sky, so the bar
        # drawn in plane coordinates is foreshortened by the inclination automatically
        fbar = rng.uniform(0.12, 0.2)
        comps.append(_Component(bar, fbar, ((_BULGE[0] + _DISC[0]) / 2, (_BULGE[1] + _DISC[1]) / 2)))
        r0 = bar_len
        phase = m * bar_angle
    else:
        fbar = 0.0
        r0 = s * rng.uniform(0.25, 0.4)
    pitch_deg = rng.uniform(*pitch)
    arms = _spiral_pattern(radius, phi, m=m, pitch_deg=pitch_deg, r0=r0, phase=phase,
                           sharpness=rng.uniform(3.0, 5.0))
    taper = 1.0 - np.exp(-((radius / np.float32(r0)) ** 4))
    fa = rng.uniform(*arm_frac)
    comps.append(_Component(disc * arms * taper, fa, _ARMS))
    fc = 0.0
    if clumpy:
        # HII regions strung along the arm ridges
        k = int(rng.integers(5, 11))
        rad = s * rng.uniform(0.5, 2.0, k)
        arm_idx = rng.integers(0, m, k)
        ang = (phase + 2 * math.pi * arm_idx) / m + np.log(rad / r0) / math.tan(math.radians(pitch_deg))
        pu, pv = rad * np.cos(ang), rad * np.sin(ang) * q  # plane -> sky (still rotated by pa)
        cx = pu * math.cos(pa) - pv * math.sin(pa)
        cy = pu * math.sin(pa) + pv * math.cos(pa)
        fc = rng.uniform(0.06, 0.12)
        comps.append(_Component(_blobs(x, y, cx, cy, s * rng.uniform(0.05, 0.1, k), rng.uniform(0.5, 1.0, k)),
                                fc, _CLUMPS))
    comps.append(_Component(disc, max(0.05, 1.0 - fb - fbar - fa - fc), _DISC))
    p.extra.update(pitch_deg=pitch_deg, arms=m, bulge_fraction=fb)
    return comps


def _tail(x, y, x0, y0, *, rng: np.random.Generator, s: float, direction: float, sense: int):
    """A curved tidal tail leaving (x0, y0): one loose spiral arm that fades outwards."""
    u, v = _rotated(x, y, x0, y0, 0.0)
    radius = np.sqrt(u * u + v * v)
    phi = np.arctan2(sense * v, u)
    r0 = 0.6 * s
    arm = _spiral_pattern(radius, phi, m=1, pitch_deg=rng.uniform(30, 45), r0=r0,
                          phase=sense * direction, sharpness=rng.uniform(10, 18))
    envelope = np.exp(-radius / np.float32(s * rng.uniform(1.2, 1.8))) * (
        1.0 - np.exp(-((radius / np.float32(r0)) ** 3))
    )
    return arm * envelope


def _galaxy_components(rng: np.random.Generator, x: np.ndarray, y: np.ndarray,
                       p: GalaxyParams) -> tuple[list[_Component], np.ndarray | None]:
    """Light components of one galaxy on grid (x, y) arcsec, plus an optional dust optical
    depth map (g band) for edge-on discs."""
    c = p.class_id
    s, q, pa = p.scale_arcsec, p.axis_ratio, math.radians(p.pa_deg)
    dust = None
    if c in (2, 3, 4):  # smooth spheroids
        lo, hi = {2: (2.5, 4.5), 3: (1.5, 4.0), 4: (0.8, 2.5)}[c]
        n = rng.uniform(lo, hi)
        u, v = _rotated(x, y, 0.0, 0.0, pa)
        comps = [_Component(_sersic(u, v, s, n, q), 1.0, _ELLIPTICAL if c != 4 else _BULGE)]
        p.extra["sersic_n"] = n
    elif c == 5:
        comps = _spiral_components(rng, x, y, p, barred=True, pitch=(14.0, 28.0),
                                   bulge_frac=(0.08, 0.2), arm_frac=(0.3, 0.42), clumpy=False)
    elif c == 6:
        comps = _spiral_components(rng, x, y, p, barred=False, pitch=(9.0, 15.0),
                                   bulge_frac=(0.15, 0.3), arm_frac=(0.3, 0.45), clumpy=False)
    elif c == 7:
        comps = _spiral_components(rng, x, y, p, barred=False, pitch=(24.0, 38.0),
                                   bulge_frac=(0.02, 0.08), arm_frac=(0.35, 0.5), clumpy=True)
    elif c in (8, 9):  # edge-on discs
        u, v = _rotated(x, y, 0.0, 0.0, pa)
        comps = [_Component(_sersic(u, v, s, rng.uniform(0.8, 1.1), q), 1.0, _DISC)]
        if c == 9:
            fb = rng.uniform(0.25, 0.5)
            comps[0].fraction = 1.0 - fb
            comps.append(_Component(_sersic(u, v, s * rng.uniform(0.22, 0.35), rng.uniform(1.5, 3.5),
                                            rng.uniform(0.65, 0.95)), fb, _BULGE))
            p.extra["bulge_fraction"] = fb
        if rng.random() < 0.55:
            width = q * s * rng.uniform(0.25, 0.45)
            offset = rng.uniform(-0.3, 0.3) * width
            lane = np.exp(-0.5 * ((v - np.float32(offset)) / np.float32(width)) ** 2)
            dust = (rng.uniform(0.6, 1.4) * lane * np.exp(-np.abs(u) / np.float32(1.5 * s))).astype(np.float32)
    elif c == 1:  # merging pair with bridge and tails
        sep = s * rng.uniform(1.0, 2.2)
        ang = rng.uniform(0, 2 * math.pi)
        ratio = rng.uniform(0.35, 1.0)
        s2 = s * rng.uniform(0.6, 1.0)
        xa, ya = -0.5 * sep * math.cos(ang), -0.5 * sep * math.sin(ang)
        xb, yb = -xa, -ya
        comps = []
        sense = 1 if rng.random() < 0.5 else -1
        for (x0, y0, ss, w, d) in ((xa, ya, s, 1.0 / (1 + ratio), ang + math.pi),
                                   (xb, yb, s2, ratio / (1 + ratio), ang)):
            pa_i = rng.uniform(0, math.pi)
            u, v = _rotated(x, y, x0, y0, pa_i)
            q_i = rng.uniform(0.45, 0.95)
            comps.append(_Component(_sersic(u, v, ss * rng.uniform(0.2, 0.35), rng.uniform(2, 4),
                                            rng.uniform(0.7, 1.0)), 0.3 * w, _BULGE))
            comps.append(_Component(_sersic(u, v, ss, 1.0, q_i), 0.5 * w, _DISC))
            comps.append(_Component(_tail(x, y, x0, y0, rng=rng, s=ss, direction=d, sense=sense),
                                    0.2 * w, _ARMS))
        # bridge: a soft elongated glow between the two nuclei
        u, v = _rotated(x, y, 0.0, 0.0, ang)
        comps.append(_Component(_sersic(u, v, 0.5 * sep, 0.5, 0.2), 0.06, _DISC))
        p.extra.update(separation_arcsec=sep, flux_ratio=ratio, nucleus_a_x=xa, nucleus_a_y=ya,
                       nucleus_b_x=xb, nucleus_b_y=yb)
    elif c == 0:  # disturbed: lopsided clumpy disc
        lop = rng.uniform(0, 2 * math.pi)
        off = s * rng.uniform(0.15, 0.35)
        dx, dy = off * math.cos(lop), off * math.sin(lop)
        radius, phi, u, v = _disc_plane(x, y, q, pa, dx, dy)
        disc = _sersic(u, v * q, s, rng.uniform(0.6, 1.2), q) * (
            1.0 + rng.uniform(0.4, 0.8) * np.minimum(radius / np.float32(s), 1.5) * np.cos(phi - lop)
        )
        un, vn = _rotated(x, y, 0.0, 0.0, pa)
        nucleus = _sersic(un, vn, s * 0.15, 2.0, 0.9)
        k = int(rng.integers(5, 13))
        rad = np.abs(rng.normal(0.0, 0.9 * s, k))
        th = lop + rng.normal(0.0, 1.0, k)
        clumps = _blobs(x, y, dx + rad * np.cos(th), dy + rad * np.sin(th), s * rng.uniform(0.06, 0.15, k),
                        rng.uniform(0.3, 1.0, k))
        plume = _tail(x, y, dx, dy, rng=rng, s=s, direction=lop, sense=1 if rng.random() < 0.5 else -1)
        fn, fc, fp = rng.uniform(0.06, 0.12), rng.uniform(0.2, 0.35), rng.uniform(0.06, 0.12)
        comps = [_Component(np.maximum(disc, 0), 1.0 - fn - fc - fp, _DISC),
                 _Component(nucleus, fn, _BULGE), _Component(clumps, fc, _CLUMPS),
                 _Component(plume, fp, _ARMS)]
    else:
        msg = f"class_id must be 0..{N_CLASSES - 1}, got {c}"
        raise ValueError(msg)
    return comps, dust


@dataclass
class GalaxyStamp:
    """One galaxy rendered without PSF or noise: flux (3, H, W) in nanomaggies per pixel.

    ``centre_xy`` is the galaxy centre in stamp pixels (pixel centres at integers).
    """

    flux: np.ndarray
    centre_xy: tuple[float, float]
    params: GalaxyParams
    flux_grz: tuple[float, float, float]
    r50_arcsec: float


def render_galaxy(
    rng: np.random.Generator,
    params: GalaxyParams,
    *,
    pxscale_arcsec: float,
    subpixel_xy: tuple[float, float] = (0.0, 0.0),
    max_half_px: int = 600,
) -> GalaxyStamp:
    """Render one galaxy (no PSF, no noise) at ``pxscale_arcsec`` arcsec/px.

    The light is evaluated on a grid oversampled so that sub-pixels are <= ~0.4" (at
    least 2x), integrated into pixels, and normalised so that the r-band flux inside
    the stamp matches ``params.mag_r``. ``subpixel_xy`` (in [-0.5, 0.5] pixels) shifts
    the galaxy centre off the stamp's central pixel.
    """
    s = params.scale_arcsec
    half = int(min(max_half_px, math.ceil(params.extent * s / pxscale_arcsec) + 2))
    os_ = max(2, math.ceil(pxscale_arcsec / 0.4))
    n = 2 * half + 1
    sub = (np.arange(n * os_, dtype=np.float32) + 0.5) / os_ - (half + 0.5)  # pixel units
    xs = (sub - np.float32(subpixel_xy[0])) * np.float32(pxscale_arcsec)
    ys = (sub - np.float32(subpixel_xy[1])) * np.float32(pxscale_arcsec)
    x, y = np.meshgrid(xs, ys)
    comps, dust = _galaxy_components(rng, x, y, params)
    # fade the light to zero towards the stamp edge so no stamp outline shows
    edge = np.float32(half * pxscale_arcsec)
    taper = np.clip((edge - np.sqrt(x * x + y * y)) / (0.3 * edge), 0.0, 1.0)
    taper = taper * taper * (3.0 - 2.0 * taper)
    total_r = float(mag_to_nmgy(params.mag_r))
    flux = np.zeros((3, n * os_, n * os_), dtype=np.float32)
    for comp in comps:
        img = np.maximum(comp.image, 0.0) * taper
        norm = float(img.sum())
        if norm <= 0 or comp.fraction <= 0:
            continue
        colour = _colour_grz(comp.colour, params.redshift)
        flux += (comp.fraction * total_r / norm) * colour[:, None, None] * img[None]
    if dust is not None:
        flux *= np.exp(-_DUST_GRZ[:, None, None] * dust[None])
    flux = flux.reshape(3, n, os_, n, os_).sum(axis=(2, 4))
    # keep the catalogue's r magnitude: rescale after dust, colours are unchanged
    flux *= np.float32(total_r / max(float(flux[1].sum()), 1e-12))
    return GalaxyStamp(
        flux=flux,
        centre_xy=(half + subpixel_xy[0], half + subpixel_xy[1]),
        params=params,
        flux_grz=tuple(float(f) for f in flux.sum(axis=(1, 2))),
        r50_arcsec=_half_light_radius(flux[1], (half + subpixel_xy[0], half + subpixel_xy[1]))
        * pxscale_arcsec,
    )


def _half_light_radius(img: np.ndarray, centre_xy: tuple[float, float]) -> float:
    """Circular radius (pixels) around ``centre_xy`` enclosing half of ``img``'s flux."""
    h, w = img.shape
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(xx - centre_xy[0], yy - centre_xy[1]).ravel()
    order = np.argsort(r, kind="stable")
    cum = np.cumsum(img.ravel()[order], dtype=np.float64)
    return float(r[order][np.searchsorted(cum, 0.5 * cum[-1])])


def _convolve_bands(flux: np.ndarray, kernels: Sequence[np.ndarray]) -> np.ndarray:
    """PSF-convolve each band (same size output)."""
    return np.stack(
        [signal.fftconvolve(flux[b], kernels[b], mode="same") for b in range(flux.shape[0])]
    ).astype(np.float32)


def _add_stamp(image: np.ndarray, stamp: np.ndarray, corner_yx: tuple[int, int]) -> None:
    """Add ``stamp`` (C, h, w) into ``image`` (C, H, W) at ``corner_yx``, clipped to the image."""
    _, H, W = image.shape
    _, h, w = stamp.shape
    y0, x0 = corner_yx
    ys, xs = max(0, y0), max(0, x0)
    ye, xe = min(H, y0 + h), min(W, x0 + w)
    if ye <= ys or xe <= xs:
        return
    image[:, ys:ye, xs:xe] += stamp[:, ys - y0:ye - y0, xs - x0:xe - x0]


def _place(image: np.ndarray, flux: np.ndarray, centre_xy: tuple[float, float],
           stamp_centre_xy: tuple[float, float]) -> None:
    """Add a stamp so that its ``stamp_centre_xy`` lands on ``centre_xy`` of the image."""
    corner = (round(centre_xy[1] - stamp_centre_xy[1]), round(centre_xy[0] - stamp_centre_xy[0]))
    _add_stamp(image, flux, corner)


def _star_colour(rng: np.random.Generator) -> np.ndarray:
    g_r = rng.uniform(0.25, 1.45)
    r_z = 0.1 + 0.6 * g_r + rng.normal(0, 0.05)
    return np.array([10 ** (-0.4 * g_r), 1.0, 10 ** (0.4 * r_z)], dtype=np.float32)


def _render_star(rng: np.random.Generator, image: np.ndarray, centre_xy: tuple[float, float],
                 mag_r: float, fwhm_px: Sequence[float]) -> tuple[float, float, float]:
    """Add a Moffat star of r magnitude ``mag_r``; returns its g, r, z flux."""
    flux_r = float(mag_to_nmgy(mag_r))
    colour = _star_colour(rng) * flux_r
    half = math.ceil(8 * max(fwhm_px) + 6 * max(0.0, 17.0 - mag_r))
    ix, iy = round(centre_xy[0]), round(centre_xy[1])
    local = (half + centre_xy[0] - ix, half + centre_xy[1] - iy)
    stamp = np.stack([moffat_image((2 * half + 1, 2 * half + 1), local, f) for f in fwhm_px])
    _add_stamp(image, stamp * colour[:, None, None], (iy - half, ix - half))
    return tuple(float(c) for c in colour)


def _add_noise(rng: np.random.Generator, image: np.ndarray, pxscale_arcsec: float) -> None:
    """Sky noise (scaled to the pixel area) plus source shot noise, in place."""
    native = pxscale_arcsec / DECALS_PXSCALE_ARCSEC
    for b in range(3):
        sigma_sky = SKY_SIGMA_NMGY[b] * native
        var = sigma_sky**2 + SHOT_NOISE_NMGY * np.maximum(image[b], 0.0)
        image[b] += np.sqrt(var).astype(np.float32) * rng.standard_normal(image[b].shape, dtype=np.float32)


# ---- survey field -----------------------------------------------------------------------


@dataclass
class CatalogueRow:
    """One true object of a synthetic field (a catalogue CSV row)."""

    id: int
    kind: str  # "galaxy" or "star"
    class_id: int  # Galaxy10 label, -1 for stars
    class_name: str
    x_px: float  # 0-based pixel coordinates (pixel centres at integers), numpy/astropy convention
    y_px: float
    ra_deg: float
    dec_deg: float
    flux_g_nmgy: float
    flux_r_nmgy: float
    flux_z_nmgy: float
    mag_r: float
    r50_arcsec: float  # true half-light radius before the PSF (0 for stars)
    axis_ratio: float
    pa_deg: float
    redshift: float


CATALOGUE_COLUMNS: tuple[str, ...] = tuple(CatalogueRow.__dataclass_fields__)


@dataclass
class FieldTruth:
    """What ``synth_galaxy_field`` wrote and where."""

    fits_path: Path
    png_path: Path
    catalogue_path: Path
    size_px: int
    pxscale_arcsec: float
    psf_fwhm_arcsec: tuple[float, float, float]
    rows: list[CatalogueRow]

    def galaxies(self) -> list[CatalogueRow]:
        return [r for r in self.rows if r.kind == "galaxy"]

    def stars(self) -> list[CatalogueRow]:
        return [r for r in self.rows if r.kind == "star"]


def field_wcs(size_px: int, pxscale_arcsec: float, centre_radec: tuple[float, float]):
    """A north-up TAN WCS centred on the field (RA increases to the left)."""
    from astropy.wcs import WCS

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crpix = [size_px / 2 + 0.5, size_px / 2 + 0.5]  # FITS 1-based centre
    wcs.wcs.crval = list(centre_radec)
    wcs.wcs.cdelt = [-pxscale_arcsec / 3600.0, pxscale_arcsec / 3600.0]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.radesys = "ICRS"
    return wcs


def render_field(
    *,
    size_px: int = 2048,
    n_galaxies: int = 60,
    n_stars: int | None = None,
    seed: int = 0,
    pxscale_arcsec: float = DECALS_PXSCALE_ARCSEC,
    progress: ProgressReporter | None = None,
) -> tuple[np.ndarray, list[dict[str, Any]], tuple[float, float, float]]:
    """Render a survey field in memory: (3, Y, X) float32 nanomaggies per pixel, truth rows
    (without sky coordinates) and the per-band PSF FWHM (arcsec).

    Galaxies cycle through all ten classes (so ``n_galaxies >= 10`` has every class),
    are placed without overlapping each other's bright parts, and stars avoid galaxy
    centres. A faint smooth sky gradient is left in (the detection must model it).
    """
    progress = progress or NullProgress()
    ss = np.random.SeedSequence(seed)
    layout_seq, gal_seq, star_seq, noise_seq = ss.spawn(4)
    layout = np.random.default_rng(layout_seq)
    n_stars = round(1.2 * n_galaxies) if n_stars is None else n_stars
    seeing = float(layout.uniform(0.9, 1.1))
    fwhm_arcsec = tuple(f * seeing for f in PSF_FWHM_ARCSEC)
    kernels = psf_kernels(fwhm_arcsec, pxscale_arcsec)
    image = np.zeros((3, size_px, size_px), dtype=np.float32)
    progress.start(n_galaxies + n_stars + 1, "rendering galaxy field")

    classes = [i % N_CLASSES for i in range(n_galaxies)]
    layout.shuffle(classes)
    rows: list[dict[str, Any]] = []
    placed: list[tuple[float, float, float]] = []  # x, y, exclusion radius (px)
    margin = 24
    for cls, gseq in zip(classes, gal_seq.spawn(n_galaxies), strict=True):
        grng = np.random.default_rng(gseq)
        params = sample_galaxy(grng, cls)
        radius_px = params.scale_arcsec * 2.2 / pxscale_arcsec
        for _ in range(200):
            cx, cy = layout.uniform(margin, size_px - margin, 2)
            if all(math.hypot(cx - px, cy - py) > radius_px + pr for px, py, pr in placed):
                break
        placed.append((cx, cy, radius_px))
        frac = (cx - round(cx), cy - round(cy))
        stamp = render_galaxy(grng, params, pxscale_arcsec=pxscale_arcsec, subpixel_xy=frac)
        _place(image, _convolve_bands(stamp.flux, kernels), (cx, cy), stamp.centre_xy)
        rows.append(dict(
            kind="galaxy", class_id=cls, class_name=GALAXY10_CLASSES[cls], x_px=float(cx), y_px=float(cy),
            flux_g_nmgy=stamp.flux_grz[0], flux_r_nmgy=stamp.flux_grz[1], flux_z_nmgy=stamp.flux_grz[2],
            mag_r=params.mag_r, r50_arcsec=stamp.r50_arcsec, axis_ratio=params.axis_ratio,
            pa_deg=params.pa_deg, redshift=params.redshift,
        ))
        progress.advance()
    fwhm_px = [f / pxscale_arcsec for f in fwhm_arcsec]
    for sseq in star_seq.spawn(n_stars):
        srng = np.random.default_rng(sseq)
        mag = float(15.0 + 6.0 * srng.power(1.6))  # more faint stars than bright ones
        for _ in range(200):
            cx, cy = layout.uniform(margin, size_px - margin, 2)
            if all(math.hypot(cx - px, cy - py) > 1.2 * pr + 12 for px, py, pr in placed):
                break
        placed.append((cx, cy, 6.0))
        grz = _render_star(srng, image, (cx, cy), mag, fwhm_px)
        rows.append(dict(
            kind="star", class_id=-1, class_name="star", x_px=float(cx), y_px=float(cy),
            flux_g_nmgy=grz[0], flux_r_nmgy=grz[1], flux_z_nmgy=grz[2], mag_r=mag, r50_arcsec=0.0,
            axis_ratio=1.0, pa_deg=0.0, redshift=0.0,
        ))
        progress.advance()
    nrng = np.random.default_rng(noise_seq)
    yy, xx = np.mgrid[0:size_px, 0:size_px].astype(np.float32) / np.float32(size_px)
    tilt = nrng.uniform(-1, 1, 2)
    for b in range(3):  # residual sky: ~1 sigma across the field
        sky = SKY_SIGMA_NMGY[b] * (tilt[0] * xx + tilt[1] * yy + 0.5 * np.sin(2.5 * xx + 1.7 * yy))
        image[b] += sky.astype(np.float32)
    _add_noise(nrng, image, pxscale_arcsec)
    progress.advance()
    progress.close()
    return image, rows, fwhm_arcsec


def synth_galaxy_field(
    out_dir: str | Path,
    *,
    size_px: int = 2048,
    n_galaxies: int = 60,
    n_stars: int | None = None,
    seed: int = 0,
    pxscale_arcsec: float = DECALS_PXSCALE_ARCSEC,
    centre_radec: tuple[float, float] | None = None,
    progress: ProgressReporter | None = None,
) -> FieldTruth:
    """Write a synthetic survey field: ``field.fits``, ``field.png`` and ``catalogue.csv``.

    ``field.fits``: primary HDU, float32 cube (3, Y, X) ("CYX", bands g, r, z, keywords
    BAND1..3) in nanomaggies per pixel, with a celestial TAN WCS on axes 1-2 (axis 3 is
    the band index) and PIXSCALE (arcsec/px), PSF FWHM per band, ZP = 22.5.
    ``field.png``: the asinh colour composite (R=z, G=r, B=g).
    ``catalogue.csv``: one row per true object, columns ``CATALOGUE_COLUMNS``.
    """
    from astropy.io import fits
    from PIL import Image

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    if centre_radec is None:
        centre_radec = (float(rng.uniform(0, 360)), float(rng.uniform(-10, 30)))
    image, raw_rows, fwhm = render_field(
        size_px=size_px, n_galaxies=n_galaxies, n_stars=n_stars, seed=seed,
        pxscale_arcsec=pxscale_arcsec, progress=progress,
    )
    wcs = field_wcs(size_px, pxscale_arcsec, centre_radec)
    xs = np.array([r["x_px"] for r in raw_rows])
    ys = np.array([r["y_px"] for r in raw_rows])
    ra, dec = wcs.pixel_to_world_values(xs, ys) if len(raw_rows) else (xs, ys)
    rows = [CatalogueRow(id=i + 1, ra_deg=float(ra[i]), dec_deg=float(dec[i]), **r) for i, r in enumerate(raw_rows)]

    header = wcs.to_header()
    header["WCSAXES"] = 3
    header["CTYPE3"] = "BANDIDX"
    header["CRPIX3"], header["CRVAL3"], header["CDELT3"] = 1.0, 0.0, 1.0
    for i, (band, f) in enumerate(zip(BANDS, fwhm, strict=True), start=1):
        header[f"BAND{i}"] = (band, f"band of plane {i}")
        header[f"PSFFWHM{i}"] = (round(f, 4), f"PSF FWHM of plane {i}, arcsec")
    header["BUNIT"] = "nanomaggy"
    header["ZP"] = (ZEROPOINT_MAG, "AB magnitude of 1 nanomaggy")
    header["PIXSCALE"] = (pxscale_arcsec, "arcsec per pixel")
    header["SEED"] = seed
    header["ORIGIN"] = "tessera synth galaxies"
    fits_path = out_dir / "field.fits"
    tmp = fits_path.with_suffix(".fits.part")
    fits.PrimaryHDU(image, header=header).writeto(tmp, overwrite=True)
    tmp.replace(fits_path)

    png_path = out_dir / "field.png"
    Image.fromarray(grz_to_rgb(image, pxscale_arcsec)).save(png_path)
    cat_path = out_dir / "catalogue.csv"
    write_catalogue_csv(cat_path, rows)
    return FieldTruth(fits_path, png_path, cat_path, size_px, pxscale_arcsec, fwhm, rows)


def write_catalogue_csv(path: Path, rows: Sequence[CatalogueRow]) -> None:
    """Write true-object rows as CSV (floats to 6 significant digits)."""
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(CATALOGUE_COLUMNS)
        for r in rows:
            writer.writerow([f"{v:.9g}" if isinstance(v, float) else v
                             for v in (getattr(r, c) for c in CATALOGUE_COLUMNS)])


def read_catalogue_csv(path: str | Path) -> list[CatalogueRow]:
    """Read a catalogue written by ``write_catalogue_csv``."""
    types = CatalogueRow.__annotations__
    out = []
    with Path(path).open(newline="", encoding="utf-8") as fh:
        for rec in csv.DictReader(fh):
            out.append(CatalogueRow(**{
                k: (int(v) if types[k] == "int" else float(v) if types[k] == "float" else v)
                for k, v in rec.items()
            }))
    return out


# ---- cutouts ------------------------------------------------------------------------------


@dataclass
class CutoutSet:
    """Galaxy10 DECaLS-style cutouts: ``images`` uint8 (N, H, W, 3) "NYXC", labels and
    per-cutout metadata (ra/dec in degrees, redshift, pixel scale in arcsec/px)."""

    images: np.ndarray
    labels: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    redshift: np.ndarray
    pxscale: np.ndarray


def render_cutout(
    rng: np.random.Generator,
    class_id: int,
    *,
    size_px: int = 256,
    pxscale_arcsec: float = DECALS_PXSCALE_ARCSEC,
    neighbours: bool = True,
) -> tuple[np.ndarray, GalaxyParams]:
    """One centred galaxy of ``class_id`` with PSF, noise and maybe neighbours, as float
    (3, H, W) nanomaggies per pixel (apply ``grz_to_rgb`` for the colour image).

    The cutout always spans size_px * pxscale_arcsec (67" for 256 px at 0.262"), so a
    cutout rendered small at a coarse scale matches a large one resampled down.
    """
    params = sample_galaxy(rng, class_id)
    fwhm_arcsec = [f * rng.uniform(0.85, 1.15) for f in PSF_FWHM_ARCSEC]
    kernels = psf_kernels(fwhm_arcsec, pxscale_arcsec)
    image = np.zeros((3, size_px, size_px), dtype=np.float32)
    centre = (size_px - 1) / 2 + rng.uniform(-1.5, 1.5, 2) * (DECALS_PXSCALE_ARCSEC / pxscale_arcsec)
    frac = (centre[0] - round(centre[0]), centre[1] - round(centre[1]))
    stamp = render_galaxy(rng, params, pxscale_arcsec=pxscale_arcsec, subpixel_xy=frac,
                          max_half_px=size_px)
    if class_id == 1 and rng.random() < 0.5:
        # a detection picks one nucleus of a pair: centre the cutout on it half the time
        nuc = "a" if rng.random() < 0.5 else "b"
        centre = centre - np.array([params.extra[f"nucleus_{nuc}_x"], params.extra[f"nucleus_{nuc}_y"]]) / pxscale_arcsec
    _place(image, _convolve_bands(stamp.flux, kernels), tuple(centre), stamp.centre_xy)
    if neighbours:
        fwhm_px = [f / pxscale_arcsec for f in fwhm_arcsec]
        for _ in range(int(rng.integers(0, 4))):  # field stars, away from the galaxy core
            pos = _away_from_centre(rng, size_px, params.scale_arcsec * 1.5 / pxscale_arcsec)
            _render_star(rng, image, pos, float(rng.uniform(16.0, 21.5)), fwhm_px)
        if rng.random() < 0.35:  # a small background galaxy
            nb = sample_galaxy(rng, int(rng.integers(0, N_CLASSES)), redshift_range=(0.15, 0.35),
                               scale_range_arcsec=(0.8, 2.0), mag_range=(18.5, 21.0))
            pos = _away_from_centre(rng, size_px, params.scale_arcsec * 2.5 / pxscale_arcsec)
            nstamp = render_galaxy(rng, nb, pxscale_arcsec=pxscale_arcsec)
            _place(image, _convolve_bands(nstamp.flux, kernels), pos, nstamp.centre_xy)
        if rng.random() < 0.3:  # a bright neighbour partly in the frame, as in crowded fields
            nb = sample_galaxy(rng, int(rng.integers(0, N_CLASSES)))
            gap = (2.0 * params.scale_arcsec + 1.5 * nb.scale_arcsec) / pxscale_arcsec
            pos = _away_from_centre(rng, size_px, max(gap, 0.3 * size_px), r_max=0.65 * size_px)
            nstamp = render_galaxy(rng, nb, pxscale_arcsec=pxscale_arcsec, max_half_px=size_px)
            _place(image, _convolve_bands(nstamp.flux, kernels), pos, nstamp.centre_xy)
    _add_noise(rng, image, pxscale_arcsec)
    return image, params


def _away_from_centre(rng: np.random.Generator, size_px: int, min_r_px: float,
                      r_max: float | None = None) -> tuple[float, float]:
    c = (size_px - 1) / 2
    r_max = 0.5 * size_px if r_max is None else r_max
    r = rng.uniform(min(min_r_px, 0.9 * r_max), r_max)
    a = rng.uniform(0, 2 * math.pi)
    return (c + r * math.cos(a), c + r * math.sin(a))


def render_cutouts(
    n: int,
    *,
    seed: int = 0,
    size_px: int = 256,
    pxscale_arcsec: float = DECALS_PXSCALE_ARCSEC,
    classes: Sequence[int] | None = None,
    start: int = 0,
    progress: ProgressReporter | None = None,
) -> CutoutSet:
    """``n`` colour cutouts, balanced over ``classes`` (default all ten).

    Cutout ``i`` (counting from ``start``) depends only on (seed, i): its class is
    ``classes[i % len(classes)]`` and its pixels come from child generator ``i`` of
    ``SeedSequence(seed)``, so disjoint index ranges give disjoint, reproducible sets
    (e.g. training from 0, held-out from 100000).
    """
    progress = progress or NullProgress()
    classes = list(range(N_CLASSES)) if classes is None else list(classes)
    images = np.zeros((n, size_px, size_px, 3), dtype=np.uint8)
    labels = np.zeros(n, dtype=np.uint8)
    ra = np.zeros(n)
    dec = np.zeros(n)
    redshift = np.zeros(n, dtype=np.float32)
    progress.start(n, "rendering galaxy cutouts")
    root = np.random.SeedSequence(seed)
    for k in range(n):
        i = start + k
        rng = np.random.default_rng(np.random.SeedSequence(root.entropy, spawn_key=(i,)))
        cls = classes[i % len(classes)]
        flux, params = render_cutout(rng, cls, size_px=size_px, pxscale_arcsec=pxscale_arcsec)
        images[k] = grz_to_rgb(flux, pxscale_arcsec)
        labels[k] = cls
        ra[k], dec[k] = rng.uniform(0, 360), rng.uniform(-10, 30)
        redshift[k] = params.redshift
        progress.advance()
    progress.close()
    return CutoutSet(images, labels, ra, dec, redshift, np.full(n, pxscale_arcsec, dtype=np.float32))


def write_galaxy10_h5(path: str | Path, cutouts: CutoutSet) -> None:
    """Write cutouts in the Galaxy10 DECaLS layout: datasets ``images`` uint8
    (N, H, W, 3), ``ans`` uint8 labels, ``ra``/``dec`` float64 degrees, ``redshift``
    float32 and ``pxscale`` float32 arcsec/px (written to a temporary name first)."""
    import h5py

    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    with h5py.File(tmp, "w") as f:
        f.create_dataset("images", data=cutouts.images, compression="gzip", compression_opts=4,
                         chunks=(1, *cutouts.images.shape[1:]))
        f.create_dataset("ans", data=cutouts.labels.astype(np.uint8))
        f.create_dataset("ra", data=cutouts.ra.astype(np.float64))
        f.create_dataset("dec", data=cutouts.dec.astype(np.float64))
        f.create_dataset("redshift", data=cutouts.redshift.astype(np.float32))
        f.create_dataset("pxscale", data=cutouts.pxscale.astype(np.float32))
        f.attrs["classes"] = list(GALAXY10_CLASSES)
        f.attrs["origin"] = "tessera synth galaxies (synthetic, not Galaxy10 data)"
    tmp.replace(path)
