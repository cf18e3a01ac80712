"""`tessera bench engine` (both engines side by side) and `tessera train` (the hook runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

from tessera.app.cli.main import main  # noqa: E402
from tessera.pipelines.bench.engine import bench_engines  # noqa: E402
from tessera.pipelines.plugin_system import get_plugin  # noqa: E402
from tessera.pipelines.progress import RecordingProgress  # noqa: E402


def test_bench_measures_both_engines_on_the_same_batch(tiny_cnn) -> None:
    progress = RecordingProgress()
    threads_before = torch.get_num_threads()
    result = bench_engines(get_plugin(str(tiny_cnn[0])), batch=3, threads=1, repeats=3,
                           warmup=1, progress=progress)
    assert torch.get_num_threads() == threads_before  # restored
    assert (result.batch, result.threads, result.repeats) == (3, 1, 3)
    assert len(result.onnx_times_s) == len(result.torch_times_s) == 3
    assert result.onnx_median_s == sorted(result.onnx_times_s)[1] > 0
    assert result.ratio == pytest.approx(result.torch_median_s / result.onnx_median_s)
    assert result.onnx_items_per_s == pytest.approx(3 / result.onnx_median_s)
    assert result.max_abs_diff < 1e-4  # both engines computed the same thing
    assert "threads=1" in result.onnx_description and "threads=1" in result.torch_description
    assert progress.done == 3 and progress.closed


def test_bench_cli_prints_ratio_and_json(tiny_cnn, capsys) -> None:
    folder = str(tiny_cnn[0])
    assert main(["bench", "engine", folder, "--batch", "2", "--threads", "1",
                 "--repeats", "2", "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    assert "ratio onnxruntime/torch throughput:" in out and "wins" in out
    assert "[cpu] threads=1" in out and "[CPUExecutionProvider] threads=1" in out
    assert main(["bench", "engine", folder, "--batch", "2", "--repeats", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["winner"] in ("onnxruntime", "torch") and data["batch"] == 2
    assert data["ratio_onnx_over_torch"] == pytest.approx(
        data["torch_median_s"] / data["onnx_median_s"])


def test_train_cli_runs_the_hook_and_records_metrics(tiny_cnn, tmp_path: Path) -> None:
    from tessera.pipelines.engines import load_state_dict
    from tessera.pipelines.engines.checkpoints import fit_state_dict
    from tessera.pipelines.engines.torch_engine import build_torch_model

    out = tmp_path / "run"
    assert main(["train", str(tiny_cnn[0]), "--out", str(out), "--seed", "3", "--quick"]) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["plugin"] == "tiny-cnn" and record["seed"] == 3 and record["quick"] is True
    assert record["metrics"]["steps"] == 3 and record["metrics"]["seed"] == 3
    plugin = get_plugin(str(tiny_cnn[0]))
    module = build_torch_model(plugin, load_weights=False)
    fit_state_dict(module, load_state_dict(out / "weights.safetensors"), source=out)
    first = load_state_dict(out / "weights.safetensors")
    assert main(["train", str(tiny_cnn[0]), "--out", str(tmp_path / "again"), "--seed", "3",
                 "--quick"]) == 0
    second = load_state_dict(tmp_path / "again" / "weights.safetensors")
    assert all(torch.equal(first[k], second[k]) for k in first)  # same seed, same weights


def test_train_cli_refuses_a_device_the_recipe_cannot_use(tiny_cnn, tmp_path: Path, capsys) -> None:
    """The tiny recipe takes no device: --device cuda is an error, not silently the CPU."""
    out = tmp_path / "gpu"
    assert main(["train", str(tiny_cnn[0]), "--out", str(out), "--quick", "--device", "cuda"]) == 1
    err = capsys.readouterr().err
    assert "no --device option" in err and "tiny-cnn" in err
    assert not (out / "metrics.json").exists()
