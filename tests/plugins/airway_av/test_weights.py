"""The shipped airway-av demo weights on a held-out synthetic chest CT (ONNX Runtime, no torch).

The volume (seed 903) has the training volumes' size and spacing but a seed the recipe
never used (training 100-107, its held-out scores 900-902). The whole-flow test holds the
weights to the issue's goals; the single-cube checks sit below them with margin.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tessera.pipelines.metrics.overlap import dice
from tessera.pipelines.synthetic.ct import synth_ct

HELDOUT_SEED = 903


@pytest.fixture(scope="module")
def plugin():
    from tessera.pipelines.plugin_system import get_plugin

    return get_plugin("airway-av")


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    folder = tmp_path_factory.mktemp("av_heldout")
    truth = synth_ct(folder / "chest.nii.gz", shape_zyx=(96, 192, 192), spacing_mm=(1.0, 0.7, 0.7),
                     seed=HELDOUT_SEED)
    hu = np.asarray(nib.load(truth.image_path).dataobj).transpose(2, 1, 0).astype(np.int16)
    labels = np.asarray(nib.load(truth.labels_path).dataobj).transpose(2, 1, 0).astype(np.uint8)
    return truth, hu, labels


def _richest_cube(mask: np.ndarray, cube: tuple[int, ...]) -> tuple[slice, ...]:
    """The cube (on a half-cube grid) holding the most ``mask`` voxels."""
    starts = [range(0, n - c + 1, c // 2) for n, c in zip(mask.shape, cube, strict=True)]
    best = max(itertools.product(*starts),
               key=lambda s: int(mask[tuple(slice(a, a + c) for a, c in zip(s, cube, strict=True))]
                                 .sum()))
    return tuple(slice(a, a + c) for a, c in zip(best, cube, strict=True))


def _engine(plugin, role: str):
    from tessera.pipelines.engines import create_engine

    engine = create_engine(plugin, engine="onnx", role=role, threads=1)
    spec = plugin.manifest.role_spec(role)
    return lambda x: engine.run({spec.inputs[0]: x[None].astype(np.float32)})[spec.outputs[0]][0]


def test_shipped_files_keep_the_contract(plugin) -> None:
    """Both roles ship ONNX + safetensors with matching sha256, a model card, parity."""
    from tessera.pipelines.plugin_system import validate_plugin

    problems = [p for p in validate_plugin(plugin) if p.is_error]
    assert not problems, problems
    shipped = {(f.role, f.format) for f in plugin.manifest.files}
    assert shipped == {(r, f) for r in ("airway", "artery-vein") for f in ("onnx", "safetensors")}
    card = plugin.model_card_path.read_text(encoding="utf-8")
    assert "not" in card and "clinical" in card
    record = json.loads((plugin.model_card_path.parent / "weights" / "training.json")
                        .read_text(encoding="utf-8"))
    assert record["heldout"]["mean"]["artery_dsc"] > 0.5  # the collapse this recipe fixed


def test_airway_and_vessel_cubes_of_a_heldout_ct(plugin, heldout) -> None:
    """One window per network where the held-out CT has most airway / vessel voxels."""
    from tessera.plugins.airway_av.processing import (
        airway_distance,
        airway_input,
        artery_vein_input,
        lung_mask,
    )

    truth, hu, labels = heldout
    cube = tuple(plugin.manifest.input.size_px)
    sl = _richest_cube(labels == 1, cube)
    x = np.asarray(airway_input(hu)[(slice(None), *sl)])
    p_airway = _engine(plugin, "airway")(x)[0]
    assert dice(p_airway > 0.5, labels[sl] == 1) > 0.8

    # the artery-vein net with the distance prior of the true airway (as in training)
    lungs = lung_mask(hu, truth.spacing_mm)
    distance = airway_distance(labels == 1, truth.spacing_mm)
    sl = _richest_cube(labels >= 2, cube)
    x = np.asarray(artery_vein_input(hu, lungs, distance)[(slice(None), *sl)])
    pred = _engine(plugin, "artery-vein")(x).argmax(axis=0)
    ref = labels[sl]
    assert (ref == 2).sum() > 500 and (ref == 3).sum() > 500
    assert dice(pred == 1, ref == 2) > 0.6
    assert dice(pred == 2, ref == 3) > 0.6
    assert dice(pred > 0, ref >= 2) > 0.75  # vessels vs background


@pytest.mark.slow
def test_tessera_run_scores_a_heldout_ct(heldout, tmp_path: Path) -> None:
    """`tessera run airway-av CT --truth LABELS`: the whole two-stage flow."""
    from tessera.app.cli.main import main

    truth, _, _ = heldout
    code = main(["run", "airway-av", str(truth.image_path), "--out", str(tmp_path), "--quiet",
                 "--truth", str(truth.labels_path)])
    assert code == 0
    summary = json.loads((tmp_path / "chest" / "summary.json").read_text())
    scores = summary["truth"]["classes"]
    # the goals; the shipped weights measure airway DSC 0.952, TD 0.996, artery
    # DSC 0.910, vein DSC 0.840 on this volume (seed 903, never used in training)
    assert scores["airway"]["dsc"] >= 0.85
    assert scores["airway"]["tree_length_detected"] >= 0.8
    assert scores["artery"]["dsc"] >= 0.75
    assert scores["vein"]["dsc"] >= 0.75


@pytest.mark.slow
def test_real_files_from_pydicom_and_nibabel(tmp_path: Path) -> None:
    """A real CT slice (pydicom's CT_small.dcm) runs and keeps its grid; an MR brain
    (nibabel's anatomical.nii) runs with a warning that its values are not HU."""
    import os

    import nibabel
    from pydicom.data import get_testdata_file

    from tessera.app.cli.main import main

    ct_slice = Path(get_testdata_file("CT_small.dcm"))
    assert main(["run", "airway-av", str(ct_slice), "--out", str(tmp_path), "--quiet"]) == 0
    lab = nib.load(tmp_path / "CT_small" / "labels.nii.gz")
    assert lab.shape == (128, 128, 1)
    assert set(np.unique(np.asarray(lab.dataobj)).tolist()) <= {0, 1, 2, 3}

    mr = Path(os.path.dirname(nibabel.__file__)) / "tests" / "data" / "anatomical.nii"
    with pytest.warns(UserWarning, match="Hounsfield"):
        assert main(["run", "airway-av", str(mr), "--out", str(tmp_path), "--quiet"]) == 0
    assert nib.load(tmp_path / "anatomical" / "labels.nii.gz").shape == (33, 41, 25)
