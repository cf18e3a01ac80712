"""PromptSession end to end with fake graphs: coordinates from level-0 clicks to level-0
masks through regions, windows and the encoder frame; the cache; threads."""

from __future__ import annotations

import threading

import dask.array as da
import numpy as np
import pytest

from tessera.pipelines.progress import Cancelled
from tessera.pipelines.prompting.cache import EmbeddingCache
from tessera.pipelines.prompting.session import PromptSession
from tessera.pipelines.sources.base import Source

from .conftest import fake_runtime, pyramid_source


@pytest.fixture(scope="module")
def slide():
    rng = np.random.default_rng(0)
    return pyramid_source(rng.integers(0, 255, (903, 1211, 3), dtype=np.uint8), [(450, 605), (225, 301)])


def centre_of(result) -> np.ndarray:
    x0, y0, x1, y1 = result.mask.l0_bbox_xyxy()
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2])


@pytest.mark.parametrize("level", [0, 1, 2])
def test_click_comes_back_where_it_was_made(slide, level):
    """A fake decoder draws a disk around the click in the encoder frame; the returned
    level-0 mask must be centred on the level-0 click (within a level pixel)."""
    rt = fake_runtime(input_size=64, radius_px=6)
    s = PromptSession(rt, max_windows=1000)
    s.set_image(slide, level=level, region_l0=(101.0, 57.0, 1100.0, 850.0), precompute=False)
    ds = slide.downsample(level)
    for click in ([400.3, 300.7], [130.0, 90.0], [1050.0, 800.0]):
        r = s.predict(points_l0_xy=[click], labels=[1])
        assert np.all(np.abs(centre_of(r) - click) <= ds * 1.01 + 1e-6), (centre_of(r), click)
        assert r.mask.mask.any()


def test_second_prompt_never_reruns_the_encoder(slide):
    rt = fake_runtime(input_size=64)
    s = PromptSession(rt)
    s.set_image(slide, level=2, region_l0=(0, 0, 500, 400), precompute=False)
    assert rt.encoder.calls == 0
    r1 = s.predict(points_l0_xy=[[100, 100]], labels=[1])
    n = rt.encoder.calls
    assert n == 1 and r1.encode_s > 0
    r2 = s.predict(box_l0_xyxy=[80, 80, 130, 120])
    r3 = s.predict(points_l0_xy=[[100, 100], [120, 110]], labels=[1, 0])
    assert rt.encoder.calls == n and r2.encode_s == 0 and r3.encode_s == 0
    # the same region set again (e.g. the viewer came back) is still cached
    s.set_image(slide, level=2, region_l0=(0, 0, 500, 400))
    assert rt.encoder.calls == len(s.windows)


def test_windows_follow_the_weights_training_scale_not_the_input_size(slide):
    """Weights trained on 32 px scenes resized to a 64 px input: regions are cut into
    32 px windows (each resized 2x by preprocessing); clicks still land where made."""
    rt = fake_runtime(input_size=64, radius_px=6, window_px=32)
    s = PromptSession(rt, max_windows=200)
    s.set_image(slide, level=2, region_l0=(0, 0, 1211, 903), precompute=False)
    assert s.halo_px == 4 and all(max(w.lvl_hw) <= 32 for w in s.windows)
    assert max(max(w.lvl_hw) for w in s.windows) == 32
    r = s.predict(points_l0_xy=[[700, 500]], labels=[1])
    assert np.all(np.abs(centre_of(r) - [700, 500]) <= slide.downsample(2) * 1.01)


def test_lazy_region_answers_from_one_window_then_warms_the_rest(slide):
    """precompute=False: the first prompt encodes only its window; encode_windows then
    does the others (cached ones are not recomputed) and stops when the region changes."""
    rt = fake_runtime(input_size=64)
    s = PromptSession(rt, halo_px=8)
    s.set_image(slide, level=2, region_l0=(0, 0, 1211, 903), precompute=False)
    s.predict(points_l0_xy=[[700, 500]], labels=[1])
    assert rt.encoder.calls == 1
    assert s.encode_windows() == len(s.windows) and rt.encoder.calls == len(s.windows)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        s.encode_windows(cancel=cancel)
    # a new region set while warming (the user moved on) ends the old warm-up
    s2 = PromptSession(fake_runtime(input_size=64), halo_px=8)
    s2.set_image(slide, level=2, region_l0=(0, 0, 1211, 903), precompute=False)
    run = s2.runtime.encoder.run

    def run_then_move(inputs):
        if s2.runtime.encoder.calls == 1:
            s2.set_image(slide, level=2, region_l0=(0, 0, 100, 100), precompute=False)
        return run(inputs)

    s2.runtime.encoder.run = run_then_move
    assert s2.encode_windows() == 2 < len(s.windows)


def test_large_region_is_tiled_and_prompts_go_to_their_window(slide):
    rt = fake_runtime(input_size=64)
    s = PromptSession(rt, halo_px=8)
    s.set_image(slide, level=2, region_l0=(0, 0, 1211, 903))
    assert len(s.windows) > 4 and all(max(w.lvl_hw) <= 64 for w in s.windows)
    assert rt.encoder.calls == len(s.windows)
    r = s.predict(points_l0_xy=[[700, 500]], labels=[1])
    x0, y0, x1, y1 = r.mask.window.l0_box_xyxy
    assert x0 < 700 < x1 and y0 < 500 < y1
    assert rt.encoder.calls == len(s.windows)


def test_prompt_layout_sent_to_the_decoder(slide):
    rt = fake_runtime(input_size=64)
    s = PromptSession(rt)
    s.set_image(slide, level=2, region_l0=(0, 0, 600, 600))
    s.predict(points_l0_xy=[[100, 100]], labels=[1])
    assert rt.decoder.last["point_labels"].tolist() == [[1, -1]]  # click + padding point
    s.predict(box_l0_xyxy=[50, 60, 200, 220])
    assert rt.decoder.last["point_labels"].tolist() == [[2, 3]]
    s.predict(points_l0_xy=[[100, 100]], labels=[0], box_l0_xyxy=[50, 60, 200, 220])
    assert rt.decoder.last["point_labels"].tolist() == [[0, 2, 3]]
    assert rt.decoder.last["has_mask_input"].tolist() == [0.0]
    with pytest.raises(ValueError, match="point or a box"):
        s.predict()
    with pytest.raises(ValueError, match="labels"):
        s.predict(points_l0_xy=[[1, 1]], labels=[2])


def test_arrays_volumes_and_the_disk_cache(tmp_path):
    vol = np.random.default_rng(2).normal(0, 300, (5, 90, 70)).astype(np.float32)
    cache = EmbeddingCache(disk_dir=tmp_path)
    rt = fake_runtime(input_size=64)
    s = PromptSession(rt, cache=cache)
    s.set_image(vol, z=3, value_window=(-1000.0, 1000.0))
    r = s.predict(points_l0_xy=[[30, 40]], labels=[1])
    assert r.mask.mask.shape == (64, 64) or r.mask.window.lvl_hw[0] <= 64
    calls = rt.encoder.calls
    s2 = PromptSession(rt, cache=EmbeddingCache(disk_dir=tmp_path))
    s2.set_image(vol.copy(), z=3, value_window=(-1000.0, 1000.0))  # same content: same identity
    assert rt.encoder.calls == calls
    s2.set_image(vol, z=2, value_window=(-1000.0, 1000.0))
    assert rt.encoder.calls > calls  # another slice is another embedding


def test_threads_set_image_and_predict_concurrently(slide):
    rt = fake_runtime(input_size=64)
    s = PromptSession(rt)
    s.set_image(slide, level=2, region_l0=(0, 0, 800, 800))
    errors = []

    def prompter():
        try:
            for k in range(20):
                r = s.predict(points_l0_xy=[[100 + k, 120]], labels=[1])
                assert r.mask.mask.any()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def mover():
        try:
            for k in range(5):
                s.set_image(slide, level=2, region_l0=(0, 0, 800 - 10 * k, 800))
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=prompter) for _ in range(3)] + [threading.Thread(target=mover)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_errors_are_clear():
    s = PromptSession(fake_runtime())
    with pytest.raises(RuntimeError, match="set_image"):
        s.predict(points_l0_xy=[[1, 1]])
    big = Source(path="<big>", format="t", reader="memory", levels=[da.zeros((5000, 5000), chunks=512)], axes="YX")
    with pytest.raises(ValueError, match="coarser level or a smaller region"):
        s.set_image(big)


def test_extend_through_slices_follows_the_object():
    """A fake decoder draws a disk at the click; the click of each next slice is the
    previous mask's centre, so the chain runs to the requested slice and stays put."""
    from tessera.pipelines.prompting.session import extend_through_slices

    vol = np.random.default_rng(3).normal(size=(6, 80, 90)).astype(np.float32)
    rt = fake_runtime(input_size=128, radius_px=6)
    s = PromptSession(rt)
    s.set_image(vol, z=2)
    first = s.predict(points_l0_xy=[[40, 30]], labels=[1])
    chain = extend_through_slices(s, vol, first, 2, z_stop=5)
    assert sorted(chain) == [2, 3, 4, 5]
    for r in chain.values():
        x0, y0, x1, y1 = r.mask.l0_bbox_xyxy()
        assert abs((x0 + x1) / 2 - 40.5) <= 1 and abs((y0 + y1) / 2 - 30.5) <= 1
    down = extend_through_slices(s, vol, first, 2, z_stop=0)
    assert sorted(down) == [0, 1, 2]
    assert s.z == 0


def test_decoder_runs_on_one_thread_unless_told(monkeypatch):
    """The per-prompt decoder defaults to one ONNX Runtime thread (faster for its small
    graph); the encoder keeps the engine default; an explicit count applies to both."""
    import tessera.pipelines.engines as engines
    from tessera.pipelines.prompting.plugin import runtime_from_plugin

    asked: dict[str, int | None] = {}

    def fake_create_engine(plugin, *, role, size_variant, device, threads):
        asked[role] = threads
        return object()

    monkeypatch.setattr(engines, "create_engine", fake_create_engine)
    monkeypatch.setattr("tessera.pipelines.prompting.plugin.SamRuntime.from_engines",
                        classmethod(lambda cls, enc, dec, **kw: (enc, dec)))
    runtime_from_plugin("sam")
    assert asked == {"encoder": None, "decoder": 1}
    runtime_from_plugin("sam", threads=2)
    assert asked == {"encoder": 2, "decoder": 2}
