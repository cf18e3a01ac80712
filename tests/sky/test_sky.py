"""Sky pipeline: background, detection, star/galaxy separation, cutouts, catalogue (no torch)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from tessera.pipelines.sky.catalogue import build_catalogue, class_slug, write_catalogue
from tessera.pipelines.sky.cutouts import (
    colour_cutouts,
    cutout_sides_px,
    flux_scale_to_nanomaggies,
    resample_cutouts,
)
from tessera.pipelines.sky.detection import detect_sources, subtract_background
from tessera.pipelines.sky.survey_image import SurveyImage, load_survey_image
from tessera.pipelines.synthetic import galaxies as G


@pytest.fixture(scope="session")
def field(tmp_path_factory):
    out = tmp_path_factory.mktemp("sky_field")
    truth = G.synth_galaxy_field(out, size_px=1024, n_galaxies=16, n_stars=14, seed=3)
    image = load_survey_image(truth.fits_path)
    return truth, image, detect_sources(image)


def _nearest(det, x, y):
    d = np.hypot(det.x - x, det.y - y)
    j = int(np.argmin(d))
    return j, float(d[j])


def test_fits_loads_bands_wcs_and_calibration(field):
    truth, image, _ = field
    assert image.kind == "flux" and image.bands == ("g", "r", "z") and image.calibrated
    assert image.data.shape == (3, 1024, 1024)
    assert image.pxscale_arcsec == pytest.approx(0.262, rel=1e-6)
    assert image.psf_fwhm_arcsec == pytest.approx(np.mean(truth.psf_fwhm_arcsec), rel=1e-3)
    r = truth.rows[0]
    ra, dec = image.sky_coordinates(np.array([r.x_px]), np.array([r.y_px]))
    assert ra[0] == pytest.approx(r.ra_deg, abs=1e-8) and dec[0] == pytest.approx(r.dec_deg, abs=1e-8)


def test_galaxies_found_and_separated_from_stars(field):
    truth, _, det = field
    found_gal, extended = 0, 0
    for r in truth.galaxies():
        j, d = _nearest(det, r.x_px, r.y_px)
        if d <= max(3.0, r.r50_arcsec / 0.262):
            found_gal += 1
            extended += bool(det.extended[j])
    n_gal = len(truth.galaxies())
    assert found_gal / n_gal >= 0.95
    assert extended >= found_gal - 1
    stars_found, stars_point = 0, 0
    for r in truth.stars():
        j, d = _nearest(det, r.x_px, r.y_px)
        if d <= 2.0:
            stars_found += 1
            stars_point += not det.extended[j]
    assert stars_found >= 0.8 * len(truth.stars())
    assert stars_point >= 0.9 * stars_found
    # the stellar locus is the PSF: r50 of a Moffat ~ 0.5-0.65 FWHM
    fwhm_px = np.mean(truth.psf_fwhm_arcsec) / 0.262
    assert 0.45 * fwhm_px < det.psf_r50_px < 0.75 * fwhm_px
    # measured fluxes of isolated bright stars match the truth (Kron captures ~all the light)
    for r in truth.stars():
        j, d = _nearest(det, r.x_px, r.y_px)
        if d <= 2.0 and r.mag_r < 19:
            assert det.band_flux[1, j] == pytest.approx(r.flux_r_nmgy, rel=0.12)


def test_background_follows_a_gradient():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:512, 0:512].astype(np.float32)
    sky = 5.0 + 0.02 * xx + 3.0 * np.sin(yy / 250.0)  # smooth on the 64 px mesh scale
    noisy = sky + rng.normal(0, 1.0, sky.shape).astype(np.float32)
    sub, rms = subtract_background(noisy[None], box_px=64)
    assert abs(float(np.median(sub))) < 0.1
    residual = ndi_smooth(sub[0])  # large-scale leftovers of a sky that varies by ~10 units
    assert float(residual.std()) < 0.1 and float(np.abs(residual).max()) < 0.4
    assert float(ndi_smooth(noisy - np.median(noisy)).std()) > 10 * float(residual.std())
    assert float(np.median(rms)) == pytest.approx(1.0, rel=0.1)


def ndi_smooth(a: np.ndarray) -> np.ndarray:
    from scipy import ndimage as ndi

    return ndi.uniform_filter(a, 32)[32:-32, 32:-32]


def test_resample_cutouts_geometry_and_antialiasing():
    # constant surface brightness stays constant; a blob lands in the centre
    plane = np.full((1, 300, 300), 2.0, np.float32)
    yy, xx = np.mgrid[0:300, 0:300]
    plane[0] += 50 * np.exp(-((xx - 120.3) ** 2 + (yy - 170.6) ** 2) / (2 * 6.0**2))
    cut = resample_cutouts(plane, np.array([120.3]), np.array([170.6]), np.array([128.0]), 32)
    assert cut.shape == (1, 1, 32, 32)
    peak = np.unravel_index(np.argmax(cut[0, 0]), (32, 32))
    assert abs(peak[0] - 15.5) <= 1 and abs(peak[1] - 15.5) <= 1
    assert cut[0, 0, 0, 0] == pytest.approx(2.0, abs=1e-3)
    # shrinking by 4 averages white noise down by ~4 (anti-aliased, not subsampled)
    noise = np.random.default_rng(1).normal(0, 1, (1, 600, 600)).astype(np.float32)
    small = resample_cutouts(noise, np.array([300.0]), np.array([300.0]), np.array([512.0]), 128)
    assert 0.15 < float(small.std()) < 0.4
    # beyond the image edge: zeros
    edge = resample_cutouts(np.ones((1, 50, 50), np.float32), np.array([0.0]), np.array([0.0]),
                            np.array([40.0]), 40)
    assert edge[0, 0, 0, 0] == 0.0 and edge[0, 0, -1, -1] == pytest.approx(1.0)


def test_cutout_sides(field):
    _, image, det = field
    sides = cutout_sides_px(image, det.r50_px[:3], size_px=64, pxscale_arcsec=1.048,
                            typical_r50_arcsec=4.5)
    np.testing.assert_allclose(sides, 256.0, rtol=1e-6)  # the 67" box at 0.262"/px
    pic = SurveyImage(image.path, image.data[:1], ("L",), "display")
    sides = cutout_sides_px(pic, np.array([2.0, 8.0]), size_px=64, pxscale_arcsec=1.048,
                            typical_r50_arcsec=4.5)
    assert sides[1] == pytest.approx(4 * sides[0])  # follows the source size
    assert sides[1] == pytest.approx(64 * 8.0 / (4.5 / 1.048))


def test_colour_cutouts_look_like_training_cutouts(field):
    truth, image, det = field
    gal = [_nearest(det, r.x_px, r.y_px)[0] for r in truth.galaxies()[:4]]
    sides = cutout_sides_px(image, det.r50_px[gal], size_px=64, pxscale_arcsec=1.048,
                            typical_r50_arcsec=4.5)
    cut = colour_cutouts(image, det, np.array(gal), sides, 64)
    train = G.render_cutouts(4, seed=0, size_px=64, pxscale_arcsec=1.048).images
    assert cut.shape == (4, 64, 64, 3) and cut.dtype == np.uint8
    # same sky level and a bright centre, as the generator's cutouts
    sky_field = np.median(cut[:, :8, :8])
    sky_train = np.median(train[:, :8, :8])
    assert abs(float(sky_field) - float(sky_train)) <= 6
    assert np.all(cut[:, 28:36, 28:36].mean(axis=(1, 2, 3)) > sky_field + 30)


def test_uncalibrated_single_band_fits(tmp_path):
    from astropy.io import fits

    rng = np.random.default_rng(2)
    data = rng.normal(100.0, 3.0, (256, 256)).astype(np.float32)
    yy, xx = np.mgrid[0:256, 0:256]
    data += 400 * np.exp(-((xx - 128) ** 2 + (yy - 100) ** 2) / (2 * 5.0**2))
    path = tmp_path / "one.fits"
    fits.PrimaryHDU(data).writeto(path)
    image = load_survey_image(path)
    assert image.kind == "flux" and not image.calibrated and image.wcs is None
    det = detect_sources(image)
    _j, d = _nearest(det, 128, 100)
    assert d < 1.0
    scale = flux_scale_to_nanomaggies(image, det.band_rms)
    np.testing.assert_allclose(scale * 3.0, [0.0067, 0.0117, 0.027], rtol=0.1)


def test_catalogue_csv_and_fits(field, tmp_path):
    from astropy.table import Table

    _, image, det = field
    names = G.GALAXY10_CLASSES
    gal = np.flatnonzero(det.extended)
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(10), len(gal)).astype(np.float32)
    table = build_catalogue(image, det, class_names=names, galaxy_index=gal, probabilities=probs,
                            cutout_sides_px=np.full(len(gal), 256.0))
    write_catalogue(table, tmp_path / "cat.csv", tmp_path / "cat.fits")
    with (tmp_path / "cat.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(det)
    assert {"x_px", "y_px", "ra_deg", "dec_deg", "kind", "class_name", "prob_max", "flux_r",
            "mag_r", "r50_arcsec", f"prob_{class_slug(names[3])}"} <= set(rows[0])
    g0 = rows[int(gal[0])]
    assert g0["kind"] == "galaxy" and g0["class_name"] == names[int(np.argmax(probs[0]))]
    star = next(r for r in rows if r["kind"] == "star")
    assert star["class_name"] == "" and star["prob_max"] == ""
    fits_table = Table.read(tmp_path / "cat.fits")
    assert len(fits_table) == len(det) and str(fits_table["ra_deg"].unit) == "deg"
    ra, _dec = image.sky_coordinates(det.x, det.y)
    np.testing.assert_allclose(np.asarray(fits_table["ra_deg"]), ra, atol=1e-9)
    assert float(fits_table["mag_r"][int(gal[0])]) == pytest.approx(
        22.5 - 2.5 * math.log10(det.band_flux[1, gal[0]]), abs=1e-4)


def test_picture_without_wcs_detects_the_galaxies(field, tmp_path):
    from PIL import Image

    truth, image, det = field
    from tessera.pipelines.sky.cutouts import display_image

    png = tmp_path / "field.png"
    Image.fromarray(display_image(image, det)).save(png)
    pic = load_survey_image(png)
    assert pic.kind == "display" and pic.wcs is None and pic.bands == ("R", "G", "B")
    pdet = detect_sources(pic)
    hits = sum(_nearest(pdet, r.x_px, r.y_px)[1] <= max(3.0, r.r50_arcsec / 0.262)
               for r in truth.galaxies())
    assert hits >= 0.9 * len(truth.galaxies())
    assert pic.sky_coordinates(pdet.x, pdet.y) is None
