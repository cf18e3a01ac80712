"""The training recipe runs end to end (a few steps), is deterministic, reuses finished
phases, and installs into a plugin folder with matching sha256 in the manifest."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.torch, pytest.mark.slow]


def test_quick_recipe_exports_evaluates_and_installs(tmp_path):
    from tessera.pipelines.plugin_system.integrity import sha256_file
    from tessera.pipelines.plugin_system.manifest import load_manifest
    from tessera.plugins.sam import train as sam_train

    out = tmp_path / "run"
    logs: list[str] = []
    metrics = sam_train.train(out, seed=1, quick=True, log=logs.append)
    for name in ("encoder.onnx", "decoder.onnx", "unet_encoder.onnx", "unet_decoder.onnx", "metrics.json",
                 "sam_demo.phase0.safetensors", "sam_demo.phase1.safetensors"):
        assert (out / name).is_file(), name
    assert 0.0 <= metrics["iou_box"] <= 1.0 and 0.0 <= metrics["unet_iou_box"] <= 1.0
    assert metrics["onnx_parity_sam"]["decoder"]["masks"] < 1e-3
    # a rerun reuses both phases and gives the same weights
    first = sha256_file(out / "sam_demo.phase1.safetensors")
    logs.clear()
    sam_train.train(out, seed=1, quick=True, log=logs.append, stages=("sam",))
    assert sum("reusing" in line for line in logs) == 2
    assert sha256_file(out / "sam_demo.phase1.safetensors") == first
    # install into a copy of the plugin folder
    plugin = tmp_path / "plugin"
    src = Path(sam_train.__file__).parent
    shutil.copytree(src, plugin, ignore=shutil.ignore_patterns("weights", "__pycache__"))
    sums = sam_train.install(out, plugin)
    manifest = load_manifest(plugin / "manifest.toml")
    assert {f.path for f in manifest.files} == set(sums)
    for f in manifest.files:
        assert f.sha256 == sha256_file(plugin / f.path)


def test_batches_are_the_same_from_worker_processes():
    """A batch is a function of (seed, stream, step): workers only change the speed."""
    import numpy as np

    from tessera.plugins.sam import train as sam_train

    recipe = sam_train.Recipe.quick()
    scenes = sam_train.training_scenes(3, 8, workers=2, block=3)
    assert [s.image.tobytes() for s in scenes] == [s.image.tobytes() for s in sam_train.training_scenes(3, 8, block=3)]
    here = list(sam_train.batches(scenes, recipe, seed=3, stream=1, steps=5, kind=None))
    pool = sam_train.share_scenes(scenes, workers=2)
    try:
        there = list(sam_train.batches(scenes, recipe, seed=3, stream=1, steps=5, kind=None, pool=pool))
    finally:
        pool.terminate()
    assert [k for k, _ in here] == [k for k, _ in there]
    for (_, a), (_, b) in zip(here, there, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_training_inputs_are_what_the_runtime_feeds_the_encoder():
    """Scenes reach the encoder resized and padded exactly as ``preprocess`` does it for a
    region of that shape, and prompts scale with them."""
    import numpy as np

    from tessera.pipelines.prompting.transforms import preprocess
    from tessera.plugins.sam import train as sam_train

    rng = np.random.default_rng(0)
    scene = sam_train.make_scenes(5, 1)[0]
    for h, w in ((256, 256), (200, 256), (256, 131)):
        img = np.zeros((256, 256, 3), np.uint8)
        img[:h, :w] = scene.image[:h, :w]
        inp, rhw = sam_train._encoder_input(img, (h, w), 512)
        want, tf = preprocess(np.ascontiguousarray(scene.image[:h, :w]), 512)
        assert rhw == tf.resized_hw
        got = sam_train._normalise_padded(torch.from_numpy(inp.transpose(2, 0, 1)[None].copy()), np.array([rhw]))
        np.testing.assert_allclose(got.numpy(), want, atol=1e-5)
    batch = sam_train.make_batch(rng, [scene], sam_train.Recipe(batch_images=2), "box")
    assert batch["images"].shape == (2, 3, 512, 512) and batch["targets"].shape == (8, 256, 256)
    for box, target, hw in zip(batch["coords"], batch["targets"], np.repeat(batch["valid_hw"], 4, 0), strict=True):
        ys, xs = np.nonzero(target)
        # the box prompt (jittered around the object) scaled by 2 lands around the object's scaled extent
        assert abs(box[0, 0] / 2 - xs.min()) < 30 and abs(box[1, 1] / 2 - ys.max()) < 30
        assert box.max() <= max(hw) + 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_asking_for_a_missing_gpu_is_a_one_line_error(tmp_path, capsys):
    from tessera.app.cli.main import main

    assert main(["train", "sam", "--quick", "--device", "cuda", "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--device cuda" in err[0] and "no CUDA device" in err[0]
    assert not (tmp_path / "run" / "metrics.json").exists()
