"""Task-kind processing defaults (numpy) and the plugin-hook-or-default lookup."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, softmax

from tessera.pipelines.plugin_system import get_plugin, parse_manifest
from tessera.pipelines.plugin_system.tasks import (
    class_probabilities,
    postprocess_probabilities,
    preprocess_tiles,
    preprocess_volume,
    processing_function,
    resolve_processing,
)

_BASE = """
id = "tt"
name = "T"
version = "1.0.0"
summary = "s"
licence = "MIT"
intended_use = "tests"
task = "{task}"
[input]
size_px = {size}
channels = {channels}
{extra}
[output]
kind = "probabilities"
classes = [{{name = "a", colour = "#000000"}}, {{name = "b", colour = "#ffffff"}}]
"""


def _manifest(task="tile-classify", size="[4, 5]", channels='["R", "G", "B"]', extra=""):
    text = _BASE.format(task=task, size=size, channels=channels, extra=extra)
    return parse_manifest(text, source="test.toml")


def test_preprocess_tiles_normalises_and_moves_channels_first() -> None:
    m = _manifest(extra="mean = [0.5, 0.5, 0.5]\nstd = [0.25, 0.5, 1.0]")
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, (2, 4, 5, 4), dtype=np.uint8)  # RGBA, as OpenSlide gives
    out = preprocess_tiles(tiles, m)
    assert list(out) == ["input"]
    x = out["input"]
    assert x.dtype == np.float32 and x.shape == (2, 3, 4, 5) and x.flags.c_contiguous
    for c, std in enumerate([0.25, 0.5, 1.0]):  # channel c of tile n at (y, x)
        expected = (tiles[:, :, :, c] / 255.0 - 0.5) / std
        np.testing.assert_allclose(x[:, c], expected, rtol=1e-6, atol=1e-6)
    white = preprocess_tiles(np.full((1, 4, 5, 3), 255, np.uint8), m)["input"]
    np.testing.assert_allclose(white[0, :, 0, 0], [2.0, 1.0, 0.5])


def test_preprocess_tiles_without_mean_std_only_scales() -> None:
    x = preprocess_tiles(np.full((1, 4, 5, 3), 51, np.uint8), _manifest())["input"]
    np.testing.assert_allclose(x, 0.2, rtol=1e-6)


def test_preprocess_rejects_too_few_channels() -> None:
    with pytest.raises(ValueError, match="channels"):
        preprocess_tiles(np.zeros((1, 4, 5, 1), np.uint8), _manifest())


def test_preprocess_volume_maps_the_hu_window() -> None:
    m = _manifest(task="segment-3d", size="[2, 3, 4]", channels='["HU"]',
                  extra="value_window = [-1000.0, 400.0]")
    patches = np.full((3, 2, 3, 4), -300.0, np.float32)
    patches[0] = -2000.0
    patches[2] = 1000.0
    x = preprocess_volume(patches, m)["input"]
    assert x.shape == (3, 1, 2, 3, 4) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0, 0, 0, 0], [0.0, 0.5, 1.0], atol=1e-6)


def test_class_probabilities_softmax_and_single_logit_sigmoid() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 4, 6, 7)).astype(np.float32) * 30  # large: needs stability
    p = class_probabilities(logits, 4)
    np.testing.assert_allclose(p, softmax(logits.astype(np.float64), axis=1), rtol=1e-5, atol=1e-6)
    one = rng.normal(size=(5, 1)).astype(np.float32)
    two = class_probabilities(one, 2)
    np.testing.assert_allclose(two[:, 1], expit(one[:, 0]), rtol=1e-6)
    np.testing.assert_allclose(two.sum(axis=1), 1.0, rtol=1e-6)
    assert class_probabilities(one, 1).shape == (5, 1)


def test_postprocess_uses_the_role_output_name() -> None:
    m = _manifest(extra='[models.model]\noutputs = ["scores"]')
    out = postprocess_probabilities({"scores": np.array([[0.0, 0.0]], np.float32)}, m)
    np.testing.assert_allclose(out, [[0.5, 0.5]])
    with pytest.raises(Exception, match="scores"):
        postprocess_probabilities({"logits": np.zeros((1, 2), np.float32)}, m)


def test_plugin_hook_wins_and_defaults_fill_the_rest(make_acme_folder) -> None:
    plugin = get_plugin(str(make_acme_folder()))
    proc = resolve_processing(plugin)
    assert proc.custom == frozenset({"postprocess"})
    assert proc.preprocess is preprocess_tiles
    assert proc.postprocess is plugin.processing().postprocess
    assert proc.predict_volume is None
    assert processing_function(plugin, "predict_volume") is None
    with pytest.raises(ValueError, match="unknown processing function"):
        processing_function(plugin, "prepare")


def test_kinds_with_their_own_runner_have_no_defaults(make_acme_folder) -> None:
    folder = make_acme_folder()
    path = folder / "manifest.toml"
    path.write_text(path.read_text().replace('task = "tile-classify"', 'task = "prompt-segment"'))
    plugin = get_plugin(str(folder))
    assert processing_function(plugin, "preprocess") is None
    assert processing_function(plugin, "postprocess") is plugin.processing().postprocess
