"""``tessera synth slide``: a synthetic H&E whole-slide image (Aperio SVS) with tumour truth."""

from __future__ import annotations

from pathlib import Path

import typer

from tessera.app.cli.console import console

_MALIGNANT = ("ductal_carcinoma", "lobular_carcinoma", "mucinous_carcinoma", "papillary_carcinoma")


def synth_slide_command(
    out: Path = typer.Option(..., "--out", help="The .svs to write; PATH.truth.png (labels "
                             "0 glass, 1 benign, 2 tumour) and PATH.truth.json go next to it."),
    size: str = typer.Option("4096", "--size", help="Level-0 size in pixels: N (square) or "
                             "H,W. 4096 .. 100000 a side; large slides stream in bounded memory."),
    seed: int = typer.Option(0, help="Random seed (same seed, same slide)."),
    mpp: float = typer.Option(0.25, "--mpp", help="Level-0 pixel size, µm/px (0.25 ~ 40x)."),
    app_mag: float = typer.Option(40.0, "--app-mag", help="Objective power (Aperio AppMag)."),
    malignant: str | None = typer.Option(
        None, "--malignant", help=f"Tumour type: one of {', '.join(_MALIGNANT)} "
        "(default: drawn from the seed)."),
    tumour_fraction: float = typer.Option(0.3, "--tumour-fraction",
                                          help="Share of the tissue that is tumour."),
    quality: int = typer.Option(90, "--quality", help="JPEG quality of the tiles (1-100)."),
) -> None:
    """H&E breast tissue on glass as a pyramidal Aperio SVS (JPEG tiles, MPP and AppMag),
    with benign tissue (stroma, fat, lobules) and tumour regions; the tumour ground-truth
    mask and a JSON of what was generated are written next to it."""
    from tessera.app.cli.progress import RichReporter, progress_bar
    from tessera.pipelines.synthetic.slide import synth_slide

    try:
        parts = [int(p) for p in size.replace("x", ",").split(",") if p.strip()]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) < 256:
        msg = f"--size must be N or H,W with at least 256 pixels a side, got {size!r}"
        raise typer.BadParameter(msg)
    size_yx = (parts[0], parts[-1])
    if malignant is not None and malignant not in _MALIGNANT:
        msg = f"--malignant must be one of {', '.join(_MALIGNANT)}, got {malignant!r}"
        raise typer.BadParameter(msg)
    if not 0 < tumour_fraction < 1 or mpp <= 0 or not 1 <= quality <= 100:
        msg = "--tumour-fraction must be within (0, 1), --mpp positive, --quality 1..100"
        raise typer.BadParameter(msg)
    if out.suffix.lower() != ".svs":
        out = out.with_name(out.name + ".svs")
    with progress_bar(transient=True) as bar:
        truth = synth_slide(
            out, size_px=size_yx, seed=seed, mpp=mpp, app_mag=app_mag, malignant=malignant,
            tumour_fraction=tumour_fraction, jpeg_quality=quality, progress=RichReporter(bar),
        )
    console.print(f"slide   {truth.slide_path}  ({size_yx[0]} x {size_yx[1]} px, {mpp:g} µm/px)")
    console.print(f"mask    {truth.mask_path}  (0 glass, 1 benign, 2 tumour; "
                  f"{truth.mask_mpp:g} µm/px)")
    console.print(f"truth   {truth.info_path}")
    console.print(f"tumour  {truth.malignant}: {truth.tumour_area_mm2:.3f} mm² of "
                  f"{truth.tissue_area_mm2:.3f} mm² tissue ({100 * truth.tumour_fraction:.1f}%)")


def register(group: typer.Typer) -> None:
    group.command("slide")(synth_slide_command)
