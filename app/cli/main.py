"""The ``tessera`` command: one typer app, one module per command group.

Exit codes (DESIGN.md): 0 ok, 1 some inputs failed (others finished), 2 usage error.
A deliberate error (``TesseraError``) prints one line naming the file and what to do;
``--debug`` (or TESSERA_DEBUG=1) shows the traceback instead. Heavy imports live inside
commands, so ``tessera --help`` stays fast and never imports Qt or torch.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer
from rich.markup import escape

from tessera.app.cli.console import err_console
from tessera.pipelines.errors import TesseraError

app = typer.Typer(
    name="tessera",
    help="Digital pathology and scientific imaging: open slides and volumes, run models, "
    "view overlays.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Each module exposes ``register(app)``. Add a line here when a command group lands.
COMMAND_MODULES: list[str] = [
    "tessera.app.cli.info",
    "tessera.app.cli.groups",
    "tessera.app.cli.plugins",
    "tessera.app.cli.train",
    "tessera.app.cli.run",
    "tessera.app.cli.sam",
    "tessera.app.cli.screen",
    "tessera.app.cli.view",
    "tessera.app.cli.demo",
]

_state = {"debug": os.environ.get("TESSERA_DEBUG", "") not in ("", "0")}


def _version_callback(value: bool) -> None:
    if value:
        from tessera import __version__

        typer.echo(f"tessera {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    """Tessera command line."""
    if debug:
        _state["debug"] = True


def is_debug() -> bool:
    return bool(_state["debug"])


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args:
        _state["debug"] = True
    try:
        app(args=args, prog_name="tessera", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except TesseraError as exc:
        if is_debug():
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err_console.print("interrupted; finished outputs are kept, rerun to resume")
        return 130
    return 0


def run() -> None:  # pragma: no cover - console script
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    run()
