"""detect-classify: every galaxy of a survey field found, measured and classified.

Inputs:
- a survey field: FITS (bands, WCS, zero point; ``sky.survey_image``) or a PNG/JPEG/TIFF
  picture (pixels only) -> background and source detection with sep
  (``sky.detection``) -> stars vs extended sources -> a cutout around every extended
  source at the model's pixel scale (``sky.cutouts``) -> the plugin's classifier ->
  ``catalogue.csv`` + ``catalogue.fits`` (``sky.catalogue`` lists the columns),
  ``overlay.png`` (galaxies ringed in their class colour and labelled), ``cutouts.h5``
  (the classified cutouts, Galaxy10 layout with the predicted class in ``ans`` and the
  catalogue id in ``source_id``) and ``summary.json`` (written last).
- cutouts: a Galaxy10-layout HDF5 file (``images`` uint8 [N, H, W, 3], optional ``ans``)
  or a folder of cutout pictures -> ``classes.csv`` (one row per cutout: class and
  probabilities, and the true class when the file has ``ans``) and ``summary.json``
  (with top-1 accuracy and confusion matrix when labels are known).

Options (``--option key=value``): ``pixel_scale_arcsec`` (the field's, when its file
does not say), ``thresh_sigma``, ``min_snr``, ``deblend_cont`` (detection),
``max_overlay_px`` (long side of overlay.png). ``options.truth``: a truth catalogue CSV
(``tessera synth galaxies``' catalogue.csv) to score detection recall and class
agreement against.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from tessera.pipelines.errors import UnsupportedFile
from tessera.pipelines.progress import ProgressReporter, check_cancelled
from tessera.pipelines.runners.base import (
    ModelInfo,
    PluginPredictor,
    RunOptions,
    TilePredictor,
    clear_summary,
    finished_summary,
    input_fingerprint,
    model_fingerprint,
    plugin_ref,
    signature_of,
    write_summary,
)

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
H5_SUFFIXES = (".h5", ".hdf5", ".hdf")
#: Galaxy10 DECaLS cutout geometry, the defaults when a manifest says nothing.
DEFAULT_PXSCALE_ARCSEC = 0.262
DEFAULT_TYPICAL_R50_ARCSEC = 4.5


def run(input_path: Path, plugin: Any, out_dir: Path, *, options: RunOptions,
        progress: ProgressReporter, cancel: threading.Event) -> dict[str, Any]:
    """Classify the galaxies of a field, or a set of cutouts; see the module docstring."""
    model = ModelInfo.from_manifest(plugin.manifest)
    predictor = PluginPredictor(plugin_ref(plugin), model.task, options.engine, options.device)
    description = predictor.description  # load the engine now: a bad model fails first
    identity = {"input": input_fingerprint(Path(input_path)), "model": model_fingerprint(plugin)}
    params = dict(plugin.manifest.params)
    input_path = Path(input_path)
    if input_path.is_dir() or input_path.name.lower().endswith(H5_SUFFIXES):
        return classify_cutout_set(input_path, predictor, Path(out_dir), model=model, options=options,
                                   progress=progress, cancel=cancel, identity=identity,
                                   engine_description=description)
    return classify_field(input_path, predictor, Path(out_dir), model=model, params=params,
                          options=options, progress=progress, cancel=cancel, identity=identity,
                          engine_description=description)


def _finished_or_cleared(out_dir: Path, signature: str, options: RunOptions) -> dict[str, Any] | None:
    """The summary of an identical finished run (when resuming), else None after
    forgetting any earlier result in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if options.resume:
        done = finished_summary(out_dir, signature)
        if done is not None:
            return done | {"skipped": True}
    clear_summary(out_dir)
    return None


def _batches(n: int, size: int):
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


def predict_in_batches(predictor: TilePredictor, images: np.ndarray, batch_size: int, *,
                       progress: ProgressReporter | None = None,
                       cancel: threading.Event | None = None) -> np.ndarray:
    """float32 [N, K] probabilities of uint8 cutouts [N, H, W, 3], ``batch_size`` at a time."""
    out = []
    for sl in _batches(len(images), batch_size):
        check_cancelled(cancel)
        out.append(np.asarray(predictor(images[sl]), dtype=np.float32))
        if progress is not None:
            progress.advance(sl.stop - sl.start)
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def classify_field(input_path: Path, predictor: TilePredictor, out_dir: Path, *, model: ModelInfo,
                   params: dict[str, Any], options: RunOptions, progress: ProgressReporter,
                   cancel: threading.Event | None, identity: dict[str, Any],
                   engine_description: str = "") -> dict[str, Any]:
    """The field pipeline with any predictor ``uint8 [N, S, S, 3] -> float32 [N, K]``."""
    from tessera.pipelines.sky.catalogue import build_catalogue, write_catalogue
    from tessera.pipelines.sky.cutouts import colour_cutouts, cutout_sides_px, display_image
    from tessera.pipelines.sky.detection import DetectionSettings, detect_sources
    from tessera.pipelines.sky.overlay import draw_overlay
    from tessera.pipelines.sky.survey_image import load_survey_image
    from tessera.pipelines.writers.preview import write_preview

    t0 = time.perf_counter()
    extra = dict(options.extra)
    settings = DetectionSettings(**{
        k: float(extra[k]) for k in ("thresh_sigma", "min_snr", "deblend_cont") if k in extra
    })
    size_px = int(model.size_px[-1])
    model_scale = float(params.get("pxscale_arcsec", DEFAULT_PXSCALE_ARCSEC))
    typical_r50 = float(params.get("typical_r50_arcsec", DEFAULT_TYPICAL_R50_ARCSEC))
    field_scale = float(extra["pixel_scale_arcsec"]) if "pixel_scale_arcsec" in extra else None
    signature = signature_of({"identity": identity, "settings": settings.__dict__,
                              "field_scale": field_scale, "engine": options.engine,
                              "truth": None if options.truth is None else str(options.truth)})
    done = _finished_or_cleared(out_dir, signature, options)
    if done is not None:
        return done

    image = load_survey_image(input_path)
    if field_scale is not None:
        image.pxscale_arcsec = field_scale
    check_cancelled(cancel)
    t_load = time.perf_counter()
    detections = detect_sources(image, settings)
    t_detect = time.perf_counter()
    galaxies = np.flatnonzero(detections.extended)
    sides = cutout_sides_px(image, detections.r50_px[galaxies], size_px=size_px,
                            pxscale_arcsec=model_scale, typical_r50_arcsec=typical_r50)
    cutouts = colour_cutouts(image, detections, galaxies, sides, size_px)
    progress.start(len(galaxies), f"classifying {len(galaxies)} galaxies")
    batch = options.effective_batch_size(model.batch_size)
    probs = predict_in_batches(predictor, cutouts, batch, progress=progress, cancel=cancel)
    progress.close()
    if probs.size == 0:
        probs = np.zeros((0, len(model.classes)), np.float32)
    t_classify = time.perf_counter()

    names = model.class_names
    table = build_catalogue(image, detections, class_names=names, galaxy_index=galaxies,
                            probabilities=probs, cutout_sides_px=sides)
    write_catalogue(table, out_dir / "catalogue.csv", out_dir / "catalogue.fits")
    _write_cutouts(out_dir / "cutouts.h5", cutouts, probs, table["id"][galaxies],
                   table["ra_deg"].filled(np.nan)[galaxies], table["dec_deg"].filled(np.nan)[galaxies],
                   model_scale if image.pxscale_arcsec else float("nan"))
    picture = display_image(image, detections)
    overlay = draw_overlay(picture, table, class_names=names, class_colours=[c for _, c in model.classes],
                           max_side_px=int(extra.get("max_overlay_px", 4096)),
                           short_names=params.get("short_names"))
    write_preview(out_dir / "overlay.png", overlay, None)

    counts = np.bincount(np.argmax(probs, axis=1), minlength=len(names)) if len(probs) else \
        np.zeros(len(names), int)
    summary: dict[str, Any] = {
        "status": "finished",
        "signature": signature,
        "input": str(input_path),
        "plugin": {"id": model.id, "version": model.version, "task": model.task},
        "engine": engine_description or options.engine,
        "field": {
            "kind": image.kind,
            "bands": list(image.bands),
            "shape_yx": list(image.shape_yx),
            "wcs": image.wcs is not None,
            "pixel_scale_arcsec": image.pxscale_arcsec,
            "calibrated": image.calibrated,
        },
        "detection": {
            "settings": settings.__dict__,
            "sources": len(detections),
            "galaxies": len(galaxies),
            "stars": int(len(detections) - len(galaxies)),
            "psf_r50_px": round(float(detections.psf_r50_px), 4),
            "background_rms": float(detections.background_rms),
        },
        "cutouts": {
            "size_px": size_px,
            "model_pxscale_arcsec": model_scale,
            "side_px": "fixed (pixel scale known)" if image.pxscale_arcsec else "per source (from r50)",
        },
        "classes": {n: int(c) for n, c in zip(names, counts, strict=True)},
        "outputs": {"summary": "summary.json", "catalogue_csv": "catalogue.csv",
                    "catalogue_fits": "catalogue.fits", "overlay": "overlay.png",
                    "cutouts": "cutouts.h5"},
        "timings": {"load_s": round(t_load - t0, 3), "detect_s": round(t_detect - t_load, 3),
                    "classify_s": round(t_classify - t_detect, 3),
                    "total_s": round(time.perf_counter() - t0, 3)},
    }
    if options.truth is not None:
        summary["truth"] = score_against_truth(table, Path(options.truth), names)
    write_summary(out_dir, summary)
    return summary


def _write_cutouts(path: Path, images: np.ndarray, probs: np.ndarray, ids, ra, dec,
                   pxscale: float) -> None:
    import h5py

    from tessera.pipelines.writers.atomic import atomic_path

    with atomic_path(path, keep_suffix=True) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("images", data=images, compression="gzip", compression_opts=4)
        f.create_dataset("ans", data=np.argmax(probs, axis=1).astype(np.uint8) if len(probs)
                         else np.zeros(0, np.uint8))
        f.create_dataset("probabilities", data=probs.astype(np.float32))
        f.create_dataset("source_id", data=np.asarray(ids, dtype=np.int32))
        f.create_dataset("ra", data=np.asarray(ra, dtype=np.float64))
        f.create_dataset("dec", data=np.asarray(dec, dtype=np.float64))
        f.create_dataset("pxscale", data=np.full(len(images), pxscale, dtype=np.float32))


def score_against_truth(table, truth_csv: Path, class_names: list[str], *,
                        match_r50: float = 1.0, min_match_px: float = 3.0) -> dict[str, Any]:
    """Detection recall and class agreement against a truth catalogue (columns kind,
    class_id, x_px, y_px, r50_arcsec and mag_r, as ``tessera synth galaxies`` writes).

    A true galaxy is recovered when a detection lies within ``match_r50`` of its true
    half-light radius (at least ``min_match_px``); its class agrees when the nearest such
    detection's class equals the true class. Reported overall and for r < 17.
    """
    import csv

    with Path(truth_csv).open(newline="", encoding="utf-8") as fh:
        truth = [r for r in csv.DictReader(fh) if r.get("kind") == "galaxy"]
    if not truth:
        msg = "the truth catalogue has no rows with kind 'galaxy'"
        raise UnsupportedFile(msg, path=truth_csv)
    x = np.asarray(table["x_px"], dtype=float)
    y = np.asarray(table["y_px"], dtype=float)
    cls = np.asarray(table["class_id"], dtype=int)
    pxscale = float(table.meta.get("PIXSCALE", DEFAULT_PXSCALE_ARCSEC))
    found, agree, mags = [], [], []
    confusion = np.zeros((len(class_names), len(class_names) + 1), dtype=int)  # last: missed/star
    for r in truth:
        d = np.hypot(x - float(r["x_px"]), y - float(r["y_px"]))
        radius = max(min_match_px, match_r50 * float(r["r50_arcsec"]) / pxscale)
        hit = d <= radius
        ok = bool(hit.any())
        found.append(ok)
        mags.append(float(r["mag_r"]))
        true_k = int(r["class_id"])
        if ok:
            j = int(np.argmin(np.where(hit, d, np.inf)))
            agree.append(cls[j] == true_k)
            confusion[true_k, cls[j] if cls[j] >= 0 else len(class_names)] += 1
        else:
            agree.append(False)
            confusion[true_k, len(class_names)] += 1
    found_a, agree_a, mags_a = np.array(found), np.array(agree), np.array(mags)
    bright = mags_a < 17.0

    def frac(a: np.ndarray) -> float | None:
        return round(float(a.mean()), 4) if a.size else None

    return {
        "galaxies": len(truth),
        "recall": frac(found_a),
        "recall_r_lt_17": frac(found_a[bright]),
        "class_agreement_of_found": frac(agree_a[found_a]),
        "class_agreement_r_lt_17": frac(agree_a[bright & found_a]),
        "confusion_truth_rows_pred_cols_last_is_missed_or_star": confusion.tolist(),
    }


def _read_cutout_set(path: Path) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """(uint8 [N, H, W, 3] images, labels or None, names) of an h5 file or a folder."""
    if path.is_dir():
        import tessera

        files = sorted(p for p in path.iterdir() if p.suffix.lower() in PICTURE_SUFFIXES)
        if not files:
            msg = "the folder holds no PNG/JPEG/TIFF cutouts"
            raise UnsupportedFile(msg, path=path)
        images = []
        for p in files:
            with tessera.open(p) as src:
                a = np.asarray(src.levels[0].compute(scheduler="synchronous"))
            if a.ndim == 2:
                a = np.repeat(a[..., None], 3, axis=-1)
            if src.axes == "CYX":
                a = np.moveaxis(a, 0, -1)
            a = a[..., :3]
            if a.dtype != np.uint8:
                peak = float(np.iinfo(a.dtype).max) if a.dtype.kind in "ui" else max(float(a.max()), 1e-12)
                a = np.clip(np.rint(a.astype(np.float64) * 255.0 / peak), 0, 255).astype(np.uint8)
            side = min(a.shape[:2])  # centre square
            y0, x0 = (a.shape[0] - side) // 2, (a.shape[1] - side) // 2
            images.append(a[y0 : y0 + side, x0 : x0 + side])
        return images, None, [p.name for p in files]  # type: ignore[return-value]
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "images" not in f:
                msg = "no 'images' dataset: expected the Galaxy10 DECaLS layout (images, ans)"
                raise UnsupportedFile(msg, path=path)
            images = f["images"][()]
            labels = f["ans"][()].astype(np.int64) if "ans" in f else None
    except OSError as exc:
        msg = f"cannot read HDF5 ({exc})"
        raise UnsupportedFile(msg, path=path) from exc
    if images.ndim != 4 or images.shape[-1] < 3:
        msg = f"'images' must be [N, H, W, 3], got shape {images.shape}"
        raise UnsupportedFile(msg, path=path)
    return images[..., :3], labels, [str(i) for i in range(len(images))]


def classify_cutout_set(path: Path, predictor: TilePredictor, out_dir: Path, *, model: ModelInfo,
                        options: RunOptions, progress: ProgressReporter,
                        cancel: threading.Event | None, identity: dict[str, Any],
                        engine_description: str = "") -> dict[str, Any]:
    """Classes of every cutout of a Galaxy10-layout h5 file or a folder of pictures."""
    from tessera.pipelines.writers.table import write_csv

    t0 = time.perf_counter()
    signature = signature_of({"identity": identity, "engine": options.engine})
    done = _finished_or_cleared(out_dir, signature, options)
    if done is not None:
        return done
    images, labels, names_in = _read_cutout_set(path)
    batch = options.effective_batch_size(model.batch_size)
    progress.start(len(images), f"classifying {len(images)} cutouts")
    if isinstance(images, list):  # pictures of different sizes: one at a time
        parts = []
        for im in images:
            parts.append(predict_in_batches(predictor, im[None], 1, cancel=cancel))
            progress.advance()
        probs = np.concatenate(parts)
    else:
        probs = predict_in_batches(predictor, images, batch, progress=progress, cancel=cancel)
    progress.close()
    classes = model.class_names
    pred = np.argmax(probs, axis=1)
    header = ["index", "name", "class_id", "class_name", "prob_max",
              *[f"prob_{c}" for c in classes]] + (["truth_class_id"] if labels is not None else [])
    rows = (
        [i, names_in[i], int(pred[i]), classes[pred[i]], float(probs[i].max()),
         *[float(p) for p in probs[i]]] + ([int(labels[i])] if labels is not None else [])
        for i in range(len(pred))
    )
    write_csv(out_dir / "classes.csv", header, rows)
    summary: dict[str, Any] = {
        "status": "finished",
        "signature": signature,
        "input": str(path),
        "plugin": {"id": model.id, "version": model.version, "task": model.task},
        "engine": engine_description or options.engine,
        "cutouts": len(pred),
        "classes": {c: int((pred == k).sum()) for k, c in enumerate(classes)},
        "outputs": {"summary": "summary.json", "table": "classes.csv"},
        "timings": {"total_s": round(time.perf_counter() - t0, 3)},
    }
    if labels is not None and len(labels):
        k = len(classes)
        confusion = np.zeros((k, k), dtype=int)
        np.add.at(confusion, (labels, pred), 1)
        summary["truth"] = {"top1": round(float((pred == labels).mean()), 4),
                            "confusion_truth_rows_pred_cols": confusion.tolist()}
    write_summary(out_dir, summary)
    return summary
