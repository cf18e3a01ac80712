"""Hybrid scaling relations: G_Z = a_Z G_CO + b_Z G_OH + c_Z, fitted by least squares.

C-bound intermediates scale mostly with *CO and O-bound ones with *OH; using both as
descriptors (a "hybrid" relation) lets one (G_CO, G_OH) map hold every intermediate, which is
what makes a two-dimensional volcano possible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

DESCRIPTORS: tuple[str, str] = ("CO", "OH")


@dataclass(frozen=True)
class ScalingFit:
    """One fitted relation and its quality (eV; coefficients dimensionless except c)."""

    adsorbate: str
    a_co: float
    b_oh: float
    c_ev: float
    r2: float
    mae_ev: float
    rmse_ev: float
    n: int
    stderr: tuple[float, float, float]  # standard errors of a, b, c

    def predict(self, g_co_ev: np.ndarray, g_oh_ev: np.ndarray) -> np.ndarray:
        return self.a_co * np.asarray(g_co_ev) + self.b_oh * np.asarray(g_oh_ev) + self.c_ev

    def to_json(self) -> dict:
        d = asdict(self)
        d["stderr"] = list(self.stderr)
        return d


def fit_hybrid_scaling(
    g_ev: Mapping[str, np.ndarray], adsorbates: Sequence[str] | None = None
) -> dict[str, ScalingFit]:
    """Least-squares fit of every adsorbate's G against (G_CO, G_OH) over candidates.

    ``g_ev`` maps adsorbate -> free energies (eV), one value per candidate, aligned; NaN
    entries (a candidate without that adsorbate) are left out of that adsorbate's fit. CO and
    OH themselves are returned as the identity relations (R² = 1) so callers can treat every
    adsorbate alike. Raises ValueError when fewer than 4 candidates have an adsorbate.
    """
    g_co = np.asarray(g_ev["CO"], dtype=np.float64)
    g_oh = np.asarray(g_ev["OH"], dtype=np.float64)
    names = [z for z in (adsorbates or list(g_ev)) if z in g_ev]
    fits: dict[str, ScalingFit] = {}
    for z in names:
        if z in DESCRIPTORS:
            a, b = (1.0, 0.0) if z == "CO" else (0.0, 1.0)
            n = int(np.isfinite(g_ev[z]).sum())
            fits[z] = ScalingFit(z, a, b, 0.0, 1.0, 0.0, 0.0, n, (0.0, 0.0, 0.0))
            continue
        y = np.asarray(g_ev[z], dtype=np.float64)
        ok = np.isfinite(y) & np.isfinite(g_co) & np.isfinite(g_oh)
        n = int(ok.sum())
        if n < 4:
            msg = f"cannot fit a scaling relation for {z}: only {n} candidates have G_CO, G_OH and G_{z}"
            raise ValueError(msg)
        x = np.column_stack([g_co[ok], g_oh[ok], np.ones(n)])
        coef, *_ = np.linalg.lstsq(x, y[ok], rcond=None)
        resid = y[ok] - x @ coef
        ss_res = float(resid @ resid)
        ss_tot = float(((y[ok] - y[ok].mean()) ** 2).sum())
        dof = max(n - 3, 1)
        cov = ss_res / dof * np.linalg.pinv(x.T @ x)
        fits[z] = ScalingFit(
            adsorbate=z,
            a_co=float(coef[0]),
            b_oh=float(coef[1]),
            c_ev=float(coef[2]),
            r2=1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
            mae_ev=float(np.abs(resid).mean()),
            rmse_ev=float(np.sqrt(ss_res / n)),
            n=n,
            stderr=tuple(float(s) for s in np.sqrt(np.clip(np.diag(cov), 0, None))),  # type: ignore[arg-type]
        )
    return fits


def scaled_free_energies(
    fits: Mapping[str, ScalingFit], g_co_ev: np.ndarray, g_oh_ev: np.ndarray
) -> dict[str, np.ndarray]:
    """Every fitted adsorbate's G (eV) predicted from (G_CO, G_OH); arrays broadcast."""
    return {z: f.predict(g_co_ev, g_oh_ev) for z, f in fits.items()}
