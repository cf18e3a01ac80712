"""``tessera info PATH``: what a file is, its levels, axes, spacing and vendor."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tessera.app.cli.console import console


def info(
    path: Path = typer.Argument(
        ..., help="Image file or folder (slide, TIFF, zarr, DICOM, NIfTI, FITS, PNG)."
    ),
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
        else " x ".join(f"{s:.6g}" for s in desc["spacing"])
        + f" {desc['spacing_unit']}"
        + f" ({src.spatial_axes})"
    )
    meta = desc["metadata"]
    console.print(f"[bold]{desc['path']}[/]")
    console.print(f"  format     {desc['format']}  (reader: {desc['reader']})")
    if desc.get("vendor"):
        console.print(f"  vendor     {desc['vendor']}")
    console.print(f"  axes       {desc['axes']}   dtype {desc['dtype']}")
    console.print(f"  spacing    {spacing}")
    if desc.get("objective_power"):
        console.print(f"  objective  {desc['objective_power']:g}x")
    for label, text in _details(meta):
        console.print(f"  {label:<10} {text}", highlight=False)
    table = Table("level", "shape", "downsample", "chunks", box=None, pad_edge=False)
    for lvl in desc["levels"]:
        table.add_row(
            str(lvl["level"]),
            " x ".join(map(str, lvl["shape"])),
            " x ".join(f"{d:.4g}" for d in lvl["downsample"]),
            " x ".join(map(str, lvl["chunks"])),
        )
    console.print(table)


def _details(meta: dict) -> list[tuple[str, str]]:
    """The format-specific lines worth a glance (channels, modality, orientation, WCS...)."""
    rows: list[tuple[str, str]] = []
    if meta.get("physical_size_um"):
        known = ", ".join(f"{a} {v:.6g} µm" for a, v in meta["physical_size_um"].items())
        rows.append(("known", f"{known} (spacing needs every spatial axis)"))
    if meta.get("channel_names"):
        rows.append(("channels", ", ".join(map(str, meta["channel_names"]))))
    if meta.get("modality"):
        units = f" in {meta['units']}" if meta.get("units") else ""
        rows.append(("modality", f"{meta['modality']}{units}, {meta.get('n_slices')} slices"))
    if meta.get("series_description") or meta.get("series_uid"):
        rows.append(
            (
                "series",
                f"{meta.get('series_description') or ''} {meta.get('series_uid', '')}".strip(),
            )
        )
    if meta.get("orientation"):
        rows.append(
            ("orientation", f"{meta['orientation']} (direction of each spatial axis, RAS+)")
        )
    if meta.get("wcs_frame"):
        obj = meta.get("header", {}).get("OBJECT")
        rows.append(("wcs", f"{meta['wcs_frame']}" + (f", object {obj}" if obj else "")))
    if meta.get("associated_images"):
        rows.append(("images", ", ".join(meta["associated_images"])))
    if len(meta.get("series", [])) > 1:
        others = [
            f"{s['index']}: {'x'.join(map(str, s['shape']))} {s['axes']}"
            for s in meta["series"][1:]
        ]
        rows.append(("series", f"level 0 of series 0 shown; also {'; '.join(others)}"))
    if meta.get("compression"):
        fast = " (native tile decode)" if meta.get("fast_path") else ""
        rows.append(("tiles", f"{meta['compression']}{fast}"))
    return rows


def register(app: typer.Typer) -> None:
    app.command("info")(info)
