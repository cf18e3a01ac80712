"""The ONNX Runtime engine on a plugin built without torch: providers recorded, threads,
one session per process, batched and concurrent runs."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tessera.pipelines.engines import Engine, create_engine
from tessera.pipelines.engines.ort_engine import OnnxEngine
from tessera.pipelines.errors import EngineError
from tessera.pipelines.plugin_system import get_plugin


def _reference_logits(x: np.ndarray) -> np.ndarray:
    """What the ACME graph computes: mean brightness m, logits 10 (m - 0.7) * [1, -1]."""
    m = x.mean(axis=(1, 2, 3))
    return np.stack([10 * (m - 0.7), -10 * (m - 0.7)], axis=1)


def test_engine_runs_batches_and_records_what_runs_it(make_acme_folder) -> None:
    plugin = get_plugin(str(make_acme_folder()))
    engine = create_engine(plugin, threads=1)
    assert isinstance(engine, Engine)
    assert engine.input_names == ["input"] and engine.output_names == ["logits"]
    assert engine.description.startswith("onnxruntime ")
    assert "[CPUExecutionProvider]" in engine.description and "threads=1" in engine.description
    x = np.random.default_rng(0).uniform(-1, 1, (7, 3, 32, 32)).astype(np.float32)
    out = engine.run({"input": x})
    np.testing.assert_allclose(out["logits"], _reference_logits(x), rtol=1e-4, atol=1e-4)


def test_one_engine_per_plugin_role_engine_device_threads(make_acme_folder) -> None:
    plugin = get_plugin(str(make_acme_folder()))
    a = create_engine(plugin)
    assert create_engine(get_plugin(str(plugin.root))) is a  # same folder, new Plugin object
    assert create_engine(plugin, threads=1) is not a
    with ThreadPoolExecutor(4) as pool:  # racing first calls build one engine
        engines = list(pool.map(lambda _: create_engine(plugin, threads=2), range(4)))
    assert all(e is engines[0] for e in engines)


def test_concurrent_runs_on_one_session_are_correct(make_acme_folder) -> None:
    engine = create_engine(get_plugin(str(make_acme_folder())))
    rng = np.random.default_rng(1)
    batches = [rng.uniform(-1, 1, (3, 3, 32, 32)).astype(np.float32) for _ in range(16)]
    expected = [_reference_logits(b) for b in batches]
    start = threading.Barrier(8)

    def work(i: int) -> np.ndarray:
        if i < 8:
            start.wait()
        return engine.run({"input": batches[i]})["logits"]

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(work, range(16)))
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)


def test_fixed_batch_graph_runs_any_batch_in_slices(make_acme_folder) -> None:
    engine = create_engine(get_plugin(str(make_acme_folder(batch=3))))
    assert engine.fixed_batch == 3
    x = np.random.default_rng(2).uniform(-1, 1, (7, 3, 32, 32)).astype(np.float32)
    out = engine.run({"input": x})["logits"]  # 3 + 3 + 1 (padded, trimmed)
    assert out.shape == (7, 2)
    np.testing.assert_allclose(out, _reference_logits(x), rtol=1e-4, atol=1e-4)


def test_input_errors_are_clear(make_acme_folder) -> None:
    engine = create_engine(get_plugin(str(make_acme_folder())))
    with pytest.raises(EngineError, match=r"missing \['input'\], unexpected \['image'\]"):
        engine.run({"image": np.zeros((1, 3, 32, 32), np.float32)})
    with pytest.raises(EngineError, match="ONNX Runtime failed to run"):
        engine.run({"input": np.zeros((1, 3, 16, 32), np.float32)})
    with pytest.raises(EngineError, match="must be float32"):
        engine.run({"input": np.zeros((1, 3, 32, 32), np.complex64)})
    x64 = np.full((2, 3, 32, 32), 0.7, np.float64)  # doubles are cast, not refused
    np.testing.assert_allclose(engine.run({"input": x64})["logits"], 0.0, atol=1e-4)


def test_no_onnx_file_says_use_torch(make_acme_folder) -> None:
    folder = make_acme_folder()
    manifest = folder / "manifest.toml"
    manifest.write_text(manifest.read_text().replace('format = "onnx"', 'format = "safetensors"'))
    with pytest.raises(EngineError, match="use --engine torch"):
        create_engine(get_plugin(str(folder)))
    with pytest.raises(EngineError, match="no ONNX file for role 'encoder'"):
        create_engine(get_plugin(str(make_acme_folder())), role="encoder")


def test_requested_accelerator_missing_is_refused(make_acme_folder) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(EngineError, match="CUDAExecutionProvider"):
        OnnxEngine(make_acme_folder() / "model.onnx", device="cuda")
