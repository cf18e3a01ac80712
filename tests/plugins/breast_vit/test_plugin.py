"""The shipped breast-vit plugin: contract, ONNX Runtime vs torch parity on synthetic H&E,
and held-out accuracy of the shipped weights on patients the recipe never saw."""

from __future__ import annotations

import json
from importlib.resources import files

import numpy as np
import pytest

from tessera.pipelines.plugin_system import get_plugin
from tessera.pipelines.synthetic.breakhis import render_view
from tessera.pipelines.synthetic.histology import scene_for


@pytest.fixture(scope="module")
def plugin():
    return get_plugin("breast-vit")


@pytest.fixture(scope="module")
def tiles() -> tuple[np.ndarray, np.ndarray]:
    """32 tiles (112 px at 1 µm/px) of unseen seeds: 16 benign, 16 malignant."""
    benign = ["adenosis", "fibroadenoma", "phyllodes_tumor", "tubular_adenoma"]
    malignant = ["ductal_carcinoma", "lobular_carcinoma", "mucinous_carcinoma",
                 "papillary_carcinoma"]
    out, labels = [], []
    for label, names in ((0, benign), (1, malignant)):
        for name in names:
            field = render_view(scene_for(name, 90_001 + len(out)), (5000.0, 5000.0), 1.0,
                                (224, 224), jpeg_quality=90)
            out += [field[:112, :112], field[:112, 112:], field[112:, :112], field[112:, 112:]]
            labels += [label] * 4
    return np.stack(out), np.array(labels)


def test_manifest_files_hooks_and_contract(plugin) -> None:
    from tessera.pipelines.plugin_system.validate import validate_plugin

    m = plugin.manifest
    assert m.task == "tile-classify" and m.output.positive_class == "malignant"
    assert [c.name for c in m.output.classes] == ["benign", "malignant"]
    assert len(m.output.heads["subtype"]) == 8
    assert m.input.target_mpp == 1.0 and m.input.size_px == [112, 112]
    assert "not for clinical use" in m.intended_use.lower()
    onnx = plugin.file_path("model", "onnx")
    assert onnx.stat().st_size < 8 * 2**20  # a few MB
    problems = [p for p in validate_plugin(plugin, deep=True) if p.is_error]
    assert not problems, problems


def test_shipped_onnx_classifies_unseen_tiles(plugin, tiles) -> None:
    from tessera.pipelines.engines import create_engine

    x, y = tiles
    proc = plugin.processing()
    engine = create_engine(plugin, engine="onnx")
    out = engine.run(proc.preprocess(x, plugin.manifest))
    p = proc.postprocess(out, plugin.manifest)
    assert p.shape == (32, 2) and np.allclose(p.sum(1), 1, atol=1e-5)
    assert np.mean((p[:, 1] >= 0.5) == y) >= 0.9
    sub = proc.subtype_probabilities(out)
    assert sub is not None and sub.shape == (32, 8)


@pytest.mark.torch
def test_onnx_and_torch_agree(plugin, tiles) -> None:
    pytest.importorskip("torch")
    from tessera.pipelines.engines import create_engine

    inputs = plugin.processing().preprocess(tiles[0], plugin.manifest)
    a = create_engine(plugin, engine="onnx").run(inputs)
    b = create_engine(plugin, engine="torch").run(inputs)
    for name in ("logits", "subtype_logits"):
        assert a[name].shape == b[name].shape
        assert np.max(np.abs(a[name] - b[name])) < 1e-4 + 1e-3 * np.max(np.abs(b[name]))


def test_model_card_states_the_measured_numbers(plugin) -> None:
    card = (files("tessera.plugins.breast_vit") / "MODEL_CARD.md").read_text(encoding="utf-8")
    metrics = json.loads((files("tessera.plugins.breast_vit") / "weights" /
                          "metrics.json").read_text(encoding="utf-8"))
    assert metrics["held_out_patch_accuracy"] >= 0.97
    assert f"{metrics['held_out_patch_accuracy']:.3f}" in card
    assert f"{metrics['held_out_tile_accuracy']:.3f}" in card
    assert "not for clinical use" in card.lower()
