"""A stand-in predictor for tests: the synthetic generator's own noise-free energy.

It reads the adsorbate from the eDOS itself (how many adsorbate channels are filled and which
of them are hydrogen: s states only), then applies the generator's d-band model to the metal
channel — so screening and interpretation can be tested without trained weights.
"""

from __future__ import annotations

import numpy as np

from tessera.pipelines.catalysis.layout import ADSORBATE_ATOMS
from tessera.pipelines.synthetic.edos import EnergyModel

# the small dataset of the screening tests (conftest.small_edos)
METALS = ["Sc", "Ti", "Mn", "Fe", "Co", "Ni", "Cu", "Ru", "Rh", "Pt", "Zn"]
SUPPORTS = ["N-graphene", "BN"]

_SIGNATURES = {(len(atoms), tuple(a == "H" for a in atoms)): name for name, atoms in ADSORBATE_ATOMS.items()}


def adsorbate_of(edos: np.ndarray) -> str:
    filled = [ch for ch in range(1, 6) if np.any(edos[:, :, ch])]
    is_h = tuple(not np.any(edos[:, 1:, ch]) for ch in filled)
    return _SIGNATURES[(len(filled), is_h)]


class OraclePredictor:
    """``edos [B, 4000, 9, 6] -> E_ads [B]`` (eV) from the generator's energy model."""

    def __init__(self, model: EnergyModel | None = None) -> None:
        self.model = model or EnergyModel()
        self.calls = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.array([float(self.model.energy_from_edos(adsorbate_of(x), x)) for x in batch])

    def __repr__(self) -> str:
        return "OraclePredictor()"
