"""Untrusted ONNX files: damaged or crafted ones fail with a clear error in a child
process (never crashing this one), external data may not leave the model's folder, and
the verdict is cached by content."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tessera.pipelines.engines import onnx_check
from tessera.pipelines.engines.onnx_check import check_onnx_file, forget_verdicts
from tessera.pipelines.engines.ort_engine import OnnxEngine
from tessera.pipelines.errors import CorruptFile, ModelFileRefused


def _add_model(path: Path, value: float, *, external: str | None = None) -> Path:
    """y = x + w (w: 4 floats), w stored inline or as external data at ``external``."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full(4, value, np.float32), "w")
    if external is not None:
        target = path.parent / external
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(np.full(4, value, np.float32).tobytes())
        w.ClearField("raw_data")
        w.data_location = TensorProto.EXTERNAL
        for key, val in (("location", external), ("offset", "0"), ("length", "16")):
            entry = w.external_data.add()
            entry.key, entry.value = key, val
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture(autouse=True)
def _fresh_memory_verdicts():
    forget_verdicts()
    yield
    forget_verdicts()


def test_valid_model_with_external_data_inside_its_folder(tmp_path: Path) -> None:
    path = _add_model(tmp_path / "m" / "model.onnx", 1.5, external="data/w.bin")
    verdict = check_onnx_file(path)
    assert verdict.ok and verdict.external_data == ["data/w.bin"]
    out = OnnxEngine(path).run({"x": np.zeros((2, 4), np.float32)})["y"]
    np.testing.assert_allclose(out, 1.5)


@pytest.mark.parametrize("location", ["../outside.bin", "../../etc/passwd", "/etc/passwd"])
def test_external_data_outside_the_folder_is_refused(tmp_path: Path, location: str) -> None:
    folder = tmp_path / "a" / "b" / "m"
    path = _add_model(folder / "model.onnx", 2.0)
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    w = model.graph.initializer[0]
    w.ClearField("raw_data")
    w.data_location = onnx.TensorProto.EXTERNAL
    for key, val in (("location", location), ("offset", "0"), ("length", "16")):
        entry = w.external_data.add()
        entry.key, entry.value = key, val
    path.write_bytes(model.SerializeToString())
    (folder.parent / "outside.bin").write_bytes(b"\0" * 16)
    with pytest.raises(ModelFileRefused, match=r"outside the model.s folder|not a relative path"):
        check_onnx_file(path)
    with pytest.raises(ModelFileRefused):
        OnnxEngine(path)


def test_external_data_link_planted_after_the_verdict_is_refused(tmp_path: Path) -> None:
    path = _add_model(tmp_path / "m" / "model.onnx", 3.0, external="w.bin")
    assert check_onnx_file(path).ok
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\1" * 16)
    (tmp_path / "m" / "w.bin").unlink()
    os.symlink(secret, tmp_path / "m" / "w.bin")
    with pytest.raises(ModelFileRefused, match="now resolves to"):
        check_onnx_file(path)  # the cached verdict is not enough


def test_missing_or_short_external_data(tmp_path: Path) -> None:
    path = _add_model(tmp_path / "m" / "model.onnx", 4.0, external="w.bin")
    (tmp_path / "m" / "w.bin").write_bytes(b"\0" * 8)  # claims 16 bytes
    with pytest.raises(CorruptFile, match="past the end"):
        check_onnx_file(path)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty-graph"])
def test_damaged_model_is_a_clear_error(tmp_path: Path, damage: str) -> None:
    path = _add_model(tmp_path / "model.onnx", 5.0)
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"\x0a\xff\xff\xff\xff\x0f" + os.urandom(64))
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(b"")
    with pytest.raises(CorruptFile) as info:
        OnnxEngine(path)
    assert info.value.path == str(path)
    assert "ONNX" in info.value.message


def test_a_crash_in_the_probe_does_not_take_this_process_down(tmp_path: Path,
                                                             monkeypatch) -> None:
    path = _add_model(tmp_path / "model.onnx", 6.0)

    def crashing(model_path: Path) -> list[str]:  # stands in for ORT segfaulting on a graph
        return [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]

    monkeypatch.setattr(onnx_check, "probe_command", crashing)
    with pytest.raises(CorruptFile, match="crashed \\(SIGSEGV\\)"):
        OnnxEngine(path)
    assert not onnx_check._disk_entry(onnx_check.sha256_file(path)).exists()  # not cached


def test_verdict_costs_one_child_process_per_content(tmp_path: Path, monkeypatch) -> None:
    calls: list[list[str]] = []
    real_run = subprocess.run

    def counting_run(cmd, *args, **kwargs):
        calls.append(cmd)
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(onnx_check.subprocess, "run", counting_run)
    path = _add_model(tmp_path / "a" / "model.onnx", 7.25)
    copy = _add_model(tmp_path / "b" / "model.onnx", 7.25)  # same bytes elsewhere
    assert check_onnx_file(path).ok
    assert check_onnx_file(copy).ok
    forget_verdicts()  # a new process: the disk cache answers
    assert check_onnx_file(path).inputs[0]["name"] == "x"
    assert len(calls) == 1
    _add_model(path, 7.5)  # content changed: probed again
    check_onnx_file(path)
    assert len(calls) == 2
