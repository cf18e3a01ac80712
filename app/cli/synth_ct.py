"""``tessera synth ct``: a synthetic chest CT with airway/artery/vein ground truth."""

from __future__ import annotations

from pathlib import Path

import typer

from tessera.app.cli.console import console


def _triple(text: str, what: str, cast: type) -> tuple:
    parts = [p for p in text.replace("x", ",").split(",") if p.strip()]
    try:
        values = tuple(cast(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3:
        msg = f"{what} must be three comma-separated numbers (Z,Y,X), got {text!r}"
        raise typer.BadParameter(msg)
    return values


def synth_ct_command(
    out: Path = typer.Option(..., "--out", help="CT NIfTI to write (.nii.gz); labels and "
                             "truth JSON are written next to it."),
    shape: str = typer.Option("96,192,192", help="Volume size in voxels, Z,Y,X."),
    spacing: str = typer.Option("1.0,0.7,0.7", help="Voxel size in mm, Z,Y,X."),
    seed: int = typer.Option(0, help="Random seed (same seed, same volume)."),
) -> None:
    """Chest CT (int16 HU NIfTI) with lungs, airway tree, arteries beside the bronchi and veins.

    Writes PATH, PATH_labels.nii.gz (1 airway, 2 artery, 3 vein) and PATH_truth.json
    (centreline graph of every branch, HU values, label volumes).
    """
    from tessera.pipelines.synthetic.ct import synth_ct

    shape_zyx = _triple(shape, "--shape", int)
    spacing_mm = _triple(spacing, "--spacing", float)
    if not (out.name.endswith(".nii.gz") or out.name.endswith(".nii")):
        out = out.with_name(out.name + ".nii.gz")
    if min(shape_zyx) < 16 or min(spacing_mm) <= 0:
        msg = "--shape needs at least 16 voxels per axis and --spacing positive sizes"
        raise typer.BadParameter(msg)
    with console.status(f"rendering a {'x'.join(map(str, shape_zyx))} chest CT"):
        truth = synth_ct(out, shape_zyx=shape_zyx, spacing_mm=spacing_mm, seed=seed)
    counts = {t: len(truth.tree(t)) for t in ("airway", "artery", "vein")}
    console.print(f"CT      {truth.image_path}")
    console.print(f"labels  {truth.labels_path}  (1 airway, 2 artery, 3 vein)")
    console.print(f"truth   {truth.graph_path}")
    console.print(
        "branches " + ", ".join(f"{t} {n}" for t, n in counts.items())
        + f"; airway generations {truth.generations('airway')}; volumes ml "
        + ", ".join(f"{k} {v:.1f}" for k, v in truth.volumes_ml.items())
    )


def register(group: typer.Typer) -> None:
    group.command("ct")(synth_ct_command)
