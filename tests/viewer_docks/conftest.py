"""Session data for the task-dock GUI tests: a small synthetic survey field (FITS + true
catalogue) and a small synthetic eDOS dataset, generated once in tmp dirs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def galaxy_field(tmp_path_factory: pytest.TempPathFactory):
    """768 x 768 px field at the DECaLS scale: 12 galaxies (every class at least once)
    and 8 stars, seed 4; returns the generator's FieldTruth."""
    from tessera.pipelines.synthetic.galaxies import synth_galaxy_field

    return synth_galaxy_field(tmp_path_factory.mktemp("field"), size_px=768, n_galaxies=12, n_stars=8, seed=4)


@pytest.fixture(scope="session")
def edos_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 metals x 2 supports x every adsorbate as one HDF5 file, seed 3."""
    from tessera.pipelines.synthetic.edos import synth_edos

    path = tmp_path_factory.mktemp("edos") / "sac.h5"
    synth_edos(path, seed=3, metals=["Fe", "Co", "Ni", "Cu", "Ru", "Pd"], supports=["N-graphene", "BN"])
    return path


@pytest.fixture
def shot_dir(tmp_path: Path) -> Path:
    """Where screenshots go: $TESSERA_SCREENSHOT_DIR when set (to look at them), else tmp."""
    d = Path(os.environ.get("TESSERA_SCREENSHOT_DIR") or tmp_path / "shots")
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture
def window(make_napari_viewer, monkeypatch, tmp_path):
    """A Tessera window (napari viewer + Tessera dock) 1600 x 1000; every dock with a
    ``shutdown`` (task docks opened in it) is shut down afterwards."""
    from tessera.app.viewer.window import TesseraWindow

    monkeypatch.setenv("TESSERA_CONFIG_DIR", str(tmp_path / "config"))
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    w = TesseraWindow(viewer)
    yield w
    for dock in list(viewer.window.dock_widgets.values()):
        if dock is not w.dock and hasattr(dock, "shutdown"):
            dock.shutdown()
    w.dock.shutdown()
