"""The live overlay controller without Qt: what it schedules, drops, caches and reuses."""

from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np
import pytest

from tessera.pipelines.live import LiveOverlay, OverlayRaster, ResultCache, ViewBox
from tessera.pipelines.plugin_system import load_plugin_folder
from tessera.pipelines.tiling.tissue import TissueOptions


class Recorder:
    """Collects the overlay's updates (called from its worker threads)."""

    def __init__(self) -> None:
        self.updates = []
        self.errors = []
        self.lock = threading.Lock()

    def __call__(self, update) -> None:
        with self.lock:
            self.updates.append(update)

    def error(self, exc) -> None:
        with self.lock:
            self.errors.append(exc)

    def tiles(self, origin: str | None = None) -> list[tuple[int, int]]:
        with self.lock:
            return [(int(r), int(c)) for u in self.updates if u.kind in ("tiles", "ready")
                    and (origin is None or u.origin == origin) for r, c in u.tile_rc]


class GatedPredictor:
    """The test plugin's function, one call at a time, each waiting for a go."""

    def __init__(self, func, *, gated: bool = True) -> None:
        self.func = func
        self.calls: list[int] = []
        self.gate = threading.Semaphore(0)
        self.gated = gated
        self.entered = threading.Semaphore(0)

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        self.calls.append(len(tiles))
        self.entered.release()
        if self.gated and not self.gate.acquire(timeout=30):
            raise TimeoutError("the test never let this batch run")
        return self.func(tiles)


@pytest.fixture(scope="module")
def tile_plugin(plugin_dirs):
    return load_plugin_folder(plugin_dirs["tile-classify"])


@pytest.fixture(scope="module")
def source(synth, slide):
    # 1536 x 2304 px at 0.25 µm/px; the test model runs 64 px tiles at 0.5 µm/px:
    # cells of 128 level-0 px, a 12 x 18 grid.
    return synth.memory_source(slide.image, mpp=slide.mpp)


def make_overlay(source, plugin, rec: Recorder, **kw) -> LiveOverlay:
    kw.setdefault("reuse", False)
    kw.setdefault("tissue", TissueOptions())
    return LiveOverlay(source, plugin, on_update=rec, on_error=rec.error, **kw)


def test_view_tiles_match_the_model_and_only_the_view_runs(source, tile_plugin, slide, test_plugins):
    rec = Recorder()
    with make_overlay(source, tile_plugin, rec, workers=2) as live:
        view = ViewBox(300.0, 200.0, 900.0, 1100.0)
        live.set_view(view)
        assert live.wait_idle(60)
        grid = live.grid
        assert grid.cell_l0_size_yx == (128.0, 128.0) and grid.grid_shape == (12, 18)
        r0, r1, c0, c1 = live.visible_tiles(view)
        assert (r0, r1, c0, c1) == (2, 8, 1, 9)
        computed = set(rec.tiles("model"))
        expected = {(r, c) for r in range(r0, r1) for c in range(c0, c1) if grid.selected[r, c]}
        assert computed == expected  # every tissue tile in view, nothing outside it
        assert not any(not grid.selected[r, c] for r, c in computed)  # no glass tile ran
        # values equal the model's function on the tiles the batch runner would read
        for u in rec.updates:
            if u.kind != "tiles":
                continue
            for (r, c), p in zip(u.tile_rc, u.results, strict=True):
                y0, x0 = int(r) * 128, int(c) * 128
                tile = slide.image[y0 : y0 + 128 : 2, x0 : x0 + 128 : 2]
                ref = test_plugins.purple_fraction(tile[None])[0]
                np.testing.assert_allclose(p, ref, atol=0.08)
        assert rec.updates[-1].kind == "view-complete"
        assert rec.updates[-1].view_done == rec.updates[-1].view_total == len(expected)
        assert live.stats.tiles_computed == len(expected)
    assert not rec.errors


def test_centre_first_and_stale_requests_are_dropped(source, tile_plugin, test_plugins):
    rec = Recorder()
    gated = GatedPredictor(test_plugins.purple_fraction)
    live = make_overlay(source, tile_plugin, rec, workers=1, batch_size=2, predictor=gated, tissue=None)
    live.start()
    try:
        view = ViewBox(0.0, 0.0, 1536.0, 2304.0)  # the whole slide
        live.set_view(view)
        assert gated.entered.acquire(timeout=30)  # first batch planned and running
        gated.gate.release()
        assert gated.entered.acquire(timeout=30)
        # the first two batches are the 4 cells nearest the centre (768, 1152)
        first = rec.tiles("model")
        deadline = time.monotonic() + 10
        while len(first) < 2 and time.monotonic() < deadline:
            first = rec.tiles("model")
            time.sleep(0.01)
        assert set(first[:2]) <= {(5, 8), (5, 9), (6, 8), (6, 9)}
        # now look at the top-left corner: the queued centre tiles must not run
        corner = ViewBox(0.0, 0.0, 256.0, 256.0)
        live.set_view(corner)
        for _ in range(20):
            gated.gate.release()
        assert live.wait_idle(30)
        ran = rec.tiles("model")
        later = set(ran[len(first) + 2 :])  # after the batch that was running at the change
        assert {(0, 0), (0, 1), (1, 0), (1, 1)} <= set(ran)
        assert later <= {(0, 0), (0, 1), (1, 0), (1, 1)}
        assert live.stats.dropped > 100
        assert len(ran) < 12  # two centre batches, the one in flight, the corner
    finally:
        for _ in range(50):
            gated.gate.release()
        live.close()
    assert not any(t.is_alive() for t in live.threads)


def test_order_is_by_distance_from_centre(source, tile_plugin, test_plugins):
    rec = Recorder()
    pred = GatedPredictor(test_plugins.purple_fraction, gated=False)
    with make_overlay(source, tile_plugin, rec, workers=1, batch_size=1, predictor=pred, tissue=None) as live:
        view = ViewBox(200.0, 300.0, 1000.0, 1500.0)
        live.set_view(view)
        assert live.wait_idle(60)
        ran = rec.tiles("model")
    cy, cx = view.centre_yx
    d = [((r + 0.5) * 128 - cy) ** 2 + ((c + 0.5) * 128 - cx) ** 2 for r, c in ran]
    assert d == sorted(d)
    assert len(ran) == len(set(ran)) == 7 * 10


def test_cache_hits_and_bounded_eviction(source, tile_plugin, test_plugins):
    rec = Recorder()
    pred = GatedPredictor(test_plugins.purple_fraction, gated=False)
    a, b = ViewBox(0, 0, 512, 512), ViewBox(1024, 1536, 1536, 2304)
    with make_overlay(source, tile_plugin, rec, predictor=pred, tissue=None) as live:
        live.set_view(a)
        assert live.wait_idle(30)
        n_a = live.stats.tiles_computed
        assert n_a == 16
        live.set_view(b)
        assert live.wait_idle(30)
        calls = sum(pred.calls)
        live.set_view(a)  # back: everything from the cache, the model is not called
        assert live.wait_idle(30)
        assert sum(pred.calls) == calls
        assert live.stats.cache_hits == 16
        assert live.result((0, 0)) is not None
        assert rec.updates[-1].kind == "view-complete" and rec.updates[-1].view_done == 16

    # a cache that holds 10 results: going back recomputes what was evicted
    rec2 = Recorder()
    pred2 = GatedPredictor(test_plugins.purple_fraction, gated=False)
    size = ResultCache.cost(np.zeros(2, np.float32))
    with make_overlay(source, tile_plugin, rec2, predictor=pred2, tissue=None, cache_bytes=10 * size) as live:
        live.set_view(a)
        assert live.wait_idle(30)
        assert len(live.cache) == 10 and live.cache.stats().evictions == 6
        before = live.stats.tiles_computed
        live.set_view(ViewBox(0, 0, 1, 1))
        live.set_view(a)
        assert live.wait_idle(30)
        assert live.stats.tiles_computed == before + 6


def test_result_cache_is_lru_by_bytes():
    evicted = []
    cache = ResultCache(3 * ResultCache.cost(np.zeros(10, np.uint8)), on_evict=evicted.append)
    for k in range(3):
        cache.put(k, np.full(10, k, np.uint8))
    assert cache.get(0) is not None  # 0 is now the most recent
    cache.put(3, np.zeros(10, np.uint8))
    assert evicted == [1] and 1 not in cache and 0 in cache
    cache.put("big", np.zeros(10_000, np.uint8))  # larger than the budget: not kept
    assert "big" not in cache and len(cache) == 3
    s = cache.stats()
    assert (s.hits, s.misses, s.evictions, s.entries) == (1, 0, 1, 3)
    assert s.nbytes <= s.max_bytes
    with pytest.raises(ValueError):
        cache.get(0)[0] = 1  # stored results are read-only


def test_reuses_tessera_run_outputs(tmp_path, synth, slide, tile_plugin, plugin_dirs):
    from tessera.pipelines.plugin_system import get_plugin  # noqa: F401  (registry import path)
    from tessera.pipelines.progress import NullProgress
    from tessera.pipelines.runners.base import RunOptions
    from tessera.pipelines.runners.tile_classify import run as run_tile_classify

    path = synth.write_slide_file(tmp_path / "case-1.tif", slide.image, mpp=slide.mpp)
    out = tmp_path / "results" / "case-1"
    run_tile_classify(path, tile_plugin, out, options=RunOptions(workers=1), progress=NullProgress(),
                      cancel=threading.Event())
    import tessera

    rec = Recorder()
    calls = []
    def predictor(tiles):
        calls.append(len(tiles))
        return np.zeros((len(tiles), 2), np.float32)

    with tessera.open(path) as src, LiveOverlay(src, tile_plugin, on_update=rec, on_error=rec.error,
                                                predictor=predictor) as live:
        live.set_view(ViewBox(0, 0, 1536, 2304))
        assert live.wait_idle(60)
        assert live.stats.run_output == str(out)
        assert calls == []  # nothing recomputed: every tissue tile came from the run
        ready = rec.updates[0]
        assert ready.kind == "ready" and ready.origin == "run"
        assert len(ready.tile_rc) == live.grid.n_selected
        raster = OverlayRaster(live.grid, live.model)
        raster.apply(ready)
    import csv

    with open(out / "tiles.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    r, c = int(rows[5]["tile_row"]), int(rows[5]["tile_col"])
    assert raster.probs[1, r, c] == pytest.approx(float(rows[5]["prob_tumour"]), abs=1e-6)
    # another file with the same name elsewhere is not this run's input
    (tmp_path / "other").mkdir()
    other = synth.write_slide_file(tmp_path / "other" / "case-1.tif", slide.image, mpp=slide.mpp)
    with tessera.open(other) as src:
        live = LiveOverlay(src, tile_plugin, reuse=[tmp_path / "results"],
                           predictor=lambda t: np.zeros((len(t), 2), np.float32))
        with live:
            live.set_view(ViewBox(0, 0, 10, 10))
            assert live.wait_idle(30)
            assert live.stats.run_output is None


def test_plugin_failure_is_reported_not_raised(source, tile_plugin):
    rec = Recorder()

    def broken(tiles):
        raise RuntimeError("model exploded")

    with make_overlay(source, tile_plugin, rec, predictor=broken, tissue=None) as live:
        live.set_view(ViewBox(0, 0, 300, 300))
        assert live.wait_idle(30)
        assert live.stats.failed == 9
        assert rec.errors and "model exploded" in str(rec.errors[0])
        live.set_view(ViewBox(0, 0, 200, 200))  # failed tiles are not retried in a loop
        assert live.wait_idle(30)
    assert not any(t.is_alive() for t in live.threads)


def test_refuses_volumes_and_other_tasks(synth, plugin_dirs, tile_plugin):
    from tessera.pipelines.errors import PluginError

    vol = synth.volume_source(synth.make_volume())
    seg3d = load_plugin_folder(plugin_dirs["segment-3d"])
    src2d = synth.memory_source(np.zeros((256, 256, 3), np.uint8), mpp=0.5)
    with pytest.raises(PluginError, match="cannot run live"):
        LiveOverlay(src2d, seg3d)
    with pytest.raises(PluginError, match="2D"):
        LiveOverlay(vol, tile_plugin)


def test_segment_2d_cells_land_in_the_raster(source, plugin_dirs, slide, test_plugins):
    plugin = load_plugin_folder(plugin_dirs["segment-2d"])
    rec = Recorder()
    with LiveOverlay(source, plugin, on_update=rec, on_error=rec.error, reuse=False, tissue=None) as live:
        live.set_view(ViewBox(0, 0, 1536, 2304))
        assert live.wait_idle(120)
        raster = OverlayRaster(live.grid, live.model, max_side_px=600)
        for u in rec.updates:
            raster.apply(u)
    assert not rec.errors
    assert raster.reduce[0] > 1 and raster.known().all()
    # compare with the model's function on the whole image at its resolution
    half = slide.image[::2, ::2]
    ref = test_plugins.segment_probability(half)
    f = raster.reduce[0]
    ref_small = ref[: ref.shape[0] // f * f, : ref.shape[1] // f * f]
    ref_small = ref_small.reshape(ref.shape[0] // f, f, ref.shape[1] // f, f).mean(axis=(1, 3))
    got = raster.probs[1, : ref_small.shape[0], : ref_small.shape[1]]
    assert np.mean(np.abs(got - ref_small)) < 0.05


def test_exports_match_what_was_computed(tmp_path, synth, slide, tile_plugin):
    import json

    from PIL import Image

    import tessera
    from tessera.pipelines.live import export

    path = synth.write_slide_file(tmp_path / "exp.tif", slide.image, mpp=slide.mpp)
    rec = Recorder()
    with tessera.open(path) as src, LiveOverlay(src, tile_plugin, on_update=rec, reuse=False) as live:
        live.set_view(ViewBox(0, 0, 768, 2304))  # the top half only
        assert live.wait_idle(60)
        raster = OverlayRaster(live.grid, live.model)
        for u in rec.updates:
            raster.apply(u)
        n_known = int(raster.known().sum())
        assert 0 < n_known < live.grid.n_selected
        n = export.export_geojson(raster, src, tmp_path / "o.geojson")
        export.export_png(raster, src, tmp_path / "o.png", max_px=576)
        export.export_ome_zarr(raster, src, tmp_path / "o.ome.zarr")
    feats = json.loads((tmp_path / "o.geojson").read_text())["features"]
    assert n == len(feats)
    assert sum(f["properties"]["objectType"] == "detection" for f in feats) == n_known
    heat = tessera.open(tmp_path / "o.ome.zarr")
    p = np.asarray(heat.levels[0])[1]
    np.testing.assert_array_equal(p > 0, np.nan_to_num(raster.probs[1]) > 0.5 / 255)
    png = np.asarray(Image.open(tmp_path / "o.png").convert("RGB")).astype(int)
    # tumour tiles computed (top half) are tinted red; the bottom half is untouched
    fy = png.shape[0] / slide.image.shape[0]
    tum = slide.tumour[::4, ::4]
    ys, xs = np.nonzero(tum[: tum.shape[0] // 2 - 8])
    top_red = png[(ys * 4 * fy).astype(int), (xs * 4 * fy).astype(int)]
    assert top_red[:, 0].mean() > top_red[:, 1].mean() + 60  # red over purple-dark tumour
    ys2, xs2 = np.nonzero(tum[tum.shape[0] // 2 + 40 :])
    bottom = png[((ys2 + tum.shape[0] // 2 + 40) * 4 * fy).astype(int), (xs2 * 4 * fy).astype(int)]
    assert abs(bottom[:, 0].mean() - bottom[:, 2].mean()) < 60  # still purple, not tinted


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux's")
def test_workers_run_at_a_lower_priority_than_the_caller(source, tile_plugin, test_plugins):
    from tessera.pipelines.live.controller import lower_thread_priority

    def nice_now() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    mine = nice_now()
    seen: list[int] = []

    def probe() -> None:
        before = nice_now()
        assert lower_thread_priority(5)
        seen.append(nice_now() - before)

    t = threading.Thread(target=probe)
    t.start()
    t.join()
    assert seen == [min(5, 19 - mine)]
    assert nice_now() == mine  # only that thread changed

    niceness: list[int] = []

    def predictor(batch: np.ndarray) -> np.ndarray:
        niceness.append(nice_now())
        return test_plugins.purple_fraction(batch)

    rec = Recorder()
    with make_overlay(source, tile_plugin, rec, workers=1, predictor=predictor) as live:
        live.set_view(ViewBox(300.0, 200.0, 900.0, 1100.0))
        assert live.wait_idle(60)
    assert niceness
    assert min(niceness) > mine or mine == 19
    assert nice_now() == mine
