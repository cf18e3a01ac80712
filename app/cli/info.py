"""``tessera info PATH``: what a file is, its levels, axes, spacing and vendor."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tessera.app.cli.console import console


def info(
    path: Path = typer.Argument(..., help="Image file or folder (slide, TIFF, zarr, DICOM, NIfTI, FITS, PNG)."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
    reader: str | None = typer.Option(None, help="Force a reader by name."),
) -> None:
    """Describe an image: format, levels with shapes, axes, spacing with units, vendor."""
    from rich.table import Table

    import tessera

    with tessera.open(path, reader=reader) as src:
        desc = src.describe()
    if as_json:
        typer.echo(json.dumps(desc, indent=2))
        return
    spacing = (
        "unknown"
        if desc["spacing"] is None
        else " x ".join(f"{s:.6g}" for s in desc["spacing"]) + f" {desc['spacing_unit']}"
        + f" ({src.spatial_axes})"
    )
    console.print(f"[bold]{desc['path']}[/]")
    console.print(f"  format     {desc['format']}  (reader: {desc['reader']})")
    if desc.get("vendor"):
        console.print(f"  vendor     {desc['vendor']}")
    console.print(f"  axes       {desc['axes']}   dtype {desc['dtype']}")
    console.print(f"  spacing    {spacing}")
    if desc.get("objective_power"):
        console.print(f"  objective  {desc['objective_power']}x")
    table = Table("level", "shape", "downsample", "chunks", box=None, pad_edge=False)
    for lvl in desc["levels"]:
        table.add_row(
            str(lvl["level"]),
            " x ".join(map(str, lvl["shape"])),
            " x ".join(f"{d:.4g}" for d in lvl["downsample"]),
            " x ".join(map(str, lvl["chunks"])),
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("info")(info)
