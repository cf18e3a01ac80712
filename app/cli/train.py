"""``tessera train PLUGIN``: reproduce a plugin's shipped weights with its own recipe.

Calls the plugin's train hook, ``train(out_dir: Path, *, seed: int, quick: bool,
progress) -> dict`` of metrics, shows its progress, prints the metrics and writes them
to ``OUT/metrics.json``. ``--quick`` asks the recipe for a few steps only (a smoke run).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer

from tessera.app.cli.console import console


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except TypeError:
        if hasattr(value, "tolist"):
            return value.tolist()
        if isinstance(value, dict):
            return {str(k): _jsonable(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [_jsonable(v) for v in value]
        return str(value)
    return value


def train_command(
    plugin_id: str = typer.Argument(..., metavar="PLUGIN", help="Plugin id or plugin folder."),
    out: Path | None = typer.Option(
        None, "--out", help="Folder for weights, exports and metrics (default ./<id>-train)."
    ),
    seed: int = typer.Option(0, help="Random seed (same seed, same weights)."),
    quick: bool = typer.Option(False, "--quick", help="A few steps only (smoke test)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda[:N], for recipes that can use a GPU."),
    workers: int = typer.Option(0, "--workers", help="Processes making training batches (recipes that can)."),
) -> None:
    """Train a plugin's model with its recipe (needs the train extra: torch, timm)."""
    from tessera.pipelines.errors import MissingDependency, PluginError
    from tessera.pipelines.plugin_system import get_plugin

    plugin = get_plugin(plugin_id)
    try:
        import torch  # noqa: F401  (every training recipe needs it; fail before any work)
    except ImportError as exc:
        raise MissingDependency("torch", "train", f"`tessera train {plugin.id}`") from exc
    hook = plugin.hook("train")
    if hook is None:
        msg = f"plugin {plugin.id!r} has no train hook (hooks.train in its manifest)"
        raise PluginError(msg, path=plugin.manifest_path)
    options = _recipe_options(hook, plugin, device=device, workers=workers)
    out_dir = out if out is not None else Path.cwd() / f"{plugin.id}-train"
    out_dir.mkdir(parents=True, exist_ok=True)
    console.print(f"training {plugin.id} (seed {seed}{', quick' if quick else ''}) into {out_dir}",
                  highlight=False, markup=False)
    from tessera.app.cli.progress import RichReporter, progress_bar

    t0 = time.perf_counter()
    with progress_bar(rate=True) as bar:
        metrics = hook(out_dir, seed=seed, quick=quick, progress=RichReporter(bar, show_rate=True), **options)
    if not isinstance(metrics, dict):
        msg = f"the train hook returned {type(metrics).__name__}, not a dict of metrics"
        raise PluginError(msg, path=plugin.manifest_path)
    metrics = {str(k): _jsonable(v) for k, v in metrics.items()}
    record = {"plugin": plugin.id, "version": plugin.manifest.version, "seed": seed,
              "quick": quick, "seconds": round(time.perf_counter() - t0, 1), "metrics": metrics}
    (out_dir / "metrics.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    for key, value in metrics.items():
        shown = f"{value:.4g}" if isinstance(value, float) else json.dumps(value)
        console.print(f"  {key:<24} {shown}", highlight=False, markup=False)
    console.print(f"metrics written to {out_dir / 'metrics.json'} "
                  f"({record['seconds']} s)", highlight=False, markup=False)


def _recipe_options(hook: Any, plugin: Any, **asked: Any) -> dict[str, Any]:
    """The options the train hook takes (``device``, ``workers``); asking a recipe for
    one it lacks, other than at its default, is an error rather than silently ignored."""
    import inspect

    from tessera.pipelines.errors import PluginError

    defaults = {"device": "cpu", "workers": 0}
    params = inspect.signature(hook).parameters
    for name, value in asked.items():
        if name not in params and value != defaults[name]:
            msg = f"the {plugin.id!r} training recipe has no --{name} option; it runs with the default ({defaults[name]})"
            raise PluginError(msg, path=plugin.manifest_path)
    return {name: value for name, value in asked.items() if name in params}


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
