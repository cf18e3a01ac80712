"""Runner for ``spectra-regress`` plugins: one eDOS dataset in, energies (and a screening) out.

``run(input_path, plugin, out_dir, *, options, progress, cancel)`` (INTERFACES.md section 4):

1. opens the dataset (``tessera.pipelines.catalysis.io.open_edos``: HDF5, zarr, npz/npy or a
   folder of samples) and predicts every sample's adsorption energy with the plugin's engine
   (``options.engine``/``device``; batches of ``options.batch_size`` or the manifest's);
2. writes ``predictions.csv`` (metal, support, adsorbate, predicted eV, reference eV and error
   when the dataset carries energies);
3. when the dataset holds *CO and *OH for at least four candidates (and
   ``options.extra["screen"]`` is not false), screens it: ``ranked_candidates.csv``,
   ``fits.json``, the volcano plot, periodic tables and free-energy diagrams
   (``tessera.pipelines.catalysis.screening``). ``options.extra``: ``top`` (free-energy
   diagrams drawn, default 5), ``corrections`` (JSON file or dict of ΔZPE - TΔS per
   adsorbate, eV), ``formats`` (default png,svg);
4. writes ``summary.json`` last: with ``options.resume`` an input already finished with the
   same model, data and settings is not recomputed.

``tessera screen`` is this runner with its outputs directly in ``--out``.
"""

from __future__ import annotations

import csv
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from tessera.pipelines.catalysis.che import DEFAULT_CORRECTIONS_EV, CheSettings
from tessera.pipelines.catalysis.io import open_edos
from tessera.pipelines.catalysis.screening import predict_dataset, screen_energies, write_screening
from tessera.pipelines.errors import CorruptFile
from tessera.pipelines.progress import ProgressReporter
from tessera.pipelines.runners.base import (
    PluginPredictor,
    RunOptions,
    clear_summary,
    finished_summary,
    input_fingerprint,
    model_fingerprint,
    plugin_ref,
    signature_of,
    write_summary,
)


def che_settings(extra: dict[str, Any]) -> CheSettings:
    """CHE settings from ``extra['corrections']`` (a dict, or a JSON file of one) over the defaults."""
    corr = extra.get("corrections")
    if corr is None:
        return CheSettings()
    if not isinstance(corr, dict):
        path = Path(str(corr))
        try:
            corr = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            msg = f"cannot read the corrections JSON ({exc}); expected {{\"CO\": 0.40, ...}} in eV"
            raise CorruptFile(msg, path=path) from exc
    try:
        merged = {**DEFAULT_CORRECTIONS_EV, **{str(k): float(v) for k, v in corr.get("corrections_ev", corr).items()
                                              if k != "ch4_formation_ev"}}
        ch4 = float(corr.get("ch4_formation_ev", CheSettings().ch4_formation_ev))
    except (TypeError, ValueError, AttributeError) as exc:
        msg = f"corrections must map adsorbate names to numbers in eV ({exc})"
        raise CorruptFile(msg, path=None) from exc
    return CheSettings(corrections_ev=merged, ch4_formation_ev=ch4)


def run(
    input_path: Path,
    plugin: Any,
    out_dir: Path,
    *,
    options: RunOptions,
    progress: ProgressReporter,
    cancel: threading.Event,
    predictor: Any = None,
) -> dict[str, Any]:
    """Predict (and screen) one eDOS dataset; see the module docstring. ``predictor``
    (``edos [B, 4000, 9, 6] -> eV [B]``) replaces the plugin's engine when given (tests)."""
    t0 = time.perf_counter()
    input_path, out_dir = Path(input_path), Path(out_dir)
    extra = dict(options.extra)
    settings = che_settings(extra)
    top = int(extra.get("top", 5))
    formats = tuple(str(extra.get("formats", "png,svg")).split(",")) if not isinstance(
        extra.get("formats"), (list, tuple)) else tuple(extra["formats"])
    screen = str(extra.get("screen", True)).lower() not in ("0", "false", "no")
    signature = signature_of({
        "input": input_fingerprint(input_path), "model": model_fingerprint(plugin),
        "engine": options.engine, "settings": settings.to_json(), "top": top, "formats": formats,
        "screen": screen, "predictor": None if predictor is None else repr(predictor),
    })
    if options.resume:
        done = finished_summary(out_dir, signature)
        if done is not None:
            return done
    out_dir.mkdir(parents=True, exist_ok=True)
    clear_summary(out_dir)
    description = "custom predictor"
    if predictor is None:
        predictor = PluginPredictor(plugin_ref(plugin), plugin.manifest.task, options.engine, options.device,
                                    threads=options.engine_threads)
        description = predictor.description
    batch_size = options.effective_batch_size(plugin.manifest.input.batch_size)
    with open_edos(input_path) as ds:
        pred = predict_dataset(ds, predictor, batch_size=batch_size, progress=progress, cancel=cancel)
        metal, support, adsorbate, ref = ds.metal, ds.support, ds.adsorbate, ds.e_ads_ev
    outputs: dict[str, list[str]] = {"predictions": [str(_write_predictions(out_dir, metal, support, adsorbate,
                                                                           pred, ref))]}
    known = np.isfinite(ref)
    summary: dict[str, Any] = {
        "input": str(input_path),
        "plugin": plugin.manifest.id,
        "plugin_version": plugin.manifest.version,
        "engine": description,
        "n_samples": len(pred),
        "n_candidates": len(set(zip(metal, support, strict=True))),
        "mae_vs_reference_ev": float(np.abs(pred[known] - ref[known]).mean()) if known.any() else None,
    }
    n_descr = len({(m, s) for m, s, a in zip(metal, support, adsorbate, strict=True) if a in ("CO", "OH")})
    if screen and n_descr >= 4:
        result = screen_energies(metal, support, adsorbate, pred, settings=settings,
                                 reference_ev=ref if known.any() else None)
        outputs.update(write_screening(result, out_dir, top=top, formats=formats))
        summary["best"] = [
            {"rank": c.rank, "metal": c.metal, "support": c.support, "U_L_V_vs_RHE": round(c.u_l_v, 4),
             "limiting_step": c.limiting_step}
            for c in result.candidates[:top]
        ]
        summary["equilibrium_potential_V_vs_RHE"] = settings.equilibrium_potential_v
    elif screen:
        summary["screening_skipped"] = "fewer than 4 candidates with both *CO and *OH predicted"
    summary.update({"outputs": outputs, "signature": signature, "seconds": round(time.perf_counter() - t0, 2)})
    write_summary(out_dir, summary)
    return summary


def _write_predictions(out_dir: Path, metal: list[str], support: list[str], adsorbate: list[str],
                       pred: np.ndarray, ref: np.ndarray) -> Path:
    path = out_dir / "predictions.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["index", "metal", "support", "adsorbate", "e_ads_pred_ev", "e_ads_ref_ev", "abs_error_ev"])
        for i, (m, s, a, p, r) in enumerate(zip(metal, support, adsorbate, pred, ref, strict=True)):
            known = np.isfinite(r)
            w.writerow([i, m, s, a, f"{p:.4f}", f"{r:.4f}" if known else "", f"{abs(p - r):.4f}" if known else ""])
    return path
