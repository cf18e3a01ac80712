"""Interpreting an eDOS model: occlusion along energy and the orbital-shifting experiment.

Both follow Yang et al.:

- **Occlusion**: slide a window (``window_ev`` wide, every ``stride_ev``) along the energy axis
  of the metal channel, zero the DOS inside it (for all orbitals at once and for each orbital
  alone), and record how the predicted adsorption energy moves. Large changes mark the energy
  ranges the model relies on — for a d-band-driven model, the d states near E_F.
- **Shifting**: rigidly shift the metal's d states (all five d orbitals, or one at a time) by
  -1..+1 eV and predict again. d-band theory says E_ads should fall (stronger binding) as the
  d states rise toward E_F; the slope dE_ads/dshift is the model's "alpha".

Shifts move the curve along the grid with zero fill (no wrap-around); shifts are rounded to
the 0.005 eV grid.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tessera.pipelines.catalysis.descriptors import d_band_centre
from tessera.pipelines.catalysis.layout import (
    D_ORBITALS,
    ENERGY_STEP_EV,
    METAL_CHANNEL,
    ORBITALS,
    energy_grid_ev,
)

Predictor = Callable[[np.ndarray], np.ndarray]
SHIFT_TARGETS: tuple[str, ...] = ("all d", *D_ORBITALS)


def _batched(predictor: Predictor, arrays: np.ndarray, batch_size: int) -> np.ndarray:
    out = [np.asarray(predictor(arrays[s : s + batch_size]), dtype=np.float64).reshape(-1)
           for s in range(0, len(arrays), batch_size)]
    return np.concatenate(out)


@dataclass(frozen=True)
class OcclusionResult:
    """Predicted E_ads with a window zeroed: rows ``targets`` (all orbitals, then each)."""

    centres_ev: np.ndarray  # [n_windows]
    targets: tuple[str, ...]  # "all", then the 9 orbitals
    e_ads_ev: np.ndarray  # [n_targets, n_windows]
    baseline_ev: float
    window_ev: float
    channel: int

    @property
    def delta_ev(self) -> np.ndarray:
        return self.e_ads_ev - self.baseline_ev


def occlusion_scan(
    edos: np.ndarray,
    predictor: Predictor,
    *,
    channel: int = METAL_CHANNEL,
    window_ev: float = 0.5,
    stride_ev: float = 0.25,
    batch_size: int = 64,
) -> OcclusionResult:
    """Occlude ``window_ev`` of one channel along energy (all orbitals, then each orbital)."""
    edos = np.asarray(edos, dtype=np.float32)
    e = energy_grid_ev()
    width = max(1, round(window_ev / ENERGY_STEP_EV))
    stride = max(1, round(stride_ev / ENERGY_STEP_EV))
    starts = np.arange(0, e.size - width + 1, stride)
    targets = ("all", *ORBITALS)
    batch = np.repeat(edos[None], len(targets) * len(starts), axis=0)
    for t, target in enumerate(targets):
        orbs = slice(None) if target == "all" else ORBITALS.index(target)
        for w, s in enumerate(starts):
            batch[t * len(starts) + w, s : s + width, orbs, channel] = 0.0
    baseline = float(_batched(predictor, edos[None], 1)[0])
    pred = _batched(predictor, batch, batch_size).reshape(len(targets), len(starts))
    centres = e[starts] + (width - 1) * ENERGY_STEP_EV / 2
    return OcclusionResult(centres, targets, pred, baseline, window_ev, channel)


def shift_orbitals(edos: np.ndarray, shift_ev: float, orbitals: Sequence[str] = D_ORBITALS,
                   channel: int = METAL_CHANNEL) -> np.ndarray:
    """A copy of ``edos`` with ``orbitals`` of ``channel`` moved by ``shift_ev`` (zero fill)."""
    out = np.array(edos, dtype=np.float32, copy=True)
    k = round(shift_ev / ENERGY_STEP_EV)
    for name in orbitals:
        o = ORBITALS.index(name)
        curve = np.asarray(edos[:, o, channel], dtype=np.float32)
        shifted = np.zeros_like(curve)
        if k > 0:
            shifted[k:] = curve[:-k]
        elif k < 0:
            shifted[:k] = curve[-k:]
        else:
            shifted = curve.copy()
        out[:, o, channel] = shifted
    return out


@dataclass(frozen=True)
class ShiftResult:
    """E_ads (eV) per shift (eV) for each target ('all d' then each d orbital)."""

    shifts_ev: np.ndarray  # [n_shifts]
    targets: tuple[str, ...]
    e_ads_ev: np.ndarray  # [n_targets, n_shifts]
    eps_d_ev: np.ndarray  # [n_targets, n_shifts], d-band centre of the shifted arrays

    def slopes(self) -> dict[str, float]:
        """Least-squares dE_ads/dshift (eV/eV) per target."""
        return {t: float(np.polyfit(self.shifts_ev, self.e_ads_ev[i], 1)[0]) for i, t in enumerate(self.targets)}

    def slopes_vs_eps_d(self) -> dict[str, float]:
        """dE_ads/d(eps_d) (eV/eV) per target: the model's d-band 'alpha'."""
        return {t: float(np.polyfit(self.eps_d_ev[i], self.e_ads_ev[i], 1)[0]) for i, t in enumerate(self.targets)}


def shifting_experiment(
    edos: np.ndarray,
    predictor: Predictor,
    *,
    shifts_ev: Sequence[float] | np.ndarray | None = None,
    targets: Sequence[str] = SHIFT_TARGETS,
    batch_size: int = 64,
) -> ShiftResult:
    """Shift all d orbitals, or single ones, by -1..+1 eV and predict E_ads each time."""
    shifts = np.round(np.linspace(-1.0, 1.0, 21), 6) if shifts_ev is None else np.asarray(shifts_ev, float)
    arrays = []
    for target in targets:
        orbs = D_ORBITALS if target == "all d" else (target,)
        arrays.extend(shift_orbitals(edos, float(s), orbs) for s in shifts)
    batch = np.stack(arrays)
    pred = _batched(predictor, batch, batch_size).reshape(len(targets), len(shifts))
    eps = d_band_centre(batch).reshape(len(targets), len(shifts))
    return ShiftResult(shifts, tuple(targets), pred, eps)


def write_explanation(
    edos: np.ndarray,
    predictor: Predictor,
    out_dir: str | Path,
    *,
    name: str = "",
    adsorbate: str | None = None,
    window_ev: float = 0.5,
    stride_ev: float = 0.25,
    formats: Sequence[str] = ("png", "svg"),
) -> dict[str, Any]:
    """Run both experiments on one sample; write CSVs, figures and ``explain.json``."""
    from tessera.pipelines.catalysis import plots

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    occ = occlusion_scan(edos, predictor, window_ev=window_ev, stride_ev=stride_ev)
    shift = shifting_experiment(edos, predictor)
    _write_grid(out_dir / "occlusion.csv", ("window_centre_ev", "occluded", "e_ads_pred_ev", "delta_ev"),
                occ.centres_ev, occ.targets, occ.e_ads_ev, occ.delta_ev)
    _write_grid(out_dir / "shifting.csv", ("shift_ev", "shifted", "e_ads_pred_ev", "eps_d_ev"),
                shift.shifts_ev, shift.targets, shift.e_ads_ev, shift.eps_d_ev)
    files = {"occlusion_csv": str(out_dir / "occlusion.csv"), "shifting_csv": str(out_dir / "shifting.csv")}
    label = f"{name}: " if name else ""
    for stem, fig in (
        ("occlusion", plots.occlusion_figure(occ, edos, title=f"{label}occlusion of the metal channel")),
        ("shifting", plots.shifting_figure(shift, title=f"{label}orbital-shifting experiment")),
        ("dos", plots.dos_figure(edos, adsorbate=adsorbate, title=f"{name} eDOS" if name else "")),
    ):
        files[stem] = [str(p) for p in plots.save_figure(fig, out_dir / stem, formats=formats)]
    most = int(np.argmax(np.abs(occ.delta_ev[0])))
    summary = {
        "sample": name,
        "e_ads_pred_ev": occ.baseline_ev,
        "eps_d_ev": float(d_band_centre(edos)),
        "occlusion": {"window_ev": window_ev, "stride_ev": stride_ev,
                      "most_sensitive_window_centre_ev": float(occ.centres_ev[most]),
                      "largest_delta_ev": float(occ.delta_ev[0, most])},
        "shifting": {"slope_ev_per_ev": shift.slopes(), "slope_vs_eps_d_ev_per_ev": shift.slopes_vs_eps_d()},
        "files": files,
    }
    (out_dir / "explain.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def _write_grid(path: Path, header: Sequence[str], xs: np.ndarray, targets: Sequence[str],
                first: np.ndarray, second: np.ndarray) -> None:
    """CSV in long form: one row per (target, x) with two values ([n_targets, n_x] arrays)."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for t, target in enumerate(targets):
            for k, x in enumerate(xs):
                w.writerow([f"{x:.3f}", target, f"{first[t, k]:.5f}", f"{second[t, k]:.5f}"])
