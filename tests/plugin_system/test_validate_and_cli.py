"""The plugin contract check (`validate_plugin`, `tessera plugins validate`) and the
plugins/train CLI commands."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tessera.app.cli.main import main
from tessera.pipelines.plugin_system import get_plugin, validate_plugin


def _set_sha(folder: Path, path: str = "model.onnx") -> None:
    sha = hashlib.sha256((folder / path).read_bytes()).hexdigest()
    manifest = folder / "manifest.toml"
    lines = manifest.read_text().splitlines()
    i = lines.index(f'path = "{path}"')
    lines[i + 1] = f'sha256 = "{sha}"'
    manifest.write_text("\n".join(lines) + "\n")


def _edit(folder: Path, old: str, new: str) -> None:
    path = folder / "manifest.toml"
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new, 1))


def _errors(folder: Path) -> list[str]:
    return [f"{p.where}: {p.message}" for p in validate_plugin(get_plugin(str(folder)))
            if p.is_error]


def test_good_plugin_keeps_the_contract(make_acme_folder) -> None:
    problems = validate_plugin(get_plugin(str(make_acme_folder())))
    assert [p for p in problems if p.severity != "note"] == []


def test_fixed_batch_graph_keeps_the_contract(make_acme_folder) -> None:
    assert _errors(make_acme_folder(batch=1)) == []


def test_missing_model_card(make_acme_folder) -> None:
    folder = make_acme_folder()
    (folder / "MODEL_CARD.md").unlink()
    assert _errors(folder) == ["model_card: MODEL_CARD.md is missing or empty"]


def test_class_count_must_match_the_logits(make_acme_folder) -> None:
    folder = make_acme_folder()
    _edit(folder, "[hooks]", '[[output.classes]]\nname = "fat"\ncolour = "#ffee00"\n\n[hooks]')
    errors = _errors(folder)
    assert any("logits have 2 channels for 3 classes" in e for e in errors), errors
    assert any(e.startswith("processing: postprocess gave shape (2, 2)") for e in errors), errors


def test_tensor_names_must_match_the_role(make_acme_folder) -> None:
    folder = make_acme_folder()
    _edit(folder, "[params]", '[models.model]\ninputs = ["image"]\n\n[params]')
    errors = _errors(folder)
    assert any("graph tensors ['input'] -> ['logits'] differ" in e for e in errors), errors


def test_unimportable_hook(make_acme_folder) -> None:
    folder = make_acme_folder()
    _edit(folder, 'processing = ".processing"', 'processing = ".processing"\ntrain = ".train:train"')
    errors = _errors(folder)
    assert any(e.startswith("hooks.train: hook 'train' '.train:train' cannot be imported")
               for e in errors), errors


def test_nan_outputs_are_caught(make_acme_folder) -> None:
    import onnx
    from onnx import numpy_helper

    folder = make_acme_folder()
    model = onnx.load(str(folder / "model.onnx"))
    bias = next(t for t in model.graph.initializer if t.name == "bias")
    bias.CopyFrom(numpy_helper.from_array(np.array([np.nan, 0.0], np.float32), "bias"))
    onnx.save(model, str(folder / "model.onnx"))
    _set_sha(folder)
    errors = _errors(folder)
    assert any("NaN" in e for e in errors), errors


def test_corrupt_onnx_with_matching_sha_is_reported_not_crashing(make_acme_folder) -> None:
    folder = make_acme_folder()
    (folder / "model.onnx").write_bytes(b"\x08\x07" + bytes(range(256)) * 4)
    _set_sha(folder)
    errors = _errors(folder)
    assert len(errors) == 1 and errors[0].startswith("onnx model:"), errors
    assert "ONNX" in errors[0]


def test_postprocess_must_return_probabilities(make_acme_folder) -> None:
    folder = make_acme_folder()
    (folder / "processing.py").write_text(
        "def postprocess(outputs, manifest):\n    return outputs['logits']\n"
    )
    errors = _errors(folder)
    assert errors == ["processing: postprocess output is not class probabilities summing to 1"]


# ------------------------------------------------------------------ CLI
def test_cli_validate_exit_codes(make_acme_folder, capsys) -> None:
    good = make_acme_folder()
    assert main(["plugins", "validate", str(good)]) == 0
    assert "keeps the plugin contract" in capsys.readouterr().out
    bad = make_acme_folder()
    (bad / "MODEL_CARD.md").write_text("")
    assert main(["plugins", "validate", str(bad), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["problems"][0]["where"] == "model_card"
    assert main(["plugins", "validate", "no-such-plugin"]) == 1
    assert "unknown plugin 'no-such-plugin'" in capsys.readouterr().err


def test_cli_info_reports_files_engines_and_card(acme_installed, capsys) -> None:
    assert main(["plugins", "info", "acme-tissue", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    [f] = info["files"]
    assert f["sha256"] == "ok" and f["size_bytes"] == (
        acme_installed / "acme_tissue_tiles" / "model.onnx").stat().st_size
    assert "CPUExecutionProvider" in info["engines_available"]["onnxruntime"]["providers"]
    assert info["model_card_summary"].startswith("A fixed linear rule on mean tile brightness")
    assert info["manifest"]["input"]["size_px"] == [32, 32]
    assert main(["plugins", "info", "acme-tissue"]) == 0
    out = capsys.readouterr().out
    assert "model.onnx" in out and "ok" in out and "A fixed linear rule" in out


def test_cli_import_list_remove(make_acme_folder, capsys) -> None:
    folder = make_acme_folder()
    assert main(["plugins", "import", str(folder)]) == 0
    assert "imported acme-tissue 0.1.0" in capsys.readouterr().out
    assert main(["plugins", "import", str(folder)]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(["plugins", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(p["source"], p["engines"]) for p in listed["plugins"] if p["id"] == "acme-tissue"] == [
        ("user", ["onnx"])
    ]
    assert main(["plugins", "remove", "acme-tissue"]) == 0
    assert capsys.readouterr().out.strip().endswith("user-plugins/acme-tissue")
    assert main(["plugins", "list", "--json"]) == 0
    ids = [p["id"] for p in json.loads(capsys.readouterr().out)["plugins"]]
    assert "acme-tissue" not in ids


def test_cli_train_without_torch_says_which_extra(make_acme_folder, monkeypatch, capsys) -> None:
    folder = make_acme_folder()
    from tessera.app.cli.train import train_command
    from tessera.pipelines.errors import MissingDependency

    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    with pytest.raises(MissingDependency, match=r"pip install 'tessera\[train\]'"):
        train_command(str(folder), out=None, seed=0, quick=True)
    assert main(["train", str(folder)]) == 1
    assert "`tessera train acme-tissue` needs the 'torch' package" in capsys.readouterr().err


@pytest.mark.torch
def test_cli_train_without_hook(make_acme_folder, capsys) -> None:
    pytest.importorskip("torch")
    assert main(["train", str(make_acme_folder())]) == 1
    assert "has no train hook" in capsys.readouterr().err
