"""Screening: predicted adsorption energies -> ranked candidates, scaling fits, volcano, figures.

Split in two so the viewer and the CLI share everything:

- ``predict_dataset`` runs any predictor (``edos [B, 4000, 9, 6] -> E_ads [B]`` in eV; the
  plugin's engine in practice) over a dataset in batches, with progress and cancellation.
- ``screen_energies`` turns (metal, support, adsorbate, E_ads) rows into a ``ScreeningResult``:
  free energies (CHE corrections), the hybrid scaling fits over all candidates, every
  candidate's free-energy path, U_L and potential-limiting step (directly from its predicted
  intermediates, or through the scaling relations when some are missing), and the volcano map.
- ``write_screening`` writes the ranked CSV, ``fits.json`` and the figures (PNG + SVG).
"""

from __future__ import annotations

import csv
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tessera.pipelines.catalysis.che import (
    N_ELECTRONS,
    PATH_ADSORBATES,
    STEP_LABELS,
    CheSettings,
    free_energies,
    limiting_potential,
    state_free_energies,
    step_free_energies,
)
from tessera.pipelines.catalysis.io import EdosDataset
from tessera.pipelines.catalysis.layout import ADSORBATES
from tessera.pipelines.catalysis.scaling import ScalingFit, fit_hybrid_scaling, scaled_free_energies
from tessera.pipelines.catalysis.volcano import VolcanoMap, volcano_map
from tessera.pipelines.progress import NullProgress, ProgressReporter, check_cancelled

Predictor = Callable[[np.ndarray], np.ndarray]


def predict_dataset(
    dataset: EdosDataset,
    predictor: Predictor,
    *,
    batch_size: int = 32,
    progress: ProgressReporter | None = None,
    cancel: threading.Event | None = None,
) -> np.ndarray:
    """Predicted E_ads (eV) for every sample of ``dataset``, in order."""
    progress = progress or NullProgress()
    progress.start(len(dataset), "predicting adsorption energies")
    out = np.empty(len(dataset), dtype=np.float64)
    try:
        for start, batch in dataset.iter_batches(batch_size):
            check_cancelled(cancel)
            pred = np.asarray(predictor(batch), dtype=np.float64).reshape(-1)
            if pred.shape[0] != batch.shape[0]:
                msg = f"predictor returned {pred.shape[0]} values for {batch.shape[0]} samples"
                raise ValueError(msg)
            out[start : start + batch.shape[0]] = pred
            progress.advance(batch.shape[0])
    finally:
        progress.close()
    return out


@dataclass
class Candidate:
    """One SAC (metal on support) with its energies and thermodynamics."""

    metal: str
    support: str
    e_ads_ev: dict[str, float]  # predicted adsorption energies
    g_ev: dict[str, float] = field(default_factory=dict)  # free energies used (direct or scaled)
    source: str = ""  # "direct" (all path intermediates predicted) or "scaling"
    states_ev: np.ndarray | None = None  # G_n(0), 9 states
    steps_ev: np.ndarray | None = None  # ΔG_i(0), 8 steps
    u_l_v: float = float("nan")
    step_index: int = -1
    u_l_scaling_v: float = float("nan")
    step_index_scaling: int = -1
    rank: int = 0

    @property
    def name(self) -> str:
        return f"{self.metal}/{self.support}"

    @property
    def limiting_step(self) -> str:
        return STEP_LABELS[self.step_index] if self.step_index >= 0 else ""


@dataclass
class ScreeningResult:
    """Everything ``write_screening`` and the viewer draw from."""

    candidates: list[Candidate]  # ranked, best (least negative U_L) first
    fits: dict[str, ScalingFit]
    settings: CheSettings
    volcano: VolcanoMap
    reference_mae_ev: dict[str, float] = field(default_factory=dict)

    def candidate(self, metal: str, support: str) -> Candidate:
        for c in self.candidates:
            if (c.metal, c.support) == (metal, support):
                return c
        msg = f"no candidate {metal}/{support}"
        raise KeyError(msg)


def screen_energies(
    metal: Sequence[str],
    support: Sequence[str],
    adsorbate: Sequence[str],
    e_ads_ev: Sequence[float] | np.ndarray,
    *,
    settings: CheSettings | None = None,
    reference_ev: Sequence[float] | np.ndarray | None = None,
    grid_points: int = 241,
) -> ScreeningResult:
    """Rank candidates by limiting potential from per-sample adsorption energies (eV).

    Rows with the same (metal, support, adsorbate) are averaged (structural variants).
    ``reference_ev`` (known energies, NaN where unknown) only feeds the reported MAE.
    """
    settings = settings or CheSettings()
    e_ads_ev = np.asarray(e_ads_ev, dtype=np.float64)
    energies: dict[tuple[str, str], dict[str, list[float]]] = {}
    for m, s, a, e in zip(metal, support, adsorbate, e_ads_ev, strict=True):
        energies.setdefault((m, s), {}).setdefault(a, []).append(float(e))
    candidates = [
        Candidate(m, s, {a: float(np.mean(v)) for a, v in per.items()})
        for (m, s), per in energies.items()
    ]
    ads_all = [a for a in ADSORBATES if any(a in c.e_ads_ev for c in candidates)]
    table = {a: np.array([c.e_ads_ev.get(a, np.nan) for c in candidates]) for a in ads_all}
    g_table = free_energies(table, settings)
    if "CO" not in g_table or "OH" not in g_table:
        msg = "screening needs predicted *CO and *OH energies (the scaling descriptors)"
        raise ValueError(msg)
    fits = fit_hybrid_scaling(g_table, [a for a in ads_all if a in (*PATH_ADSORBATES, "CO2", "H")])
    for i, c in enumerate(candidates):
        c.g_ev = {a: float(g_table[a][i]) for a in ads_all if np.isfinite(g_table[a][i])}
        scaled = scaled_free_energies(fits, np.float64(c.g_ev.get("CO", np.nan)), np.float64(c.g_ev.get("OH", np.nan)))
        g_scaled = {z: float(scaled[z]) for z in PATH_ADSORBATES if z in scaled}
        if len(g_scaled) == len(PATH_ADSORBATES) and np.all(np.isfinite(list(g_scaled.values()))):
            lp_s = limiting_potential(g_scaled, settings)
            c.u_l_scaling_v, c.step_index_scaling = float(lp_s.u_l_v), int(lp_s.step_index)
        if all(z in c.g_ev for z in PATH_ADSORBATES):
            path_g = {z: c.g_ev[z] for z in PATH_ADSORBATES}
            c.source = "direct"
        elif np.isfinite(c.u_l_scaling_v):
            path_g = {z: c.g_ev.get(z, g_scaled[z]) for z in PATH_ADSORBATES}
            c.source = "scaling"
        else:
            continue
        c.states_ev = state_free_energies(path_g, settings)
        c.steps_ev = step_free_energies(c.states_ev)
        lp = limiting_potential(path_g, settings)
        c.u_l_v, c.step_index = float(lp.u_l_v), int(lp.step_index)
    candidates.sort(key=lambda c: (-c.u_l_v if np.isfinite(c.u_l_v) else np.inf, c.metal, c.support))
    for r, c in enumerate(candidates, start=1):
        c.rank = r
    g_co, g_oh = g_table["CO"], g_table["OH"]
    pad = 0.35
    volcano = volcano_map(
        fits,
        g_co_range_ev=(float(np.nanmin(g_co)) - pad, float(np.nanmax(g_co)) + pad),
        g_oh_range_ev=(float(np.nanmin(g_oh)) - pad, float(np.nanmax(g_oh)) + pad),
        n=grid_points,
        settings=settings,
    )
    mae: dict[str, float] = {}
    if reference_ev is not None:
        ref = np.asarray(reference_ev, dtype=np.float64)
        ok = np.isfinite(ref)
        if ok.any():
            ads = np.asarray(adsorbate)
            mae["all"] = float(np.abs(e_ads_ev[ok] - ref[ok]).mean())
            for a in ADSORBATES:
                m = ok & (ads == a)
                if m.any():
                    mae[a] = float(np.abs(e_ads_ev[m] - ref[m]).mean())
    return ScreeningResult(candidates, fits, settings, volcano, mae)


# ------------------------------------------------------------------------------ outputs


def ranked_rows(result: ScreeningResult) -> list[dict[str, Any]]:
    """The ranked table as dicts (the CSV rows; also what a viewer table shows)."""
    ads_all = [a for a in ADSORBATES if any(a in c.e_ads_ev for c in result.candidates)]
    rows = []
    u_eq = result.settings.equilibrium_potential_v
    for c in result.candidates:
        row: dict[str, Any] = {
            "rank": c.rank,
            "metal": c.metal,
            "support": c.support,
            "U_L_V_vs_RHE": _r(c.u_l_v),
            "overpotential_V": _r(u_eq - c.u_l_v),
            "limiting_step": c.limiting_step,
            "source": c.source or "unscreened",
            "U_L_scaling_V_vs_RHE": _r(c.u_l_scaling_v),
            "limiting_step_scaling": STEP_LABELS[c.step_index_scaling] if c.step_index_scaling >= 0 else "",
            "G_CO_eV": _r(c.g_ev.get("CO", np.nan)),
            "G_OH_eV": _r(c.g_ev.get("OH", np.nan)),
        }
        for i in range(N_ELECTRONS):
            row[f"dG{i + 1}_eV"] = _r(c.steps_ev[i]) if c.steps_ev is not None else ""
        for a in ads_all:
            row[f"E_{a}_eV"] = _r(c.e_ads_ev.get(a, np.nan))
        for a in ads_all:
            row[f"G_{a}_eV"] = _r(c.g_ev.get(a, np.nan))
        rows.append(row)
    return rows


def _r(x: float) -> float | str:
    return "" if x is None or not np.isfinite(x) else round(float(x), 4)


def fits_json(result: ScreeningResult) -> dict[str, Any]:
    """The fits and settings as JSON-ready data (``fits.json``)."""
    g_co, g_oh, u_apex = result.volcano.apex
    return {
        "che": result.settings.to_json(),
        "path_steps": list(STEP_LABELS),
        "scaling": {
            "relation": "G_Z = a_CO * G_CO + b_OH * G_OH + c (eV), least squares over candidates",
            "fits": {z: f.to_json() for z, f in result.fits.items()},
        },
        "volcano": {
            "g_co_range_ev": [float(result.volcano.g_co_ev[0]), float(result.volcano.g_co_ev[-1])],
            "g_oh_range_ev": [float(result.volcano.g_oh_ev[0]), float(result.volcano.g_oh_ev[-1])],
            "grid_points": int(result.volcano.g_co_ev.size),
            "apex": {"G_CO_eV": g_co, "G_OH_eV": g_oh, "U_L_V_vs_RHE": u_apex},
        },
        "n_candidates": len(result.candidates),
        "best": [
            {"metal": c.metal, "support": c.support, "U_L_V_vs_RHE": c.u_l_v, "limiting_step": c.limiting_step}
            for c in result.candidates[:5]
        ],
        "prediction_mae_vs_reference_ev": result.reference_mae_ev,
    }


def write_screening(
    result: ScreeningResult,
    out_dir: str | Path,
    *,
    top: int = 5,
    formats: Sequence[str] = ("png", "svg"),
) -> dict[str, list[str]]:
    """Write ``ranked_candidates.csv``, ``fits.json`` and the figures; returns paths by kind."""
    from tessera.pipelines.catalysis import plots

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[str]] = {}
    rows = ranked_rows(result)
    csv_path = out_dir / "ranked_candidates.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    written["table"] = [str(csv_path)]
    json_path = out_dir / "fits.json"
    json_path.write_text(json.dumps(fits_json(result), indent=2), encoding="utf-8")
    written["fits"] = [str(json_path)]

    def save(fig: Any, stem: str, kind: str) -> None:
        paths = plots.save_figure(fig, out_dir / stem, formats=formats)
        written.setdefault(kind, []).extend(str(p) for p in paths)

    save(plots.volcano_figure(result), "volcano", "volcano")
    save(plots.scaling_figure(result), "scaling_relations", "scaling")
    supports = plots.ordered_supports(c.support for c in result.candidates)
    save(plots.periodic_tables_figure(result, supports), "periodic_tables", "periodic_table")
    for s in supports:
        save(plots.periodic_table_figure(result, s), f"periodic_table_{_slug(s)}", "periodic_table")
    best = [c for c in result.candidates if c.states_ev is not None][:top]
    if best:
        save(plots.free_energy_comparison_figure(best, result.settings), "free_energy_top", "free_energy")
    for c in best:
        save(plots.free_energy_figure(c, result.settings), f"free_energy_{c.rank:02d}_{c.metal}_{_slug(c.support)}", "free_energy")
    return written


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-" else "_" for ch in name)
