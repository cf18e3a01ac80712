"""Weights load from safetensors or weights-only torch files; a checkpoint that needs
arbitrary unpickling is refused and its code never runs."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

from safetensors.torch import save_file  # noqa: E402

from tessera.pipelines.engines import load_state_dict  # noqa: E402
from tessera.pipelines.engines.checkpoints import fit_state_dict  # noqa: E402
from tessera.pipelines.errors import CorruptFile, ModelFileRefused, PluginError  # noqa: E402


class _RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"conv.weight": torch.randn(4, 3, 3, 3, generator=g), "conv.bias": torch.zeros(4)}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_safetensors_and_weights_only_files_load(tmp_path: Path) -> None:
    state = _state()
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save(state, tmp_path / "w.pth")
    torch.save(state, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    for name in ("w.safetensors", "w.pth", "legacy.pth"):
        assert _same(load_state_dict(tmp_path / name), state), name


def test_training_wrappers_and_dataparallel_prefix_are_undone(tmp_path: Path) -> None:
    state = _state()
    wrapped = {"epoch": 12, "optimizer": {"lr": 0.1},
               "state_dict": {f"module.{k}": v for k, v in state.items()}}
    torch.save(wrapped, tmp_path / "ckpt.pth")
    assert _same(load_state_dict(tmp_path / "ckpt.pth"), state)


@pytest.mark.parametrize("legacy", [False, True])
def test_checkpoint_that_runs_code_is_refused_and_never_runs(tmp_path: Path, legacy: bool) -> None:
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    payload = {"conv.weight": torch.zeros(1), "extra": _RunsCode(marker)}
    if legacy:
        with path.open("wb") as fh:
            pickle.dump(payload, fh, protocol=2)
    else:
        torch.save(payload, path)
    with pytest.raises(ModelFileRefused, match="Tessera refuses it") as info:
        load_state_dict(path)
    assert info.value.path == str(path)
    assert "safetensors" in info.value.message  # says what to do
    assert not marker.exists()
    # The crafted file really is dangerous: classic unpickling runs its code (here only
    # `touch marker`), so the refusal above is what kept it from running.
    if legacy:
        pickle.loads(path.read_bytes())
    else:
        torch.load(path, weights_only=False)
    assert marker.exists()


def test_damaged_and_foreign_files(tmp_path: Path) -> None:
    save_file(_state(), str(tmp_path / "w.safetensors"))
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:100])
    with pytest.raises(CorruptFile, match="safetensors"):
        load_state_dict(tmp_path / "cut.safetensors")
    torch.save(_state(), tmp_path / "w.pth")
    data = (tmp_path / "w.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFile, match="damaged torch checkpoint"):
        load_state_dict(tmp_path / "cut.pth")
    (tmp_path / "notes.txt").write_text("not weights")
    with pytest.raises(CorruptFile, match="unrecognised"):
        load_state_dict(tmp_path / "notes.txt")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CorruptFile, match="not a state dict"):
        load_state_dict(tmp_path / "list.pth")


def test_mismatching_checkpoint_names_the_keys() -> None:
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    with pytest.raises(PluginError, match=r"2 missing \(e\.g\. \['0\.weight', '0\.bias'\]\)"):
        fit_state_dict(module, _state(), source="x.pth")
    bad = {"0.weight": torch.zeros(5, 3, 3, 3), "0.bias": torch.zeros(4)}
    with pytest.raises(PluginError, match="shape mismatches"):
        fit_state_dict(module, bad, source="x.pth")
