"""``tessera view [PATH] [--plugin ID] [--live]``: the desktop viewer.

The viewer needs the gui extra (napari, Qt) and a display. It is imported by name at
run time (``importlib``), so the CLI itself never imports Qt or napari and runs
without them; asking for the viewer without them is a one-line error saying what to
install.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import typer

from tessera.pipelines.errors import MissingDependency, TesseraError

VIEWER_MODULE = "tessera.app.viewer"


def view(
    path: Path | None = typer.Argument(None, help="Slide, volume, FITS or image to open (optional)."),
    plugin: str | None = typer.Option(None, "--plugin", "-p", help="Plugin to select in the dock."),
    live: bool = typer.Option(False, "--live", help="Start the plugin's live overlay on the opened image."),
) -> None:
    """Open the Tessera viewer (napari) on PATH, with PLUGIN's live overlay if asked."""
    if live and not plugin:
        raise typer.BadParameter("--live needs --plugin ID", param_hint="--live")
    if path is not None and not path.exists():
        msg = "no such file or folder; check the path"
        raise TesseraError(msg, path=path)
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        msg = ("the viewer needs a display (no DISPLAY/WAYLAND_DISPLAY); on a headless machine run it "
               "under xvfb-run, or use `tessera run` for batch work")
        raise TesseraError(msg)
    try:
        viewer = importlib.import_module(VIEWER_MODULE)
    except ImportError as exc:
        raise MissingDependency("napari", "gui", "the viewer") from exc
    code = viewer.open_viewer(path, plugin, live)
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("view")(view)
