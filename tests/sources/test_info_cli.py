"""``tessera info`` shows what each reader found: format, levels, spacing with units."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib

from tessera.app.cli.main import main


def test_info_json_for_a_slide(svs_ycbcr: Path, capsys) -> None:
    assert main(["info", str(svs_ycbcr), "--json"]) == 0
    desc = json.loads(capsys.readouterr().out)
    assert desc["format"] == "Aperio SVS" and desc["reader"] == "tiff-tiles"
    assert desc["vendor"] == "aperio" and desc["objective_power"] == 40
    assert desc["spacing"] == [0.25, 0.25] and desc["spacing_unit"] == "µm" and desc["mpp"] == 0.25
    assert [lv["shape"] for lv in desc["levels"]] == [[1536, 2048, 3], [384, 512, 3], [96, 128, 3]]
    assert desc["levels"][1]["downsample"] == [4.0, 4.0]
    assert desc["metadata"]["properties"]["aperio.AppMag"] == "40"


def test_info_text_for_a_volume(capsys) -> None:
    path = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "NIfTI-1" in out and "2 x 2 x 2 mm (ZYX)" in out and "SAL" in out
    assert "25 x 41 x 33" in out
