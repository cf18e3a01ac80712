"""``tessera synth galaxies``: a survey field of Galaxy10-class galaxies and stars, with truth."""

from __future__ import annotations

from pathlib import Path

import typer

from tessera.app.cli.console import console


def synth_galaxies_command(
    out: Path = typer.Option(..., "--out", help="Folder to write field.fits, field.png, "
                             "catalogue.csv (and cutouts.h5) into."),
    size: int = typer.Option(2048, "--size", help="Field size in pixels (square, 0.262\"/px)."),
    n: int = typer.Option(60, "--n", help="Number of galaxies (cycling through the 10 classes)."),
    stars: int | None = typer.Option(None, "--stars", help="Number of stars (default 1.2 x --n)."),
    cutouts: int = typer.Option(0, "--cutouts", help="Also write N centred 256x256 cutouts in "
                                "the Galaxy10 DECaLS h5 layout (cutouts.h5)."),
    seed: int = typer.Option(0, help="Random seed (same seed, same pixels)."),
) -> None:
    """Survey field (FITS cube g,r,z with TAN WCS + colour PNG) of galaxies of all ten
    Galaxy10 DECaLS classes plus stars and noise; the catalogue CSV is the ground truth."""
    from tessera.pipelines.synthetic.galaxies import (
        render_cutouts,
        synth_galaxy_field,
        write_galaxy10_h5,
    )

    if size < 256 or n < 0 or cutouts < 0 or (stars is not None and stars < 0):
        msg = "--size must be at least 256 and --n, --stars, --cutouts non-negative"
        raise typer.BadParameter(msg)
    from tessera.app.cli.progress import RichReporter, progress_bar

    with progress_bar(transient=True) as bar:
        truth = synth_galaxy_field(out, size_px=size, n_galaxies=n, n_stars=stars, seed=seed,
                                   progress=RichReporter(bar))
        h5_path = None
        if cutouts:
            cut = render_cutouts(cutouts, seed=seed, progress=RichReporter(bar))
            h5_path = out / "cutouts.h5"
            write_galaxy10_h5(h5_path, cut)
    console.print(f"field      {truth.fits_path}  ({size}x{size} px, g r z, TAN WCS)")
    console.print(f"colour     {truth.png_path}")
    console.print(f"catalogue  {truth.catalogue_path}  ({len(truth.galaxies())} galaxies, "
                  f"{len(truth.stars())} stars)")
    if h5_path is not None:
        console.print(f"cutouts    {h5_path}  ({cutouts} x 256x256x3, Galaxy10 DECaLS layout)")


def register(group: typer.Typer) -> None:
    group.command("galaxies")(synth_galaxies_command)
