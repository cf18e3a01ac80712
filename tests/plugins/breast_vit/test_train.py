"""The breast-vit recipe runs end to end (a few steps), is deterministic, and its tiles
are what the slide runner feeds the model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

from tessera.pipelines.plugin_system.manifest import load_manifest  # noqa: E402
from tessera.plugins.breast_vit import train as recipe  # noqa: E402


@pytest.fixture(scope="module")
def manifest():
    return load_manifest(recipe.PLUGIN_DIR / "manifest.toml")


def _tiny_set(n: int = 24) -> recipe.TileSet:
    rng = np.random.default_rng(0)
    mal = (np.arange(n) % 2).astype(np.int64)
    tiles = rng.integers(0, 256, (n, 112, 112, 3), dtype=np.uint8)
    tiles[mal == 1] //= 2  # darker = "malignant": learnable in a few steps
    return recipe.TileSet(tiles, mal, mal.astype(np.float32), np.where(mal == 1, 4, 0),
                          np.zeros(n, np.int64))


def test_fit_is_deterministic(manifest) -> None:
    from tessera.pipelines.progress import RecordingProgress

    r = recipe.Recipe(epochs=1, batch=8, warmup_steps=1)
    torch.set_num_threads(recipe.THREADS)
    runs = []
    for _ in range(2):
        prog = RecordingProgress()
        model, losses = recipe.fit(_tiny_set(), r, 3, manifest, prog)
        assert prog.total == 3 and prog.done == 3 and len(losses) == 3
        runs.append((model.state_dict(), losses))
    assert runs[0][1] == runs[1][1]
    for k, v in runs[0][0].items():
        assert torch.equal(v, runs[1][0][k]), k


def test_slide_tiles_follow_the_runner_grid_and_truth() -> None:
    """Grid tiles are level-1-like reads at target-frame multiples of the tile; their
    soft targets are the tumour share of the tissue from the slide's truth."""
    r = recipe.Recipe(slide_size_px=2048)
    ts = recipe.slide_tiles(11, r, tile_px=112, mpp=1.0, group=0, offsets_px=(0,))
    assert len(ts) > 4 and ts.tiles.shape[1:] == (112, 112, 3)
    assert np.all((ts.target >= 0) & (ts.target <= 1))
    np.testing.assert_array_equal(ts.malignant, (ts.target >= 0.5).astype(np.int64))
    assert np.all(ts.subtype[ts.malignant == 0] == -1)


@pytest.mark.slow
def test_quick_recipe_writes_weights_onnx_and_metrics(tmp_path: Path) -> None:
    metrics = recipe.train(tmp_path, seed=0, quick=True)
    for name in (recipe.ONNX_NAME, recipe.SAFETENSORS_NAME, "metrics.json"):
        assert (tmp_path / name).is_file()
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["steps"] == metrics["steps"] >= 1
    assert metrics["onnx_parity_max_abs_diff"] < 1e-4
    assert set(metrics["held_out_patients"]).isdisjoint(metrics["train_patients"])
    for key in ("held_out_tile_accuracy", "held_out_patch_accuracy", "held_out_tile_confusion"):
        assert key in metrics
    assert sum(map(sum, metrics["held_out_tile_confusion"])) == metrics["held_out_tiles"]
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / recipe.ONNX_NAME), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["logits", "subtype_logits"]
    assert [i.name for i in sess.get_inputs()] == ["input"]
