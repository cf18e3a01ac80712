"""BreakHis-like patches: sizes, magnifications, subtypes per patient, layout, splits."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from tessera.pipelines.synthetic.breakhis import (
    BENIGN_SUBTYPES,
    MALIGNANT_SUBTYPES,
    PATCH_SIZE_YX,
    breakhis_like,
    magnification_mpp,
    make_patients,
    render_patch,
    render_view,
    split_by_patient,
    write_breakhis_like,
)
from tessera.pipelines.synthetic.histology import BREAKHIS_SUBTYPES, scene_for


def test_patients_balanced_over_subtypes_and_deterministic() -> None:
    a = make_patients(16, seed=1)
    assert [p.subtype for p in a] == [p.subtype for p in make_patients(16, seed=1)]
    counts = {s: sum(p.subtype == s for p in a) for s in BREAKHIS_SUBTYPES}
    assert set(counts.values()) == {2}
    assert len({p.id for p in a}) == 16 and len({p.seed for p in a}) == 16
    assert all(p.id.startswith("SOB_M_" if p.malignant else "SOB_B_") for p in a)


def test_split_is_by_patient_and_stratified() -> None:
    patients = make_patients(24, seed=2)
    train, held = split_by_patient(patients, 0.25, seed=0)
    assert {p.id for p in train}.isdisjoint({p.id for p in held})
    assert len(train) + len(held) == 24
    assert {p.subtype for p in held} == set(BREAKHIS_SUBTYPES)  # 3 patients each: 1 held out


def test_zoom_series_same_field_all_magnifications() -> None:
    items = list(breakhis_like(1, seed=4, fields_per_patient=1, size_yx=(92, 140)))
    assert [r.magnification for r, _ in items] == [40, 100, 200, 400]
    assert all(img.shape == (92, 140, 3) and img.dtype == np.uint8 for _, img in items)
    assert len({r.centre_yx_um for r, _ in items}) == 1
    # the 200x image is the central half of the 100x one at twice the pixel size
    _, i100 = items[1]
    _, i200 = items[2]
    assert magnification_mpp(100) == 2 * magnification_mpp(200)
    centre = i100[23:69, 35:105].astype(np.float32)
    half = i200.reshape(46, 2, 70, 2, 3).mean(axis=(1, 3))
    assert np.abs(centre - half).mean() < 12  # same tissue, different sampling


def test_render_patch_api() -> None:
    img = render_patch(np.random.default_rng(0), True, 1.0, PATCH_SIZE_YX)
    assert img.shape == (460, 700, 3) and img.dtype == np.uint8
    again = render_patch(np.random.default_rng(0), True, 1.0, PATCH_SIZE_YX)
    np.testing.assert_array_equal(img, again)
    with pytest.raises(ValueError, match="not a malignant subtype"):
        render_patch(np.random.default_rng(0), True, 1.0, (64, 64), subtype="adenosis")
    assert len(BENIGN_SUBTYPES) == len(MALIGNANT_SUBTYPES) == 4


def test_supersampled_view_matches_direct_view() -> None:
    scene = scene_for("adenosis", 8)
    direct = render_view(scene, (3000.0, 3000.0), 1.0, (96, 96)).astype(np.float32)
    fine = render_view(scene, (3000.0, 3000.0), 1.0, (96, 96), supersample=4).astype(np.float32)
    assert np.abs(direct - fine).mean() < 15
    jpeg = render_view(scene, (3000.0, 3000.0), 1.0, (96, 96), jpeg_quality=80)
    assert 0 < np.abs(jpeg.astype(np.float32) - direct).mean() < 10


def test_write_breakhis_layout(tmp_path: Path) -> None:
    recs = write_breakhis_like(tmp_path, n_patients=2, seed=5, fields_per_patient=1,
                               magnifications=(40,))
    assert len(recs) == 2
    for r in recs:
        p = tmp_path / r.relative_path
        assert p.is_file()
        parts = p.relative_to(tmp_path).parts
        assert parts[:4] == ("BreaKHis_v1", "histology_slides", "breast",
                             "malignant" if r.malignant else "benign")
        assert parts[5] == r.subtype and parts[7] == "40X"
        assert p.name.startswith(r.patient.id) and p.name.endswith("-40-001.png")
    with open(tmp_path / "index.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["path"] for r in rows] == [r.relative_path for r in recs]
    assert rows[0]["mpp"] == "2.5"
