"""A survey image as the sky pipeline needs it: bands of pixels, their meaning and the sky frame.

Two kinds of input reach the detect-classify pipeline:

- ``flux`` images: FITS from a survey, one or more bands of (sky-subtracted or not)
  linear flux. FITS is read here with astropy directly rather than through
  ``tessera.open``: the pipeline needs what a viewer does not — which HDU or plane is
  which band, the celestial WCS, the photometric zero point and the seeing — and it
  needs the whole field in memory for background modelling anyway.
- ``display`` images: PNG/JPEG/TIFF pictures (8/16-bit RGB or grey) with no
  calibration and usually no WCS; opened with ``tessera.open`` and used as pixels only.

Pixel coordinates everywhere are 0-based with pixel centres at integers (numpy, sep
and astropy's ``pixel_to_world`` convention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tessera.pipelines.errors import CorruptFile, UnsupportedFile

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fz")
#: AB magnitude of one nanomaggy (Legacy Survey / SDSS flux unit).
NANOMAGGY_ZP = 22.5


@dataclass
class SurveyImage:
    """Pixels of one field plus what is known about them.

    Attributes:
        path: the file.
        data: float32 (C, Y, X), axes "CYX". Flux images are converted to nanomaggies
            per pixel when the zero point is known; display images keep their values.
        bands: name of each plane (``("g", "r", "z")``, ``("R", "G", "B")``, ``("L",)``).
        kind: "flux" (linear, calibrated or not) or "display" (a stretched picture).
        wcs: celestial ``astropy.wcs.WCS`` (2 axes) or None.
        pxscale_arcsec: pixel scale in arcsec/px (from the WCS or header), or None.
        psf_fwhm_arcsec: seeing from the header (mean over bands), or None.
        calibrated: True when ``data`` is in nanomaggies (zero point known).
        metadata: header values worth reporting.
    """

    path: Path
    data: np.ndarray
    bands: tuple[str, ...]
    kind: Literal["flux", "display"]
    wcs: Any | None = None
    pxscale_arcsec: float | None = None
    psf_fwhm_arcsec: float | None = None
    calibrated: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def shape_yx(self) -> tuple[int, int]:
        return int(self.data.shape[1]), int(self.data.shape[2])

    def grz_planes(self) -> np.ndarray:
        """Three planes to use as g, r, z for a colour cutout (blue to red).

        FITS planes named g/r/z (any case) are picked by name; otherwise the first three
        planes are taken in file order (surveys store bands blue to red); a single band
        is used for all three.
        """
        names = [b.lower() for b in self.bands]
        if all(b in names for b in "grz"):
            return self.data[[names.index(b) for b in "grz"]]
        if self.data.shape[0] >= 3:
            return self.data[:3]
        return np.repeat(self.data[:1], 3, axis=0)

    def sky_coordinates(self, x_px: np.ndarray, y_px: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(ra_deg, dec_deg) of 0-based pixel positions, or None without a WCS."""
        if self.wcs is None:
            return None
        ra, dec = self.wcs.pixel_to_world_values(np.asarray(x_px, float), np.asarray(y_px, float))
        return np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64)


def is_fits(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(FITS_SUFFIXES)


def load_survey_image(path: str | Path) -> SurveyImage:
    """Read a FITS survey field or a PNG/JPEG/TIFF picture.

    Raises:
        UnsupportedFile: not an image, or a FITS file without a 2D/3D image.
        CorruptFile: the file is damaged.
    """
    path = Path(path)
    if not path.is_file():
        msg = "no such file; give a FITS, PNG, JPEG or TIFF survey image"
        raise UnsupportedFile(msg, path=path)
    if is_fits(path):
        return _load_fits(path)
    return _load_picture(path)


def _load_fits(path: Path) -> SurveyImage:
    from astropy.io import fits
    from astropy.wcs import WCS

    try:
        hdul = fits.open(path, memmap=False)
    except OSError as exc:
        msg = f"cannot read FITS ({exc}); the file may be truncated or not FITS"
        raise CorruptFile(msg, path=path) from exc
    with hdul:
        planes: list[np.ndarray] = []
        bands: list[str] = []
        header = None
        for hdu in hdul:
            if hdu.data is None or not isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU,
                                                          fits.CompImageHDU)):
                continue
            arr = np.asarray(hdu.data)
            if arr.ndim == 3 and arr.shape[0] <= 16:
                if planes:
                    continue  # a cube after single planes: ambiguous, keep the planes
                planes = [arr[i] for i in range(arr.shape[0])]
                bands = [str(hdu.header.get(f"BAND{i + 1}", i)) for i in range(arr.shape[0])]
                header = hdu.header
                break
            if arr.ndim == 2:
                if planes and arr.shape != planes[0].shape:
                    continue  # e.g. a weight map of another size
                planes.append(arr)
                bands.append(str(hdu.header.get("BAND", hdu.header.get("FILTER", hdu.name or len(bands)))))
                header = header if header is not None else hdu.header
        if not planes or header is None:
            msg = "no 2D image or (bands, y, x) cube in this FITS file"
            raise UnsupportedFile(msg, path=path)
        data = np.stack([np.nan_to_num(p.astype(np.float32), nan=0.0) for p in planes])
        wcs = None
        try:
            w = WCS(header).celestial
            if w.has_celestial and w.naxis == 2:
                wcs = w
        except Exception:  # malformed WCS keywords: pixels only
            wcs = None
        pxscale = None
        if wcs is not None:
            from astropy.wcs.utils import proj_plane_pixel_scales

            pxscale = float(np.mean(proj_plane_pixel_scales(wcs))) * 3600.0  # celestial: deg
        elif "PIXSCALE" in header:
            pxscale = float(header["PIXSCALE"])
        fwhm = [float(header[k]) for k in (f"PSFFWHM{i + 1}" for i in range(len(planes))) if k in header]
        if not fwhm and "SEEING" in header:
            fwhm = [float(header["SEEING"])]
        zp = header.get("ZP", header.get("MAGZERO", header.get("MAGZP")))
        calibrated = False
        if zp is not None and math.isfinite(float(zp)):
            data *= np.float32(10.0 ** (-0.4 * (float(zp) - NANOMAGGY_ZP)))
            calibrated = True
        return SurveyImage(
            path=path,
            data=data,
            bands=tuple(b.strip() for b in bands),
            kind="flux",
            wcs=wcs,
            pxscale_arcsec=pxscale,
            psf_fwhm_arcsec=float(np.mean(fwhm)) if fwhm else None,
            calibrated=calibrated,
            metadata={k: header[k] for k in ("BUNIT", "ORIGIN", "TELESCOP", "INSTRUME") if k in header},
        )


def _load_picture(path: Path) -> SurveyImage:
    import tessera

    with tessera.open(path) as src:
        # one picture: read it in this thread (no dask thread pool left behind)
        arr = np.asarray(src.levels[0].compute(scheduler="synchronous"))
        axes = src.axes
    if axes == "YX":
        arr = arr[None]
        bands: tuple[str, ...] = ("L",)
    elif axes == "YXC":
        arr = np.moveaxis(arr[..., :3], -1, 0)  # drop alpha
        bands = ("R", "G", "B") if arr.shape[0] == 3 else ("L",)
    elif axes == "CYX":
        arr = arr[:3]
        bands = ("R", "G", "B") if arr.shape[0] == 3 else ("L",)
    else:
        msg = f"a survey picture must be 2D grey or RGB, this one has axes {axes!r}"
        raise UnsupportedFile(msg, path=path)
    return SurveyImage(path=path, data=arr.astype(np.float32), bands=bands, kind="display",
                       metadata={"dtype": str(arr.dtype), "max_value": float(np.iinfo(arr.dtype).max)
                                 if arr.dtype.kind in "ui" else 1.0})
