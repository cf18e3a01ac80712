"""`tessera run airway-av` end to end: NIfTI and DICOM inputs, outputs, truth scores, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tessera.app.cli.main import main
from tessera.pipelines.synthetic.ct import synth_ct

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def write_series(folder: Path, hu: np.ndarray, spacing_zyx, *, modality: str = "CT",
                 series_uid: str | None = None, prefix: str = "IM") -> list[Path]:
    """An axial DICOM series (one file per z plane, stored as uint16 + intercept -1024).

    File names run opposite to the slice positions, so a reader must sort by position.
    """
    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), series_uid or generate_uid()
    sz, sy, sx = spacing_zyx
    paths = []
    n = hu.shape[0]
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_STORAGE if modality == "CT" else MR_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.PatientName = modality, "SYNTH", "Synthetic^Chest"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SeriesDescription = f"synthetic {modality}"
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, round(k * sz, 4)]
        ds.PixelSpacing = [sy, sx]
        ds.SliceThickness = sz
        ds.Rows, ds.Columns = hu.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = (hu[k].astype(np.int32) + 1024).clip(0, 65535).astype(np.uint16).tobytes()
        path = folder / f"{prefix}{n - k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def small_ct(tmp_path_factory):
    folder = tmp_path_factory.mktemp("av_run")
    # 1.25 x 0.875 x 0.875 mm: resampled to the model's 1.0 x 0.7 x 0.7 mm (40 x 80 x 80) and back
    truth = synth_ct(folder / "chest.nii.gz", shape_zyx=(32, 64, 64),
                     spacing_mm=(1.25, 0.875, 0.875), seed=3)
    hu = np.asarray(nib.load(truth.image_path).dataobj).transpose(2, 1, 0)
    return truth, hu


def _run(plugin: str, inputs: list[Path], out: Path, *extra: str) -> int:
    return main(["run", plugin, *map(str, inputs), "--out", str(out), "--quiet", *extra])


def test_nifti_run_writes_labels_on_the_input_grid(tiny_plugin_dir, small_ct, tmp_path) -> None:
    truth, _ = small_ct
    code = _run(str(tiny_plugin_dir), [truth.image_path], tmp_path, "--truth",
                str(truth.labels_path))
    assert code == 0
    out = tmp_path / "chest"
    lab = nib.load(out / "labels.nii.gz")
    np.testing.assert_allclose(lab.affine, nib.load(truth.image_path).affine)
    assert lab.shape == nib.load(truth.image_path).shape
    values = set(np.unique(np.asarray(lab.dataobj)).tolist())
    assert values <= {0, 1, 2, 3}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert (out / "labels.ome.zarr").is_dir()
    scores = summary["truth"]["classes"]
    assert set(scores) == {"airway", "artery", "vein"}
    assert "tree_length_detected" in scores["airway"]
    # the plugin's own measurements and notes reach the run summary, not only the console
    assert set(summary["metrics"]) == {"airway_tree_length_mm", "airway_branch_count",
                                       "airway_generations", "volumes_ml"}
    assert summary["metrics"]["volumes_ml"]["airway"] == pytest.approx(
        summary["labels"]["airway"]["volume_ml"], rel=1e-3, abs=1e-6)


def test_predict_volume_reports_tree_metrics_and_notes(tiny_plugin_dir, small_ct) -> None:
    import threading

    import tessera
    from tessera.pipelines.plugin_system import load_plugin_folder
    from tessera.pipelines.progress import NullProgress
    from tessera.pipelines.runners.base import RunOptions

    truth, hu = small_ct
    plugin = load_plugin_folder(tiny_plugin_dir)
    with tessera.open(truth.image_path) as source:
        out = plugin.processing().predict_volume(source, plugin, RunOptions(), NullProgress(),
                                                 threading.Event())
    assert out["labels"].shape == hu.shape and out["labels"].dtype == np.uint8
    m = out["metrics"]
    assert set(m) == {"airway_tree_length_mm", "airway_branch_count", "airway_generations",
                      "volumes_ml"}
    assert set(m["volumes_ml"]) == {"airway", "artery", "vein"}
    voxel_ml = np.prod(truth.spacing_mm) / 1000
    assert m["volumes_ml"]["airway"] == pytest.approx((out["labels"] == 1).sum() * voxel_ml,
                                                      abs=1e-3)
    assert any("resampled" in n for n in out["notes"])
    json.dumps(m)  # JSON-ready for the run summary


def test_dicom_series_runs_like_the_nifti(tiny_plugin_dir, small_ct, tmp_path) -> None:
    truth, hu = small_ct
    series = tmp_path / "series"
    write_series(series, hu, truth.spacing_mm)
    assert _run(str(tiny_plugin_dir), [series], tmp_path / "out") == 0
    lab = nib.load(tmp_path / "out" / "series" / "labels.nii.gz")
    assert lab.shape == (64, 64, 32)
    zooms = lab.header.get_zooms()
    np.testing.assert_allclose(zooms, (0.875, 0.875, 1.25), rtol=1e-4)


@pytest.mark.parametrize("damage", ["mixed series", "missing slice", "truncated file"])
def test_broken_dicom_folder_fails_naming_the_file(tiny_plugin_dir, small_ct, tmp_path, capsys,
                                                   damage) -> None:
    truth, hu = small_ct
    series = tmp_path / "series"
    paths = write_series(series, hu[:12], truth.spacing_mm)
    if damage == "mixed series":
        write_series(series, hu[12:20], truth.spacing_mm, prefix="OTHER")
        named = "OTHER"
    elif damage == "missing slice":
        paths[5].unlink()  # the 6th position: between files IM0008 and IM0006
        named = "IM0006.dcm"
    else:
        data = paths[4].read_bytes()
        paths[4].write_bytes(data[: len(data) // 2])
        named = paths[4].name
    inputs = [series]
    if damage == "mixed series":  # with a good input after it, which still finishes
        inputs.append(tmp_path / "good.nii.gz")
        inputs[-1].write_bytes(truth.image_path.read_bytes())
    code = _run(str(tiny_plugin_dir), inputs, tmp_path / "out")
    err = capsys.readouterr().err
    print(err)
    assert code == 1
    assert "failed:" in err and named in err.replace("\n", "")
    assert "Traceback" not in err
    if len(inputs) == 2:
        assert (tmp_path / "out" / "good" / "summary.json").exists()


def test_mr_series_gets_a_warning(tiny_plugin_dir, small_ct, tmp_path) -> None:
    truth, hu = small_ct
    series = tmp_path / "mr"
    write_series(series, hu, truth.spacing_mm, modality="MR")
    with pytest.warns(UserWarning, match="modality is MR"):
        assert _run(str(tiny_plugin_dir), [series], tmp_path / "out") == 0
    summary = json.loads((tmp_path / "out" / "mr" / "summary.json").read_text())
    assert any("modality is MR" in n for n in summary["notes"])


def test_values_outside_hu_get_a_warning(tiny_plugin_dir, small_ct, tmp_path) -> None:
    truth, hu = small_ct
    mr_like = ((hu.astype(np.float32) + 1024) * 0.5).astype(np.int16)  # 0..~900, no air at -1000
    img = nib.Nifti1Image(np.ascontiguousarray(mr_like.transpose(2, 1, 0)), truth.affine)
    path = tmp_path / "mr_like.nii.gz"
    nib.save(img, path)
    with pytest.warns(UserWarning, match="Hounsfield"):
        assert _run(str(tiny_plugin_dir), [path], tmp_path / "out") == 0
