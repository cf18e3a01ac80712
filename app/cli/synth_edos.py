"""``tessera synth edos``: single-atom-catalyst eDOS with d-band-model adsorption energies."""

from __future__ import annotations

from pathlib import Path

import typer

from tessera.app.cli.console import console


def _names(text: str | None, known: tuple[str, ...] | list[str], what: str) -> list[str] | None:
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        msg = f"unknown {what} {unknown or text!r}; choose from {', '.join(known)}"
        raise typer.BadParameter(msg)
    return names


def synth_edos_command(
    out: Path = typer.Option(
        ..., "--out", help="Dataset to write: NAME.h5 (HDF5), NAME.zarr, or a folder (one .npz "
        "per sample). The truth JSON is written beside it."
    ),
    seed: int = typer.Option(0, help="Random seed (same seed, same dataset)."),
    metals: str | None = typer.Option(None, help="Comma-separated metals (default: 30 3d/4d/5d)."),
    supports: str | None = typer.Option(None, help="Comma-separated supports (default: all six)."),
    adsorbates: str | None = typer.Option(None, help="Comma-separated adsorbates (default: nine)."),
    variants: int = typer.Option(
        1, min=1, help="Structural variants per SAC (jittered d band), for training sets."
    ),
) -> None:
    """eDOS arrays [4000 energies, 9 orbitals, 6 atomic channels] for metals x supports x adsorbates.

    Adsorption energies follow a d-band model (E = alpha*eps_d + gamma*(w_d - w_ref) + beta +
    noise, alpha < 0) with hybrid scaling between intermediates; the coefficients are in the
    truth JSON.
    """
    from tessera.pipelines.catalysis.layout import ADSORBATES, METALS, SUPPORTS
    from tessera.pipelines.synthetic.edos import synth_edos

    chosen = {
        "metals": _names(metals, list(METALS), "metal"),
        "supports": _names(supports, list(SUPPORTS), "support"),
        "adsorbates": _names(adsorbates, ADSORBATES, "adsorbate"),
    }
    n = (
        len(chosen["metals"] or METALS)
        * len(chosen["supports"] or SUPPORTS)
        * len(chosen["adsorbates"] or ADSORBATES)
        * variants
    )
    with console.status(f"generating {n} eDOS samples"):
        truth = synth_edos(out, seed=seed, n_variants=variants, **chosen)
    console.print(f"dataset {truth.paths['data']}  ({truth.n_samples} samples, [4000, 9, 6] each)")
    console.print(f"truth   {truth.paths['truth']}")


def register(group: typer.Typer) -> None:
    group.command("edos")(synth_edos_command)
