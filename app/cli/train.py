"""``tessera train PLUGIN``: reproduce a plugin's shipped weights with its own recipe.

Calls the plugin's train hook, ``train(out_dir: Path, *, seed: int, quick: bool,
progress) -> dict`` of metrics, shows its progress, prints the metrics and writes them
to ``OUT/metrics.json``. ``--quick`` asks the recipe for a few steps only (a smoke run).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import typer

from tessera.app.cli.console import console


class _RichProgress:
    """ProgressReporter on a rich progress bar (start/advance/close from any thread)."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
        )
        self._task: Any = None
        self._lock = threading.Lock()

    def start(self, total: int | None, description: str = "") -> None:
        with self._lock:
            if self._task is None:
                self._progress.start()
                self._task = self._progress.add_task(description or "training", total=total)
            else:
                self._progress.reset(self._task, total=total, description=description or None)

    def advance(self, n: int = 1) -> None:
        with self._lock:
            if self._task is not None:
                self._progress.advance(self._task, n)

    def close(self) -> None:
        with self._lock:
            if self._task is not None:
                self._progress.stop()
                self._task = None


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
    out_dir = out if out is not None else Path.cwd() / f"{plugin.id}-train"
    out_dir.mkdir(parents=True, exist_ok=True)
    console.print(f"training {plugin.id} (seed {seed}{', quick' if quick else ''}) into {out_dir}",
                  highlight=False, markup=False)
    progress = _RichProgress()
    t0 = time.perf_counter()
    try:
        metrics = hook(out_dir, seed=seed, quick=quick, progress=progress)
    finally:
        progress.close()
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


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
