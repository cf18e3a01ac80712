"""``tessera bench engine PLUGIN``: ONNX Runtime vs torch throughput, side by side."""

from __future__ import annotations

import json
import os

import typer

from tessera.app.cli.console import console


def bench_engine_command(
    plugin_id: str = typer.Argument(..., metavar="PLUGIN", help="Plugin id or plugin folder."),
    batch: int | None = typer.Option(None, "--batch", min=1,
                                     help="Items per batch (default: the manifest's)."),
    threads: int | None = typer.Option(None, "--threads", min=1,
                                       help="Threads for both engines (default: physical cores)."),
    repeats: int = typer.Option(10, "--repeats", min=1, help="Timed rounds (medians reported)."),
    warmup: int = typer.Option(2, "--warmup", min=0, help="Untimed runs per engine first."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda[:N], mps, auto."),
    role: str = typer.Option("model", "--role", help="Which model of the plugin."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Median time per batch of both engines on the same model, batch and threads; ratio."""
    from tessera.pipelines.bench.engine import bench_engines
    from tessera.pipelines.plugin_system import get_plugin

    plugin = get_plugin(plugin_id)
    with console.status(f"benchmarking {plugin.id}"):
        result = bench_engines(plugin, batch=batch, threads=threads, repeats=repeats,
                               warmup=warmup, device=device, role=role)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    from rich.table import Table

    table = Table("engine", "median s/batch", "items/s", box=None, pad_edge=False)
    table.add_row("onnxruntime", f"{result.onnx_median_s:.4f}", f"{result.onnx_items_per_s:.1f}")
    table.add_row("torch", f"{result.torch_median_s:.4f}", f"{result.torch_items_per_s:.1f}")
    console.print(f"{plugin.id} ({role}), batch {result.batch}, {result.threads} threads, "
                  f"{result.repeats} rounds; load average {result.load_avg_1min:.1f} on "
                  f"{os.cpu_count()} CPUs", highlight=False, markup=False)
    console.print(table)
    for label, desc in (("onnxruntime", result.onnx_description),
                        ("torch", result.torch_description)):
        console.print(f"  {label} runs on {desc}", highlight=False, markup=False, soft_wrap=True)
    console.print(f"ratio onnxruntime/torch throughput: {result.ratio:.2f}x "
                  f"({result.winner} wins); max |onnx - torch| = {result.max_abs_diff:.2g}",
                  highlight=False, markup=False)


def register(group: typer.Typer) -> None:
    group.command("engine")(bench_engine_command)
