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
