"""``tessera bench read SLIDE``: aligned-tile throughput, fast path vs OpenSlide, side by side."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tessera.app.cli.console import console


def _thread_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        msg = f"--threads takes comma-separated integers, got {text!r}"
        raise typer.BadParameter(msg) from exc
    if not counts or min(counts) < 1:
        msg = "--threads needs at least one count >= 1"
        raise typer.BadParameter(msg)
    return counts


def bench_read_command(
    slide: Path = typer.Argument(..., help="An SVS or generic tiled TIFF slide."),
    tiles: int = typer.Option(200, "--tiles", min=1, help="Tiles per round (each read once)."),
    threads: str = typer.Option("1,2", "--threads", help="Thread counts, comma-separated."),
    repeats: int = typer.Option(5, "--repeats", min=1, help="Timed rounds (medians reported)."),
    level: int = typer.Option(0, "--level", min=0, help="Pyramid level to read."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random tile choice."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Decoded RGB tiles/s and MB/s of the tiff-tiles fast path and of openslide.read_region,
    at each thread count, in one run; prints the ratio and the scaling with threads."""
    from tessera.app.cli.progress import RichReporter, progress_bar
    from tessera.pipelines.bench.read import FAST, OPENSLIDE, bench_read

    counts = _thread_counts(threads)
    with progress_bar(transient=True) as bar:
        result = bench_read(
            slide, tiles=tiles, threads=counts, repeats=repeats, level=level, seed=seed,
            progress=RichReporter(bar),
        )  # fmt: skip
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    from rich.table import Table

    table = Table(
        "path", "threads", "tiles/s", "MB/s", "median s/round", "x vs 1 thread", "CPU ms/tile",
        box=None, pad_edge=False,
    )  # fmt: skip
    labels = {FAST: "fast path", OPENSLIDE: "openslide"}
    for n in result.threads:
        for path in (FAST, OPENSLIDE):
            t = result.timing(path, n)
            table.add_row(
                labels[path], str(n), f"{t.tiles_per_s:.0f}", f"{t.mb_per_s:.1f}",
                f"{t.median_s:.3f}", f"{result.scaling(path, n):.2f}", f"{t.cpu_ms_per_tile:.2f}",
            )  # fmt: skip
    th, tw = result.tile_yx
    console.print(
        f"{result.slide}: level {result.level}, {tw}x{th} {result.compression} tiles, "
        f"{result.n_tiles} tiles/round, {result.repeats} rounds (medians)",
        highlight=False,
    )
    console.print(table)
    ratios = ", ".join(f"{result.ratio(n):.2f}x at {n} thread(s)" for n in result.threads)
    same = "identical" if result.identical_pixels else "DIFFERENT"
    console.print(
        f"fast path / openslide throughput: {ratios}; pixels {same} on "
        f"{result.checked_tiles} tiles",
        highlight=False,
    )


def register(group: typer.Typer) -> None:
    group.command("read")(bench_read_command)
