"""``tessera bench sam``: SAM decoder per-prompt latency, encoder time, cached re-prompt.

Measures, side by side in one run on one synthetic 256 x 256 scene: the plugin's demo
weights (and the SAM-UNet variant when shipped), and a ViT-B-sized SAM with random
weights (1024 px input, 64 x 64 embeddings, the official decoder) exported once to
ONNX in the cache folder (needs torch, i.e. the train extra; skipped without it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from tessera.app.cli.console import console, err_console


def _vit_b_graphs(folder: Path) -> tuple[Path, Path]:
    """Random-weight ViT-B SAM graphs, exported once (minutes) and reused."""
    enc, dec = folder / "encoder.onnx", folder / "decoder.onnx"
    if enc.exists() and dec.exists():
        return enc, dec
    import torch

    from tessera.plugins.sam import export
    from tessera.plugins.sam.model import build_sam

    torch.manual_seed(0)
    model = build_sam("vit_b")
    export.export_encoder(model, enc)
    export.export_decoder(model, dec)
    return enc, dec


def bench_sam_command(
    plugin: str = typer.Option("sam", "--plugin", help="Prompt-segment plugin id or folder."),
    prompts: int = typer.Option(60, "--prompts", min=5, help="Prompts per model (p50/p95 over them)."),
    encoder_repeats: int = typer.Option(3, "--encoder-repeats", min=1, help="Timed encoder runs per model."),
    vit_b: bool = typer.Option(True, "--vit-b/--no-vit-b", help="Also time a ViT-B-sized SAM (random weights)."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="ONNX Runtime threads (default: cores)."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Decoder p50/p95 per prompt, encoder time per window, re-prompt on a cached region."""
    import numpy as np

    from tessera.pipelines.bench.sam import bench_sam
    from tessera.pipelines.plugin_system import get_plugin
    from tessera.pipelines.plugin_system.locations import cache_dir
    from tessera.pipelines.prompting.plugin import runtime_from_plugin
    from tessera.pipelines.prompting.runtime import SamRuntime
    from tessera.pipelines.synthetic.objects import render_scene

    plug = get_plugin(plugin)
    runtimes = {"demo": runtime_from_plugin(plug, threads=threads)}
    variants = {f.size_variant for f in plug.manifest.files if f.role == "encoder"}
    for v in sorted(variants - {plug.manifest.params.get("default_variant", "demo")}):
        runtimes[v] = runtime_from_plugin(plug, variant=v, threads=threads)
    notes = []
    if vit_b:
        try:
            import torch  # noqa: F401
        except ImportError:
            notes.append("vit_b skipped: torch is not installed (pip install 'tessera[train]')")
        else:
            with console.status("exporting a random-weight ViT-B SAM to ONNX (once)"):
                enc, dec = _vit_b_graphs(cache_dir("bench-sam-vit_b"))
            runtimes["vit_b (random weights)"] = SamRuntime.from_onnx(enc, dec, threads=threads)
    image = render_scene(np.random.default_rng(7), size_yx=(256, 256), style="he").image
    with console.status("timing"):
        result = bench_sam(runtimes, image, prompts=prompts, encoder_repeats=encoder_repeats, threads=threads)
    result.notes.extend(notes)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    from rich.table import Table

    table = Table("model", "input px", "encoder (median)", "decoder p50", "decoder p95",
                  "re-prompt p50", "re-prompt p95", box=None, pad_edge=False)
    for m in result.models:
        table.add_row(m.name, str(m.input_size), f"{m.encoder_median_s * 1000:.0f} ms",
                      f"{m.decoder_p50_s * 1000:.1f} ms", f"{m.decoder_p95_s * 1000:.1f} ms",
                      f"{m.reprompt_p50_s * 1000:.1f} ms", f"{m.reprompt_p95_s * 1000:.1f} ms")
    console.print(f"{result.prompts} prompts per model, {result.encoder_repeats} encoder runs; load average "
                  f"{result.load_avg_1min:.1f} on {os.cpu_count()} CPUs", highlight=False, markup=False)
    console.print(table)
    for m in result.models:
        console.print(f"  {m.name}: {m.description}", highlight=False, markup=False, soft_wrap=True)
    for n in result.notes:
        err_console.print(n, highlight=False, markup=False)


def register(group: typer.Typer) -> None:
    group.command("sam")(bench_sam_command)
