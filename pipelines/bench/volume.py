"""``tessera bench volume``: Tessera's 3D sliding window vs MONAI's, and peak RSS on a big CT.

Throughput: the same predictor (the plugin's ONNX Runtime session for one role), the
same input volume, window (the model's fixed cube), overlap (the manifest's), batch
of windows, Gaussian blending (sigma = 0.125 x window) and thread count, through

- Tessera: ``runners.sliding_window.sliding_window_labels`` (Z-slab streaming, uint8
  labels out), and
- MONAI: ``monai.inferers.sliding_window_inference(mode="gaussian")`` (a float
  probability map of the whole volume out, then argmax to labels),

run alternately (Tessera first on even rounds) so drifting machine load hits both
alike; medians over rounds, voxels per second, their ratio, how many windows each
evaluated, and how often their labels agree.

Peak RSS: the whole two-stage flow of the segment-3d runner (read the NIfTI, lung
prior, airway stage, largest component, distance prior, AV stage, labels, NIfTI +
OME-Zarr + preview outputs) on a 512 x 512 x 400 CT in a fresh subprocess, its
``ru_maxrss`` read by the parent. Both ONNX sessions are created and run on real
windows first (their arenas count), then a stand-in predictor (a HU threshold)
answers the ~4000 windows, so the figure is the pipeline's memory, measured in
minutes instead of the hour the network's compute would take on a laptop CPU.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tessera.pipelines.progress import NullProgress, ProgressReporter

RSS_SHAPE_ZYX = (400, 512, 512)


@dataclass
class VolumeBench:
    """Result of ``bench_sliding_window``: medians in seconds, voxels per second, ratio."""

    plugin: str
    role: str
    shape_zyx: tuple[int, int, int]
    window_zyx: tuple[int, int, int]
    overlap: float
    batch: int
    threads: int
    repeats: int
    tessera_median_s: float
    monai_median_s: float
    tessera_windows: int
    monai_windows: int
    label_agreement: float
    mean_abs_prob_diff: float  # of the last class's blended probability, 0..1
    load_avg_1min: float = float("nan")
    tessera_times_s: list[float] = field(default_factory=list)
    monai_times_s: list[float] = field(default_factory=list)

    @property
    def voxels(self) -> int:
        return int(np.prod(self.shape_zyx))

    @property
    def tessera_voxels_per_s(self) -> float:
        return self.voxels / self.tessera_median_s

    @property
    def monai_voxels_per_s(self) -> float:
        return self.voxels / self.monai_median_s

    @property
    def ratio(self) -> float:
        """Tessera throughput / MONAI throughput (> 1: Tessera is faster)."""
        return self.monai_median_s / self.tessera_median_s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"tessera_voxels_per_s": self.tessera_voxels_per_s,
                               "monai_voxels_per_s": self.monai_voxels_per_s,
                               "ratio_tessera_over_monai": self.ratio}


class _CountingPredictor:
    """Wraps a window predictor and counts the windows it evaluated."""

    def __init__(self, predict: Any) -> None:
        self.predict, self.windows = predict, 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.windows += int(x.shape[0])
        return self.predict(x)


def bench_input(shape_zyx: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, tuple]:
    """A synthetic chest CT (HU, int16) of ``shape_zyx`` and its spacing, made in a temp dir."""
    import tempfile

    import nibabel as nib

    from tessera.pipelines.synthetic.ct import synth_ct

    with tempfile.TemporaryDirectory(prefix="tessera-bench-volume-") as tmp:
        truth = synth_ct(Path(tmp) / "ct.nii.gz", shape_zyx=shape_zyx, seed=seed)
        hu = np.asarray(nib.load(truth.image_path).dataobj).transpose(2, 1, 0).astype(np.int16)
    return np.ascontiguousarray(hu), truth.spacing_mm


def bench_sliding_window(
    plugin: Any,
    *,
    role: str = "airway",
    shape_zyx: tuple[int, int, int] = (96, 192, 192),
    repeats: int = 3,
    threads: int = 1,
    batch: int | None = None,
    progress: ProgressReporter | None = None,
) -> VolumeBench:
    """Median time of both sliding windows over one volume with the plugin's model."""
    import torch
    from monai.inferers import sliding_window_inference

    from tessera.pipelines.engines import create_engine
    from tessera.pipelines.runners.sliding_window import sliding_window_labels

    progress = progress or NullProgress()
    spec = plugin.manifest.input
    window = tuple(int(v) for v in spec.size_px)
    overlap = float(spec.overlap or 0.25)
    batch = int(batch or spec.batch_size)
    engine = create_engine(plugin, engine="onnx", role=role, threads=threads)
    names = plugin.manifest.role_spec(role)
    name_in, name_out = names.inputs[0], names.outputs[0]

    hu, _spacing = bench_input(shape_zyx)
    volume = _model_input(plugin, role, hu)

    def predict(x: np.ndarray) -> np.ndarray:
        p = engine.run({name_in: np.ascontiguousarray(x, np.float32)})[name_out]
        return np.concatenate([1.0 - p, p], axis=1) if p.shape[1] == 1 else p

    tessera_pred, monai_pred = _CountingPredictor(predict), _CountingPredictor(predict)

    last = 1 if role == "airway" else 2  # the class whose probability is compared

    def run_tessera() -> tuple[np.ndarray, np.ndarray]:
        labels, probs = sliding_window_labels(volume, tessera_pred, window_zyx=window,
                                              overlap=overlap, sigma_scale=0.125,
                                              batch_size=batch, keep_probabilities=(last,))
        return labels, probs[last].astype(np.float32) / 255.0

    def run_monai() -> tuple[np.ndarray, np.ndarray]:
        inputs = torch.from_numpy(volume[None])
        probs = sliding_window_inference(
            inputs, window, batch, lambda t: torch.from_numpy(monai_pred(t.numpy())),
            overlap=overlap, mode="gaussian", sigma_scale=0.125, padding_mode="constant",
            cval=0.0)[0]
        return probs.argmax(0).numpy().astype(np.uint8), probs[last].numpy()

    torch_threads = torch.get_num_threads()
    torch.set_num_threads(threads)  # MONAI's blending runs torch ops
    times: dict[str, list[float]] = {"tessera": [], "monai": []}
    labels: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    progress.start(2 * repeats, "sliding windows")
    try:
        for r in range(repeats):
            order = ("tessera", "monai") if r % 2 == 0 else ("monai", "tessera")
            for name in order:
                t0 = time.perf_counter()
                labels[name] = run_tessera() if name == "tessera" else run_monai()
                times[name].append(time.perf_counter() - t0)
                progress.advance(1)
    finally:
        torch.set_num_threads(torch_threads)
    agreement = float((labels["tessera"][0] == labels["monai"][0]).mean())
    prob_diff = float(np.abs(labels["tessera"][1] - labels["monai"][1]).mean())
    return VolumeBench(
        plugin=plugin.id, role=role, shape_zyx=tuple(shape_zyx), window_zyx=window,
        overlap=overlap, batch=batch, threads=threads, repeats=repeats,
        tessera_median_s=statistics.median(times["tessera"]),
        monai_median_s=statistics.median(times["monai"]),
        tessera_windows=tessera_pred.windows // repeats, monai_windows=monai_pred.windows // repeats,
        label_agreement=agreement, mean_abs_prob_diff=prob_diff, load_avg_1min=os.getloadavg()[0],
        tessera_times_s=times["tessera"], monai_times_s=times["monai"],
    )


def _model_input(plugin: Any, role: str, hu: np.ndarray) -> np.ndarray:
    """The role's (C, Z, Y, X) float32 input for a HU volume, in memory (both methods
    get the same numpy array, so neither pays for lazy channel assembly)."""
    processing = plugin.processing()
    if role == "airway":
        lazy = processing.airway_input(hu)
    else:
        lungs = processing.lung_mask(hu, plugin.manifest.input.target_spacing_mm)
        distance = np.full(hu.shape, 255, np.uint8)
        lazy = processing.artery_vein_input(hu, lungs, distance)
    return np.ascontiguousarray(np.asarray(lazy.compute(scheduler="synchronous"), np.float32))


# ---------------------------------------------------------------------------------
# Peak RSS of the whole flow on a big CT, in a subprocess
# ---------------------------------------------------------------------------------


def big_ct(path: Path, shape_zyx: tuple[int, int, int] = RSS_SHAPE_ZYX) -> Path:
    """A ``shape_zyx`` chest CT NIfTI: a small synthetic CT resampled up (linear).

    The spacing shrinks with the zoom (0.26 x 0.26 x 0.24 mm for 512 x 512 x 400), so the
    anatomy is the small synthetic chest's; the peak-RSS flow runs on this grid as it is,
    without resampling to the model's 1.0 x 0.7 x 0.7 mm: every stage sees all
    400 x 512 x 512 voxels.
    """
    import nibabel as nib
    from scipy import ndimage as ndi

    from tessera.pipelines.synthetic.ct import _write_nifti, nifti_affine

    path = Path(path)
    if path.exists():
        return path
    small, spacing = bench_input((96, 192, 192))
    zoom = [o / i for o, i in zip(shape_zyx, small.shape, strict=True)]
    big = ndi.zoom(small.astype(np.float32), zoom, order=1, mode="nearest", grid_mode=True)
    big = np.clip(np.rint(big), -1024, 3071).astype(np.int16)
    new_spacing = np.array([s / z for s, z in zip(spacing, zoom, strict=True)])
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_nifti(nib, big, nifti_affine(tuple(new_spacing), shape_zyx), new_spacing, path,
                 "Tessera bench CT (upsampled synthetic)")
    return path


def _rss_child(ct_path: str, plugin_ref: str, out_dir: str) -> None:
    """Runs in the subprocess: the segment-3d flow with warm engines + stand-in windows."""
    import threading

    import tessera
    from tessera.pipelines.engines import create_engine
    from tessera.pipelines.plugin_system import get_plugin
    from tessera.pipelines.runners.base import ModelInfo, RunOptions
    from tessera.pipelines.runners.segment_3d import segment_volume

    plugin = get_plugin(plugin_ref)
    processing = plugin.processing()
    spec = plugin.manifest.input
    window = tuple(int(v) for v in spec.size_px)

    def stand_in(role: str, n_classes: int) -> Any:
        engine = create_engine(plugin, engine="onnx", role=role, threads=1)
        names = plugin.manifest.role_spec(role)
        calls = {"n": 0}

        def predict(x: np.ndarray) -> np.ndarray:
            calls["n"] += 1
            if calls["n"] <= 2:  # real windows: the session's memory is part of the peak
                p = engine.run({names.inputs[0]: np.ascontiguousarray(x, np.float32)})[names.outputs[0]]
                return np.concatenate([1.0 - p, p], axis=1) if p.shape[1] == 1 else p
            dark = (x[:, 0] < 0.05).astype(np.float32)  # windowed CT: air-like lumen
            out = np.zeros((x.shape[0], n_classes, *x.shape[2:]), np.float32)
            out[:, 0] = 1.0 - dark
            out[:, 1] = dark
            return out

        return predict

    def flow(source: Any) -> dict[str, Any]:
        level = source.levels[0]
        hu = np.asarray(level.compute(scheduler="synchronous"))
        out = processing.segment_airway_vessels(
            hu, tuple(source.spacing), airway_predictor=stand_in("airway", 2),
            av_predictor=stand_in("artery-vein", 3), window_zyx=window,
            overlap=spec.overlap or 0.25, batch_size=int(spec.batch_size))
        return {"labels": out["labels"]}

    with tessera.open(ct_path) as source:
        segment_volume(source, None, Path(out_dir), model=ModelInfo.from_manifest(plugin.manifest),
                       options=RunOptions(resume=False), progress=NullProgress(),
                       cancel=threading.Event(), identity={"bench": ct_path}, predict_volume=flow)


def peak_rss_mb(ct_path: Path, plugin_ref: str, out_dir: Path) -> dict[str, Any]:
    """Peak RSS (MB) of ``_rss_child`` in a fresh Python process, and its wall time."""
    code = (
        "import resource, sys\n"
        "from tessera.pipelines.bench.volume import _rss_child\n"
        "_rss_child(sys.argv[1], sys.argv[2], sys.argv[3])\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, str(ct_path), plugin_ref, str(out_dir)],
                          capture_output=True, text=True, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        msg = f"the peak-RSS run failed: {proc.stderr[-2000:]}"
        raise RuntimeError(msg)
    rss_kb = int(proc.stdout.strip().splitlines()[-1])  # Linux: kilobytes
    summary = json.loads((Path(out_dir) / "summary.json").read_text(encoding="utf-8"))
    return {"peak_rss_mb": round(rss_kb / 1024, 1), "seconds": round(time.perf_counter() - t0, 1),
            "shape_zyx": summary["source"]["shape_zyx"], "outputs": summary["outputs"]}
