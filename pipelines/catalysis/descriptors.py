"""d-band descriptors of the metal atom, computed from an eDOS array.

The d-band model (Hammer and Nørskov) ties adsorbate binding to the first moment of the metal's
d-projected DOS: the closer the d-band centre lies to the Fermi level, the more antibonding
adsorbate-metal states are pushed above E_F and left empty, and the stronger the bond. Both
moments are taken over the whole energy window of the layout (-14..6 eV), on the metal channel,
summed over the five d orbitals::

    eps_d = ∫ E rho_d(E) dE / ∫ rho_d(E) dE                 (eV, relative to E_F)
    w_d   = sqrt(∫ (E - eps_d)^2 rho_d(E) dE / ∫ rho_d(E) dE)  (eV, rms width)
"""

from __future__ import annotations

import numpy as np

from tessera.pipelines.catalysis.layout import D_SLICE, METAL_CHANNEL, energy_grid_ev


def d_band_moments(edos: np.ndarray, energy_ev: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(d-band centre, rms d-band width) in eV for eDOS arrays ``[..., E, 9, 6]``.

    Returns arrays of the leading shape; NaN where the metal has no d states in the window.
    """
    e = energy_grid_ev() if energy_ev is None else np.asarray(energy_ev, dtype=np.float64)
    rho = np.asarray(edos[..., D_SLICE, METAL_CHANNEL], dtype=np.float64).sum(axis=-1)
    norm = rho.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        centre = (rho * e).sum(axis=-1) / norm
        second = (rho * e**2).sum(axis=-1) / norm
    width = np.sqrt(np.clip(second - centre**2, 0.0, None))
    return centre, width


def d_band_centre(edos: np.ndarray, energy_ev: np.ndarray | None = None) -> np.ndarray:
    """d-band centre eps_d (eV relative to E_F) of eDOS arrays ``[..., E, 9, 6]``."""
    return d_band_moments(edos, energy_ev)[0]
