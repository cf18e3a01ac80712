"""Command groups whose subcommands come from several modules (synth, bench).

Each subcommand module exposes ``register(group: typer.Typer)``; add its import path to
the group's list when it lands. Modules keep heavy imports inside their functions.
"""

from __future__ import annotations

import importlib

import typer

synth_app = typer.Typer(
    help="Synthetic data with ground truth: slides, CT volumes, galaxy fields, eDOS.",
    no_args_is_help=True,
)
bench_app = typer.Typer(
    help="Side-by-side benchmarks (ratios and medians measured in one run).",
    no_args_is_help=True,
)

SYNTH_MODULES: list[str] = [
    "tessera.app.cli.synth_ct",
    "tessera.app.cli.synth_galaxies",
    "tessera.app.cli.synth_edos",
    "tessera.app.cli.synth_slide",
]
BENCH_MODULES: list[str] = [
    "tessera.app.cli.bench_engine",
    "tessera.app.cli.bench_read",
    "tessera.app.cli.bench_run",
    "tessera.app.cli.bench_volume",
    "tessera.app.cli.bench_sam",
    "tessera.app.cli.bench_view",
]


def register(app: typer.Typer) -> None:
    for name in SYNTH_MODULES:
        importlib.import_module(name).register(synth_app)
    for name in BENCH_MODULES:
        importlib.import_module(name).register(bench_app)
    if SYNTH_MODULES:
        app.add_typer(synth_app, name="synth")
    if BENCH_MODULES:
        app.add_typer(bench_app, name="bench")
