"""CO2 reduction to methane with the computational hydrogen electrode (CHE).

Path (8 proton-electron transfers, Yang et al.)::

    CO2 -> *COOH -> *CO (+H2O) -> *CHO -> *CH2O -> *OCH3 -> *O (+CH4) -> *OH -> * (+H2O)

Conventions (all energies in eV, potentials in V vs the reversible hydrogen electrode, RHE):

- Adsorption energies ``E_Z`` are relative to gas-phase CO2, H2O and H2 and the clean SAC,
  i.e. the atoms of Z come from the references C = CO2 - 2 H2O + 2 H2, O = H2O - H2,
  H = 1/2 H2 (so *COOH: CO2 + 1/2 H2 -> *COOH; *OH: H2O - 1/2 H2 -> *OH).
- Free energies ``G_Z = E_Z + corr_Z`` where ``corr_Z`` is ΔZPE - TΔS (plus any solvation
  term) of the adsorbate relative to those references at 298.15 K. The defaults below are
  typical magnitudes for these adsorbates used in CHE studies (about +0.05 eV for *O to
  +0.65 eV for *OCH3, +0.24 eV for *H as in the HER literature); pass your own
  ``corrections_ev`` for real DFT data.
- Gas products: ΔG(CO2 + 4 H2 -> CH4 + 2 H2O(l)) = -1.35 eV at standard conditions (NIST
  formation free energies), hence the equilibrium potential U_eq = 1.35 / 8 = 0.17 V vs RHE.
  H2O is a reference, so releasing it costs nothing here.
- CHE: (H+ + e-) at potential U has the free energy of 1/2 H2 minus eU. State n of the path
  (n pairs consumed) therefore has ``G_n(U) = G_n(0) + n e U``, each step
  ``ΔG_i(U) = ΔG_i(0) + eU``, and the limiting potential — the least negative U at which every
  step is downhill — is ``U_L = -max_i ΔG_i(0) / e``; that step is the potential-limiting step.
  Overpotential η = U_eq - U_L.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

# (adsorbate on the surface after the step, gas released in the step, label)
PATH: tuple[tuple[str | None, str | None, str], ...] = (
    ("COOH", None, "CO2 → *COOH"),
    ("CO", "H2O", "*COOH → *CO"),
    ("CHO", None, "*CO → *CHO"),
    ("CH2O", None, "*CHO → *CH2O"),
    ("OCH3", None, "*CH2O → *OCH3"),
    ("O", "CH4", "*OCH3 → *O + CH4"),
    ("OH", None, "*O → *OH"),
    (None, "H2O", "*OH → * + H2O"),
)
STEP_LABELS: tuple[str, ...] = tuple(label for _, _, label in PATH)
STATE_LABELS: tuple[str, ...] = (
    "* + CO2", "*COOH", "*CO", "*CHO", "*CH2O", "*OCH3", "*O + CH4", "*OH", "* + H2O",
)
PATH_ADSORBATES: tuple[str, ...] = tuple(z for z, _, _ in PATH if z is not None)
N_ELECTRONS = len(PATH)

DEFAULT_CORRECTIONS_EV: dict[str, float] = {
    "CO2": 0.55,
    "COOH": 0.50,
    "CO": 0.40,
    "CHO": 0.45,
    "CH2O": 0.55,
    "OCH3": 0.65,
    "O": 0.05,
    "OH": 0.35,
    "H": 0.24,
}
DEFAULT_CH4_FORMATION_EV = -1.35  # ΔG(CO2 + 4 H2 -> CH4 + 2 H2O(l)), 298.15 K, 1 bar


@dataclass(frozen=True)
class CheSettings:
    """Thermodynamic settings: ΔZPE - TΔS corrections per adsorbate and the gas-phase ΔG."""

    corrections_ev: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_CORRECTIONS_EV))
    ch4_formation_ev: float = DEFAULT_CH4_FORMATION_EV

    @property
    def equilibrium_potential_v(self) -> float:
        """U_eq (V vs RHE) of CO2 -> CH4: -ΔG / (8 e)."""
        return -self.ch4_formation_ev / N_ELECTRONS

    def gas_free_energy_ev(self, gas: str | None) -> float:
        return {None: 0.0, "H2O": 0.0, "CH4": self.ch4_formation_ev}[gas]

    def to_json(self) -> dict:
        return {
            "corrections_ev": self.corrections_ev,
            "ch4_formation_ev": self.ch4_formation_ev,
            "equilibrium_potential_v_rhe": self.equilibrium_potential_v,
            "convention": "G_Z = E_Z + corr_Z vs CO2(g), H2O(l), H2(g); G_n(U) = G_n(0) + n e U; "
            "U_L = -max_i ΔG_i(0) / e (V vs RHE)",
        }


def free_energies(
    e_ads_ev: Mapping[str, np.ndarray | float], settings: CheSettings | None = None
) -> dict[str, np.ndarray]:
    """Adsorption free energies G_Z = E_Z + (ΔZPE - TΔS)_Z in eV, for every adsorbate given."""
    settings = settings or CheSettings()
    return {
        z: np.asarray(e, dtype=np.float64) + settings.corrections_ev.get(z, 0.0)
        for z, e in e_ads_ev.items()
    }


def state_free_energies(
    g_ev: Mapping[str, np.ndarray | float], settings: CheSettings | None = None
) -> np.ndarray:
    """G_n(0) of the nine path states (eV, U = 0 V vs RHE), shape ``(..., 9)``.

    ``g_ev`` maps each path adsorbate (COOH, CO, CHO, CH2O, OCH3, O, OH) to its free energy;
    arrays broadcast, so one call handles many candidates.
    """
    settings = settings or CheSettings()
    gas = 0.0
    states = [np.zeros(np.broadcast(*[np.asarray(g_ev[z]) for z in PATH_ADSORBATES]).shape)]
    for ads, released, _ in PATH:
        gas += settings.gas_free_energy_ev(released)
        surface = 0.0 if ads is None else np.asarray(g_ev[ads], dtype=np.float64)
        states.append(surface + gas + states[0])
    return np.stack(states, axis=-1)


def states_at_potential(states_ev: np.ndarray, potential_v: float) -> np.ndarray:
    """G_n(U) = G_n(0) + n e U of path states ``(..., 9)`` at ``potential_v`` (V vs RHE)."""
    n = np.arange(states_ev.shape[-1])
    return states_ev + n * potential_v


def step_free_energies(states_ev: np.ndarray) -> np.ndarray:
    """ΔG_i(0) of the eight steps, eV, shape ``(..., 8)``."""
    return np.diff(states_ev, axis=-1)


@dataclass(frozen=True)
class LimitingPotential:
    """U_L (V vs RHE), the index and label of the potential-limiting step, overpotential (V)."""

    u_l_v: np.ndarray
    step_index: np.ndarray
    overpotential_v: np.ndarray

    @property
    def step_label(self) -> np.ndarray:
        return np.asarray(STEP_LABELS, dtype=object)[self.step_index]


def limiting_potential(
    g_ev: Mapping[str, np.ndarray | float], settings: CheSettings | None = None
) -> LimitingPotential:
    """U_L = -max_i ΔG_i(0)/e and the potential-limiting step, from adsorption free energies."""
    settings = settings or CheSettings()
    steps = step_free_energies(state_free_energies(g_ev, settings))
    idx = np.argmax(steps, axis=-1)
    u_l = -np.max(steps, axis=-1)
    return LimitingPotential(
        u_l_v=u_l, step_index=idx, overpotential_v=settings.equilibrium_potential_v - u_l
    )
