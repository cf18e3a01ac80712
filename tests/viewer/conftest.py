import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures" / "test_plugins"))

from batch_fixtures import *  # noqa: F403  (session fixtures: synth, test_plugins, plugin_dirs, slide)


@pytest.fixture
def window(make_napari_viewer, monkeypatch, tmp_path, request):
    """A shown Tessera window with its own config folder; a test module may set
    ``WINDOW_SIZE = (width, height)`` (default 1400 x 900)."""
    from tessera.app.viewer.window import TesseraWindow

    monkeypatch.setenv("TESSERA_CONFIG_DIR", str(tmp_path / "config"))
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(*getattr(request.module, "WINDOW_SIZE", (1400, 900)))
    w = TesseraWindow(viewer)
    yield w
    w.dock.shutdown()
