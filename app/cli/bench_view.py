"""``tessera bench view``: viewer responsiveness (first frame, overlay latency, UI stall, RSS).

Needs the gui extra and a display. Without a display on Linux it re-runs itself under
``xvfb-run`` (Xvfb + Mesa, as the GUI tests do). The viewer is imported by name at run
time, so the CLI never imports Qt or napari otherwise.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import typer

from tessera.app.cli.console import console
from tessera.pipelines.errors import MissingDependency, TesseraError

XVFB_SCREEN = "-screen 0 1920x1080x24 +extension GLX +render"


def _slide(size: int, slide: Path | None) -> Path:
    if slide is not None:
        if not slide.exists():
            msg = "no such slide; check the path"
            raise TesseraError(msg, path=slide)
        return slide
    from tessera.pipelines.plugin_system import cache_dir

    path = cache_dir("bench") / f"view-slide-{size}.svs"
    if not path.exists():
        from tessera.app.cli.progress import RichReporter, progress_bar
        from tessera.pipelines.synthetic.slide import synth_slide

        console.print(f"making a {size} x {size} synthetic slide once (cached at {path}); this takes a while")
        with progress_bar(transient=True) as bar:
            synth_slide(path, size_px=size, seed=7, progress=RichReporter(bar))
    return path


def bench_view_command(
    slide: Path | None = typer.Option(None, "--slide", help="Slide to use (default: a synthetic one of --size)."),
    size: int = typer.Option(60000, "--size", min=1024, help="Side of the synthetic slide, level-0 px."),
    plugin: str = typer.Option("breast-vit", "--plugin", "-p", help="Plugin id or folder for the overlay."),
    random_weights: bool = typer.Option(
        False, "--random-weights",
        help="Use the plugin's architecture with random weights when it ships no model file (timing only)."),
    regions: int = typer.Option(5, "--regions", min=1, help="Fresh regions for the overlay latency."),
    pan_steps: int = typer.Option(200, "--pan-steps", min=1, help="Canvas-sized level-0 pan steps for RSS."),
    phase_s: float = typer.Option(8.0, "--phase-seconds", min=1.0, help="Seconds per stall scenario."),
    out: Path | None = typer.Option(None, "--json", help="Also write the results as JSON here."),
) -> None:
    """Time to first frame, view change -> overlay complete, UI stall p99 with and without live
    inference, and RSS after panning at level 0; in one Tessera window."""
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        xvfb = shutil.which("xvfb-run")
        if xvfb is None:
            msg = "bench view needs a display; install Xvfb (xvfb-run) or run it on a desktop"
            raise TesseraError(msg)
        cmd = [xvfb, "-a", "-s", XVFB_SCREEN, sys.executable, "-m", "tessera.app.cli.main", *sys.argv[1:]]
        raise typer.Exit(subprocess.call(cmd))
    try:
        bench = importlib.import_module("tessera.app.viewer.bench")
    except ImportError as exc:
        raise MissingDependency("napari", "gui", "tessera bench view") from exc
    from tessera.pipelines.plugin_system import get_plugin, load_plugin_folder

    path = _slide(size, slide)
    plug = load_plugin_folder(Path(plugin)) if Path(plugin).is_dir() else get_plugin(plugin)
    if not plug.manifest.files:
        if not random_weights:
            msg = (f"plugin {plug.id!r} ships no model file yet; pass --random-weights to time its "
                   "architecture with random weights, or another --plugin")
            raise TesseraError(msg)
        from tessera.pipelines.plugin_system import cache_dir

        folder = cache_dir("bench") / f"{plug.id}-random"
        code = ("import sys; from tessera.app.viewer.bench import stand_in_plugin; "
                "stand_in_plugin(__import__('pathlib').Path(sys.argv[1]), sys.argv[2])")
        subprocess.run([sys.executable, "-c", code, str(folder), plug.id], check=True)  # torch stays out of this process
        plug = load_plugin_folder(folder)
        console.print(f"[yellow]{plug.id}: random weights, same architecture (timings only)[/]")
    results = bench.run_view_bench(path, plug, regions=regions, pan_steps=pan_steps, phase_s=phase_s,
                                   log=lambda s: console.print(s, highlight=False))
    _print(results)
    if out is not None:
        out.write_text(json.dumps(results, indent=2) + "\n")


def _print(r: dict) -> None:
    from rich.table import Table

    t = Table(title=f"viewer responsiveness: {Path(r['slide']).name}, {r['plugin']}, canvas {r['canvas_hw']}")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_column("goal", justify="right")
    ff = r["first_frame_s"]
    t.add_row("time to first frame (first open in process)", f"{ff['cold_process']:.2f} s", "< 1.5 s")
    t.add_row("time to first frame (reopen, median)", f"{ff['warm_median']:.2f} s", "< 1.5 s")
    vc = r["view_complete_s"]
    t.add_row(f"view change -> overlay complete ({vc['tiles_median']} tiles, median)", f"{vc['median']:.2f} s", "< 2 s")
    for key, s in r["ui_stall"].items():
        t.add_row(f"UI stall {key.replace('_', ' ')} (p50 / p99)", f"{s['p50_ms']:.0f} / {s['p99_ms']:.0f} ms",
                  "< 50 ms p99" if "live" in key and "no_live" not in key else "")
    rss = r["rss_after_pan_mb"]
    t.add_row(f"RSS after panning {rss['screens_panned']} level-0 screens", f"{rss['after']} MB", "< 1.5 GB")
    console.print(t)


def register(group: typer.Typer) -> None:
    group.command("view")(bench_view_command)
