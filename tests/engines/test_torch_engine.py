"""The torch engine, parity with ONNX Runtime, checkpoint layouts and the contract
check on a plugin with a model hook, safetensors weights and an exported ONNX file."""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

from tessera.pipelines.engines import create_engine  # noqa: E402
from tessera.pipelines.errors import EngineError, PluginError  # noqa: E402
from tessera.pipelines.plugin_system import get_plugin, validate_plugin  # noqa: E402
from tessera.pipelines.plugin_system.tasks import resolve_processing  # noqa: E402


def _batch(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    return {"input": np.random.default_rng(seed).standard_normal((n, 3, 32, 32)).astype(np.float32)}


def test_export_report_proves_dynamic_batch_and_parity(tiny_cnn) -> None:
    folder, report, _ = tiny_cnn
    assert report.path == folder / "model.onnx"
    assert report.dynamic_batch and report.batch_checked == 3  # example batch 2, checked 3
    assert report.max_abs_diff < 1e-4 and report.within(1e-4)
    assert report.exporter in ("dynamo", "torchscript") and report.opset >= 17
    assert report.sha256 == hashlib.sha256(report.path.read_bytes()).hexdigest()


def test_torch_and_onnx_engines_agree(tiny_cnn) -> None:
    folder, _, module = tiny_cnn
    plugin = get_plugin(str(folder))
    t_engine = create_engine(plugin, engine="torch")
    o_engine = create_engine(plugin, engine="onnx")
    assert t_engine.description.startswith(f"torch {torch.__version__} [cpu]")
    assert t_engine.input_names == ["input"] and t_engine.output_names == ["logits"]
    x = _batch(5)
    t_out, o_out = t_engine.run(x)["logits"], o_engine.run(x)["logits"]
    assert t_out.shape == (5, 2) and t_out.dtype == np.float32
    np.testing.assert_allclose(t_out, o_out, rtol=1e-4, atol=1e-4)
    with torch.inference_mode():  # the weights really are the saved ones, in eval mode
        ref = module.eval()(torch.from_numpy(x["input"])).numpy()
    np.testing.assert_allclose(t_out, ref, rtol=1e-6, atol=1e-6)
    probs = resolve_processing(plugin)
    tiles = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    p = probs.postprocess(t_engine.run(probs.preprocess(tiles, plugin.manifest)), plugin.manifest)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)


def test_torch_engine_is_thread_safe(tiny_cnn) -> None:
    engine = create_engine(get_plugin(str(tiny_cnn[0])), engine="torch")
    batches = [_batch(2, seed) for seed in range(12)]
    expected = [engine.run(b)["logits"] for b in batches]
    start = threading.Barrier(6)

    def work(i: int) -> np.ndarray:
        if i < 6:
            start.wait()
        return engine.run(batches[i])["logits"]

    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(work, range(12)))
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g, e)


def test_plugin_keeps_the_contract_with_torch_parity(tiny_cnn) -> None:
    problems = validate_plugin(get_plugin(str(tiny_cnn[0])))
    assert [p for p in problems if p.severity != "note"] == []


def test_contract_catches_weights_that_differ_from_the_onnx(tiny_cnn, tmp_path: Path) -> None:
    import shutil

    from safetensors.torch import save_file

    folder = tmp_path / "tiny"
    shutil.copytree(tiny_cnn[0], folder, ignore=shutil.ignore_patterns("__pycache__"))
    plugin = get_plugin(str(folder))
    from tessera.pipelines.engines.torch_engine import build_torch_model

    torch.manual_seed(99)
    other = build_torch_model(plugin, load_weights=False)
    save_file(other.state_dict(), str(folder / "weights.safetensors"))
    manifest = folder / "manifest.toml"
    text = manifest.read_text()
    old = next(e.sha256 for e in plugin.manifest.files if e.path == "weights.safetensors")
    new = hashlib.sha256((folder / "weights.safetensors").read_bytes()).hexdigest()
    manifest.write_text(text.replace(old, new))
    errors = [str(p) for p in validate_plugin(get_plugin(str(folder))) if p.is_error]
    assert len(errors) == 1 and errors[0].startswith("error: parity model: output 'logits'")


def test_foreign_checkpoint_layout_loads_through_the_hook(tiny_cnn, tmp_path: Path) -> None:
    folder, _, module = tiny_cnn
    plugin = get_plugin(str(folder))
    official = {}
    renames = {"features.0.": "backbone.conv1.", "features.1.": "backbone.bn1.",
               "features.3.": "backbone.conv2.", "head.": "fc."}
    for key, value in module.state_dict().items():
        for new, old in renames.items():
            if key.startswith(new):
                key = old + key[len(new):]
        official[key] = value.clone()
    assert "fc.weight" in official
    torch.save({"model": official, "epoch": 3}, tmp_path / "official.pth")
    user = create_engine(plugin, engine="torch", weights=tmp_path / "official.pth")
    native = create_engine(plugin, engine="torch")
    assert user is not native
    x = _batch(3)
    np.testing.assert_array_equal(user.run(x)["logits"], native.run(x)["logits"])
    with pytest.raises(EngineError, match="--engine torch"):
        create_engine(plugin, engine="onnx", weights=tmp_path / "official.pth")


def test_devices_for_torch(tiny_cnn) -> None:
    plugin = get_plugin(str(tiny_cnn[0]))
    if not torch.cuda.is_available():
        with pytest.raises(EngineError, match="sees no CUDA device"):
            create_engine(plugin, engine="torch", device="cuda")
    with pytest.raises(EngineError, match="not 'openvino'"):
        create_engine(plugin, engine="torch", device="openvino")
    auto = create_engine(plugin, engine="torch", device="auto")
    assert auto.device.type in ("cpu", "cuda", "mps")


def test_no_model_hook_means_no_torch_engine(make_acme_folder) -> None:
    with pytest.raises(PluginError, match="no torch weights"):
        create_engine(get_plugin(str(make_acme_folder())), engine="torch")
