"""The two-dimensional volcano: U_L over a (G_CO, G_OH) grid through the hybrid scaling relations.

Every intermediate's free energy is written through its scaling relation as a function of
(G_CO, G_OH), so the limiting potential of the whole path becomes a map over the plane; a
candidate's position on it tells which step limits it and how far it is from the apex.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from tessera.pipelines.catalysis.che import PATH_ADSORBATES, CheSettings, limiting_potential
from tessera.pipelines.catalysis.scaling import ScalingFit, scaled_free_energies


@dataclass(frozen=True)
class VolcanoMap:
    """U_L (V vs RHE) and the limiting step index on a grid; axes in eV."""

    g_co_ev: np.ndarray  # [nx]
    g_oh_ev: np.ndarray  # [ny]
    u_l_v: np.ndarray  # [ny, nx]
    step_index: np.ndarray  # [ny, nx]

    @property
    def apex(self) -> tuple[float, float, float]:
        """(G_CO, G_OH, U_L) of the best grid point."""
        iy, ix = np.unravel_index(int(np.argmax(self.u_l_v)), self.u_l_v.shape)
        return float(self.g_co_ev[ix]), float(self.g_oh_ev[iy]), float(self.u_l_v[iy, ix])


def volcano_map(
    fits: Mapping[str, ScalingFit],
    *,
    g_co_range_ev: tuple[float, float],
    g_oh_range_ev: tuple[float, float],
    n: int = 241,
    settings: CheSettings | None = None,
) -> VolcanoMap:
    """U_L over the (G_CO, G_OH) rectangle, every path intermediate from its scaling relation."""
    missing = [z for z in PATH_ADSORBATES if z not in fits]
    if missing:
        msg = f"the volcano needs scaling relations for {missing}"
        raise ValueError(msg)
    g_co = np.linspace(*g_co_range_ev, n)
    g_oh = np.linspace(*g_oh_range_ev, n)
    co, oh = np.meshgrid(g_co, g_oh)
    g = scaled_free_energies({z: fits[z] for z in PATH_ADSORBATES}, co, oh)
    lp = limiting_potential(g, settings)
    return VolcanoMap(g_co, g_oh, lp.u_l_v, lp.step_index)
