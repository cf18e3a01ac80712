"""The published eDOS array layout and the chemical vocabulary of SAC screening.

One sample is the electronic density of states (eDOS) of a single-atom catalyst (SAC) with one
adsorbate, as in Yang et al. ("Convolutional neural networks and volcano plots: screening and
prediction of two-dimensional single-atom catalysts"): a float array of shape
``(4000, 9, 6)`` with axes ``EOC``:

- E: 4000 energies from -14 to 5.995 eV in 0.005 eV steps, relative to the Fermi level (E - E_F);
- O: 9 orbitals ``s, py, pz, px, dxy, dyz, dz2, dxz, dx2-y2`` (VASP's lm order);
- C: 6 atomic channels: the metal atom, then up to 5 adsorbate atoms (binding atom first),
  zero-padded.

Values are projected DOS in states/eV, spin channels summed.
"""

from __future__ import annotations

import numpy as np

ENERGY_MIN_EV = -14.0
ENERGY_STEP_EV = 0.005
N_ENERGY = 4000
ORBITALS: tuple[str, ...] = ("s", "py", "pz", "px", "dxy", "dyz", "dz2", "dxz", "dx2-y2")
D_ORBITALS: tuple[str, ...] = ORBITALS[4:]
D_SLICE = slice(4, 9)
N_ORBITALS = len(ORBITALS)
N_CHANNELS = 6
METAL_CHANNEL = 0
EDOS_SHAPE: tuple[int, int, int] = (N_ENERGY, N_ORBITALS, N_CHANNELS)
EDOS_AXES = "EOC"
LAYOUT_ID = "tessera-edos/1"


def energy_grid_ev() -> np.ndarray:
    """The 4000 energies of the layout, eV relative to the Fermi level (float64)."""
    return ENERGY_MIN_EV + ENERGY_STEP_EV * np.arange(N_ENERGY, dtype=np.float64)


# Adsorbates and their atoms in channel order (binding atom first), channels 1..5.
ADSORBATE_ATOMS: dict[str, tuple[str, ...]] = {
    "CO2": ("C", "O", "O"),
    "COOH": ("C", "O", "O", "H"),
    "CO": ("C", "O"),
    "CHO": ("C", "O", "H"),
    "CH2O": ("C", "O", "H", "H"),
    "OCH3": ("O", "C", "H", "H", "H"),
    "O": ("O",),
    "OH": ("O", "H"),
    "H": ("H",),
}
ADSORBATES: tuple[str, ...] = tuple(ADSORBATE_ATOMS)

# Supports: canonical short name -> long name, and the spellings accepted on input.
SUPPORTS: dict[str, str] = {
    "g-C3N4": "graphitic carbon nitride",
    "N-graphene": "N-doped graphene (MN4)",
    "DV-graphene": "dual-vacancy graphene (MC4)",
    "C2N": "C2N holey graphene",
    "BN": "hexagonal boron nitride",
    "BP": "black phosphorus",
}
_SUPPORT_ALIASES: dict[str, str] = {
    "gc3n4": "g-C3N4",
    "c3n4": "g-C3N4",
    "ng": "N-graphene",
    "n-graphene": "N-graphene",
    "n-doped graphene": "N-graphene",
    "ndoped-graphene": "N-graphene",
    "dv-graphene": "DV-graphene",
    "dvg": "DV-graphene",
    "dual-vacancy graphene": "DV-graphene",
    "c2n": "C2N",
    "bn": "BN",
    "h-bn": "BN",
    "hbn": "BN",
    "bp": "BP",
    "black phosphorus": "BP",
    "phosphorene": "BP",
}

# Transition metals -> (period, group): 3d, 4d and 5d rows (La stands in group 3 of row 6).
METALS: dict[str, tuple[int, int]] = {
    **{s: (4, g) for g, s in enumerate(("Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn"), 3)},
    **{s: (5, g) for g, s in enumerate(("Y", "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd"), 3)},
    **{s: (6, g) for g, s in enumerate(("La", "Hf", "Ta", "W", "Re", "Os", "Ir", "Pt", "Au", "Hg"), 3)},
}


def canonical_support(name: str) -> str:
    """The canonical support name for a spelling such as 'NG', 'h-BN' or 'g-C3N4'."""
    if name in SUPPORTS:
        return name
    key = name.strip().lower().replace("_", "-")
    if key in _SUPPORT_ALIASES:
        return _SUPPORT_ALIASES[key]
    for canon in SUPPORTS:
        if canon.lower() == key:
            return canon
    return name.strip()  # unknown supports are allowed; they just have no preset physics


def canonical_adsorbate(name: str) -> str:
    """The canonical adsorbate name ('*COOH', 'cooh' -> 'COOH'); ValueError if unknown."""
    key = name.strip().lstrip("*").upper()
    for canon in ADSORBATES:
        if canon.upper() == key:
            return canon
    msg = f"unknown adsorbate {name!r}; expected one of {', '.join(ADSORBATES)}"
    raise ValueError(msg)


def canonical_metal(name: str) -> str:
    """The element symbol with its usual capitalisation ('fe' -> 'Fe')."""
    key = name.strip()
    return key[:1].upper() + key[1:].lower()
