"""The source catalogue of a field: one row per detected source, as CSV and FITS table.

Columns (units in the FITS table; ``<cls>`` is each class name as a slug, e.g.
``prob_barred_spiral``):

- ``id`` (1-based), ``x_px``, ``y_px`` (0-based pixel coordinates, pixel centres at
  integers), ``ra_deg``, ``dec_deg`` (ICRS, from the WCS; empty/NaN without one);
- ``kind``: "galaxy" (extended) or "star" (point-like);
- ``class_id`` (-1 for stars and unclassified), ``class_name``, ``prob_max`` and
  ``prob_<cls>`` for every class (empty for stars);
- ``flux`` / ``flux_err`` (Kron aperture on the detection image), ``flux_<band>`` per
  band, in nanomaggies when the image is calibrated (table keyword FLUXUNIT says which),
  and then ``mag_<band>`` (AB);
- ``snr``, ``r50_px`` / ``r50_arcsec`` (half-light radius), ``a_px``, ``b_px``,
  ``theta_deg`` (major axis from +x towards +y), ``ellipticity``, ``kron_radius``,
  ``cutout_side_px`` (field pixels the classified cutout spanned), ``flag`` (sep flags).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tessera.pipelines.sky.detection import Detections
from tessera.pipelines.sky.survey_image import NANOMAGGY_ZP, SurveyImage
from tessera.pipelines.writers.atomic import atomic_path


def class_slug(name: str) -> str:
    """'In-between Round Smooth' -> 'in_between_round_smooth' (column-name safe)."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def build_catalogue(
    image: SurveyImage,
    detections: Detections,
    *,
    class_names: Sequence[str],
    galaxy_index: np.ndarray,
    probabilities: np.ndarray,
    cutout_sides_px: np.ndarray,
):
    """An ``astropy.table.Table`` of all sources; ``probabilities`` (M, K) belong to the
    extended sources ``galaxy_index`` (M indices into ``detections``)."""
    import astropy.units as u
    from astropy.table import MaskedColumn, Table

    n = len(detections)
    k = len(class_names)
    probs = np.full((n, k), np.nan, dtype=np.float32)
    sides = np.full(n, np.nan)
    galaxy_index = np.asarray(galaxy_index, dtype=np.int64)
    if galaxy_index.size:
        probs[galaxy_index] = probabilities
        sides[galaxy_index] = cutout_sides_px
    classified = ~np.isnan(probs[:, 0])
    class_id = np.where(classified, np.argmax(np.nan_to_num(probs, nan=-1.0), axis=1), -1)
    t = Table()
    t["id"] = np.arange(1, n + 1, dtype=np.int32)
    t["x_px"] = detections.x
    t["y_px"] = detections.y
    sky = image.sky_coordinates(detections.x, detections.y)
    ra, dec = sky if sky is not None else (np.full(n, np.nan), np.full(n, np.nan))
    t["ra_deg"] = MaskedColumn(ra, mask=~np.isfinite(ra), unit=u.deg)
    t["dec_deg"] = MaskedColumn(dec, mask=~np.isfinite(dec), unit=u.deg)
    t["kind"] = np.where(detections.extended, "galaxy", "star")
    t["class_id"] = class_id.astype(np.int16)
    t["class_name"] = [class_names[c] if c >= 0 else "" for c in class_id]
    t["prob_max"] = MaskedColumn(np.nanmax(np.where(classified[:, None], probs, 0.0), axis=1),
                                 mask=~classified)
    for j, name in enumerate(class_names):
        t[f"prob_{class_slug(name)}"] = MaskedColumn(probs[:, j], mask=~classified)
    # nanomaggy is not a FITS unit: fluxes stay plain numbers, FLUXUNIT says what they are
    t.meta["FLUXUNIT"] = "nanomaggy (AB zp 22.5)" if image.calibrated else "image units"
    t["flux"] = detections.flux_auto
    t["flux_err"] = detections.flux_auto_err
    bands = image.bands if image.kind == "flux" else ("mean",)
    for b, name in enumerate(bands):
        col = f"flux_{class_slug(str(name)) or b}"
        t[col] = detections.band_flux[b]
        if image.calibrated:
            with np.errstate(divide="ignore", invalid="ignore"):
                mag = NANOMAGGY_ZP - 2.5 * np.log10(detections.band_flux[b])
            t[f"mag_{class_slug(str(name)) or b}"] = MaskedColumn(mag, mask=~np.isfinite(mag), unit=u.mag)
    t["snr"] = detections.snr
    t["r50_px"] = detections.r50_px
    if image.pxscale_arcsec:
        t["r50_arcsec"] = u.Quantity(detections.r50_px * image.pxscale_arcsec, u.arcsec)
    t["a_px"] = detections.a_px
    t["b_px"] = detections.b_px
    t["theta_deg"] = u.Quantity(np.degrees(detections.theta_rad), u.deg)
    t["ellipticity"] = detections.ellipticity
    t["kron_radius"] = detections.kron_radius
    t["cutout_side_px"] = MaskedColumn(sides, mask=~np.isfinite(sides))
    t["flag"] = detections.flag.astype(np.int32)
    t.meta["PSFR50PX"] = float(detections.psf_r50_px)
    if image.pxscale_arcsec:
        t.meta["PIXSCALE"] = float(image.pxscale_arcsec)
    return t


def write_catalogue(table, csv_path: Path, fits_path: Path | None = None) -> None:
    """Write the catalogue as CSV (floats to 7 significant digits) and as a FITS binary
    table with units; each file is written to a temporary name and renamed."""
    csv_table = table.copy(copy_data=False)
    for name in csv_table.colnames:
        if csv_table[name].dtype.kind == "f":
            csv_table[name].format = ".7g"
    with atomic_path(Path(csv_path), keep_suffix=True) as tmp:
        csv_table.write(tmp, format="ascii.csv", overwrite=True)
    if fits_path is not None:
        with atomic_path(Path(fits_path), keep_suffix=True) as tmp:
            table.write(tmp, format="fits", overwrite=True)
