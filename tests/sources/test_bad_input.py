"""Damaged and foreign files: a clear error naming the file, exit 1 and one line from the CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file

import tessera
from tessera.app.cli.main import main
from tessera.pipelines.errors import CorruptFile, TesseraError, UnsupportedFile


def _truncated_slide(folder: Path, svs: Path) -> Path:
    path = folder / "cut.svs"
    data = svs.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    return path


@pytest.fixture()
def bad_files(tmp_path: Path, svs_ycbcr: Path) -> dict[str, tuple[Path, type[TesseraError], str]]:
    """name -> (file, expected error, a word the message must contain)."""
    empty = tmp_path / "empty.svs"
    empty.write_bytes(b"")
    noise = tmp_path / "noise.svs"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    dicom = tmp_path / "cut.dcm"
    dicom.write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes()[:30000])
    text = tmp_path / "notes.nii"
    text.write_text("these are my notes, not a brain\n" * 20)
    unknown = tmp_path / "data.xyz"
    unknown.write_text("hello")
    return {
        "empty": (empty, CorruptFile, "empty"),
        "random bytes .svs": (noise, CorruptFile, "not a slide"),
        "truncated slide": (_truncated_slide(tmp_path, svs_ycbcr), CorruptFile, "truncated"),
        "truncated DICOM": (dicom, CorruptFile, "truncated"),
        "text named .nii": (text, CorruptFile, "NIfTI"),
        "unknown format": (unknown, UnsupportedFile, "no reader"),
    }


def test_each_bad_file_raises_a_clear_error(bad_files) -> None:
    for name, (path, error, word) in bad_files.items():
        with pytest.raises(error) as err:
            tessera.open(path)
        assert err.value.path == str(path), name
        assert word in str(err.value), (name, str(err.value))


def test_cli_info_prints_one_line_and_exits_1(bad_files, capsys) -> None:
    for name, (path, _, _) in bad_files.items():
        assert main(["info", str(path)]) == 1, name
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert "Traceback" not in err and captured.out == "", name
        assert len(err.replace(str(path), "P").splitlines()) <= 2, err  # rich may wrap once
        assert str(path) in err.replace("\n", ""), name


def test_cli_debug_shows_the_traceback(bad_files) -> None:
    path = bad_files["random bytes .svs"][0]
    with pytest.raises(CorruptFile):
        main(["--debug", "info", str(path)])
    from tessera.app.cli import main as main_module

    main_module._state["debug"] = False


def test_unicode_names_in_errors(unicode_dir: Path, capsys) -> None:
    path = unicode_dir / "Gewebe ö 组织.svs"
    path.write_bytes(b"\x00" * 300)
    assert main(["info", str(path)]) == 1
    assert str(path) in capsys.readouterr().err.replace("\n", "")


def test_truncated_pyramid_level_is_named(tmp_path: Path, svs_ycbcr: Path) -> None:
    """Cut inside the last level's tiles: the directories are intact, the data is not."""
    import tifffile

    with tifffile.TiffFile(svs_ycbcr) as tif:
        last = tif.pages[len(tif.pages) - 1]
        end = int(last.dataoffsets[-1]) + int(last.databytecounts[-1]) // 2
    path = tmp_path / "short.svs"
    shutil.copyfile(svs_ycbcr, path)
    with open(path, "r+b") as fh:
        fh.truncate(end)
    with pytest.raises(CorruptFile, match="truncated"):
        tessera.open(path)
