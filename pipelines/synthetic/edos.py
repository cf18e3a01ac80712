"""Synthetic single-atom-catalyst eDOS with adsorption energies from a d-band model.

Each sample is the projected DOS of a metal atom anchored on a 2D support with one CO2RR
adsorbate, in the published layout ``(4000, 9, 6)`` (see ``tessera.pipelines.catalysis.layout``),
plus its adsorption energy. The physics, kept simple but faithful in its trends:

- **Metal d states.** Each of the five d orbitals is a semi-elliptic band (2 states, spins
  summed) whose centre follows d-band filling across a row (-0.42 eV per d electron, the d10
  metals Zn/Cd/Hg sit deep), the row (4d/5d bands lower and wider) and the support (coordination
  and charge transfer shift and broaden the band; the ligand field splits the orbitals in the
  planar MN4/MC4-like pattern, dx2-y2 highest). Metal s and p states are broad bands above E_F.
- **Adsorbate states.** Each adsorbate has a handful of molecular orbitals (levels in eV
  relative to E_F, coupling V to the metal, sigma (dz2) or pi (dxz/dyz) symmetry, weights on its
  atoms' s/p orbitals). Each couples to the metal d orbital of its symmetry as a two-level
  Newns-Anderson-style problem: bonding and antibonding states at
  ``(eps_a + c)/2 -/+ sqrt(((c - eps_a)/2)^2 + V^2)`` carrying adsorbate weight
  ``cos^2 theta``/``sin^2 theta`` (broadened by the MO's width). The metal's s/p orbitals of the
  same symmetry carry a small share of these hybrid states. The metal *d* channel is the site's
  d band, the same for every adsorbate on a SAC — the d-band model's descriptor is a property
  of the clean site, and the published inputs likewise pair the clean catalyst's metal DOS with
  the adsorbate's. Levels jitter per sample (adsorption geometry), so adsorbate peaks are only
  a noisy proxy of the d band and the energy has to be read from the metal channel.
- **Energies.** With ``eps_d`` and ``w_d`` the d-band centre and rms width computed *from the
  generated metal channel* (``tessera.pipelines.catalysis.descriptors``), the CO and OH
  adsorption energies follow the d-band model ``E = alpha*(eps_d - E_F) + gamma*(w_d - w_ref)
  + beta`` with alpha < 0 (binding strengthens as eps_d rises toward E_F) and gamma < 0 (a
  wider band reaches higher, Xin-Linic upper-edge picture); the other seven adsorbates follow
  hybrid scaling relations ``E_Z = a_Z E_CO + b_Z E_OH + c_Z`` (C-bound species scale with CO,
  O-bound ones with OH), so every adsorbate has its own alpha/gamma/beta. Gaussian noise
  (``noise_ev``) is added per sample. All coefficients are written to the JSON sidecar.

Energies are adsorption energies relative to gas-phase CO2, H2O and H2 (e.g. *COOH from
CO2 + 1/2 H2), electronic (no ZPE/entropy): ``tessera.pipelines.catalysis.che`` adds those.
Deterministic for a seed: each (metal, support, variant) and each sample draws from its own
seeded stream, so a sample does not depend on which other samples were requested.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter1d

from tessera.pipelines.catalysis.descriptors import d_band_moments
from tessera.pipelines.catalysis.layout import (
    ADSORBATES,
    EDOS_SHAPE,
    METAL_CHANNEL,
    METALS,
    ORBITALS,
    SUPPORTS,
    energy_grid_ev,
)
from tessera.pipelines.progress import NullProgress, ProgressReporter

GENERATOR_ID = "tessera.synthetic.edos/1"
_O = {name: i for i, name in enumerate(ORBITALS)}
_SMEARING_EV = 0.08  # Gaussian smearing of every state, as a DFT DOS is smeared
_HALF_WIDTH_EV = {4: 1.05, 5: 1.45, 6: 1.75}  # semi-elliptic half-width per orbital, by period
_ROW_SHIFT_EV = {4: 0.0, 5: -0.15, 6: -0.30}
# Ligand-field pattern of a planar four-fold site (sums to zero): dxy, dyz, dz2, dxz, dx2-y2.
_LIGAND_FIELD = np.array([0.10, -0.25, -0.20, -0.25, 0.60])


@dataclass(frozen=True)
class SupportPhysics:
    """How a support moves the metal's d band: centre shift (eV), width factor, ligand field (eV)."""

    eps_shift_ev: float
    width_factor: float
    ligand_field_ev: float
    sp_shift_ev: float


SUPPORT_PHYSICS: dict[str, SupportPhysics] = {
    "g-C3N4": SupportPhysics(0.15, 1.00, 1.0, 0.2),
    "N-graphene": SupportPhysics(0.00, 1.05, 1.2, 0.0),
    "DV-graphene": SupportPhysics(-0.20, 1.15, 1.0, -0.2),
    "C2N": SupportPhysics(0.30, 0.90, 0.8, 0.3),
    "BN": SupportPhysics(0.45, 0.80, 0.5, 0.5),
    "BP": SupportPhysics(0.10, 1.10, 0.7, -0.1),
}


@dataclass(frozen=True)
class MolecularOrbital:
    """One adsorbate state: level (eV vs E_F), coupling V (eV), symmetry, width, weights."""

    name: str
    level_ev: float
    coupling_ev: float
    symmetry: str  # "sigma" couples to dz2, "pi" to dxz + dyz
    sigma_ev: float
    states: float  # spin-summed capacity (2 per orbital, 4 for a degenerate pi pair)
    weights: dict[tuple[int, str], float]  # (adsorbate atom index, orbital) -> share


def _mo(name: str, level: float, v: float, sym: str, sig: float, states: float, w: dict) -> MolecularOrbital:
    total = sum(w.values())
    return MolecularOrbital(name, level, v, sym, sig, states, {k: x / total for k, x in w.items()})


# Molecular orbitals in the -14..6 eV window (levels typical of adsorbed species' PDOS).
MOLECULAR_ORBITALS: dict[str, tuple[MolecularOrbital, ...]] = {
    "CO2": (
        _mo("4sg", -10.5, 0.4, "sigma", 0.35, 2, {(0, "s"): 3, (1, "s"): 2, (2, "s"): 2, (1, "pz"): 1.5, (2, "pz"): 1.5}),
        _mo("1pu", -8.2, 0.5, "pi", 0.30, 4, {(1, "px"): 2, (1, "py"): 2, (2, "px"): 2, (2, "py"): 2, (0, "px"): 1, (0, "py"): 1}),
        _mo("1pg", -6.0, 0.4, "pi", 0.25, 4, {(1, "px"): 1, (1, "py"): 1, (2, "px"): 1, (2, "py"): 1}),
        _mo("2pu*", 1.2, 1.0, "sigma", 0.40, 2, {(0, "pz"): 5, (0, "px"): 2, (1, "pz"): 1.5, (2, "pz"): 1.5}),
    ),
    "COOH": (
        _mo("OH-s", -9.8, 0.3, "sigma", 0.30, 2, {(2, "s"): 3, (2, "pz"): 2, (3, "s"): 5}),
        _mo("CO-s", -8.6, 0.6, "sigma", 0.30, 2, {(0, "s"): 3, (1, "s"): 2, (1, "pz"): 2, (2, "pz"): 3}),
        _mo("pi", -7.0, 0.6, "pi", 0.30, 4, {(0, "px"): 2, (0, "py"): 2, (1, "px"): 3, (1, "py"): 3}),
        _mo("lp", -4.8, 0.5, "pi", 0.25, 4, {(1, "px"): 3.5, (1, "py"): 3.5, (2, "px"): 1.5, (2, "py"): 1.5}),
        _mo("MC-s", -3.2, 1.6, "sigma", 0.30, 2, {(0, "pz"): 6, (0, "s"): 2, (1, "pz"): 2}),
        _mo("pi*", 2.4, 1.0, "pi", 0.45, 4, {(0, "px"): 3, (0, "py"): 3, (1, "px"): 2, (1, "py"): 2}),
    ),
    "CO": (
        _mo("4s", -10.2, 0.5, "sigma", 0.30, 2, {(1, "s"): 2, (1, "pz"): 5, (0, "s"): 3}),
        _mo("1p", -7.6, 0.8, "pi", 0.30, 4, {(1, "px"): 3.5, (1, "py"): 3.5, (0, "px"): 1.5, (0, "py"): 1.5}),
        _mo("5s", -7.0, 1.6, "sigma", 0.30, 2, {(0, "s"): 4, (0, "pz"): 4.5, (1, "pz"): 1.5}),
        _mo("2p*", 2.2, 1.4, "pi", 0.50, 4, {(0, "px"): 3.3, (0, "py"): 3.3, (1, "px"): 1.7, (1, "py"): 1.7}),
    ),
    "CHO": (
        _mo("CH-s", -8.8, 0.4, "sigma", 0.30, 2, {(0, "s"): 3, (0, "py"): 2, (2, "s"): 5}),
        _mo("CO-p", -7.4, 0.7, "pi", 0.30, 4, {(0, "px"): 2, (0, "pz"): 1, (1, "px"): 3.5, (1, "py"): 3.5}),
        _mo("lp", -4.5, 0.4, "pi", 0.25, 2, {(1, "py"): 6, (1, "px"): 4}),
        _mo("MC-s", -2.8, 1.5, "sigma", 0.30, 2, {(0, "pz"): 7, (0, "s"): 3}),
        _mo("pi*", 1.9, 1.1, "pi", 0.45, 2, {(0, "px"): 5, (1, "px"): 5}),
    ),
    "CH2O": (
        _mo("CH-s", -9.0, 0.3, "sigma", 0.30, 4, {(0, "s"): 2, (0, "py"): 3, (2, "s"): 2.5, (3, "s"): 2.5}),
        _mo("CO-s", -7.8, 0.6, "sigma", 0.30, 2, {(0, "pz"): 3, (1, "pz"): 4, (1, "s"): 3}),
        _mo("CO-p", -6.2, 0.6, "pi", 0.30, 2, {(0, "px"): 4, (1, "px"): 6}),
        _mo("MO-s", -3.8, 1.2, "sigma", 0.30, 2, {(1, "py"): 5, (1, "pz"): 3, (0, "pz"): 2}),
        _mo("pi*", 2.3, 1.0, "pi", 0.45, 2, {(0, "px"): 6, (1, "px"): 4}),
    ),
    "OCH3": (
        _mo("CH-s", -9.5, 0.3, "sigma", 0.30, 6, {(1, "s"): 2, (1, "px"): 1.5, (1, "py"): 1.5, (2, "s"): 1.7, (3, "s"): 1.7, (4, "s"): 1.6}),
        _mo("CO-s", -8.0, 0.6, "sigma", 0.30, 2, {(0, "pz"): 5, (1, "pz"): 3, (0, "s"): 2}),
        _mo("lp", -4.5, 1.0, "pi", 0.30, 4, {(0, "px"): 5, (0, "py"): 5}),
        _mo("MO-s", -2.5, 1.5, "sigma", 0.30, 2, {(0, "pz"): 8, (0, "s"): 2}),
        _mo("CH-s*", 3.5, 0.5, "sigma", 0.50, 2, {(1, "s"): 4, (2, "s"): 2, (3, "s"): 2, (4, "s"): 2}),
    ),
    "O": (
        _mo("2p-s", -5.5, 2.0, "sigma", 0.30, 2, {(0, "pz"): 1}),
        _mo("2p-p", -4.8, 1.6, "pi", 0.30, 4, {(0, "px"): 1, (0, "py"): 1}),
    ),
    "OH": (
        _mo("OH-s", -8.5, 0.5, "sigma", 0.30, 2, {(0, "s"): 2, (0, "pz"): 3, (1, "s"): 5}),
        _mo("lp", -4.2, 1.3, "pi", 0.30, 4, {(0, "px"): 1, (0, "py"): 1}),
        _mo("MO-s", -3.0, 1.4, "sigma", 0.30, 2, {(0, "pz"): 8, (1, "s"): 2}),
    ),
    "H": (_mo("MH-s", -5.8, 1.8, "sigma", 0.40, 2, {(0, "s"): 1}),),
}
_COUPLED_D = {"sigma": (_O["dz2"],), "pi": (_O["dxz"], _O["dyz"])}
# metal s/p orbitals sharing a coupled d orbital's symmetry (sigma: s, pz; pi: px or py)
_METAL_SP = {_O["dz2"]: (_O["s"], _O["pz"]), _O["dxz"]: (_O["px"],), _O["dyz"]: (_O["py"],)}
_METAL_SHARE = 0.12  # metal sp weight in the hybrid states, per adsorbate state and eV of coupling


@dataclass(frozen=True)
class EnergyModel:
    """The generator's adsorption-energy model (eV). See the module docstring.

    ``base``: alpha, gamma, beta of E_CO and E_OH; ``scaling``: (a, b, c) of
    E_Z = a E_CO + b E_OH + c for the other adsorbates. ``coefficients()`` expands them into
    alpha/gamma/beta for every adsorbate.
    """

    width_ref_ev: float = 0.73
    noise_ev: float = 0.05
    base: dict[str, tuple[float, float, float]] = field(
        default_factory=lambda: {"CO": (-0.38, -0.80, -1.40), "OH": (-0.50, -0.10, -1.30)}
    )
    scaling: dict[str, tuple[float, float, float]] = field(
        default_factory=lambda: {
            "CO2": (0.15, 0.05, -0.22),
            "COOH": (0.45, 0.30, 0.335),
            "CHO": (0.80, 0.10, 0.255),
            "CH2O": (0.45, 0.45, -0.06),
            "OCH3": (0.10, 0.80, -0.68),
            "O": (0.15, 1.60, 1.52),
            "H": (0.15, 0.30, -0.025),
        }
    )

    def coefficients(self) -> dict[str, dict[str, float]]:
        """Per adsorbate: alpha (eV/eV), gamma (eV/eV), beta (eV) of E = alpha*eps_d + gamma*(w_d - w_ref) + beta."""
        out: dict[str, dict[str, float]] = {}
        for name, (al, ga, be) in self.base.items():
            out[name] = {"alpha": al, "gamma": ga, "beta": be}
        co, oh = self.base["CO"], self.base["OH"]
        for name, (a, b, c) in self.scaling.items():
            out[name] = {
                "alpha": a * co[0] + b * oh[0],
                "gamma": a * co[1] + b * oh[1],
                "beta": a * co[2] + b * oh[2] + c,
            }
        return {name: out[name] for name in ADSORBATES}

    def energy(self, adsorbate: str, eps_d_ev: np.ndarray, width_d_ev: np.ndarray) -> np.ndarray:
        """Noise-free adsorption energy (eV) from the d-band descriptors."""
        k = self.coefficients()[adsorbate]
        return k["alpha"] * eps_d_ev + k["gamma"] * (width_d_ev - self.width_ref_ev) + k["beta"]

    def energy_from_edos(self, adsorbate: str, edos: np.ndarray) -> np.ndarray:
        """Noise-free energy the generator assigns to eDOS arrays ``[..., 4000, 9, 6]`` (eV).

        This is the oracle for interpretation tests: shift the d states of an array and this
        says how the generator's energy moves.
        """
        eps, width = d_band_moments(edos)
        return self.energy(adsorbate, eps, width)


@dataclass
class EdosSamples:
    """Generated samples held in memory: arrays ``[N, *per_sample_shape]`` plus columns."""

    edos: np.ndarray
    metal: list[str]
    support: list[str]
    adsorbate: list[str]
    variant: np.ndarray
    e_ads_ev: np.ndarray
    e_ads_clean_ev: np.ndarray
    eps_d_ev: np.ndarray
    width_d_ev: np.ndarray


@dataclass
class EdosTruth:
    """What the generator knows: parameters, the energy model, and where the data went."""

    seed: int
    n_samples: int
    metals: list[str]
    supports: list[str]
    adsorbates: list[str]
    n_variants: int
    energy_model: EnergyModel
    paths: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        em = self.energy_model
        return {
            "generator": GENERATOR_ID,
            "seed": self.seed,
            "n_samples": self.n_samples,
            "metals": self.metals,
            "supports": self.supports,
            "adsorbates": self.adsorbates,
            "n_variants": self.n_variants,
            "energy_reference": "E_ads relative to CO2(g), H2O(g), H2(g) and the clean SAC; "
            "electronic energies (no ZPE/TS), eV",
            "energy_model": "E_ads = alpha*(eps_d - E_F) + gamma*(w_d - width_ref_ev) + beta + "
            "N(0, noise_ev); eps_d, w_d = first moment and rms width of the metal d DOS over "
            "-14..6 eV (E_F = 0)",
            "width_ref_ev": em.width_ref_ev,
            "noise_ev": em.noise_ev,
            "coefficients": em.coefficients(),
            "base": {k: dict(zip(("alpha", "gamma", "beta"), v, strict=True)) for k, v in em.base.items()},
            "scaling_electronic": {
                k: dict(zip(("a_CO", "b_OH", "c"), v, strict=True)) for k, v in em.scaling.items()
            },
            "paths": self.paths,
        }


def _sac_rng(seed: int, metal: str, support: str, variant: int) -> np.random.Generator:
    m = list(METALS).index(metal)
    s = list(SUPPORTS).index(support)
    return np.random.default_rng([seed, 0, m, s, variant])


def _sample_rng(seed: int, metal: str, support: str, variant: int, adsorbate: str) -> np.random.Generator:
    m = list(METALS).index(metal)
    s = list(SUPPORTS).index(support)
    return np.random.default_rng([seed, 1, m, s, variant, ADSORBATES.index(adsorbate)])


def _noise_rng(seed: int, metal: str, support: str, variant: int, adsorbate: str) -> np.random.Generator:
    m = list(METALS).index(metal)
    s = list(SUPPORTS).index(support)
    return np.random.default_rng([seed, 2, m, s, variant, ADSORBATES.index(adsorbate)])


@dataclass(frozen=True)
class _Site:
    centres_ev: np.ndarray  # five d-orbital band centres
    half_width_ev: float
    s_centre_ev: float
    p_centre_ev: float


def _site(seed: int, metal: str, support: str, variant: int) -> _Site:
    """The clean SAC's d band: centre from filling/row/support, width, ligand field."""
    rng = _sac_rng(seed, metal, support, variant)
    period, group = METALS[metal]
    n_d = group - 2  # M(II)-like filling on N/C sites: Sc d1 ... Zn d10
    phys = SUPPORT_PHYSICS[support]
    eps = 0.6 - 0.42 * (n_d - 1) + _ROW_SHIFT_EV[period] + phys.eps_shift_ev
    half_width = _HALF_WIDTH_EV[period] * phys.width_factor
    if n_d == 10:  # filled, core-like d shell
        eps -= 1.2
        half_width *= 0.6
    eps += rng.normal(0.0, 0.15)  # this SAC's own environment
    half_width *= 1.0 + rng.normal(0.0, 0.06)
    lf = phys.ligand_field_ev * (1.0 + rng.normal(0.0, 0.1))
    if variant > 0:  # structural variants: strain, neighbouring defects
        eps += rng.normal(0.0, 0.25)
        half_width *= 1.0 + rng.normal(0.0, 0.08)
        lf *= 1.0 + rng.normal(0.0, 0.15)
    centres = eps + lf * _LIGAND_FIELD
    sp = phys.sp_shift_ev + rng.normal(0.0, 0.1)
    return _Site(centres, float(half_width), 1.8 + sp, 4.0 + sp)


def _semi_ellipse(e: np.ndarray, centre: float, half_width: float) -> np.ndarray:
    x = (e - centre) / half_width
    return np.where(np.abs(x) < 1.0, 2.0 / (np.pi * half_width) * np.sqrt(np.clip(1.0 - x**2, 0.0, None)), 0.0)


def render_sample(
    seed: int, metal: str, support: str, adsorbate: str, variant: int = 0
) -> np.ndarray:
    """One eDOS array ``(4000, 9, 6)`` float32 (states/eV) of ``adsorbate`` on ``metal``/``support``."""
    site = _site(seed, metal, support, variant)
    rng = _sample_rng(seed, metal, support, variant, adsorbate)
    e = energy_grid_ev()
    out = np.zeros(EDOS_SHAPE, dtype=np.float64)
    mos = MOLECULAR_ORBITALS[adsorbate]
    shift_all = rng.normal(0.0, 0.3)  # adsorption geometry moves all levels together
    for mo in mos:
        level = mo.level_ev + shift_all + rng.normal(0.0, 0.1)
        orbs = _COUPLED_D[mo.symmetry]
        for orb in orbs:
            c = site.centres_ev[orb - 4]
            v = mo.coupling_ev
            r = np.hypot(c - level, 2.0 * v)
            e_lo = 0.5 * (level + c) - 0.5 * r
            e_hi = 0.5 * (level + c) + 0.5 * r
            ads_lo = 0.5 * (1.0 + (c - level) / r)  # adsorbate share of the bonding state
            share = mo.states / len(orbs)
            # Adsorbate channels: the MO's weight split between bonding and antibonding states.
            for (atom, orbital), w in mo.weights.items():
                ch = 1 + atom
                amp = share * w * np.array([ads_lo, 1.0 - ads_lo])
                sig = mo.sigma_ev
                out[:, _O[orbital], ch] += amp[0] * _gauss(e, e_lo, sig) + amp[1] * _gauss(e, e_hi, sig)
            # Metal s/p orbitals of the same symmetry take their share of the two hybrid states;
            # the d channel stays the site's d band (the d-band model's descriptor).
            lend = _METAL_SHARE * v * share
            hybrid = lend * ((1.0 - ads_lo) * _gauss(e, e_lo, mo.sigma_ev) + ads_lo * _gauss(e, e_hi, mo.sigma_ev))
            for sp in _METAL_SP[orb]:
                out[:, sp, METAL_CHANNEL] += hybrid / len(_METAL_SP[orb])
    bands = np.stack([2.0 * _semi_ellipse(e, site.centres_ev[k], site.half_width_ev) for k in range(5)])
    out[:, 4:9, METAL_CHANNEL] += gaussian_filter1d(bands, _SMEARING_EV / (e[1] - e[0]), axis=-1, mode="constant").T
    # Metal s and p: broad, mostly empty bands above E_F.
    out[:, _O["s"], METAL_CHANNEL] += 1.2 * _gauss(e, site.s_centre_ev, 1.4)
    for name in ("py", "pz", "px"):
        out[:, _O[name], METAL_CHANNEL] += 1.0 * _gauss(e, site.p_centre_ev + rng.normal(0, 0.05), 1.5)
    return out.astype(np.float32)


def _gauss(e: np.ndarray, centre: float, sigma: float) -> np.ndarray:
    """Unit-area Gaussian, broadened by the DFT smearing (widths add in quadrature)."""
    sigma = float(np.hypot(sigma, _SMEARING_EV))
    return np.exp(-0.5 * ((e - centre) / sigma) ** 2) / (sigma * np.sqrt(2.0 * np.pi))


def _selection(
    metals: Sequence[str] | None, supports: Sequence[str] | None, adsorbates: Sequence[str] | None
) -> tuple[list[str], list[str], list[str]]:
    """The requested names (all known ones for None), checked against the generator's tables."""
    metals = list(METALS) if metals is None else list(metals)
    supports = list(SUPPORTS) if supports is None else list(supports)
    adsorbates = list(ADSORBATES) if adsorbates is None else list(adsorbates)
    for name, known, what in (
        (metals, METALS, "metal"),
        (supports, SUPPORTS, "support"),
        (adsorbates, ADSORBATES, "adsorbate"),
    ):
        unknown = [x for x in name if x not in known]
        if unknown:
            msg = f"unknown {what}(s) {unknown}; the generator knows {', '.join(known)}"
            raise ValueError(msg)
    return metals, supports, adsorbates


def iter_samples(
    *,
    seed: int = 0,
    metals: Sequence[str] | None = None,
    supports: Sequence[str] | None = None,
    adsorbates: Sequence[str] | None = None,
    n_variants: int = 1,
    energy_model: EnergyModel | None = None,
) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
    """Yield ``(record, edos)`` for every (metal, support, variant, adsorbate), in that order.

    ``record`` holds metal, support, adsorbate, variant, e_ads_ev (with noise),
    e_ads_clean_ev, eps_d_ev, width_d_ev.
    """
    metals, supports, adsorbates = _selection(metals, supports, adsorbates)
    em = energy_model or EnergyModel()
    for metal in metals:
        for support in supports:
            for variant in range(n_variants):
                for ads in adsorbates:
                    edos = render_sample(seed, metal, support, ads, variant)
                    eps, width = d_band_moments(edos)
                    clean = float(em.energy(ads, eps, width))
                    noise = _noise_rng(seed, metal, support, variant, ads).normal()
                    record = {
                        "metal": metal,
                        "support": support,
                        "adsorbate": ads,
                        "variant": variant,
                        "e_ads_ev": clean + em.noise_ev * float(noise),
                        "e_ads_clean_ev": clean,
                        "eps_d_ev": float(eps),
                        "width_d_ev": float(width),
                    }
                    yield record, edos


def generate_samples(
    *,
    seed: int = 0,
    metals: Sequence[str] | None = None,
    supports: Sequence[str] | None = None,
    adsorbates: Sequence[str] | None = None,
    n_variants: int = 1,
    energy_model: EnergyModel | None = None,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    progress: ProgressReporter | None = None,
) -> EdosSamples:
    """All samples in memory; ``transform`` (e.g. energy pooling) shrinks each array as it comes."""
    metals, supports, adsorbates = _selection(metals, supports, adsorbates)
    n = len(metals) * len(supports) * len(adsorbates) * n_variants
    progress = progress or NullProgress()
    progress.start(n, "generating eDOS")
    arrays: list[np.ndarray] = []
    records: list[dict[str, Any]] = []
    for record, edos in iter_samples(
        seed=seed, metals=metals, supports=supports, adsorbates=adsorbates,
        n_variants=n_variants, energy_model=energy_model,
    ):
        arrays.append(edos if transform is None else transform(edos))
        records.append(record)
        progress.advance(1)
    progress.close()
    col = lambda k: np.array([r[k] for r in records])  # noqa: E731
    return EdosSamples(
        edos=np.stack(arrays),
        metal=[r["metal"] for r in records],
        support=[r["support"] for r in records],
        adsorbate=[r["adsorbate"] for r in records],
        variant=col("variant").astype(np.int32),
        e_ads_ev=col("e_ads_ev").astype(np.float32),
        e_ads_clean_ev=col("e_ads_clean_ev").astype(np.float32),
        eps_d_ev=col("eps_d_ev").astype(np.float32),
        width_d_ev=col("width_d_ev").astype(np.float32),
    )


def truth_path(path: str | Path) -> Path:
    """Where ``synth_edos`` writes the JSON sidecar for a dataset at ``path``."""
    path = Path(path)
    if path.suffix.lower() in (".h5", ".hdf5", ".zarr"):
        return path.with_name(path.stem + ".truth.json")
    return path / "truth.json"


def synth_edos(
    path: str | Path,
    *,
    seed: int = 0,
    metals: Sequence[str] | None = None,
    supports: Sequence[str] | None = None,
    adsorbates: Sequence[str] | None = None,
    n_variants: int = 1,
    energy_model: EnergyModel | None = None,
    progress: ProgressReporter | None = None,
) -> EdosTruth:
    """Write a synthetic eDOS dataset and its ground truth; returns the truth.

    The format follows ``path``: ``.h5``/``.hdf5`` one HDF5 file, ``.zarr`` a zarr group,
    anything else a folder of one ``.npz`` per sample (``METAL_SUPPORT_ADSORBATE[_vK].npz``).
    Columns: metal, support, adsorbate, variant, e_ads_ev (noisy target), e_ads_clean_ev,
    eps_d_ev, width_d_ev. The sidecar ``truth_path(path)`` holds the energy model.
    """
    from tessera.pipelines.catalysis.io import save_sample_npz, write_edos_h5, write_edos_zarr

    path = Path(path)
    metals, supports, adsorbates = _selection(metals, supports, adsorbates)
    em = energy_model or EnergyModel()
    n = len(metals) * len(supports) * len(adsorbates) * n_variants
    truth = EdosTruth(seed, n, metals, supports, adsorbates, n_variants, em)
    progress = progress or NullProgress()
    progress.start(n, f"writing {path.name}")

    def counted() -> Iterator[tuple[dict[str, Any], np.ndarray]]:
        for item in iter_samples(
            seed=seed, metals=metals, supports=supports, adsorbates=adsorbates,
            n_variants=n_variants, energy_model=em,
        ):
            yield item
            progress.advance(1)

    attrs = {"generator": GENERATOR_ID, "seed": seed}
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix in (".h5", ".hdf5"):
        write_edos_h5(path, counted(), attrs=attrs)
    elif suffix == ".zarr":
        write_edos_zarr(path, counted(), n=n, attrs=attrs)
    else:
        path.mkdir(parents=True, exist_ok=True)
        for record, edos in counted():
            v = record["variant"]
            stem = f"{record['metal']}_{record['support']}_{record['adsorbate']}"
            name = f"{stem}.npz" if n_variants == 1 else f"{stem}_v{v}.npz"
            cols = {k: record[k] for k in ("e_ads_clean_ev", "eps_d_ev", "width_d_ev", "variant")}
            save_sample_npz(
                path / name, edos, metal=record["metal"], support=record["support"],
                adsorbate=record["adsorbate"], e_ads_ev=record["e_ads_ev"], **cols,
            )
    progress.close()
    sidecar = truth_path(path)
    truth.paths = {"data": str(path), "truth": str(sidecar)}
    sidecar.write_text(json.dumps(truth.to_json(), indent=2), encoding="utf-8")
    return truth
