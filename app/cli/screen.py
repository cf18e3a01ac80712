"""``tessera screen``: single-atom-catalyst screening from eDOS (volcano plots, periodic tables).

    tessera screen INPUT --out DIR                 # predict, fit scaling, rank, draw
    tessera screen explain INPUT --candidate Fe/N-graphene/CO --out DIR
    tessera screen convert-vasp RUNS.csv --out dataset.h5

INPUT is an eDOS dataset: HDF5, zarr, npz/npy or a folder of samples
(``tessera.pipelines.catalysis.io``). The first form is the spectra-regress runner with its
outputs directly in DIR.
"""

from __future__ import annotations

import csv
import threading
from pathlib import Path
from typing import Any

import click
import typer
from typer.core import TyperGroup

from tessera.app.cli.console import console


class _ScreenGroup(TyperGroup):
    """``tessera screen INPUT ...`` runs the screening; named subcommands still work."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


screen_app = typer.Typer(
    cls=_ScreenGroup,
    help="Single-atom-catalyst screening: adsorption energies from eDOS, limiting potentials, "
    "volcano plots, periodic tables. `tessera screen INPUT --out DIR` runs it.",
    no_args_is_help=True,
)


def _predictor(plugin_id: str, engine: str, device: str) -> tuple[Any, Any]:
    from tessera.pipelines.plugin_system import get_plugin
    from tessera.pipelines.runners.base import PluginPredictor, plugin_ref

    plugin = get_plugin(plugin_id)
    return plugin, PluginPredictor(plugin_ref(plugin), plugin.manifest.task, engine, device)


@screen_app.command("run")
def screen_run(
    input_path: Path = typer.Argument(..., metavar="INPUT", help="eDOS dataset (.h5, .zarr, .npz, .npy or folder)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    plugin: str = typer.Option("sac-cnn", "--plugin", help="spectra-regress plugin id or folder."),
    engine: str = typer.Option("onnx", "--engine", help="Inference engine: onnx or torch."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N..."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Samples per model call."),
    top: int = typer.Option(5, "--top", min=1, help="Free-energy diagrams drawn for the best N candidates."),
    corrections: Path | None = typer.Option(
        None, "--corrections", help='JSON of ΔZPE - TΔS per adsorbate in eV ({"CO": 0.40, ...}; '
        '"ch4_formation_ev" too), over the documented defaults.'
    ),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Skip a finished identical run."),
) -> None:
    """Predict every candidate's intermediates, fit scaling relations, rank by U_L, draw the figures."""
    from tessera.pipelines.plugin_system import get_plugin
    from tessera.pipelines.runners.base import RunOptions
    from tessera.pipelines.runners.spectra_regress import run

    plug = get_plugin(plugin)
    extra: dict[str, Any] = {"top": top}
    if corrections is not None:
        extra["corrections"] = str(corrections)
    options = RunOptions(engine=engine, device=device, batch_size=batch_size, resume=resume, extra=extra)  # type: ignore[arg-type]
    from tessera.app.cli.progress import RichReporter, progress_bar

    with progress_bar(transient=True) as bar:
        reporter = RichReporter(bar, bar.add_task("screening", total=None))
        summary = run(input_path, plug, out, options=options, progress=reporter, cancel=threading.Event())
    console.print(f"{summary['n_samples']} samples, {summary['n_candidates']} candidates "
                  f"({summary['engine']})", highlight=False)
    if summary.get("mae_vs_reference_ev") is not None:
        console.print(f"MAE vs the dataset's reference energies: {summary['mae_vs_reference_ev']:.3f} eV",
                      highlight=False)
    for row in summary.get("best", []):
        console.print(f"  #{row['rank']} {row['metal']}/{row['support']}: U_L = {row['U_L_V_vs_RHE']:.2f} V vs RHE "
                      f"({row['limiting_step']})", highlight=False)
    if "screening_skipped" in summary:
        console.print(f"screening skipped: {summary['screening_skipped']}", highlight=False)
    console.print(f"outputs in {out}", highlight=False)


@screen_app.command("explain")
def screen_explain(
    input_path: Path = typer.Argument(..., metavar="INPUT", help="eDOS dataset."),
    candidate: str = typer.Option(..., "--candidate", help="METAL/SUPPORT/ADSORBATE, e.g. Fe/N-graphene/CO."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    plugin: str = typer.Option("sac-cnn", "--plugin", help="spectra-regress plugin id or folder."),
    engine: str = typer.Option("onnx", "--engine", help="Inference engine: onnx or torch."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N..."),
    window: float = typer.Option(0.5, "--window", min=0.01, help="Occlusion window width, eV."),
    stride: float = typer.Option(0.25, "--stride", min=0.005, help="Occlusion window step, eV."),
) -> None:
    """Occlusion scan along energy on the metal channel and the d-orbital shifting experiment."""
    from tessera.pipelines.catalysis.explain import write_explanation
    from tessera.pipelines.catalysis.io import open_edos
    from tessera.pipelines.errors import UnsupportedFile

    parts = candidate.split("/")
    if len(parts) != 3:
        msg = f"--candidate takes METAL/SUPPORT/ADSORBATE, got {candidate!r}"
        raise typer.BadParameter(msg, param_hint="--candidate")
    _, predictor = _predictor(plugin, engine, device)
    with open_edos(input_path) as ds:
        try:
            i = ds.find(*parts)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--candidate") from exc
        if i is None:
            msg = f"no sample {candidate} in the dataset ({len(ds)} samples)"
            raise UnsupportedFile(msg, path=input_path)
        edos = ds.read(i, i + 1)[0]
        name = f"{ds.metal[i]}/{ds.support[i]}/*{ds.adsorbate[i]}"
        adsorbate = ds.adsorbate[i]
    with console.status(f"explaining {name}"):
        summary = write_explanation(edos, predictor, out, name=name, adsorbate=adsorbate, window_ev=window,
                                    stride_ev=stride)
    sh = summary["shifting"]["slope_ev_per_ev"]
    console.print(f"{name}: E_ads = {summary['e_ads_pred_ev']:.3f} eV, eps_d = {summary['eps_d_ev']:.2f} eV", highlight=False)
    console.print("dE_ads/dshift (eV/eV): " + ", ".join(f"{k} {v:+.3f}" for k, v in sh.items()), highlight=False)
    occ = summary["occlusion"]
    console.print(f"most sensitive window: {occ['most_sensitive_window_centre_ev']:+.2f} eV "
                  f"(ΔE {occ['largest_delta_ev']:+.3f} eV)", highlight=False)
    console.print(f"outputs in {out}", highlight=False)


@screen_app.command("convert-vasp")
def screen_convert_vasp(
    runs: Path = typer.Argument(..., help="CSV with columns path, metal, support, adsorbate and optionally "
                                "e_ads_ev, metal_index, adsorbate_indices (1-based, ';'-separated)."),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset to write (.h5 or .zarr)."),
    source: str = typer.Option("doscar", "--source", help="doscar (LORBIT=11 projections) or procar."),
    sigma: float = typer.Option(0.1, "--sigma", help="Gaussian broadening for --source procar, eV."),
) -> None:
    """VASP calculation folders (DOSCAR, + PROCAR/CONTCAR) -> one eDOS dataset in the layout."""
    from tessera.pipelines.catalysis.io import write_edos_h5, write_edos_zarr
    from tessera.pipelines.catalysis.vasp import edos_from_vasp
    from tessera.pipelines.errors import CorruptFile, TesseraError

    if source not in ("doscar", "procar"):
        raise typer.BadParameter("--source is doscar or procar", param_hint="--source")
    try:
        with runs.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise CorruptFile(f"cannot read the runs CSV ({exc.strerror or exc})", path=runs) from exc
    need = {"path", "metal", "support", "adsorbate"}
    if not rows or not need <= set(rows[0]):
        raise CorruptFile(f"the runs CSV needs the columns {sorted(need)}", path=runs)
    failed: list[str] = []

    def samples():  # type: ignore[no-untyped-def]
        for row in rows:
            folder = (runs.parent / row["path"]).resolve()
            idx = row.get("adsorbate_indices") or ""
            try:
                edos = edos_from_vasp(
                    folder, adsorbate=row["adsorbate"], source=source, sigma_ev=sigma,
                    metal_index=int(row["metal_index"]) if row.get("metal_index") else None,
                    adsorbate_indices=[int(x) for x in idx.split(";") if x.strip()] or None,
                )
            except (TesseraError, ValueError) as exc:
                console.print(f"[red]skipped[/] {exc}", highlight=False)
                failed.append(str(folder))
                continue
            e = row.get("e_ads_ev", "")
            yield ({"metal": row["metal"], "support": row["support"], "adsorbate": row["adsorbate"],
                    "e_ads_ev": float(e) if e not in ("", None) else float("nan")}, edos)

    if out.suffix.lower() == ".zarr":
        items = list(samples())
        n = write_edos_zarr(out, iter(items), n=len(items), attrs={"converted_from": "VASP " + source})
    else:
        n = write_edos_h5(out, samples(), attrs={"converted_from": "VASP " + source})
    console.print(f"{n} samples written to {out}", highlight=False)
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(screen_app, name="screen")
