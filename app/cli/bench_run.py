"""``tessera bench run``: model-only vs ``tessera run`` vs a naive loop, side by side, and
peak RSS on a small and a huge slide (see tessera.pipelines.bench.run)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tessera.app.cli.console import console


def bench_run(
    plugin: str | None = typer.Option(None, "--plugin", help="Plugin id or folder (default: breast-vit, else a "
                                      "random-weight timm ViT-Tiny built in the cache)."),
    size: int = typer.Option(10_000, "--size", min=0, help="Side of the throughput slide, pixels (0: skip)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    threads: int | None = typer.Option(None, "--threads", min=1, help="Cores used (default: all)."),
    repeats: int = typer.Option(3, "--repeats", min=1, help="Alternating repeats; medians are reported."),
    rss: str = typer.Option("10000,60000", "--rss", help="Slide sides for the peak-RSS runs ('' to skip)."),
    rss_plugin: str | None = typer.Option(None, "--rss-plugin", help="Plugin for the peak-RSS runs "
                                          "(default: the benchmarked one)."),
    schedulers: bool = typer.Option(True, "--schedulers/--no-schedulers",
                                    help="Also time tessera run on a LocalCluster."),
    cache: Path = typer.Option(Path("bench-cache"), "--cache", help="Where slides, the model and outputs go."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Throughput of tessera run against the model alone and a naive loop; peak memory."""
    from tessera.app.cli.progress import RichReporter, progress_bar
    from tessera.pipelines.bench.run import bench_run as run_bench

    try:
        rss_sizes = tuple(int(v) for v in rss.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"--rss takes sizes like 10000,60000, not {rss!r}", param_hint="--rss") from None

    with progress_bar(quiet=as_json) as progress:
        report = run_bench(cache=cache, plugin=plugin, size_px=size, batch_size=batch_size, threads=threads,
                           repeats=repeats, rss_sizes=rss_sizes, compare_schedulers=schedulers,
                           rss_plugin=rss_plugin, progress=RichReporter(progress))
    (cache / "bench_run.json").write_text(json.dumps(report, indent=2))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    if "median_s" in report:
        _print_throughput(report)
    for side, v in report.get("peak_rss", {}).items():
        console.print(f"peak RSS, {side}² slide ({v['tissue_tiles']} tissue tiles, {report['rss_plugin']}): "
                      f"{v['peak_rss_mb']:.0f} MB in {v['seconds']:.0f} s")
    if "peak_rss_spread" in report:
        console.print(f"peak RSS spread: {100 * report['peak_rss_spread']:.1f}% (goal < 15%, and < 1.5 GB)")


def _print_throughput(report: dict) -> None:
    from rich.table import Table

    from tessera.pipelines.bench.run import format_table

    slide = report["slide"]
    table = Table("way", "median s", "tiles/s", "vs model only",
                  title=f"{report['plugin']} on a {slide['size_px']}² slide: {slide['tissue_tiles']} tissue tiles, "
                  f"batch {report['batch_size']}, {report['threads']} threads, median of {report['repeats']}")
    for row in format_table(report):
        table.add_row(*row)
    console.print(table)
    r = report["ratios"]
    console.print(f"end-to-end / model-only = {r['end_to_end_vs_model_only']:.2f} (goal >= 0.85); "
                  f"end-to-end / naive = {r['end_to_end_vs_naive']:.2f} (goal >= 1.5)")
    if "threads_vs_local_cluster" in r:
        console.print(f"threads / LocalCluster = {r['threads_vs_local_cluster']:.2f}")


def register(group: typer.Typer) -> None:
    group.command("run")(bench_run)
