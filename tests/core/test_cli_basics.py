"""The CLI's contract: version, exit codes, one-line errors naming the file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tessera
from tessera.app.cli.main import main


def test_version_matches_package(capsys) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"tessera {tessera.__version__}"


def test_missing_file_is_one_line_error_exit_1(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope.svs"
    assert main(["info", str(missing)]) == 1
    err = capsys.readouterr().err.strip()
    assert str(missing) in err.replace("\n", "")
    assert "Traceback" not in err


def test_empty_file_is_corrupt(tmp_path: Path) -> None:
    empty = tmp_path / "empty.svs"
    empty.write_bytes(b"")
    try:
        tessera.open(empty)
    except tessera.CorruptFile as exc:
        assert exc.path == str(empty)
        assert isinstance(exc, OSError)
    else:  # pragma: no cover
        raise AssertionError("an empty file must raise CorruptFile")


def test_unknown_option_is_usage_error_exit_2() -> None:
    assert main(["info", "--no-such-option", "x"]) == 2


def test_console_script_runs_without_display() -> None:
    env = {"PATH": "/usr/bin:/bin", "DISPLAY": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "tessera", "--version"], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("tessera ")


def test_cli_import_pulls_no_qt_or_torch() -> None:
    code = (
        "import sys, tessera.app.cli.main as m; "
        "bad=[x for x in ('PySide6','napari','torch','qtpy') if x in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_error_message_keeps_square_brackets(capsys) -> None:
    """Messages like "pip install 'tessera[train]'" must not lose their brackets to markup."""
    from tessera.app.cli import main as cli_main
    from tessera.pipelines.errors import MissingDependency

    @cli_main.app.command("_raise_missing", hidden=True)
    def _raise_missing() -> None:
        raise MissingDependency("torch", "train", "training")

    assert cli_main.main(["_raise_missing"]) == 1
    assert "tessera[train]" in capsys.readouterr().err
