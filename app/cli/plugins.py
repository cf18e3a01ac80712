"""``tessera plugins list|info|import|validate|remove``: what models are installed, and checks.

``list`` and ``info`` read manifests only (no torch import); ``info`` asks ONNX Runtime
which providers it has. ``validate`` runs the plugin contract (files, hooks, model card,
a random batch through ONNX Runtime and torch with parity) and exits 1 on any error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from tessera.app.cli.console import console, err_console

plugins_app = typer.Typer(
    help="Model plugins: list, inspect, import a folder or .zip, validate.",
    no_args_is_help=True,
)


def _plugin_row(plugin: Any) -> dict[str, Any]:
    m = plugin.manifest
    return {
        "id": m.id,
        "name": m.name,
        "version": m.version,
        "task": m.task,
        "summary": m.summary,
        "source": plugin.origin.kind,
        "source_detail": plugin.origin.detail,
        "root": str(plugin.root),
        "engines": sorted({"onnx" if f.format == "onnx" else "torch" for f in m.files}),
    }


@plugins_app.command("list")
def list_command(
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Installed plugins: built-in, third-party (entry points) and imported ones."""
    from tessera.pipelines.plugin_system import scan_plugins, user_plugin_dir

    scan = scan_plugins()
    rows = [_plugin_row(p) for p in scan.plugins.values()]
    shadowed = [
        {"id": hidden.id, "hidden": str(hidden.root), "by": str(winner.root)}
        for hidden, winner in scan.shadowed
    ]
    errors = [{"source": e.source, "error": e.message} for e in scan.errors]
    if as_json:
        typer.echo(json.dumps({"plugins": rows, "shadowed": shadowed, "errors": errors,
                               "user_plugin_dir": str(user_plugin_dir())}, indent=2))
        return
    from rich.table import Table

    if rows:
        table = Table("id", "version", "task", "source", "engines", "summary", box=None,
                      pad_edge=False)
        for r in rows:
            table.add_row(r["id"], escape(r["version"]), r["task"], r["source"],
                          ",".join(r["engines"]), escape(r["summary"]))
        console.print(table)
    else:
        console.print("no plugins installed")
    for s in shadowed:
        console.print(f"[yellow]note:[/] {escape(s['id'])} at {escape(s['hidden'])} is shadowed "
                      f"by {escape(s['by'])}", highlight=False, soft_wrap=True)
    for e in errors:
        err_console.print(f"[bold red]not loaded:[/] {escape(e['source'])}: {escape(e['error'])}",
                          highlight=False, soft_wrap=True)
    console.print(f"imported plugins live in {user_plugin_dir()}", style="dim", highlight=False, soft_wrap=True, markup=False)


def _human_size(n_bytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.2f} {unit}"
    return f"{n_bytes} B"


def _file_rows(plugin: Any) -> list[dict[str, Any]]:
    from tessera.pipelines.errors import TesseraError
    from tessera.pipelines.plugin_system.integrity import (
        resolve_inside,
        sha256_file,
    )

    rows = []
    for entry in plugin.manifest.files:
        row: dict[str, Any] = {"path": entry.path, "role": entry.role, "format": entry.format,
                               "size_variant": entry.size_variant, "size_bytes": None}
        try:
            path = resolve_inside(plugin.root, entry.path)
            if not path.is_file():
                row["sha256"] = "missing"
            else:
                row["size_bytes"] = path.stat().st_size
                row["sha256"] = "ok" if sha256_file(path) == entry.sha256 else "MISMATCH"
        except TesseraError as exc:
            row["sha256"] = f"refused ({exc.message})"
        rows.append(row)
    return rows


@plugins_app.command("info")
def info_command(
    plugin_id: str = typer.Argument(..., metavar="ID", help="Plugin id or plugin folder."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """A plugin's manifest, files (sizes, sha256 status), engines available, model card."""
    from tessera.pipelines.engines import engines_available
    from tessera.pipelines.plugin_system import get_plugin

    plugin = get_plugin(plugin_id)
    m = plugin.manifest
    files = _file_rows(plugin)
    engines = engines_available()
    card = plugin.model_card_summary()
    if as_json:
        typer.echo(json.dumps({
            **_plugin_row(plugin), "manifest": m.model_dump(mode="json"), "files": files,
            "engines_available": engines, "model_card_summary": card,
        }, indent=2))
        return
    from rich.table import Table

    console.print(f"[bold]{escape(m.name)}[/] ({m.id} {escape(m.version)}) — {m.task}",
                  highlight=False, soft_wrap=True)
    console.print(f"  {m.summary}", highlight=False, soft_wrap=True, markup=False)
    console.print(f"  source     {plugin.origin.kind}: {plugin.origin.detail}", highlight=False, soft_wrap=True, markup=False)
    console.print(f"  folder     {plugin.root}", highlight=False, soft_wrap=True, markup=False)
    console.print(f"  licence    {m.licence}", highlight=False, soft_wrap=True, markup=False)
    console.print(f"  intended   {m.intended_use}", highlight=False, soft_wrap=True, markup=False)
    spec = m.input
    where = (f"{spec.mpp:g} µm/px" if spec.mpp else
             f"{spec.target_spacing_mm} mm" if spec.target_spacing_mm else "any scale")
    console.print(f"  input      {'x'.join(map(str, spec.size_px))} px, "
                  f"channels {','.join(spec.channels)}, at {where}", highlight=False, soft_wrap=True, markup=False)
    classes = ", ".join(c.name for c in m.output.classes) or "-"
    console.print(f"  output     {m.output.kind}: {classes}", highlight=False, soft_wrap=True, markup=False)
    table = Table("file", "role", "format", "size", "sha256", box=None, pad_edge=False)
    for f in files:
        size = "-" if f["size_bytes"] is None else _human_size(f["size_bytes"])
        style = "green" if f["sha256"] == "ok" else "red"
        table.add_row(escape(f["path"]), escape(f["role"]), f["format"], size,
                      f"[{style}]{escape(f['sha256'])}[/]")
    if files:
        console.print(table)
    ort = engines["onnxruntime"]
    console.print("  onnxruntime " + (f"{ort['version']} providers {ort['providers']}" if ort
                                      else "not installed"), highlight=False, soft_wrap=True, markup=False)
    t = engines["torch"]
    console.print("  torch       " + (f"{t['version']} installed" if t else
                                      "not installed (pip install 'tessera[train]')"),
                  highlight=False, soft_wrap=True, markup=False)
    if card:
        console.print(f"  model card  {card}", highlight=False, soft_wrap=True, markup=False)
    else:
        console.print(f"  model card  [red]missing[/] ({escape(m.model_card)})", highlight=False,
                      soft_wrap=True)


@plugins_app.command("import")
def import_command(
    path: Path = typer.Argument(..., help="Plugin folder or .zip archive."),
    force: bool = typer.Option(False, "--force", help="Replace an imported plugin of the same id."),
) -> None:
    """Copy a plugin folder or .zip into the user plugin folder (checked, all or nothing)."""
    from tessera.pipelines.plugin_system import import_plugin, scan_plugins

    result = import_plugin(path, force=force)
    plugin = result.plugin
    verb = "replaced" if result.replaced else "imported"
    console.print(f"{verb} {plugin.id} {plugin.manifest.version} into {plugin.root}",
                  highlight=False, soft_wrap=True, markup=False)
    for hidden, winner in scan_plugins().shadowed:
        if winner.root == plugin.root:
            console.print(f"note: it shadows the {hidden.origin.kind} plugin at {hidden.root}",
                          highlight=False, soft_wrap=True, markup=False)


@plugins_app.command("remove")
def remove_command(plugin_id: str = typer.Argument(..., metavar="ID")) -> None:
    """Delete an imported plugin (installed packages are removed with pip)."""
    from tessera.pipelines.plugin_system import remove_plugin

    console.print(f"removed {remove_plugin(plugin_id)}", highlight=False, soft_wrap=True, markup=False)


@plugins_app.command("validate")
def validate_command(
    target: str = typer.Argument(..., metavar="PATH_OR_ID", help="Plugin id or folder."),
    quick: bool = typer.Option(False, "--quick", help="Skip running the models."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Check the plugin contract: files and sha256, hooks, model card, ONNX/torch parity."""
    from tessera.pipelines.errors import PluginError
    from tessera.pipelines.plugin_system import Problem, get_plugin, validate_plugin

    try:
        plugin = get_plugin(target)
        problems = validate_plugin(plugin, deep=not quick)
    except PluginError as exc:
        plugin, problems = None, [Problem("error", exc.path or target, exc.message)]
    n_errors = sum(p.is_error for p in problems)
    if as_json:
        typer.echo(json.dumps({
            "plugin": plugin.id if plugin else None,
            "ok": n_errors == 0,
            "problems": [p.__dict__ for p in problems],
        }, indent=2))
    else:
        colours = {"error": "bold red", "warning": "yellow", "note": "dim"}
        for p in problems:
            out = err_console if p.is_error else console
            out.print(f"[{colours[p.severity]}]{p.severity}:[/] {escape(p.where)}: "
                      f"{escape(p.message)}", highlight=False, soft_wrap=True)
        name = plugin.id if plugin else target
        if n_errors:
            err_console.print(f"{name}: {n_errors} error(s)", highlight=False, soft_wrap=True, markup=False)
        else:
            console.print(f"{name}: keeps the plugin contract", highlight=False, soft_wrap=True, markup=False)
    if n_errors:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(plugins_app, name="plugins")
