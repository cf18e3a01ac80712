"""Bad manifests fail naming field and file; model files are sha256-checked and confined."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tessera.pipelines.errors import ModelFileRefused, PluginError
from tessera.pipelines.plugin_system import get_plugin, load_manifest, validate_plugin


def _edit(folder: Path, old: str, new: str) -> Path:
    path = folder / "manifest.toml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ('licence = "MIT"\n', "", "licence"),  # missing required field
        ('colour = "#c03070"', 'colour = "pink"', "output.classes.1.colour"),
        ('task = "tile-classify"', 'task = "tile-clasify"', "task"),
        ("size_px = [32, 32]", 'size_px = "32"', "input.size_px"),
        ("std = [0.5, 0.5, 0.5]", "std = [0.5, 0.5]", "input"),
        ('processing = ".processing"', 'processing = "not a name!"', "hooks.processing"),
        ("[params]", 'surprise = 1\n[params]', "hooks.surprise"),  # extra="forbid"
        ('path = "model.onnx"', 'path = "../model.onnx"', "files.0.path"),
        ('format = "onnx"', 'format = "pickle"', "files.0.format"),
    ],
)
def test_invalid_manifest_names_field_and_file(make_acme_folder, old, new, field) -> None:
    folder = make_acme_folder()
    path = _edit(folder, old, new)
    with pytest.raises(PluginError) as info:
        load_manifest(path)
    assert f"invalid manifest field '{field}'" in str(info.value)
    assert info.value.path == str(path)
    with pytest.raises(PluginError, match=field.replace(".", r"\.")):
        get_plugin(str(folder))


def test_toml_syntax_error_names_the_file(make_acme_folder) -> None:
    folder = make_acme_folder()
    path = _edit(folder, 'name = "ACME tissue detector"', 'name = "unterminated')
    with pytest.raises(PluginError, match="not valid TOML") as info:
        load_manifest(path)
    assert info.value.path == str(path)


def test_roles_declare_tensor_names(make_acme_folder) -> None:
    folder = make_acme_folder()
    _edit(folder, "[params]", '[models.model]\ninputs = ["image"]\noutputs = ["scores"]\n\n[params]')
    manifest = get_plugin(str(folder)).manifest
    assert manifest.role_spec("model").inputs == ["image"]
    assert manifest.role_spec("encoder").inputs == ["input"]  # undeclared role: defaults


def test_sha256_mismatch_is_refused_everywhere(make_acme_folder) -> None:
    from tessera.pipelines.engines import create_engine

    folder = make_acme_folder()
    with (folder / "model.onnx").open("ab") as fh:
        fh.write(b"\0")  # one extra byte: still loadable, but not the published file
    plugin = get_plugin(str(folder))
    with pytest.raises(ModelFileRefused, match="sha256") as info:
        plugin.file_path("model", "onnx")
    assert info.value.path == str(folder / "model.onnx")
    with pytest.raises(ModelFileRefused, match="sha256"):
        create_engine(plugin)
    problems = validate_plugin(plugin)
    assert [p.where for p in problems if p.is_error] == ["files[0] model.onnx"]


def test_missing_model_file_is_a_plugin_error(make_acme_folder) -> None:
    folder = make_acme_folder()
    (folder / "model.onnx").unlink()
    with pytest.raises(PluginError, match="missing"):
        get_plugin(str(folder)).file_path()


def test_model_file_linking_outside_the_folder_is_refused(make_acme_folder, tmp_path) -> None:
    folder = make_acme_folder("linked")
    outside = tmp_path / "outside.onnx"
    (folder / "model.onnx").rename(outside)
    os.symlink(outside, folder / "model.onnx")  # same bytes, same sha: only the place is wrong
    with pytest.raises(ModelFileRefused, match="outside the plugin folder"):
        get_plugin(str(folder)).file_path()


def test_unknown_hook_name_is_an_error(make_acme_folder) -> None:
    plugin = get_plugin(str(make_acme_folder()))
    with pytest.raises(PluginError, match="unknown hook 'procesing'"):
        plugin.hook("procesing")
