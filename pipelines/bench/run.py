"""``tessera bench run``: is the batch pipeline as fast as the model, and is its memory flat?

Three ways of running the same model over the same tissue tiles of the same slide, with
the same batch size and threads, measured alternately (so background load hits them
alike) and reported as medians and ratios:

- model-only: the tiles, already read, decoded and resampled, in memory, through the
  predictor (preprocess -> engine -> postprocess) in batches: the ceiling;
- end-to-end: ``tessera run``'s runner on the slide file (tissue mask, reads and decoding
  inside dask tasks, inference, every output written, summary);
- naive: ``openslide.read_region`` per tile, resize, inference per batch, one thing at
  a time (what a first script does).

Peak RSS: ``tessera run`` in a subprocess on two synthetic slides of very different size
(10k x 10k and 60k x 60k by default); the peaks should be equal (memory must not grow
with the slide).

The slides are JPEG-compressed Aperio SVS written with Tessera's pyramid writer; their
tissue is a mirrored tile of a synthetic H&E patch inside an off-centre ellipse, so
decoding costs what real H&E costs, and a 60k slide is written in about a minute.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tessera.pipelines.progress import NullProgress, ProgressReporter

BENCH_PLUGIN_ID = "bench-vit-tiny"
_RSS_WRAPPER = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n"
    "sys.stderr.write(rc.stderr.decode()[-2000:]) if rc.returncode else None\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc.returncode)\n"
)


# ---- inputs ------------------------------------------------------------------------------
def bench_plugin(folder: Path, *, arch: str = "vit_tiny_patch16_224") -> Path:
    """A tile-classify plugin around a timm ViT (random weights) exported to ONNX: the
    stand-in for a real model when none is installed. Needs the train extra (torch, timm)."""
    from tessera.pipelines.errors import MissingDependency
    from tessera.pipelines.plugin_system.integrity import sha256_file

    folder = Path(folder)
    model_path = folder / "model.onnx"
    if not model_path.exists():
        try:
            import timm
            import torch
        except ImportError as exc:
            raise MissingDependency("torch", "train", "building the benchmark model") from exc
        from tessera.pipelines.engines import export_onnx

        torch.manual_seed(0)
        model = timm.create_model(arch, pretrained=False, num_classes=2).eval()
        export_onnx(model, {"input": torch.randn(2, 3, 224, 224)}, model_path, output_names=["logits"])
    (folder / "MODEL_CARD.md").write_text(f"# {arch}, random weights\n\nFor `tessera bench run` only.\n")
    (folder / "manifest.toml").write_text(f"""schema_version = 1
id = "{BENCH_PLUGIN_ID}"
name = "Benchmark ViT ({arch}, random weights)"
version = "0.1.0"
task = "tile-classify"
summary = "A timm {arch} with random weights, for throughput benchmarks."
licence = "Apache-2.0"
intended_use = "Benchmarks only; its outputs mean nothing."

[input]
size_px = [224, 224]
target_mpp = 0.5
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 0.225]
batch_size = 16

[output]
kind = "probabilities"
positive_class = "malignant"

[[output.classes]]
name = "benign"
colour = "#3cb44b"

[[output.classes]]
name = "malignant"
colour = "#e6194b"

[[files]]
path = "model.onnx"
sha256 = "{sha256_file(model_path)}"
format = "onnx"
""")
    return folder


def _texture(seed: int) -> np.ndarray:
    """A 1024 x 1024 mirrored (seamlessly tileable) synthetic H&E texture."""
    from tessera.pipelines.synthetic.breakhis import render_patch

    rng = np.random.default_rng(seed)
    patch = np.asarray(render_patch(rng, True, 0.25, (512, 512)), dtype=np.uint8)[..., :3]
    top = np.concatenate([patch, patch[:, ::-1]], axis=1)
    return np.ascontiguousarray(np.concatenate([top, top[::-1]], axis=0))


def bench_slide(path: Path, size_px: int, *, mpp: float = 0.25, seed: int = 0) -> Path:
    """A square JPEG SVS of ``size_px`` with ~45% tissue (kept if it already exists)."""
    from tessera.pipelines.writers.tiff_pyramid import write_pyramid_tiff

    path = Path(path)
    if path.exists():
        return path
    tex = _texture(seed)
    th, tw = tex.shape[:2]
    n = size_px
    cy, cx, ry, rx = 0.47 * n, 0.45 * n, 0.40 * n, 0.36 * n
    glass = np.array([238, 237, 240], np.uint8)

    def render(y0: int, x0: int, h: int, w: int) -> np.ndarray:
        yy = (np.arange(y0, y0 + h) % th)[:, None]
        xx = (np.arange(x0, x0 + w) % tw)[None, :]
        out = tex[yy, xx]
        ey = ((np.arange(y0, y0 + h) - cy) / ry)[:, None] ** 2
        ex = ((np.arange(x0, x0 + w) - cx) / rx)[None, :] ** 2
        out[(ey + ex) > 1.0] = glass
        return out

    path.parent.mkdir(parents=True, exist_ok=True)
    write_pyramid_tiff(path, l0_shape_yx=(n, n), render_region=render, compression="jpeg",
                       jpeg_quality=85, mpp=mpp, app_mag=40, flavour="svs")
    return path


# ---- the three ways ------------------------------------------------------------------------
@dataclass
class Setup:
    """Everything the three measurements share."""

    slide: Path
    plugin: Any
    batch_size: int
    threads: int
    tile_rc: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int32))
    grid: Any = None
    tiles: np.ndarray | None = None


def _predictor(setup: Setup, threads: int | None = None):
    from tessera.pipelines.runners.base import PluginPredictor, plugin_ref

    return PluginPredictor(plugin_ref(setup.plugin), "tile-classify", threads=threads or setup.threads)


def prepare(setup: Setup) -> None:
    """Tissue grid of the slide and all its tissue tiles decoded into memory."""
    import tessera
    from tessera.pipelines.runners.base import ModelInfo, RunOptions
    from tessera.pipelines.runners.tiled import TiledSpec, plan_grid, read_block_tiles
    from tessera.pipelines.tiling.read import default_fill

    model = ModelInfo.from_manifest(setup.plugin.manifest)
    spec = TiledSpec("tile-classify", (model.size_px[0], model.size_px[1]), model.target_mpp, len(model.classes),
                     batch_size=setup.batch_size)
    with tessera.open(setup.slide) as src:
        _, grid = plan_grid(src, spec, RunOptions())
        blocks = grid.blocks()
        setup.grid = grid
        setup.tile_rc = np.concatenate([b.tile_rc for b in blocks])
        setup.tiles = np.concatenate([read_block_tiles(src, grid, b.tile_rc, fill=default_fill(src)) for b in blocks])


def model_only(setup: Setup) -> float:
    """Seconds to run the in-memory tiles through the predictor in batches."""
    from tessera.pipelines.runners.tiled import predict_batches

    predictor = _predictor(setup)
    predictor(setup.tiles[: setup.batch_size])  # warm: session created, first run done
    t0 = time.perf_counter()
    predict_batches(predictor, setup.tiles, setup.batch_size)
    return time.perf_counter() - t0


def end_to_end(setup: Setup, out_dir: Path, *, scheduler: str | None = None, workers: int | None = None,
               engine_threads: int | None = None) -> float:
    """Seconds for the tile-classify runner on the slide file, all outputs written."""
    import shutil

    from tessera.pipelines.runners.base import RunOptions
    from tessera.pipelines.runners.tile_classify import run

    shutil.rmtree(out_dir, ignore_errors=True)
    options = RunOptions(batch_size=setup.batch_size, resume=False, scheduler=scheduler,
                         workers=workers or setup.threads, engine_threads=engine_threads)
    if scheduler is None:  # the engine the runner will use, created and run once (as model-only's)
        _predictor(setup, options.effective_engine_threads())(setup.tiles[:1])
    t0 = time.perf_counter()
    summary = run(setup.slide, setup.plugin, out_dir, options=options, progress=NullProgress(),
                  cancel=threading.Event())
    elapsed = time.perf_counter() - t0
    if summary["tiles"]["computed"] != len(setup.tile_rc):
        msg = f"end-to-end ran {summary['tiles']['computed']} tiles, model-only {len(setup.tile_rc)}"
        raise RuntimeError(msg)
    return elapsed


def naive(setup: Setup) -> float:
    """Seconds for openslide.read_region per tile + per-batch inference, sequentially."""
    import openslide
    from PIL import Image

    predictor = _predictor(setup)
    grid = setup.grid
    th, tw = grid.tile_px
    ly, lx = grid.level_downsample_yx
    wy, wx = grid.window_l0_size_yx
    size = (max(1, round(wx / lx)), max(1, round(wy / ly)))
    t0 = time.perf_counter()
    slide = openslide.OpenSlide(str(setup.slide))
    batch: list[np.ndarray] = []
    for r, c in setup.tile_rc:
        y0, x0 = grid.window_l0_yx(int(r), int(c))
        img = slide.read_region((round(float(x0)), round(float(y0))), grid.level, size).convert("RGB")
        if img.size != (tw, th):
            img = img.resize((tw, th), Image.Resampling.BILINEAR)
        batch.append(np.asarray(img))
        if len(batch) == setup.batch_size:
            predictor(np.stack(batch))
            batch = []
    if batch:
        predictor(np.stack(batch))
    slide.close()
    return time.perf_counter() - t0


def peak_rss_bytes(cmd: list[str]) -> int:
    """Peak resident memory of ``cmd`` run in its own process (ru_maxrss of the child)."""
    res = subprocess.run([sys.executable, "-c", _RSS_WRAPPER, *cmd], capture_output=True, text=True, check=True)
    kb, rc = res.stdout.split()
    if int(rc) != 0:
        msg = f"{' '.join(cmd)} failed (exit {rc}): {res.stderr[-500:]}"
        raise RuntimeError(msg)
    return int(kb) * 1024


# ---- the benchmark ---------------------------------------------------------------------------
def bench_run(
    *,
    cache: Path,
    plugin: str | None = None,
    size_px: int = 10_000,
    batch_size: int = 16,
    threads: int | None = None,
    repeats: int = 3,
    rss_sizes: tuple[int, ...] = (10_000, 60_000),
    compare_schedulers: bool = True,
    rss_plugin: str | None = None,
    progress: ProgressReporter | None = None,
) -> dict[str, Any]:
    """Run the benchmark; returns a JSON-ready report (medians in seconds, ratios, RSS).

    ``rss_plugin``: the plugin for the peak-RSS runs (default: the benchmarked one; a
    light model keeps a 60k x 60k run short, the pipeline's memory is what is measured).
    ``size_px`` 0 skips the throughput part.
    """
    progress = progress or NullProgress()
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    threads = threads or os.cpu_count() or 1
    plug = _resolve_plugin(plugin, cache)
    report: dict[str, Any] = {"plugin": plug}
    if size_px:
        report |= _throughput(plug, cache, size_px, batch_size, threads, repeats, compare_schedulers, progress,
                              n_rss=len(rss_sizes))
    else:
        progress.start(len(rss_sizes), "bench run: peak RSS")
    report["rss_plugin"] = rss_plugin or plug
    rss = {}
    for size in rss_sizes:
        big = bench_slide(cache / f"bench_{size}.svs", size)
        out = cache / f"rss-{size}"
        cmd = [sys.executable, "-m", "tessera", "run", rss_plugin or plug, str(big), "--out", str(out), "--no-resume",
               "--quiet", "--batch-size", str(batch_size)]
        t0 = time.perf_counter()
        rss[str(size)] = {"peak_rss_mb": round(peak_rss_bytes(cmd) / 2**20, 1),
                          "seconds": round(time.perf_counter() - t0, 1),
                          "tissue_tiles": _tiles_of(out / big.stem / "summary.json")}
        progress.advance()
    if rss:
        peaks = [v["peak_rss_mb"] for v in rss.values()]
        report["peak_rss"] = rss
        report["peak_rss_spread"] = round(max(peaks) / min(peaks) - 1, 3)
    progress.close()
    return report


def _throughput(plug: str, cache: Path, size_px: int, batch_size: int, threads: int, repeats: int,
                compare_schedulers: bool, progress: ProgressReporter, *, n_rss: int) -> dict[str, Any]:
    """The side-by-side part of the benchmark."""
    from tessera.pipelines.plugin_system import get_plugin

    slide = bench_slide(cache / f"bench_{size_px}.svs", size_px)
    setup = Setup(slide=slide, plugin=get_plugin(plug), batch_size=batch_size, threads=threads)
    prepare(setup)
    n = len(setup.tile_rc)
    runs: dict[str, list[float]] = {"model_only": [], "end_to_end": [], "naive": []}
    if compare_schedulers:
        runs["end_to_end_local_cluster"] = []
    progress.start(repeats * len(runs) + n_rss, "bench run")
    for _ in range(repeats):
        runs["model_only"].append(model_only(setup))
        progress.advance()
        runs["end_to_end"].append(end_to_end(setup, cache / "out-threads"))
        progress.advance()
        if compare_schedulers:
            runs["end_to_end_local_cluster"].append(
                end_to_end(setup, cache / "out-cluster", scheduler="local-cluster", workers=threads))
            progress.advance()
        runs["naive"].append(naive(setup))
        progress.advance()
    med = {k: statistics.median(v) for k, v in runs.items()}
    rate = {k: n / v for k, v in med.items()}
    report: dict[str, Any] = {
        "plugin": setup.plugin.id,
        "slide": {"path": str(slide), "size_px": size_px, "tissue_tiles": n,
                  "tile_px": list(setup.grid.tile_px), "level": setup.grid.level},
        "batch_size": batch_size,
        "threads": threads,
        "repeats": repeats,
        "seconds": {k: [round(x, 3) for x in v] for k, v in runs.items()},
        "median_s": {k: round(v, 3) for k, v in med.items()},
        "tiles_per_s": {k: round(v, 2) for k, v in rate.items()},
        "ratios": {
            "end_to_end_vs_model_only": round(rate["end_to_end"] / rate["model_only"], 3),
            "end_to_end_vs_naive": round(rate["end_to_end"] / rate["naive"], 3),
        },
    }
    if compare_schedulers:
        report["ratios"]["threads_vs_local_cluster"] = round(
            rate["end_to_end"] / rate["end_to_end_local_cluster"], 3)
    return report


def _tiles_of(summary_path: Path) -> int | None:
    try:
        return int(json.loads(summary_path.read_text())["tiles"]["tissue"])
    except (OSError, ValueError, KeyError):
        return None


def _resolve_plugin(plugin: str | None, cache: Path) -> str:
    """The plugin to benchmark: the one named, else breast-vit when installed, else the
    benchmark ViT built in the cache."""
    from tessera.pipelines.errors import PluginError
    from tessera.pipelines.plugin_system import get_plugin

    if plugin:
        return plugin
    try:
        get_plugin("breast-vit")
        return "breast-vit"
    except PluginError:
        return str(bench_plugin(cache / "bench-plugin"))


def format_table(report: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Rows (way, median s, tiles/s, ratio to model-only) for printing."""
    rows = []
    base = report["tiles_per_s"]["model_only"]
    names = {"model_only": "model only (decoded tiles in memory)", "end_to_end": "tessera run (threads)",
             "end_to_end_local_cluster": "tessera run (LocalCluster)", "naive": "naive read_region loop"}
    for key, label in names.items():
        if key in report["median_s"]:
            rate = report["tiles_per_s"][key]
            rows.append((label, f"{report['median_s'][key]:.2f}", f"{rate:.1f}", f"{rate / base:.2f}x"))
    return rows
