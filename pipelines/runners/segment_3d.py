"""segment-3d: label volumes (CT and other 3D images) by Gaussian-blended sliding window.

Flow: read the "ZYX" volume -> resample to the model's ``target_spacing_mm`` (linear) when
it differs -> sliding window over the plugin's preprocess/engine/postprocess (or the
plugin's own ``predict_volume`` hook for multi-stage models) -> uint8 labels -> back to
the input grid (nearest) -> outputs. Labels are finished Z slab by Z slab into a work
zarr with a completion mark per slab, so a killed run resumes from the first
unfinished plane.

Outputs in the input's folder:
- ``labels.nii.gz``: uint8 labels on the input grid with the input's affine (opens over
  the CT in 3D Slicer / ITK-SNAP); value = class index of the manifest.
- ``labels.ome.zarr``: the same labels as NGFF 0.4 (mm scale, in-plane pyramid) with
  class names and colours (``image-label``).
- ``preview.png``: axial, coronal and sagittal middle slices with the labels over them.
- ``summary.json`` (last): volume per label (ml), and scores against ``--truth``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from tessera.pipelines.errors import PluginError
from tessera.pipelines.progress import ProgressReporter
from tessera.pipelines.runners.base import (
    WORK_DIR_NAME,
    ModelInfo,
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
from tessera.pipelines.runners.resume import ChunkLedger
from tessera.pipelines.runners.sliding_window import sliding_window_labels
from tessera.pipelines.sources.base import Source
from tessera.pipelines.writers.atomic import atomic_dir, remove_temporaries
from tessera.pipelines.writers.nifti import affine_zyx_from, write_nifti_labels
from tessera.pipelines.writers.ome_zarr import hex_rgb, write_small_image
from tessera.pipelines.writers.preview import display_rgb, label_overlay, write_preview


def run(input_path: Path, plugin: Any, out_dir: Path, *, options: RunOptions,
        progress: ProgressReporter, cancel: threading.Event) -> dict[str, Any]:
    """Segment one volume with ``plugin``; see the module docstring."""
    import tessera

    model = ModelInfo.from_manifest(plugin.manifest)
    identity = {"input": input_fingerprint(input_path), "model": model_fingerprint(plugin)}
    from tessera.pipelines.plugin_system.tasks import processing_function

    hook = processing_function(plugin, "predict_volume")
    with tessera.open(input_path) as source:
        if hook is not None:
            return segment_volume(source, None, Path(out_dir), model=model, options=options, progress=progress,
                                  cancel=cancel, identity=identity,
                                  predict_volume=lambda src: hook(src, plugin, options, progress, cancel))
        predictor = PluginPredictor(plugin_ref(plugin), model.task, options.engine, options.device,
                                threads=options.engine_threads)  # one caller: all cores
        description = predictor.description
        return segment_volume(source, lambda x: predictor(x[:, 0]), Path(out_dir), model=model, options=options,
                              progress=progress, cancel=cancel, identity=identity, engine_description=description)


def segment_volume(
    source: Source, predictor: Any, out_dir: Path, *, model: ModelInfo, options: RunOptions,
    progress: ProgressReporter, cancel: threading.Event | None, identity: dict[str, Any],
    engine_description: str = "", predict_volume: Any = None,
) -> dict[str, Any]:
    """The runner on an opened "ZYX" Source with a window predictor
    ``float32 (N, 1, D, H, W) raw values -> (N, K, D, H, W) probabilities`` (or a
    ``predict_volume(source) -> {"labels": uint8 ZYX on the input grid, ...}``)."""
    t0 = time.perf_counter()
    if source.axes != "ZYX":
        msg = f"segment-3d needs a ZYX volume; this image has axes {source.axes!r}"
        raise PluginError(msg, path=source.path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    batch_size = options.effective_batch_size(model.batch_size)
    signature = signature_of({"identity": identity, "model": model.__dict__ | {"batch_size": None},
                              "engine": options.engine, "hook": predict_volume is not None})
    if options.resume:
        done = finished_summary(out_dir, signature)
        if done is not None:
            return done | {"skipped": True}
    clear_summary(out_dir)
    remove_temporaries(out_dir)
    spacing = tuple(float(s) for s in source.spacing) if source.spacing and source.spacing_unit == "mm" else None
    notes: list[str] = []
    t_model = time.perf_counter()
    if predict_volume is not None:
        produced = predict_volume(source)
        labels = np.asarray(produced["labels"], dtype=np.uint8)
        notes.extend(str(n) for n in produced.get("notes") or [])
        model_shape = labels.shape
        n_resumed_planes = 0
    else:
        labels, model_shape, n_resumed_planes = _sliding_window_resumable(
            source, predictor, out_dir / WORK_DIR_NAME, model=model, spacing=spacing, batch_size=batch_size,
            signature=signature, options=options, progress=progress, cancel=cancel, notes=notes)
    if labels.shape != source.shape:
        msg = f"labels {labels.shape} do not match the input volume {source.shape}"
        raise PluginError(msg, path=source.path)
    t_written = time.perf_counter()

    affine = affine_zyx_from(source.metadata, spacing)
    codes = (int(source.metadata.get("qform_code") or 1), int(source.metadata.get("sform_code") or 1))
    write_nifti_labels(out_dir / "labels.nii.gz", labels, affine, description=f"tessera {model.id} labels",
                       codes=codes)
    classes = [(k, n, c) for k, (n, c) in enumerate(model.classes)]
    with atomic_dir(out_dir / "labels.ome.zarr") as tmp:
        write_small_image(tmp, labels, axes="zyx", spacing=spacing or (1.0, 1.0, 1.0), l0_per_px=(1, 1, 1),
                          unit="mm" if spacing else None, name=f"{model.id} labels", kind="nearest", chunk=256)
        _mark_as_labels(tmp, classes)
    _write_volume_preview(out_dir / "preview.png", source, labels, dict(enumerate(c for _, c in model.classes)))

    from tessera.pipelines.metrics.overlap import volumes_ml

    names = dict(enumerate(model.class_names))
    vols = volumes_ml(labels, spacing or (1.0, 1.0, 1.0), {k: n for k, n in names.items() if k != 0})
    summary: dict[str, Any] = {
        "status": "finished",
        "signature": signature,
        "input": str(source.path),
        "plugin": {"id": model.id, "version": model.version, "task": model.task},
        "engine": engine_description or ("predict_volume hook" if predict_volume else options.engine),
        "source": {"format": source.format, "reader": source.reader, "shape_zyx": list(source.shape),
                   "spacing_mm": None if spacing is None else list(spacing)},
        "model_grid_zyx": list(model_shape),
        "notes": notes,
        "labels": {n: {"value": k, "volume_ml": round(vols.get(n, 0.0), 6)} for k, n in names.items() if k != 0},
        "volume_unit": "ml" if spacing else "voxels/1000",
        "resumed_planes": n_resumed_planes,
    }
    if predict_volume is not None and produced.get("metrics"):
        summary["metrics"] = produced["metrics"]  # the plugin's own measurements (e.g. tree length)
    if options.truth is not None:
        summary["truth"] = _score_truth(labels, options.truth, spacing, names)
    summary["outputs"] = {"summary": "summary.json", "labels_nifti": "labels.nii.gz",
                          "labels_zarr": "labels.ome.zarr", "preview": "preview.png"}
    summary["timings"] = {"model_s": round(t_written - t_model, 3),
                          "outputs_s": round(time.perf_counter() - t_written, 3),
                          "total_s": round(time.perf_counter() - t0, 3)}
    write_summary(out_dir, summary)
    ChunkLedger(out_dir / WORK_DIR_NAME).discard()
    return summary


# ---- resampling --------------------------------------------------------------------------
def model_grid_shape(shape: tuple[int, ...], spacing: tuple[float, ...] | None,
                     target: tuple[float, ...] | None) -> tuple[int, ...]:
    """Shape of the volume resampled from ``spacing`` to ``target`` mm (unchanged when either is unknown)."""
    if spacing is None or target is None:
        return tuple(shape)
    return tuple(max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target, strict=True))


def resample_linear(volume: np.ndarray, out_shape: tuple[int, ...]) -> np.ndarray:
    """Trilinear resampling with voxels as boxes (corners of the volume stay corners)."""
    from scipy import ndimage

    if tuple(volume.shape) == tuple(out_shape):
        return np.asarray(volume, np.float32)
    zoom = [o / i for o, i in zip(out_shape, volume.shape, strict=True)]
    return ndimage.zoom(np.asarray(volume, np.float32), zoom, order=1, mode="nearest", grid_mode=True)


def labels_to_grid(labels: np.ndarray, out_shape: tuple[int, ...]) -> np.ndarray:
    """Nearest-neighbour labels on another grid covering the same box: output voxel i
    takes the label of the model voxel under its centre."""
    if tuple(labels.shape) == tuple(out_shape):
        return labels
    idx = [np.minimum(((np.arange(o) + 0.5) * n / o).astype(np.int64), n - 1)
           for o, n in zip(out_shape, labels.shape, strict=True)]
    return labels[np.ix_(*idx)]


def _sliding_window_resumable(source, predictor, work_dir: Path, *, model: ModelInfo, spacing, batch_size: int,
                              signature: str, options: RunOptions, progress, cancel, notes: list[str]):
    """Sliding window on the model grid with per-slab marks; labels on the input grid."""
    import zarr

    if len(model.size_px) != 3:
        msg = f"{model.id}: segment-3d needs a 3D input size (D, H, W), got {model.size_px}"
        raise PluginError(msg)
    target = model.target_spacing_mm
    if target is not None and spacing is None:
        notes.append("the volume has no spacing in mm; it was not resampled to the model's spacing")
    grid_shape = model_grid_shape(source.shape, spacing, target)
    volume = source.levels[0]
    if grid_shape != tuple(source.shape):
        volume = resample_linear(np.asarray(volume.compute(scheduler="synchronous")), grid_shape)
        notes.append(f"resampled {tuple(source.shape)} -> {grid_shape} voxels for the model's "
                     f"{tuple(target)} mm spacing")  # type: ignore[arg-type]
    corner = volume[tuple(slice(0, 8) for _ in range(3))]
    corner = corner.compute(scheduler="synchronous") if hasattr(corner, "compute") else corner
    pad_value = float(np.min(corner))  # background (air for CT): what lies outside the volume

    ledger, _ = ChunkLedger.open(work_dir, signature_of({"run": signature, "grid": grid_shape}),
                                 resume=options.resume)
    store_path = work_dir / "labels.zarr"
    done = sorted(ledger.done_ids())
    if not done or not store_path.exists():
        zarr.create_array(store_path, shape=grid_shape, chunks=(8, *grid_shape[1:]), dtype="uint8",
                          fill_value=0, overwrite=True)
        done = []
    store = zarr.open_array(store_path, mode="r+")
    start_z = max((int(d.split("_")[1]) for d in done), default=0)

    def on_planes(z0: int, z1: int, lab: np.ndarray, _probs: dict) -> None:
        store[z0:z1] = lab
        ledger.save(f"z{z0:05d}_{z1:05d}", {"z": np.array([z0, z1])})

    vol = volume[None] if isinstance(volume, np.ndarray) else volume[None, ...]
    sliding_window_labels(vol, predictor, window_zyx=tuple(model.size_px), overlap=model.overlap or 0.25,
                          batch_size=batch_size, progress=progress, cancel=cancel, pad_value=pad_value,
                          start_z=start_z, on_planes=on_planes)
    labels_model = np.asarray(store[...])
    return labels_to_grid(labels_model, tuple(source.shape)), grid_shape, start_z


# ---- outputs -----------------------------------------------------------------------------
def _mark_as_labels(group_path: Path, classes: list[tuple[int, str, str]]) -> None:
    """Make a labels-only NGFF group read as a label image (colours, class names)."""
    import zarr

    g = zarr.open_group(group_path, mode="r+")
    g.attrs["image-label"] = {
        "version": "0.4",
        "colors": [{"label-value": k, "rgba": [*hex_rgb(c), 0 if k == 0 else 255]} for k, _, c in classes],
        "properties": [{"label-value": k, "class": n} for k, n, _ in classes],
    }


def _foreground_centre(labels: np.ndarray) -> tuple[int, int, int]:
    """Voxel centre of the labelled voxels (the volume's middle when there are none).

    Plane by plane from per-axis counts: ``np.argwhere`` (or scipy's centre of mass) holds
    24+ bytes per foreground voxel, gigabytes for a whole-lung labelling.
    """
    counts = [np.zeros(n, dtype=np.int64) for n in labels.shape]
    for k in range(labels.shape[0]):
        plane = labels[k] > 0
        counts[0][k] = np.count_nonzero(plane)
        counts[1] += plane.sum(axis=1)
        counts[2] += plane.sum(axis=0)
    total = int(counts[0].sum())
    if total == 0:
        return tuple(n // 2 for n in labels.shape)  # type: ignore[return-value]
    return tuple(int(np.dot(np.arange(len(c)), c) / total) for c in counts)  # type: ignore[return-value]


def _write_volume_preview(path: Path, source: Source, labels: np.ndarray, colours: dict[int, str]) -> None:
    """Axial | coronal | sagittal middle slices, windowed grey, with the labels over them."""
    vol = source.levels[0]
    cz, cy, cx = _foreground_centre(labels)
    views = [
        (np.asarray(vol[cz].compute(scheduler="synchronous")), labels[cz]),
        (np.asarray(vol[:, cy].compute(scheduler="synchronous"))[::-1], labels[:, cy][::-1]),
        (np.asarray(vol[:, :, cx].compute(scheduler="synchronous"))[::-1], labels[:, :, cx][::-1]),
    ]
    h = max(v[0].shape[0] for v in views)
    tiles, overlays = [], []
    for img, lab in views:
        pad = ((0, h - img.shape[0]), (0, 0))
        tiles.append(np.pad(img.astype(np.float32), pad, constant_values=float(img.min())))
        overlays.append(np.pad(lab, pad))
    grey = display_rgb(np.concatenate(tiles, axis=1)[..., None])
    write_preview(path, grey, label_overlay(np.concatenate(overlays, axis=1), colours))


def _score_truth(labels: np.ndarray, truth_path: Path, spacing, names: dict[int, str]) -> dict[str, Any]:
    """DSC/precision/sensitivity per class (ATM'22 tree scores for a class named 'airway')."""
    import tessera
    from tessera.pipelines.metrics.atm import score_labels

    with tessera.open(truth_path) as ref:
        truth = np.asarray(ref.levels[0].compute(scheduler="synchronous")).astype(np.uint8)
    if truth.shape != labels.shape:
        msg = f"the reference labels {truth.shape} do not match the input volume {labels.shape}"
        raise PluginError(msg, path=truth_path)
    classes = {k: n for k, n in names.items() if k != 0}
    airway = next((k for k, n in classes.items() if n.lower() == "airway"), None)
    return score_labels(labels, truth, spacing or (1.0, 1.0, 1.0), classes=classes, airway_value=airway)
