"""``tessera demo``: the embedded default — a synthetic slide, the breast ViT, the viewer.

With a display and the gui extra it opens the viewer on the demo slide with the
breast-vit overlay computed live as you pan; otherwise (``--headless``, no display, or no
gui extra) it runs the same model over the whole slide with ``tessera run`` and prints
where the heatmap, GeoJSON, preview and summary are.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

from tessera.app.cli.console import console, err_console

DEMO_PLUGIN = "breast-vit"


def display_available() -> bool:
    """True where a window can be shown (macOS/Windows, or an X11/Wayland display on Linux)."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def gui_installed() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("napari", "qtpy", "magicgui"))


def demo(
    out: Path = typer.Option(Path("demo-output"), "--out", help="Folder for the demo data and results."),
    headless: bool = typer.Option(False, "--headless", help="No window: run the batch job and print the outputs."),
    size: int = typer.Option(8192, "--size", min=1024, help="Demo slide size (pixels a side)."),
    seed: int = typer.Option(7, "--seed", help="Seed of the synthetic slide."),
) -> None:
    """Generate a synthetic H&E slide with known tumour regions and show the breast ViT on it."""
    from tessera.app.cli.progress import RichReporter, progress_bar
    from tessera.pipelines.synthetic.slide import synth_slide

    out.mkdir(parents=True, exist_ok=True)
    slide = out / "demo_slide.svs"
    stamp = out / "demo_slide.params.json"
    params = {"size": size, "seed": seed}
    if not (slide.exists() and stamp.exists() and json.loads(stamp.read_text()) == params):
        with progress_bar() as bar:
            synth_slide(slide, size_px=size, seed=seed, progress=RichReporter(bar))
        stamp.write_text(json.dumps(params))
    console.print(f"demo slide: {slide} (tumour truth: {slide.with_suffix('.svs.truth.png').name})",
                  highlight=False)

    if not headless and display_available() and gui_installed():
        import importlib

        from tessera.app.cli.view import VIEWER_MODULE

        # imported by name, like `tessera view`: the CLI itself never imports Qt/napari
        viewer = importlib.import_module(VIEWER_MODULE)
        console.print(f"opening the viewer with the {DEMO_PLUGIN} overlay live", highlight=False)
        raise typer.Exit(viewer.open_viewer(slide, DEMO_PLUGIN, True))
    if not headless:
        why = "no display" if not display_available() else "the gui extra is not installed"
        err_console.print(f"{why}: running the demo headless", highlight=False)

    from tessera.app.cli.main import main as cli_main

    results = out / "results"
    code = cli_main(["run", DEMO_PLUGIN, str(slide), "--out", str(results)])
    if code != 0:
        raise typer.Exit(code)
    done = results / "demo_slide"
    summary = json.loads((done / "summary.json").read_text())
    console.print("\n[bold]Demo outputs[/]")
    for name in sorted(p.name for p in done.iterdir()):
        console.print(f"  {done / name}", highlight=False)
    positive = summary.get("positive_class")
    found = summary.get("classes", {}).get(positive) if positive else None
    if found:
        console.print(f"{positive}: {found.get('area_mm2')} mm², "
                      f"{100 * found.get('fraction_of_tissue', 0):.1f}% of the tissue", highlight=False)
    console.print("open it in the viewer with: tessera view " + str(slide) + f" --plugin {DEMO_PLUGIN} --live",
                  highlight=False)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
