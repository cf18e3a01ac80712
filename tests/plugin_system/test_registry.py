"""Discovery: entry points (a third-party package installed in the test session),
imported plugins, folders by path, precedence, and lazy hooks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tessera.pipelines.errors import PluginError
from tessera.pipelines.plugin_system import (
    get_plugin,
    import_plugin,
    list_plugins,
    scan_plugins,
)
from tessera.pipelines.plugin_system.tasks import preprocess_tiles, processing_function

WHITE = np.full((32, 32, 3), 255, np.uint8)
PINK = np.tile(np.array([230, 150, 200], np.uint8), (32, 32, 1))  # H&E-like eosin pink


def _dist_info(site: Path, dist: str, package: str, ep_name: str) -> None:
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[tessera.plugins]\n{ep_name} = {package}\n")


def test_third_party_package_is_listed_with_its_distribution(acme_installed: Path) -> None:
    plugins = {p.id: p for p in list_plugins()}
    plugin = plugins["acme-tissue"]
    assert plugin.origin.kind == "entry-point"
    assert plugin.origin.detail == "acme-tissue-tiles 0.1.0"
    assert plugin.root == (acme_installed / "acme_tissue_tiles").resolve()
    assert plugin.manifest.output.positive_class == "tissue"
    assert "acme_tissue_tiles" not in sys.modules, "listing must not import the plugin package"


def test_without_the_package_it_is_not_listed() -> None:
    assert "acme-tissue" not in {p.id for p in list_plugins()}
    with pytest.raises(PluginError, match="unknown plugin 'acme-tissue'"):
        get_plugin("acme-tissue")


def test_third_party_plugin_runs_through_onnx_engine(acme_installed: Path) -> None:
    from tessera.pipelines.engines import create_engine

    plugin = get_plugin("acme-tissue")
    engine = create_engine(plugin, engine="onnx", device="cpu")
    assert "CPUExecutionProvider" in engine.description
    assert create_engine(plugin, engine="onnx", device="cpu") is engine  # one per process
    pre = processing_function(plugin, "preprocess")
    post = processing_function(plugin, "postprocess")
    assert pre is preprocess_tiles  # the plugin defines none: the task default
    assert post.__module__ == "acme_tissue_tiles.processing"  # the plugin's own
    probs = post(engine.run(pre(np.stack([WHITE, PINK, WHITE]), plugin.manifest)), plugin.manifest)
    assert probs.shape == (3, 2)
    assert probs[0, 0] > 0.99 and probs[2, 0] > 0.99  # glass -> background
    assert probs[1, 1] > 0.95  # stained tissue -> tissue


def test_listing_and_cli_list_never_import_torch_or_onnxruntime(acme_site: Path, tmp_path: Path) -> None:
    code = (
        "import sys, json\n"
        "from tessera.pipelines.plugin_system import list_plugins\n"
        "ids = [p.id for p in list_plugins()]\n"
        "from tessera.app.cli.main import main\n"
        "rc = main(['plugins', 'list', '--json'])\n"
        "heavy = [m for m in ('torch', 'onnxruntime', 'acme_tissue_tiles') if m in sys.modules]\n"
        "print(json.dumps({'ids': ids, 'rc': rc, 'heavy': heavy}))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(acme_site), TESSERA_PLUGIN_DIR=str(tmp_path / "u"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    listed = json.loads(proc.stdout[: proc.stdout.rindex("\n{")])
    assert "acme-tissue" in result["ids"]
    assert [p["id"] for p in listed["plugins"]].count("acme-tissue") == 1
    assert result["rc"] == 0
    assert result["heavy"] == []


def test_folder_by_path_loads_hooks_under_a_private_package(make_acme_folder) -> None:
    folder = make_acme_folder()
    plugin = get_plugin(str(folder))
    assert plugin.origin.kind == "path"
    module = plugin.processing()
    assert module.__name__.startswith("_tessera_plugin_acme_tissue_")
    assert module.__file__ == str(folder / "processing.py")
    assert plugin.hook("train") is None  # not declared
    assert get_plugin(folder / "manifest.toml").root == folder.resolve()


def test_imported_plugin_shadows_the_installed_one(acme_installed: Path, make_acme_folder) -> None:
    folder = make_acme_folder()
    text = (folder / "manifest.toml").read_text().replace('version = "0.1.0"', 'version = "0.2.0"')
    (folder / "manifest.toml").write_text(text)
    import_plugin(folder)
    scan = scan_plugins()
    winner = scan.plugins["acme-tissue"]
    assert winner.origin.kind == "user" and winner.manifest.version == "0.2.0"
    [(hidden, by)] = [pair for pair in scan.shadowed if pair[0].id == "acme-tissue"]
    assert hidden.origin.kind == "entry-point" and by is winner
    assert get_plugin("acme-tissue").manifest.version == "0.2.0"


def test_same_id_from_two_packages_is_an_error_naming_both(acme_installed: Path, tmp_path: Path,
                                                            monkeypatch) -> None:
    import shutil

    site = tmp_path / "site2"
    shutil.copytree(acme_installed / "acme_tissue_tiles", site / "other_acme")
    _dist_info(site, "other-acme", "other_acme", "acme-tissue")
    monkeypatch.syspath_prepend(str(site))
    scan = scan_plugins()
    assert "acme-tissue" not in scan.plugins
    [err] = [e for e in scan.errors if e.source == "acme-tissue"]
    assert "other-acme" in err.message and "acme-tissue-tiles" in err.message
    with pytest.raises(PluginError, match="provided more than once"):
        get_plugin("acme-tissue")


def test_entry_point_name_must_equal_manifest_id(acme_installed: Path, tmp_path: Path,
                                                 monkeypatch) -> None:
    import shutil

    site = tmp_path / "site3"
    shutil.copytree(acme_installed / "acme_tissue_tiles", site / "misnamed")
    _dist_info(site, "misnamed-dist", "misnamed", "not-the-id")
    monkeypatch.syspath_prepend(str(site))
    scan = scan_plugins()
    [err] = [e for e in scan.errors if "not-the-id" in e.source]
    assert "must equal the manifest id 'acme-tissue'" in err.message
    assert scan.plugins["acme-tissue"].origin.detail == "acme-tissue-tiles 0.1.0"


def test_broken_imported_plugin_does_not_hide_the_others(acme_installed: Path) -> None:
    from tessera.pipelines.plugin_system import user_plugin_dir

    broken = user_plugin_dir() / "broken"
    broken.mkdir(parents=True)
    (broken / "manifest.toml").write_text('id = "broken"\n')
    scan = scan_plugins()
    assert "acme-tissue" in scan.plugins
    [err] = [e for e in scan.errors if e.source == str(broken)]
    assert "invalid manifest field" in err.message


def test_zip_path_must_be_imported_first(tmp_path: Path) -> None:
    archive = tmp_path / "plugin.zip"
    archive.write_bytes(b"PK\x05\x06" + b"\0" * 18)
    with pytest.raises(PluginError, match="imported first"):
        get_plugin(str(archive))


def test_plugins_pickle_for_distributed_workers(make_acme_folder, acme_installed) -> None:
    import pickle

    for plugin in (get_plugin(str(make_acme_folder())), get_plugin("acme-tissue")):
        plugin.processing()  # resolved once before pickling
        copy = pickle.loads(pickle.dumps(plugin))
        assert (copy.id, copy.root, copy.origin) == (plugin.id, plugin.root, plugin.origin)
        assert copy.manifest == plugin.manifest
        assert copy.processing().postprocess is not None
