"""``tessera bench view``: how the viewer responds, measured in a real Tessera window.

Four figures (README "Viewer responsiveness"):
- time to first frame: from ``open(path)`` until the canvas has drawn the slide;
- time from a view change until the visible overlay is complete: a 1920 x 1080 screen
  at the model's resolution moved to a fresh tissue region (nothing cached), until the
  last tile of it is painted (median over regions);
- UI-thread stall: a 10 ms QTimer's lateness (p50/p99/max), side by side with and without
  live inference, on a still view and while panning;
- RSS after panning across the slide at level 0 with the live overlay on (a serpentine
  of canvas-sized steps), against the bounded caches.

Runs under Xvfb here: Mesa's software OpenGL draws every frame on the CPU, so frame
times (and therefore pan stalls) are far above a desktop GPU's; the with/without-live
columns separate what the overlay costs from what drawing costs.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tessera.app.viewer.compat import camera
from tessera.pipelines.live import ViewBox

PROBE_MS = 10


def _app():
    from qtpy.QtWidgets import QApplication

    return QApplication.instance()


def _pump_until(cond: Callable[[], bool], timeout_s: float) -> bool:
    app = _app()
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        app.processEvents()
        if cond():
            return True
        time.sleep(0.002)
    return False


def _pump_for(seconds: float) -> None:
    app = _app()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.002)


def _rss_mb() -> float:
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss / 2**20


class StallProbe:
    """A QTimer at ``PROBE_MS``; how late each tick comes is the UI thread's stall."""

    def __init__(self) -> None:
        from qtpy.QtCore import QElapsedTimer, QTimer

        self.ticks: list[float] = []
        self._clock = QElapsedTimer()
        self._timer = QTimer()
        self._timer.setInterval(PROBE_MS)
        self._timer.timeout.connect(lambda: self.ticks.append(self._clock.nsecsElapsed() / 1e6))

    def __enter__(self) -> StallProbe:
        self.ticks.clear()
        self._clock.start()
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.stop()

    def summary(self) -> dict[str, float]:
        gaps = np.diff(np.asarray(self.ticks)) if len(self.ticks) > 1 else np.zeros(1)
        late = np.maximum(gaps - PROBE_MS, 0.0)
        return {"ticks": len(self.ticks), "p50_ms": round(float(np.percentile(late, 50)), 1),
                "p99_ms": round(float(np.percentile(late, 99)), 1), "max_ms": round(float(late.max()), 1)}


def stand_in_plugin(folder: Path, plugin_id: str = "breast-vit") -> Path:
    """A copy of ``plugin_id`` with *random* weights exported to ONNX: the demo
    architecture's exact compute cost when the real weights are not shipped yet
    (timings only; its outputs mean nothing). Needs the train extra (torch); the CLI
    runs it in a child process so torch does not count in the viewer's RSS."""
    import hashlib
    import shutil

    from tessera.pipelines.engines import export_onnx
    from tessera.pipelines.plugin_system import get_plugin

    plugin = get_plugin(plugin_id)
    folder = Path(folder)
    if (folder / "manifest.toml").exists():
        return folder
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(plugin.root, tmp, ignore=shutil.ignore_patterns("weights", "__pycache__"))
    import torch

    torch.manual_seed(0)
    model = plugin.hook("model")().eval()
    h, w = plugin.manifest.input.size_px
    report = export_onnx(model, {"input": torch.randn(2, 3, h, w)}, tmp / "model.onnx",
                         output_names=list(plugin.manifest.models["model"].outputs))
    del report
    sha = hashlib.sha256((tmp / "model.onnx").read_bytes()).hexdigest()
    text = (tmp / "manifest.toml").read_text()
    text = text.replace(f'id = "{plugin_id}"', f'id = "{plugin_id}-random"', 1)
    text += f'\n[[files]]\npath = "model.onnx"\nsha256 = "{sha}"\nformat = "onnx"\n'
    (tmp / "manifest.toml").write_text(text)
    tmp.rename(folder)
    return folder


def run_view_bench(slide: Path, plugin: Any, *, regions: int = 5, pan_steps: int = 200,
                   phase_s: float = 8.0, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure the four figures on ``slide`` with ``plugin`` (a Plugin object)."""
    from tessera.app.viewer.display_levels import shared_display_cache
    from tessera.app.viewer.window import TesseraWindow

    results: dict[str, Any] = {"slide": str(slide), "plugin": f"{plugin.id} {plugin.manifest.version}"}
    rss_start = _rss_mb()
    w = TesseraWindow(show=True)
    qt_window = w.viewer.window._qt_window
    qt_window.resize(1920, 1080)
    _pump_for(1.0)
    results["canvas_hw"] = list(w.viewer.window._qt_viewer.canvas.size)
    canvas = w.viewer.window._qt_viewer.canvas
    draws: list[float] = []
    canvas._scene_canvas.events.draw.connect(lambda e: draws.append(time.perf_counter()))

    # ---- 1. time to first frame -----------------------------------------------------------
    firsts = []
    for attempt in range(3):
        for layer in list(w.viewer.layers):
            w.viewer.layers.remove(layer)
        shared_display_cache().clear()
        gc.collect()
        _pump_for(0.3)
        t0 = time.perf_counter()
        [layer] = w.open(slide)
        ok = _pump_until(lambda layer=layer, t0=t0: layer.loaded and any(d > t0 for d in draws)
                         and time.perf_counter() - max(draws) > 0.05, 60)
        first = next(d for d in draws if d > t0) if ok else float("nan")
        firsts.append(first - t0)
        log(f"first frame ({'cold' if attempt == 0 else 'warm'}): {firsts[-1]:.3f} s")
    results["first_frame_s"] = {"cold_process": round(firsts[0], 3),
                                "warm_median": round(float(np.median(firsts[1:])), 3)}
    source = layer.metadata["tessera_source"]
    frame = layer.metadata["tessera_frame"]
    mpp = source.mpp or 1.0

    # ---- 2. view change -> visible overlay complete ------------------------------------------------
    w.dock.select_plugin(plugin)
    adapter = w.dock.start_overlay(follow_camera=False, reuse=False)
    assert adapter is not None
    _pump_until(lambda: adapter.raster is not None or adapter.live.state == "failed", 120)
    if adapter.live.state == "failed":
        raise RuntimeError(f"the live overlay failed: {adapter.live.error}")
    grid = adapter.live.grid
    target_mpp = plugin.manifest.input.mpp or mpp
    view_l0 = (1080 * target_mpp / mpp, 1920 * target_mpp / mpp)  # a 1920x1080 screen at 1 px = model px
    rng = np.random.default_rng(0)
    cells = np.argwhere(grid.selected)
    cy, cx = grid.cell_l0_size_yx
    latencies, tiles = [], []
    used: list[tuple[float, float]] = []
    for _ in range(regions):
        for _try in range(200):
            r, c = cells[rng.integers(len(cells))]
            centre = ((r + 0.5) * cy, (c + 0.5) * cx)
            if all(abs(centre[0] - u[0]) > view_l0[0] and abs(centre[1] - u[1]) > view_l0[1] for u in used):
                break
        used.append(centre)
        camera(w.viewer).center = frame.l0_to_world_yx(centre)
        camera(w.viewer).zoom = 1.0 / (target_mpp / mpp * frame.yx_spacing[0])  # 1 screen px = 1 model px
        done_gen: list[int] = []
        adapter.view_complete.connect(done_gen.append)
        t0 = time.perf_counter()
        gen = adapter.push_view(ViewBox.around(centre, view_l0))
        ok = _pump_until(lambda gen=gen, done_gen=done_gen: gen in done_gen, 300)
        adapter.view_complete.disconnect(done_gen.append)
        latencies.append(time.perf_counter() - t0 if ok else float("nan"))
        tiles.append(adapter.live.view_progress()[1])
        log(f"view complete: {latencies[-1]:.2f} s for {tiles[-1]} tissue tiles")
    stats = adapter.live.stats
    results["view_complete_s"] = {
        "median": round(float(np.nanmedian(latencies)), 3), "max": round(float(np.nanmax(latencies)), 3),
        "tiles_median": int(np.median(tiles)), "view": "1920x1080 screen px at the model's µm/px",
        "ms_per_tile_read": round(1000 * stats.read_s / max(stats.tiles_computed, 1), 2),
        "ms_per_tile_infer": round(1000 * stats.infer_s / max(stats.tiles_computed, 1), 2),
        "engine": next((n for n in stats.notes if n.startswith("engine")), ""),
    }
    w.dock.stop_overlay()

    # ---- 3. UI stall: still and panning, without and with live inference ---------------------
    h, wd = source.spatial_shape(0)[-2:]
    cam = camera(w.viewer)

    tissue_rc = np.argwhere(grid.selected).mean(axis=0) if grid.selected.any() else np.array(grid.grid_shape) / 2
    tissue_l0 = ((tissue_rc[0] + 0.5) * cy, (tissue_rc[1] + 0.5) * cx)

    def position_still() -> None:
        cam.center = frame.l0_to_world_yx(tissue_l0)
        cam.zoom = 1.0 / (8 * frame.yx_spacing[0])  # 8 level-0 px per screen px: many tiles in view

    def still() -> None:
        _pump_for(phase_s)

    pan_zoom = 1.0 / (2 * frame.yx_spacing[0])
    pan_step = 0.25 * results["canvas_hw"][1] / pan_zoom

    def position_pan() -> None:
        cam.zoom = pan_zoom
        cam.center = (frame.l0_to_world_yx(tissue_l0)[0], frame.l0_to_world_yx((0, wd * 0.2))[1])

    def panning() -> None:
        y, x0 = cam.center[-2:]
        end = time.perf_counter() + phase_s
        k = 0
        while time.perf_counter() < end:
            k += 1
            cam.center = (y, x0 + k * pan_step)
            _pump_for(0.1)

    stall: dict[str, Any] = {}
    # what drawing alone costs: the still view redrawn 10 times a second, no inference
    from qtpy.QtCore import QTimer

    position_still()
    _pump_for(1.0)
    redraw = QTimer()
    redraw.setInterval(100)
    redraw.timeout.connect(canvas._scene_canvas.update)
    redraw.start()
    with StallProbe() as probe:
        still()
    redraw.stop()
    stall["still_redraw_10hz_no_live"] = probe.summary()
    log(f"stall still_redraw_10hz_no_live: {stall['still_redraw_10hz_no_live']}")
    for name, position, motion in (("still", position_still, still), ("panning", position_pan, panning)):
        for live_on in (True, False):
            w.dock.stop_overlay()
            shared_display_cache().clear()
            position()
            _pump_for(1.0)
            if live_on:  # a fresh controller: nothing cached, inference runs through the probe
                w.dock.start_overlay(follow_camera=True, reuse=False)
            with StallProbe() as probe:
                motion()
            key = f"{name}_{'live' if live_on else 'no_live'}"
            stall[key] = probe.summary()
            if live_on and w.dock.adapter is not None:
                done, total = w.dock.adapter.live.view_progress()
                stall[key] |= {"tiles_computed": w.dock.adapter.live.stats.tiles_computed,
                               "view_still_pending": total - done}
            log(f"stall {key}: {stall[key]}")
            w.dock.stop_overlay()
    results["ui_stall"] = stall

    # ---- 4. RSS after panning at level 0 with the live overlay on --------------------------------
    shared_display_cache().clear()
    gc.collect()
    from tessera.pipelines.runners.base import release_free_memory

    release_free_memory()
    rss0 = _rss_mb()
    w.dock.start_overlay(follow_camera=True, reuse=False)
    cam.zoom = 1.0 / frame.yx_spacing[0]  # one screen px per level-0 px
    ch, cw = results["canvas_hw"]
    per_row = max(1, int(wd // cw))
    n_rows = max(1, min(int(h // ch), pan_steps // per_row))
    rows_y = np.linspace(ch / 2, h - ch / 2, n_rows)
    peak = rss0
    steps = 0
    for i, y in enumerate(rows_y):
        xs = np.arange(cw / 2, wd, cw)
        for x in (xs if i % 2 == 0 else xs[::-1]):
            if steps >= pan_steps:
                break
            cam.center = frame.l0_to_world_yx((float(y), float(x)))
            _pump_for(0.05)
            steps += 1
            if steps % 10 == 0:
                peak = max(peak, _rss_mb())
    _pump_until(lambda: w.dock.adapter is None or w.dock.adapter.live.wait_idle(0), 120)
    rss1 = _rss_mb()
    cache = shared_display_cache().stats()
    results["rss_after_pan_mb"] = {
        "process_start": round(rss_start), "before_pan": round(rss0), "after": round(rss1), "peak_sampled": round(max(peak, rss1)),
        "screens_panned": steps, "level0_px_shown": int(steps * ch * cw),
        "slide_level0_px": int(h * wd), "display_cache_mb": round(cache.nbytes / 2**20),
        "display_cache_budget_mb": round(cache.max_bytes / 2**20),
    }
    log(f"RSS after panning {steps} screens at level 0: {rss1:.0f} MB (peak {max(peak, rss1):.0f} MB)")
    w.close()
    return results
