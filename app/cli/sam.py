"""``tessera sam INPUT --point X,Y[,LABEL]... [--box X0,Y0,X1,Y1] --out OUT``.

Click or box to segment, on slides, CT slices and any image. Coordinates are level-0
pixels (x right, y down), as QuPath and ``tessera info`` report them. The encoder runs
once per window (cached on disk: a second prompt on the same file and level is decoder
only); OUT is a PNG/TIFF/NPY mask at the prompted level (with an ``OUT.json`` sidecar
giving its exact level-0 frame) or a GeoJSON in level-0 coordinates.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tessera.app.cli.console import console


def sam_command(
    input_path: Path = typer.Argument(..., metavar="INPUT", help="Slide, image, volume (NIfTI/DICOM) or any file tessera opens."),
    point: list[str] = typer.Option(
        [], "--point", "-p", metavar="X,Y[,LABEL]",
        help="A click in level-0 pixels; LABEL 1 = object (default), 0 = not object. Repeatable.",
    ),
    box: str | None = typer.Option(None, "--box", "-b", metavar="X0,Y0,X1,Y1", help="A box in level-0 pixels."),
    out: Path = typer.Option(..., "--out", "-o", help="Output: .png, .tif, .npy (mask at LEVEL) or .geojson (level 0)."),
    level: int = typer.Option(0, "--level", "-l", help="Pyramid level to segment at (0 = full resolution)."),
    slice_z: int | None = typer.Option(None, "--slice", help="Z slice of a volume (default: the middle one)."),
    plugin: str = typer.Option("sam", "--plugin", help="Prompt-segment plugin id or folder."),
    variant: str | None = typer.Option(None, "--variant", help="Weights variant of the plugin (e.g. demo, demo-unet)."),
    window: str | None = typer.Option(
        None, "--window", metavar="LO,HI", help="Intensity window for non-RGB data, e.g. -1000,1000 for CT (HU)."
    ),
    embeddings: Path | None = typer.Option(
        None, "--embeddings", help="A zarr store to keep this image's embeddings in (default: the user cache)."
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Keep embeddings in memory only."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Segment the object at the given points and/or box (SAM prompt segmentation)."""
    from tessera.pipelines.prompting.outputs import OUTPUT_SUFFIXES, spec_from_cli

    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        msg = f"OUT must end in one of {', '.join(OUTPUT_SUFFIXES)}"
        raise typer.BadParameter(msg, param_hint="--out")
    try:
        spec = spec_from_cli(point, box)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--point/--box") from exc
    value_window = None
    if window is not None:
        try:
            lo, hi = (float(v) for v in window.split(","))
        except ValueError as exc:
            raise typer.BadParameter("a window is LO,HI", param_hint="--window") from exc
        value_window = (lo, hi)

    import tessera
    from tessera.pipelines.plugin_system.locations import cache_dir
    from tessera.pipelines.prompting.cache import EmbeddingCache
    from tessera.pipelines.prompting.outputs import write_outputs
    from tessera.pipelines.prompting.session import PromptSession

    if no_cache:
        cache = EmbeddingCache()
    elif embeddings is not None:
        cache = EmbeddingCache(store_path=embeddings)
    else:
        cache = EmbeddingCache(disk_dir=cache_dir("sam-embeddings"))
    session = PromptSession.from_plugin(plugin, variant=variant, cache=cache)
    with tessera.open(input_path) as source:
        if not 0 <= level < len(source.levels):
            msg = f"--level {level}: {input_path} has levels 0..{len(source.levels) - 1}"
            raise typer.BadParameter(msg, param_hint="--level")
        session.set_image(source, level=level, z=slice_z, value_window=value_window, precompute=False)
        try:
            result = session.predict(spec.points_array(), spec.labels_array(), spec.box_l0_xyxy)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--point/--box") from exc
        info = write_outputs(out, [result], source=source, level=level, z=session.z)
    summary = {
        "input": str(input_path),
        "out": str(out),
        "level": level,
        "slice": session.z,
        "score": round(result.score, 4),
        "area_l0_px": result.mask.area_l0_px,
        "bbox_l0_xyxy": info["objects"][0]["bbox_l0_xyxy"],
        "encode_s": round(result.encode_s, 4),
        "decode_s": round(result.decode_s, 4),
        "model": session.runtime.describe(),
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    bbox = summary["bbox_l0_xyxy"]
    where = "empty mask" if bbox is None else "level-0 box " + ", ".join(f"{v:.0f}" for v in bbox)
    console.print(
        f"[bold]{out}[/]: score {summary['score']:.3f}, {summary['area_l0_px']:.0f} level-0 px, {where} "
        f"(encoder {summary['encode_s'] * 1000:.0f} ms, decoder {summary['decode_s'] * 1000:.0f} ms)",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command("sam")(sam_command)
