"""CHE free-energy path, limiting potentials and hybrid scaling fits, on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from tessera.pipelines.catalysis.che import (
    PATH_ADSORBATES,
    STEP_LABELS,
    CheSettings,
    free_energies,
    limiting_potential,
    state_free_energies,
    states_at_potential,
    step_free_energies,
)
from tessera.pipelines.catalysis.scaling import fit_hybrid_scaling, scaled_free_energies

# Free energies (eV) worked by hand below.
G = {"COOH": 0.3, "CO": -0.2, "CHO": 0.4, "CH2O": 0.1, "OCH3": -0.5, "O": 0.5, "OH": 0.2}


def test_path_states_and_steps_by_hand() -> None:
    states = state_free_energies(G)
    # * + CO2, *COOH, *CO, *CHO, *CH2O, *OCH3, *O + CH4 (-1.35), *OH (+CH4), * + H2O (+CH4)
    np.testing.assert_allclose(states, [0, 0.3, -0.2, 0.4, 0.1, -0.5, -0.85, -1.15, -1.35])
    steps = step_free_energies(states)
    np.testing.assert_allclose(steps, [0.3, -0.5, 0.6, -0.3, -0.6, -0.35, -0.3, -0.2])
    assert steps.sum() == pytest.approx(-1.35)  # CO2 + 8(H+ + e-) -> CH4 + 2 H2O, whatever the SAC


def test_limiting_potential_and_step() -> None:
    lp = limiting_potential(G)
    assert float(lp.u_l_v) == pytest.approx(-0.6)
    assert int(lp.step_index) == 2 and lp.step_label == "*CO → *CHO"
    assert float(lp.overpotential_v) == pytest.approx(1.35 / 8 + 0.6)
    # At U = U_L every step is downhill (the hardest exactly flat); 10 mV less negative is not.
    at_ul = step_free_energies(states_at_potential(state_free_energies(G), -0.6))
    assert at_ul.max() == pytest.approx(0.0, abs=1e-12)
    assert step_free_energies(states_at_potential(state_free_energies(G), -0.59)).max() > 0
    strong_oh = dict(G, OH=-0.7)  # OH bound too strongly: removing it as water limits
    lp2 = limiting_potential(strong_oh)
    assert float(lp2.u_l_v) == pytest.approx(-0.7) and lp2.step_label == STEP_LABELS[-1]


def test_potential_shift_is_n_e_u() -> None:
    states = state_free_energies(G)
    shifted = states_at_potential(states, -0.3)
    np.testing.assert_allclose(shifted - states, -0.3 * np.arange(9))


def test_vectorised_over_candidates_and_settings() -> None:
    many = {z: np.array([G[z], G[z] + 0.1]) for z in PATH_ADSORBATES}
    lp = limiting_potential(many)
    assert lp.u_l_v.shape == (2,)
    assert lp.u_l_v[0] == pytest.approx(-0.6)
    settings = CheSettings(corrections_ev={"CO": 0.4, "OH": 0.35}, ch4_formation_ev=-1.6)
    assert settings.equilibrium_potential_v == pytest.approx(0.2)
    g = free_energies({"CO": -1.0, "OH": 0.0, "H": 0.1}, settings)
    assert float(g["CO"]) == pytest.approx(-0.6) and float(g["OH"]) == pytest.approx(0.35)
    assert float(g["H"]) == pytest.approx(0.1)  # no correction given -> none applied
    assert CheSettings().equilibrium_potential_v == pytest.approx(0.17, abs=0.002)  # 1.35 eV / 8


def test_hybrid_scaling_recovers_known_coefficients() -> None:
    rng = np.random.default_rng(0)
    g_co = rng.uniform(-1.0, 0.8, 120)
    g_oh = 0.8 * g_co + rng.normal(0.0, 0.3, 120)  # correlated descriptors, as on real SACs
    true = {"COOH": (0.45, 0.30, 0.55), "O": (0.15, 1.60, 0.95)}
    g = {"CO": g_co, "OH": g_oh}
    for z, (a, b, c) in true.items():
        g[z] = a * g_co + b * g_oh + c + rng.normal(0.0, 0.03, 120)
    g["O"][5] = np.nan  # a candidate without *O is left out of that fit only
    fits = fit_hybrid_scaling(g)
    for z, (a, b, c) in true.items():
        f = fits[z]
        assert f.a_co == pytest.approx(a, abs=0.03) and f.b_oh == pytest.approx(b, abs=0.03)
        assert f.c_ev == pytest.approx(c, abs=0.02)
        assert f.r2 > 0.98 and 0.015 < f.mae_ev < 0.04
        assert abs(f.a_co - a) < 4 * f.stderr[0]
    assert fits["O"].n == 119 and fits["COOH"].n == 120
    assert fits["CO"].a_co == 1.0 and fits["OH"].b_oh == 1.0
    pred = scaled_free_energies(fits, np.array([0.0]), np.array([0.0]))
    assert pred["COOH"][0] == pytest.approx(fits["COOH"].c_ev)


def test_scaling_needs_enough_candidates() -> None:
    g = {"CO": np.arange(3.0), "OH": np.arange(3.0), "COOH": np.arange(3.0)}
    with pytest.raises(ValueError, match="COOH"):
        fit_hybrid_scaling(g)
