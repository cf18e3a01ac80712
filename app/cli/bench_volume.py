"""``tessera bench volume``: 3D sliding window vs MONAI, and peak RSS on a 512x512x400 CT."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import typer

from tessera.app.cli.console import console


def _shape(text: str) -> tuple[int, int, int]:
    try:
        values = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 16:
        msg = f"expected three sizes Z,Y,X of at least 16, got {text!r}"
        raise typer.BadParameter(msg)
    return values  # type: ignore[return-value]


def bench_volume_command(
    plugin_id: str = typer.Argument("airway-av", metavar="PLUGIN",
                                    help="A segment-3d plugin with the airway-av processing."),
    role: str = typer.Option("airway", "--role", help="Which model of the plugin."),
    shape: str = typer.Option("96,192,192", "--shape", help="Throughput volume, Z,Y,X."),
    repeats: int = typer.Option(3, "--repeats", min=1, help="Timed rounds per method (medians)."),
    threads: int = typer.Option(1, "--threads", min=1, help="Threads for the engine and torch."),
    rss: bool = typer.Option(True, "--rss/--no-rss", help="Also measure peak RSS on a big CT."),
    rss_shape: str = typer.Option("400,512,512", "--rss-shape", help="Peak-RSS volume, Z,Y,X."),
    work: Path | None = typer.Option(None, "--work", help="Folder for the big CT and outputs "
                                     "(default: a temporary one)."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Voxels/s of Tessera's sliding window vs MONAI's (same model, window, overlap,
    Gaussian blending), side by side; peak RSS of the whole flow in a subprocess."""
    from tessera.pipelines.bench.volume import bench_sliding_window, big_ct, peak_rss_mb
    from tessera.pipelines.plugin_system import get_plugin

    plugin = get_plugin(plugin_id)
    with console.status(f"sliding windows over a {shape} CT ({repeats} rounds each)"):
        result = bench_sliding_window(plugin, role=role, shape_zyx=_shape(shape),
                                      repeats=repeats, threads=threads)
    record = {"sliding_window": result.to_dict()}
    if rss:
        with tempfile.TemporaryDirectory(prefix="tessera-bench-volume-") as tmp:
            folder = Path(work) if work is not None else Path(tmp)
            big_shape = _shape(rss_shape)
            with console.status(f"peak RSS: the whole flow on a {rss_shape} CT in a subprocess"):
                ct = big_ct(folder / f"ct_{'x'.join(map(str, big_shape))}.nii.gz", big_shape)
                record["peak_rss"] = peak_rss_mb(ct, str(plugin.root), folder / "out")
    if as_json:
        typer.echo(json.dumps(record, indent=2))
        return
    r = result
    console.print(f"{plugin.id} ({role}) on a {'x'.join(map(str, r.shape_zyx))} CT: window "
                  f"{'x'.join(map(str, r.window_zyx))}, overlap {r.overlap}, Gaussian sigma 0.125, "
                  f"batch {r.batch}, {r.threads} thread(s), {r.repeats} rounds; load average "
                  f"{r.load_avg_1min:.1f} on {os.cpu_count()} CPUs", highlight=False, markup=False)
    from rich.table import Table

    table = Table("sliding window", "median s", "voxels/s", "windows", box=None, pad_edge=False)
    table.add_row("tessera", f"{r.tessera_median_s:.2f}", f"{r.tessera_voxels_per_s:,.0f}",
                  str(r.tessera_windows))
    table.add_row("monai", f"{r.monai_median_s:.2f}", f"{r.monai_voxels_per_s:,.0f}",
                  str(r.monai_windows))
    console.print(table)
    console.print(f"ratio tessera/monai throughput: {r.ratio:.2f}x; labels agree on "
                  f"{100 * r.label_agreement:.2f}% of voxels", highlight=False, markup=False)
    if "peak_rss" in record:
        p = record["peak_rss"]
        console.print(f"peak RSS of the whole two-stage flow on {'x'.join(map(str, p['shape_zyx']))}"
                      f": {p['peak_rss_mb']:.0f} MB ({p['seconds']:.0f} s; stand-in windows after "
                      "the real sessions' first batches)", highlight=False, markup=False)


def register(group: typer.Typer) -> None:
    group.command("volume")(bench_volume_command)
