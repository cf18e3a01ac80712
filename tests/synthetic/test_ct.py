"""The synthetic chest CT: files, determinism, HU values, anatomy of the three trees."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from tessera.pipelines.synthetic.ct import LABEL_VALUES, load_truth, synth_ct

SHAPE = (64, 128, 128)
SPACING = (1.2, 0.8, 0.8)


@pytest.fixture(scope="session")
def small_ct(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("synth_ct") / "chest.nii.gz"
    return synth_ct(out, shape_zyx=SHAPE, spacing_mm=SPACING, seed=7)


@pytest.fixture(scope="session")
def default_ct(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("synth_ct_default") / "chest.nii.gz"
    return synth_ct(out, seed=0)


def _zyx(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj).transpose(2, 1, 0)


def test_files_dtype_affine_and_spacing(small_ct) -> None:
    img = nib.load(small_ct.image_path)
    lab = nib.load(small_ct.labels_path)
    assert img.get_data_dtype() == np.int16
    assert lab.get_data_dtype() == np.uint8
    assert img.shape == SHAPE[::-1] == lab.shape  # NIfTI i, j, k = x, y, z
    np.testing.assert_allclose(img.header.get_zooms(), SPACING[::-1])
    np.testing.assert_allclose(img.affine, lab.affine)
    np.testing.assert_allclose(img.affine, small_ct.affine)
    # DICOM-like LPS storage: x and y flipped into RAS, z up
    assert img.affine[0, 0] < 0 and img.affine[1, 1] < 0 and img.affine[2, 2] > 0
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
    assert small_ct.graph_path.exists()


def test_same_seed_same_volume_other_seed_differs(small_ct, tmp_path: Path) -> None:
    again = synth_ct(tmp_path / "again.nii.gz", shape_zyx=SHAPE, spacing_mm=SPACING, seed=7)
    np.testing.assert_array_equal(_zyx(again.image_path), _zyx(small_ct.image_path))
    np.testing.assert_array_equal(_zyx(again.labels_path), _zyx(small_ct.labels_path))
    assert again.branches == small_ct.branches
    other = synth_ct(tmp_path / "other.nii.gz", shape_zyx=SHAPE, spacing_mm=SPACING, seed=8)
    assert not np.array_equal(_zyx(other.labels_path), _zyx(small_ct.labels_path))


def test_hu_values_per_tissue(default_ct) -> None:
    hu = _zyx(default_ct.image_path).astype(np.float32)
    lab = _zyx(default_ct.labels_path)
    assert hu.min() >= -1024 and hu.max() > 500  # bone is there
    # deep inside the thick airways (eroded lumen) it is air
    core = ndi.binary_erosion(lab == 1, iterations=2)
    assert core.sum() > 200
    assert np.median(hu[core]) < -900
    art = ndi.binary_erosion(lab == 2)
    vein = ndi.binary_erosion(lab == 3)
    med_a, med_v = np.median(hu[art]), np.median(hu[vein])
    assert 150 < med_a < 320 and 0 < med_v < med_a - 30
    # lung parenchyma: lung-range voxels away from every labelled structure
    far = ndi.distance_transform_edt(lab == 0) > 4
    lung = far & (hu < -600) & (hu > -950)
    assert lung.sum() > 100_000
    assert -880 < np.median(hu[lung]) < -820
    assert 15 < np.std(hu[lung]) < 80  # texture + noise, not flat
    # soft tissue of the body wall
    body = far & (hu > -50) & (hu < 120)
    assert 20 < np.median(hu[body]) < 70


def test_airway_tree_is_one_connected_tree_into_both_lungs(default_ct) -> None:
    lab = _zyx(default_ct.labels_path)
    airway = lab == 1
    comps, _n = ndi.label(airway, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(comps.ravel())[1:]
    assert sizes.max() / sizes.sum() > 0.97
    xs = np.nonzero(airway)[2]
    mid = lab.shape[2] / 2
    assert (xs < mid - 20).sum() > 500 and (xs > mid + 20).sum() > 500
    assert default_ct.generations("airway") >= 5
    assert len(default_ct.tree("airway")) >= 40
    # radii shrink from the trachea to the periphery, down to about a millimetre
    radii = {b.generation: b.radius_mm[0] for b in default_ct.tree("airway")}
    assert radii[0] > 3.0 and min(b.radius_mm[1] for b in default_ct.tree("airway")) < 1.2


def test_graph_topology(default_ct) -> None:
    by_id = {b.id: b for b in default_ct.branches}
    for tree in ("airway", "artery", "vein"):
        branches = default_ct.tree(tree)
        assert branches
        for b in branches:
            if b.parent is None:
                continue
            parent = by_id[b.parent]
            assert parent.tree == tree and parent.generation == b.generation - 1
            np.testing.assert_allclose(b.start_zyx_mm, parent.end_zyx_mm, atol=1e-3)
    reread = load_truth(default_ct.graph_path)
    assert reread.branches == default_ct.branches
    assert reread.shape_zyx == default_ct.shape_zyx


def _distance_to_airway_axis(point: np.ndarray, airway: list) -> np.ndarray:
    a = np.array([b.start_zyx_mm for b in airway])
    ab = np.array([b.end_zyx_mm for b in airway]) - a
    t = np.clip(np.einsum("ij,ij->i", point - a, ab) / np.einsum("ij,ij->i", ab, ab), 0, 1)
    return np.linalg.norm(point - (a + t[:, None] * ab), axis=1)


def test_arteries_run_beside_bronchi_and_veins_do_not(default_ct) -> None:
    airway = default_ct.tree("airway")
    art_gap, vein_gap = [], []
    for b in default_ct.tree("artery"):
        if b.generation < 2:
            continue  # trunk and main pulmonary arteries come from the heart
        mid = (np.array(b.start_zyx_mm) + np.array(b.end_zyx_mm)) / 2
        d = _distance_to_airway_axis(mid, airway)
        art_gap.append(d.min() - b.radius_mm[0])
    for b in default_ct.tree("vein"):
        if b.generation < 2:
            continue
        mid = (np.array(b.start_zyx_mm) + np.array(b.end_zyx_mm)) / 2
        vein_gap.append(_distance_to_airway_axis(mid, airway).min() - b.radius_mm[0])
    # an artery's surface sits within a few mm of a bronchus axis (lumen + wall + gap)
    assert np.median(art_gap) < 5.0
    assert np.median(vein_gap) > 2.0 * np.median(art_gap)
    # artery radius similar to the bronchus it accompanies (the nearest airway branch)
    ratios = []
    for b in default_ct.tree("artery"):
        if b.generation < 2:
            continue
        mid = (np.array(b.start_zyx_mm) + np.array(b.end_zyx_mm)) / 2
        nearest = airway[int(np.argmin(_distance_to_airway_axis(mid, airway)))]
        ratios.append(b.radius_mm[0] / nearest.radius_mm[0])
    assert 0.8 < np.median(ratios) < 1.3


def test_label_volumes_reported(default_ct) -> None:
    lab = _zyx(default_ct.labels_path)
    voxel_ml = np.prod(default_ct.spacing_mm) / 1000
    for name, value in LABEL_VALUES.items():
        assert default_ct.volumes_ml[name] == pytest.approx((lab == value).sum() * voxel_ml,
                                                            abs=1e-3)
        assert default_ct.volumes_ml[name] > 1.0


def test_cli_synth_ct(tmp_path: Path) -> None:
    from tessera.app.cli.main import main

    out = tmp_path / "cli_ct.nii.gz"
    code = main(["synth", "ct", "--out", str(out), "--shape", "32,64,64", "--spacing",
                 "1.5,1.2,1.2", "--seed", "2"])
    assert code == 0
    assert out.exists() and (tmp_path / "cli_ct_labels.nii.gz").exists()
    assert nib.load(out).shape == (64, 64, 32)
    assert main(["synth", "ct", "--out", str(out), "--shape", "8,8,8"]) == 2
