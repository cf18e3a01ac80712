"""Synthetic SAC eDOS: layout, determinism, and a d-band relation recoverable from the arrays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tessera.pipelines.catalysis.descriptors import d_band_moments
from tessera.pipelines.catalysis.io import open_edos
from tessera.pipelines.catalysis.layout import ADSORBATE_ATOMS, EDOS_SHAPE, energy_grid_ev
from tessera.pipelines.synthetic.edos import (
    EnergyModel,
    generate_samples,
    render_sample,
    synth_edos,
    truth_path,
)

METALS = ["Sc", "Mn", "Fe", "Co", "Ni", "Cu", "Ru", "Pt", "W", "Zn"]


@pytest.fixture(scope="module")
def samples():
    return generate_samples(seed=3, metals=METALS, supports=["N-graphene", "BN"])


def test_layout_and_grid(samples) -> None:
    e = energy_grid_ev()
    assert e.shape == (4000,)
    assert e[0] == -14.0 and np.isclose(e[1] - e[0], 0.005) and np.isclose(e[-1], 5.995)
    assert samples.edos.shape == (len(METALS) * 2 * 9, *EDOS_SHAPE)
    assert samples.edos.dtype == np.float32
    # 10 d states (5 orbitals x 2 spins) on the metal, all inside the window.
    d_states = samples.edos[:, :, 4:9, 0].sum(axis=(1, 2)) * 0.005
    np.testing.assert_allclose(d_states, 10.0, atol=0.02)


def test_adsorbate_channels_are_zero_padded(samples) -> None:
    for i, ads in enumerate(samples.adsorbate[:9]):
        atoms = ADSORBATE_ATOMS[ads]
        per_channel = np.abs(samples.edos[i]).sum(axis=(0, 1))
        assert np.all(per_channel[1 : 1 + len(atoms)] > 0.5), ads
        assert np.all(per_channel[1 + len(atoms) :] == 0), ads
        # hydrogen atoms carry only s states; no adsorbate atom has d states
        for k, atom in enumerate(atoms, start=1):
            assert np.all(samples.edos[i, :, 4:, k] == 0)
            if atom == "H":
                assert np.all(samples.edos[i, :, 1:4, k] == 0)


def test_deterministic_and_independent_of_selection() -> None:
    a = render_sample(7, "Fe", "C2N", "COOH")
    b = render_sample(7, "Fe", "C2N", "COOH")
    c = render_sample(8, "Fe", "C2N", "COOH")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    one = generate_samples(seed=7, metals=["Fe"], supports=["C2N"], adsorbates=["COOH"])
    many = generate_samples(seed=7, metals=["Co", "Fe"], supports=["BP", "C2N"])
    j = next(k for k in range(len(many.metal)) if (many.metal[k], many.support[k], many.adsorbate[k]) == ("Fe", "C2N", "COOH"))
    np.testing.assert_array_equal(one.edos[0], many.edos[j])
    assert one.e_ads_ev[0] == many.e_ads_ev[j]


def test_d_band_centre_follows_filling(samples) -> None:
    eps = {m: samples.eps_d_ev[samples.metal.index(m)] for m in METALS}
    # across the 3d row the d band sinks as it fills; d10 Zn lies deepest
    assert eps["Sc"] > eps["Mn"] > eps["Fe"] > eps["Ni"] > eps["Cu"] > eps["Zn"]


def test_energy_relation_recoverable_from_arrays(samples) -> None:
    """Regressing E_ads on (eps_d, w_d) computed from the arrays gives back alpha/gamma/beta."""
    em = EnergyModel()
    coef = em.coefficients()
    eps, width = d_band_moments(samples.edos)
    np.testing.assert_allclose(eps, samples.eps_d_ev, atol=1e-4)
    ads = np.array(samples.adsorbate)
    for z, k in coef.items():
        m = ads == z
        x = np.column_stack([eps[m], width[m] - em.width_ref_ev, np.ones(m.sum())])
        fit, *_ = np.linalg.lstsq(x, samples.e_ads_ev[m], rcond=None)
        assert k["alpha"] < 0 and fit[0] < 0, z
        assert fit[0] == pytest.approx(k["alpha"], abs=0.03), z
        assert fit[2] == pytest.approx(k["beta"], abs=0.08), z
        resid = samples.e_ads_ev[m] - x @ fit
        assert 0.02 < resid.std() < 0.08, z  # the generator's noise (0.05 eV), not zero


@pytest.mark.parametrize("name", ["set.h5", "set.zarr", "folder"])
def test_written_formats_round_trip(tmp_path: Path, name: str) -> None:
    out = tmp_path / name
    truth = synth_edos(out, seed=1, metals=["Fe", "Cu"], supports=["BN"], adsorbates=["CO", "OH"])
    assert truth.n_samples == 4
    ref = generate_samples(seed=1, metals=["Fe", "Cu"], supports=["BN"], adsorbates=["CO", "OH"])
    with open_edos(out) as ds:
        assert len(ds) == 4
        assert sorted(ds.candidates()) == [("Cu", "BN"), ("Fe", "BN")]
        i = ds.find("Cu", "BN", "OH")
        j = 3  # generation order: metal, support, variant, adsorbate
        np.testing.assert_array_equal(ds.read(i, i + 1)[0], ref.edos[j])
        assert ds.e_ads_ev[i] == pytest.approx(ref.e_ads_ev[j], abs=1e-6)
    side = json.loads(truth_path(out).read_text())
    assert side["seed"] == 1 and side["noise_ev"] == 0.05
    assert set(side["coefficients"]) == set(ADSORBATE_ATOMS)
    assert all(v["alpha"] < 0 for v in side["coefficients"].values())


def test_cli_writes_dataset(tmp_path: Path) -> None:
    from tessera.app.cli.main import main

    out = tmp_path / "cli.h5"
    code = main(["synth", "edos", "--out", str(out), "--metals", "Fe,Co", "--supports", "BP", "--seed", "2"])
    assert code == 0
    with open_edos(out) as ds:
        assert len(ds) == 18 and set(ds.support) == {"BP"}
    assert main(["synth", "edos", "--out", str(tmp_path / "x.h5"), "--metals", "Kr"]) == 2
