"""Synthetic galaxies: determinism, physical sanity of each class, field and cutout layouts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from tessera.pipelines.synthetic import galaxies as G


@pytest.fixture(scope="session")
def small_field(tmp_path_factory):
    out = tmp_path_factory.mktemp("galaxy_field")
    return G.synth_galaxy_field(out, size_px=512, n_galaxies=10, n_stars=8, seed=11)


def _noiseless(class_id: int, seed: int, pxscale: float = 0.262) -> G.GalaxyStamp:
    rng = np.random.default_rng(seed)
    return G.render_galaxy(rng, G.sample_galaxy(rng, class_id), pxscale_arcsec=pxscale)


def _moment_axis_ratio(img: np.ndarray) -> float:
    """Axis ratio from the flux-weighted second moments of the brighter pixels."""
    img = np.where(img > 0.02 * img.max(), img, 0.0)
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    w = img / img.sum()
    cx, cy = (w * xx).sum(), (w * yy).sum()
    cxx = (w * (xx - cx) ** 2).sum()
    cyy = (w * (yy - cy) ** 2).sum()
    cxy = (w * (xx - cx) * (yy - cy)).sum()
    ev = np.linalg.eigvalsh(np.array([[cxx, cxy], [cxy, cyy]]))
    return math.sqrt(ev[0] / ev[1])


def test_cutouts_are_deterministic_and_index_addressed():
    a = G.render_cutouts(4, seed=5, size_px=64, pxscale_arcsec=1.048)
    b = G.render_cutouts(4, seed=5, size_px=64, pxscale_arcsec=1.048)
    c = G.render_cutouts(2, seed=5, size_px=64, pxscale_arcsec=1.048, start=2)
    d = G.render_cutouts(4, seed=6, size_px=64, pxscale_arcsec=1.048)
    assert a.images.shape == (4, 64, 64, 3) and a.images.dtype == np.uint8
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.images[2:], c.images)  # cutout i depends on (seed, i) only
    np.testing.assert_array_equal(a.labels, [0, 1, 2, 3])
    assert not np.array_equal(a.images, d.images)
    # a galaxy sits in the middle: the centre is brighter than the borders
    centre = a.images[:, 24:40, 24:40].mean(axis=(1, 2, 3))
    border = np.concatenate([a.images[:, :6].reshape(4, -1), a.images[:, -6:].reshape(4, -1)], 1)
    assert np.all(centre > np.median(border, axis=1) + 20)


@pytest.mark.parametrize(("cls", "lo", "hi"), [(2, 0.78, 1.0), (3, 0.4, 0.78), (4, 0.15, 0.45),
                                               (8, 0.0, 0.2)])
def test_smooth_and_edge_on_shapes(cls, lo, hi):
    for seed in range(3):
        stamp = _noiseless(cls, seed)
        assert lo <= _moment_axis_ratio(stamp.flux[1]) <= hi


def test_flux_matches_magnitude_and_colours():
    stamp = _noiseless(6, 1)
    assert stamp.flux_grz[1] == pytest.approx(G.mag_to_nmgy(stamp.params.mag_r), rel=1e-4)
    # spheroids are red (g/r low), loose spirals and disturbed systems blue
    ratio = {c: np.mean([_noiseless(c, s).flux_grz[0] / _noiseless(c, s).flux_grz[1]
                         for s in range(2)]) for c in (2, 7, 0)}
    assert ratio[2] < ratio[7] and ratio[2] < ratio[0]
    # bulge of an edge-on-with-bulge galaxy is redder than its disc ends
    st = _noiseless(9, 2)
    g, r = st.flux[0], st.flux[1]
    cy, cx = (round(v) for v in st.centre_xy[::-1])
    core = g[cy - 2 : cy + 3, cx - 2 : cx + 3].sum() / r[cy - 2 : cy + 3, cx - 2 : cx + 3].sum()
    outer = (r > 0.05 * r.max()) & (np.hypot(*np.mgrid[0:r.shape[0], 0:r.shape[1]]
                                             - np.array([cy, cx])[:, None, None]) > 10)
    assert g[outer].sum() / r[outer].sum() > core


def _n_nuclei(img: np.ndarray) -> int:
    sm = ndi.gaussian_filter(img, 1.5)
    peaks = (sm == ndi.maximum_filter(sm, size=9)) & (sm > 0.25 * sm.max())
    return int(peaks.sum())


def test_mergers_have_two_nuclei_ellipticals_one():
    assert all(_n_nuclei(_noiseless(1, s).flux[2]) >= 2 for s in range(4))
    assert all(_n_nuclei(_noiseless(2, s).flux[2]) == 1 for s in range(4))


def _measured_pitch_deg(cls: int, seed: int) -> tuple[float, float]:
    """Pitch angle measured on the image (phase of the m-armed Fourier mode against
    ln radius: slope = 1/tan(pitch)) and the pitch that was drawn."""
    rng = np.random.default_rng(seed)
    p = G.sample_galaxy(rng, cls)
    p.axis_ratio, p.scale_arcsec = 1.0, 6.0  # face-on and well resolved
    st = G.render_galaxy(rng, p, pxscale_arcsec=0.262)
    m = int(p.extra["arms"])
    cx, cy = st.centre_xy
    angles = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    radii = np.arange(3.0, 12.0, 0.5)
    phases = []
    for r_arcsec in radii:
        rr = r_arcsec / 0.262
        vals = ndi.map_coordinates(st.flux[1], [cy + rr * np.sin(angles), cx + rr * np.cos(angles)])
        phases.append(np.angle(np.sum(vals * np.exp(-1j * m * angles))))
    slope = np.polyfit(np.log(radii), np.unwrap(phases) / m, 1)[0]
    return math.degrees(math.atan(1 / abs(slope))), p.extra["pitch_deg"]


def test_spiral_arms_wind_as_labelled():
    for cls, lo, hi in ((6, 8.0, 16.0), (7, 23.0, 39.0), (5, 13.0, 29.0)):
        for seed in (1, 2, 3):
            measured, drawn = _measured_pitch_deg(cls, seed)
            assert measured == pytest.approx(drawn, abs=2.5)
            assert lo <= measured <= hi


def test_field_files_wcs_and_catalogue(small_field):
    from astropy.io import fits
    from astropy.wcs import WCS
    from PIL import Image

    truth = small_field
    with fits.open(truth.fits_path) as hdul:
        data = hdul[0].data
        header = hdul[0].header
    assert data.shape == (3, 512, 512) and data.dtype.kind == "f" and data.dtype.itemsize == 4
    assert [header[f"BAND{i}"] for i in (1, 2, 3)] == ["g", "r", "z"]
    wcs = WCS(header).celestial
    assert abs(wcs.proj_plane_pixel_scales()[0].to_value("arcsec") - 0.262) < 1e-6
    rows = G.read_catalogue_csv(truth.catalogue_path)
    assert len(rows) == 18 and sum(r.kind == "galaxy" for r in rows) == 10
    assert sorted(r.class_id for r in rows if r.kind == "galaxy") == list(range(10))
    ra, dec = wcs.pixel_to_world_values([r.x_px for r in rows], [r.y_px for r in rows])
    np.testing.assert_allclose(ra, [r.ra_deg for r in rows], atol=1e-7)
    np.testing.assert_allclose(dec, [r.dec_deg for r in rows], atol=1e-7)
    # the catalogue flux is what the image holds: aperture sums of isolated bright objects
    yy, xx = np.mgrid[0:512, 0:512]
    for r in rows:
        rad = max(12.0, 4 * r.r50_arcsec / 0.262)
        if r.mag_r > 17.0 or not (rad < r.x_px < 512 - rad and rad < r.y_px < 512 - rad):
            continue
        others = [o for o in rows if o is not r and math.hypot(o.x_px - r.x_px, o.y_px - r.y_px) < 2 * rad]
        if others:
            continue
        ap = np.hypot(xx - r.x_px, yy - r.y_px) < rad
        assert data[1][ap].sum() == pytest.approx(r.flux_r_nmgy, rel=0.2)
    png = np.asarray(Image.open(truth.png_path))
    assert png.shape == (512, 512, 3) and png.dtype == np.uint8
    # objects are brighter than the sky in the composite
    gal = rows[0]
    assert png[int(gal.y_px), int(gal.x_px)].mean() > np.median(png) + 40


def test_field_is_deterministic(small_field, tmp_path):
    from astropy.io import fits

    again = G.synth_galaxy_field(tmp_path, size_px=512, n_galaxies=10, n_stars=8, seed=11)
    with fits.open(small_field.fits_path) as a, fits.open(again.fits_path) as b:
        np.testing.assert_array_equal(a[0].data, b[0].data)
    assert small_field.catalogue_path.read_text() == again.catalogue_path.read_text()


def test_galaxy10_h5_layout(tmp_path):
    import h5py

    cut = G.render_cutouts(3, seed=0)
    path = tmp_path / "g10.h5"
    G.write_galaxy10_h5(path, cut)
    with h5py.File(path) as f:
        assert set(f) == {"images", "ans", "ra", "dec", "redshift", "pxscale"}
        assert f["images"].shape == (3, 256, 256, 3) and f["images"].dtype == np.uint8
        np.testing.assert_array_equal(f["ans"][:], [0, 1, 2])
        assert f["pxscale"][0] == pytest.approx(0.262)
        assert np.all((f["redshift"][:] > 0.0) & (f["redshift"][:] < 0.2))


def test_cli_writes_field_and_cutouts(tmp_path):
    from tessera.app.cli.main import main

    code = main(["synth", "galaxies", "--out", str(tmp_path), "--size", "256", "--n", "3",
                 "--cutouts", "2", "--seed", "1"])
    assert code == 0
    for name in ("field.fits", "field.png", "catalogue.csv", "cutouts.h5"):
        assert (tmp_path / name).stat().st_size > 0
    assert main(["synth", "galaxies", "--out", str(tmp_path), "--size", "10"]) == 2
