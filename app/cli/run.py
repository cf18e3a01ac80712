"""``tessera run PLUGIN INPUT... --out DIR``: run a model over many files, headless.

Each input's outputs go to ``DIR/<input stem>/`` (summary.json last). A failed input
(unreadable, corrupt, wrong kind) is reported in one line and the others go on; the
exit code is 1 if any failed, 2 for usage errors. One JSON line per input (status,
timings, tiles) is appended to ``DIR/run.jsonl``. Rerunning the same command skips
finished inputs and resumes interrupted ones (``--no-resume`` starts afresh).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import typer

from tessera.app.cli.console import console, err_console

_MULTI_SUFFIXES = (".ome.zarr", ".ome.tiff", ".ome.tif", ".nii.gz", ".tar.gz")


def input_stem(path: Path) -> str:
    """The output folder name for an input: its name without the format suffix(es)."""
    name = Path(path).name.rstrip("/")
    for suffix in _MULTI_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    stem = Path(name).stem
    return stem or name


def _parse_options(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            msg = f"--option takes KEY=VALUE, got {pair!r}"
            raise typer.BadParameter(msg, param_hint="--option")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def run(
    plugin: str = typer.Argument(..., help="Plugin id (see `tessera plugins list`) or plugin folder."),
    inputs: list[Path] = typer.Argument(..., help="Input files or folders (slides, volumes, zarr, DICOM series)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder; each input gets DIR/<stem>/."),
    scheduler: str | None = typer.Option(
        None, "--scheduler",
        help="dask.distributed scheduler address (tcp://host:8786), or 'local-cluster'; "
        "default: threads in this process.",
    ),
    engine: str = typer.Option("onnx", "--engine", help="Inference engine: onnx or torch."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N, mps..."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Tiles per model call (default: the plugin's)."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Local worker threads/processes (default: CPU cores)."),
    tiles_per_task: int | None = typer.Option(None, "--tiles-per-task", min=1, help="Tiles per dask task (default: 4x batch)."),
    engine_threads: int | None = typer.Option(None, "--engine-threads", min=1,
                                              help="ONNX Runtime threads per engine (default: cores / workers)."),
    tissue: str = typer.Option("auto", "--tissue", help="Tissue mask: auto, saturation, brightfield, fluorescence, none."),
    tissue_threshold: float | None = typer.Option(None, "--tissue-threshold", help="Fixed 0..1 threshold instead of Otsu."),
    min_tissue: float = typer.Option(0.1, "--min-tissue", min=0.0, max=1.0, help="Least tissue fraction of a tile that is run."),
    truth: Path | None = typer.Option(None, "--truth", help="Reference labels to score against (segment-3d)."),
    option: list[str] = typer.Option([], "--option", help="Plugin option KEY=VALUE (repeatable)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars; errors only."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Keep finished inputs and chunks of earlier runs."),
) -> None:
    """Run PLUGIN over every INPUT; outputs in OUT/<stem>/ (OME-Zarr, GeoJSON, CSV, PNG, NIfTI, summary.json)."""
    if engine not in ("onnx", "torch"):
        raise typer.BadParameter(f"choose onnx or torch, not {engine!r}", param_hint="--engine")
    if tissue not in ("auto", "saturation", "brightfield", "fluorescence", "none"):
        raise typer.BadParameter(f"unknown tissue method {tissue!r}", param_hint="--tissue")
    extra = _parse_options(option)
    stems: dict[str, Path] = {}
    for p in inputs:
        s = input_stem(p)
        if s in stems and Path(stems[s]).resolve() != Path(p).resolve():
            raise typer.BadParameter(f"{stems[s]} and {p} would both write to {out / s}; rename one",
                                     param_hint="INPUT")
        stems[s] = p

    from tessera.pipelines.plugin_system import get_plugin
    from tessera.pipelines.runners.base import RunOptions
    from tessera.pipelines.runners.registry import runner_for
    from tessera.pipelines.tiling.tissue import TissueOptions

    plug = get_plugin(plugin)
    runner = runner_for(plug.manifest.task)
    options = RunOptions(
        engine=engine,  # type: ignore[arg-type]
        device=device, batch_size=batch_size, scheduler=scheduler, workers=workers,
        tiles_per_task=tiles_per_task, engine_threads=engine_threads, resume=resume,
        tissue=TissueOptions(method=tissue, threshold=tissue_threshold, min_tile_fraction=min_tissue),  # type: ignore[arg-type]
        truth=truth, extra=extra,
    )
    out.mkdir(parents=True, exist_ok=True)
    failed = _run_all(runner, plug, list(stems.items()), out, options, quiet=quiet)
    if failed:
        raise typer.Exit(1)


def _run_all(runner: Any, plugin: Any, items: list[tuple[str, Path]], out: Path, options: Any, *, quiet: bool) -> int:
    from tessera.app.cli.progress import RichReporter, progress_bar
    from tessera.pipelines.errors import TesseraError
    from tessera.pipelines.progress import Cancelled, NullProgress

    cancel = threading.Event()
    counts = {"finished": 0, "skipped": 0, "failed": 0}
    progress = progress_bar(quiet=quiet, rate=True)
    with progress:
        overall = progress.add_task(f"{plugin.id}: inputs", total=len(items), rate="")
        for stem, path in items:
            task = progress.add_task(f"{stem}", total=None, rate="")
            reporter = NullProgress() if quiet else RichReporter(progress, task, show_rate=True)
            t0 = time.perf_counter()
            record: dict[str, Any] = {"input": str(path), "out_dir": str(out / stem), "plugin": plugin.id}
            try:
                summary = runner(path, plugin, out / stem, options=options, progress=reporter, cancel=cancel)
            except Exception as exc:  # one input's failure must not stop the others
                if isinstance(exc, Cancelled):
                    raise KeyboardInterrupt from exc
                counts["failed"] += 1
                line = str(exc) if isinstance(exc, TesseraError) else f"{path}: {type(exc).__name__}: {exc}"
                if str(path) not in line:
                    line = f"{path}: {line}"
                err_console.print(f"[bold red]failed:[/] {line}", highlight=False, soft_wrap=True)
                _debug_traceback()
                record |= {"status": "failed", "error": line}
            else:
                skipped = bool(summary.get("skipped"))
                counts["skipped" if skipped else "finished"] += 1
                record |= {
                    "status": "skipped" if skipped else "finished",
                    "tiles": summary.get("tiles"),
                    "timings": summary.get("timings"),
                    "engine": summary.get("engine"),
                }
                if not quiet:
                    where = out / stem
                    err_console.print(f"{'already finished' if skipped else 'done'}: {path} -> {where}",
                                      highlight=False, soft_wrap=True)
            record["seconds"] = round(time.perf_counter() - t0, 3)
            with open(out / "run.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, default=str) + "\n")
            progress.remove_task(task)
            progress.advance(overall)
    if not quiet:
        console.print(f"{len(items)} input(s): {counts['finished']} finished, {counts['skipped']} already "
                      f"finished, {counts['failed']} failed; outputs in {out}", highlight=False)
    return counts["failed"]


def _debug_traceback() -> None:
    from tessera.app.cli.main import is_debug

    if is_debug():
        err_console.print_exception()


def register(app: typer.Typer) -> None:
    app.command("run")(run)
