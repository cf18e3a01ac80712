"""FITS images through astropy: the primary HDU, or the first image extension with data.

2D images are "YX"; cubes are "CYX" (planes along NAXIS3, e.g. bands or wavelengths).
The file is memory-mapped and read by sections; BSCALE/BZERO/BLANK are applied per
chunk here (astropy refuses memory-mapped scaled data), with astropy's conventions:
BZERO = 2**15 / 2**31 / -128 on integer data means unsigned 16/32-bit or signed
8-bit, other scaling gives float32 (8/16-bit) or float64 (32/64-bit), BLANK -> NaN.

Spacing: the celestial WCS pixel scale in arcsec, (y, x), when the header has a
celestial WCS; ``metadata["wcs"]`` keeps the WCS keywords (astropy's ``to_header``),
``metadata["header"]`` the observation keywords worth showing.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from tessera.pipelines.errors import CorruptFile, UnsupportedFile
from tessera.pipelines.sources.base import Source
from tessera.pipelines.sources.lazy import (
    FileSignature,
    LazyLevel,
    as_dask,
    close_handles,
    level_name,
)

SUFFIXES = (".fits", ".fit", ".fts", ".fits.fz", ".fz")
#: Header keywords copied into ``metadata["header"]`` when present.
SHOWN_KEYWORDS = (
    "OBJECT", "TELESCOP", "INSTRUME", "FILTER", "BAND", "EXPTIME", "DATE-OBS", "BUNIT",
    "MAGZERO", "MAGZP", "GAIN", "SURVEY", "ORIGIN",
)  # fmt: skip
#: Stored sample type of each FITS BITPIX (big-endian on disk).
_BITPIX = {
    8: np.dtype(np.uint8), 16: np.dtype(">i2"), 32: np.dtype(">i4"), 64: np.dtype(">i8"),
    -32: np.dtype(">f4"), -64: np.dtype(">f8"),
}  # fmt: skip
#: Rows per chunk when the image is not tile-compressed (rows are contiguous).
_CHUNK_BYTES = 8 * 2**20


def _is_fits(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(9) == b"SIMPLE  ="
    except OSError:
        return False


def _scaling(header: Any, raw_dtype: np.dtype) -> tuple[np.dtype, float, float, Any]:
    """(output dtype, bscale, bzero, blank) following astropy's conventions."""
    bscale = float(header.get("BSCALE", 1.0))
    bzero = float(header.get("BZERO", 0.0))
    blank = header.get("BLANK")
    if bscale == 1.0 and bzero == 0.0 and blank is None:
        return raw_dtype.newbyteorder("="), 1.0, 0.0, None
    if raw_dtype.kind in "iu" and bscale == 1.0 and blank is None:
        unsigned = {2: 2**15, 4: 2**31, 8: 2**63}
        if raw_dtype.itemsize in unsigned and bzero == unsigned[raw_dtype.itemsize]:
            return np.dtype(f"u{raw_dtype.itemsize}"), bscale, bzero, None
        if raw_dtype.itemsize == 1 and bzero == -128:
            return np.dtype(np.int8), bscale, bzero, None
    out = np.dtype(np.float32) if raw_dtype.itemsize <= 2 else np.dtype(np.float64)
    return out, bscale, bzero, blank


class FitsLevel(LazyLevel):
    """One FITS image HDU as a lazy array, read by sections of the memory-mapped file."""

    def __init__(
        self,
        path: Path,
        signature: FileSignature,
        hdu: int,
        shape: tuple,
        dtype: Any,
        scaling: tuple[float, float, Any],
    ) -> None:
        super().__init__(path, signature, shape, dtype)
        self.hdu = hdu
        self.scaling = scaling

    handle_kind = "fits"

    def open_handle(self) -> Any:
        from astropy.io import fits

        return fits.open(self.path, memmap=True, do_not_scale_image_data=True, lazy_load_hdus=True)

    def read(self, start: tuple[int, ...], stop: tuple[int, ...]) -> np.ndarray:
        hdul = self.handle()
        index = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
        try:
            raw = np.asarray(hdul[self.hdu].section[index])
        except Exception as exc:
            msg = f"the image data cannot be read ({exc}); the file is damaged or truncated"
            raise CorruptFile(msg, path=self.path) from exc
        bscale, bzero, blank = self.scaling
        if self.dtype.kind in "iu" and raw.dtype.kind in "iu":
            if bzero:
                return (raw.astype(np.int64) + int(bzero)).astype(self.dtype)
            return raw.astype(self.dtype, copy=False)
        out = raw.astype(self.dtype)
        if bscale != 1.0:
            out *= bscale
        if bzero:
            out += bzero
        if blank is not None and raw.dtype.kind in "iu":
            out[raw == blank] = np.nan
        return out


class FitsReader:
    """FITS files (.fits, .fit, .fts; tile-compressed .fz too)."""

    name = "fits"

    def open(self, path: Path) -> Source | None:
        name = path.name.lower()
        if not path.is_file() or not (name.endswith(SUFFIXES) or _is_fits(path)):
            return None
        if not _is_fits(path):
            msg = "the file does not start like a FITS file ('SIMPLE  ='); it is mis-named"
            raise CorruptFile(msg, path=path)
        from astropy.io import fits

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                hdul = fits.open(path, memmap=True, do_not_scale_image_data=True)
                hdul.verify("silentfix")
                found = self._image_hdu(hdul)
        except (OSError, ValueError, TypeError) as exc:
            msg = f"astropy cannot read this FITS file ({exc}); it is damaged or truncated"
            raise CorruptFile(msg, path=path) from exc
        with hdul:
            if found is None:
                msg = "the FITS file holds no image HDU with 2 or 3 axes (a table only?)"
                raise UnsupportedFile(msg, path=path)
            index, hdu = found
            header = hdu.header
            shape = tuple(int(s) for s in hdu.shape)
            self._check_size(path, hdu, shape)
            raw_dtype = _BITPIX[int(header["BITPIX"])]
            dtype, bscale, bzero, blank = _scaling(header, raw_dtype)
            spacing, wcs_meta = _celestial_scale_arcsec(header)
            meta_header = {k: _plain(header[k]) for k in SHOWN_KEYWORDS if k in header}
            bands = _band_names(header, shape)
        signature = FileSignature.of(path)
        lazy = FitsLevel(path, signature, index, shape, dtype, (bscale, bzero, blank))
        rows = max(1, min(shape[-2], _CHUNK_BYTES // max(1, shape[-1] * dtype.itemsize)))
        chunks = (1, rows, shape[-1]) if len(shape) == 3 else (rows, shape[-1])
        level = as_dask(lazy, chunks, name=level_name(self.name, path, signature, index))
        metadata: dict[str, Any] = {
            "vendor": meta_header.get("TELESCOP"),
            "hdu": index,
            "hdu_name": hdu.name,
            "header": meta_header,
            "bscale": bscale,
            "bzero": bzero,
            "units": meta_header.get("BUNIT"),
            **wcs_meta,
        }
        if bands:
            metadata["bands"] = bands
        return Source(
            path=path,
            format="FITS",
            reader=self.name,
            levels=[level],
            axes="YX" if len(shape) == 2 else "CYX",
            spacing=spacing,
            spacing_unit="arcsec" if spacing else None,
            metadata=metadata,
            _close=lambda: close_handles(lazy.handle_key),
        )

    @staticmethod
    def _image_hdu(hdul: Any) -> tuple[int, Any] | None:
        for i, hdu in enumerate(hdul):
            naxis = int(hdu.header.get("NAXIS", 0))
            is_image = hdu.is_image or hdu.__class__.__name__ == "CompImageHDU"
            if is_image and naxis in (2, 3) and all(int(s) > 0 for s in hdu.shape):
                return i, hdu
        return None

    @staticmethod
    def _check_size(path: Path, hdu: Any, shape: tuple[int, ...]) -> None:
        """Refuse a file shorter than its header promises (truncated copy)."""
        if hdu.__class__.__name__ == "CompImageHDU":
            return
        bitpix = abs(int(hdu.header["BITPIX"]))
        needed = int(hdu._data_offset) + int(np.prod(shape)) * bitpix // 8
        size = path.stat().st_size
        if size < needed:
            msg = f"the image needs {needed} bytes but the file has {size}: it is truncated"
            raise CorruptFile(msg, path=path)


def _plain(value: Any) -> Any:
    return value if isinstance(value, bool | int | float | str) else str(value)


def _band_names(header: Any, shape: tuple[int, ...]) -> list[str] | None:
    """Names of a cube's planes from BANDn or FILTERn keywords (1-based, one per plane),
    as survey cubes label them; None unless every plane is named."""
    if len(shape) != 3:
        return None
    for key in ("BAND", "FILTER"):
        names = [header.get(f"{key}{i}") for i in range(1, shape[0] + 1)]
        if all(isinstance(n, str) and n.strip() for n in names):
            return [str(n).strip() for n in names]
    return None


def _celestial_scale_arcsec(header: Any) -> tuple[tuple[float, float] | None, dict[str, Any]]:
    """(y, x) pixel scale in arcsec from the celestial WCS, and the WCS keywords."""
    from astropy.wcs import WCS, FITSFixedWarning
    from astropy.wcs.utils import proj_plane_pixel_scales

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header)
    except Exception:
        return None, {}
    meta: dict[str, Any] = {"wcs": {k: _plain(v) for k, v in wcs.to_header().items()}}
    if not wcs.has_celestial:
        return None, meta
    celestial = wcs.celestial
    scales_deg = proj_plane_pixel_scales(celestial)  # in CUNIT, x (longitude) first
    meta["wcs_frame"] = str(celestial.wcs.radesys or celestial.wcs.ctype[0])
    import astropy.units as u

    to_arcsec = [
        (u.Unit(str(unit)) if str(unit) else u.deg).to(u.arcsec) for unit in celestial.wcs.cunit
    ]
    x_arcsec, y_arcsec = (float(s) * f for s, f in zip(scales_deg[:2], to_arcsec, strict=False))
    if x_arcsec <= 0 or y_arcsec <= 0:
        return None, meta
    return (y_arcsec, x_arcsec), meta
