"""DICOM series and NIfTI volumes against pydicom's and nibabel's own values."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut

import tessera
from tessera.pipelines.errors import CorruptFile, UnsupportedFile

NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"

# ---- DICOM ------------------------------------------------------------------------------


def _make_series(
    folder: Path,
    n: int,
    *,
    step_mm: float = 2.5,
    tilt_deg: float = 20.0,
    series_uid: str | None = None,
    skip: int | None = None,
    seed: int = 0,
) -> list[tuple[Path, float]]:
    """Slices cloned from pydicom's CT_small.dcm at known positions along an oblique
    normal, saved under random names with shuffled InstanceNumbers and a per-slice
    RescaleIntercept. Returns (file, distance along the normal) in slice order."""
    rng = np.random.default_rng(seed)
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    t = np.deg2rad(tilt_deg)
    row, col = np.array([1.0, 0.0, 0.0]), np.array([0.0, np.cos(t), -np.sin(t)])
    normal = np.cross(row, col)
    origin = np.array([-80.0, -90.0, 10.0])
    uid = series_uid or pydicom.uid.generate_uid()
    names = rng.permutation(n * 10)[:n]
    instance = rng.permutation(n) + 1
    out = []
    pixels = base.pixel_array
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        if k == skip:
            continue
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.InstanceNumber = int(instance[k])
        ds.ImageOrientationPatient = [*row, *col]
        ds.ImagePositionPatient = list(origin + k * step_mm * normal)
        ds.RescaleIntercept = -1024 if k % 2 else -1000
        ds.PixelData = (pixels + np.int16(k * 7)).astype(pixels.dtype).tobytes()
        path = folder / f"IM{names[k]:04d}"
        ds.save_as(path, enforce_file_format=True)
        out.append((path, k * step_mm))
    return out


def test_ct_series_sorted_by_position_in_hu(tmp_path: Path) -> None:
    files = _make_series(tmp_path / "series", 6)
    src = tessera.open(tmp_path / "series")
    assert src.reader == "dicom" and src.axes == "ZYX" and src.format == "DICOM series (CT)"
    assert src.shape == (6, 128, 128) and src.levels[0].chunksize == (1, 128, 128)
    assert src.spacing == pytest.approx((2.5, 0.661468, 0.661468)) and src.spacing_unit == "mm"
    assert src.metadata["modality"] == "CT" and src.metadata["units"] == "HU"
    volume = np.asarray(src.levels[0])
    for k, (path, _) in enumerate(files):
        ds = pydicom.dcmread(path)
        np.testing.assert_array_equal(volume[k], apply_modality_lut(ds.pixel_array, ds))
    # the affine maps array indices to the DICOM patient position (LPS -> RAS)
    affine = np.asarray(src.metadata["affine"])
    ds = pydicom.dcmread(files[3][0])
    row, col = (
        np.asarray(ds.ImageOrientationPatient[:3]),
        np.asarray(ds.ImageOrientationPatient[3:]),
    )
    dy, dx = (float(v) for v in ds.PixelSpacing)
    lps = np.asarray(ds.ImagePositionPatient, float) + 5 * dx * row + 9 * dy * col
    np.testing.assert_allclose(affine @ [3, 9, 5, 1], [-lps[0], -lps[1], lps[2], 1], atol=1e-4)
    assert src.metadata["orientation"][2] == "L"


def test_one_file_opens_its_series_and_picks_it_from_a_mixed_folder(tmp_path: Path) -> None:
    a = _make_series(tmp_path / "mixed", 4, seed=1)
    b = _make_series(tmp_path / "mixed", 3, step_mm=5.0, seed=2)
    with pytest.raises(UnsupportedFile) as err:
        tessera.open(tmp_path / "mixed")
    text = str(err.value)
    assert str(tmp_path / "mixed") in text and "2 image series" in text
    assert pydicom.dcmread(a[0][0]).SeriesInstanceUID in text
    assert pydicom.dcmread(b[0][0]).SeriesInstanceUID in text
    src = tessera.open(b[1][0])
    assert src.shape == (3, 128, 128) and src.spacing[0] == pytest.approx(5.0)


def test_missing_slice_names_the_files(tmp_path: Path) -> None:
    files = _make_series(tmp_path / "gap", 6, skip=3)
    with pytest.raises(CorruptFile) as err:
        tessera.open(tmp_path / "gap")
    assert "1 slice(s) missing" in str(err.value)
    assert files[2][0].name in str(err.value) and files[3][0].name in str(err.value)


def test_truncated_slice_is_named(tmp_path: Path) -> None:
    files = _make_series(tmp_path / "cut", 4)
    victim = files[2][0]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 5000])
    with pytest.raises(CorruptFile) as err:
        tessera.open(tmp_path / "cut")
    assert str(victim) in str(err.value) and "truncated" in str(err.value)


def test_pydicom_ct_small_single_slice() -> None:
    path = Path(get_testdata_file("CT_small.dcm"))
    ds = pydicom.dcmread(path)
    folder_src = tessera.open(path)  # its folder holds other series: ignored
    assert folder_src.shape == (1, 128, 128)
    np.testing.assert_array_equal(
        np.asarray(folder_src.levels[0])[0], apply_modality_lut(ds.pixel_array, ds)
    )
    assert folder_src.spacing == pytest.approx((5.0, 0.661468, 0.661468))


def test_pydicom_multislice_sets(tmp_path: Path) -> None:
    """The real CT5N set shipped with pydicom (5 slices, 2.5 mm apart)."""
    src_dir = Path(get_testdata_file("CT_small.dcm")).parent / "dicomdirtests/98892001/CT5N"
    folder = tmp_path / "ct5n"
    shutil.copytree(src_dir, folder)
    src = tessera.open(folder)
    slices = sorted(
        (pydicom.dcmread(p) for p in folder.iterdir()),
        key=lambda d: float(np.dot(d.ImagePositionPatient, np.cross(
            np.asarray(d.ImageOrientationPatient[:3], float), np.asarray(d.ImageOrientationPatient[3:], float)
        ))),
    )  # fmt: skip
    expected = np.stack([apply_modality_lut(d.pixel_array, d) for d in slices])
    np.testing.assert_array_equal(np.asarray(src.levels[0]), expected)
    assert src.spacing[0] == pytest.approx(2.5)


# ---- NIfTI ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["anatomical.nii", "example4d.nii.gz", "example_nifti2.nii.gz", "functional.nii",
     "reoriented_anat_moved.nii"],
)  # fmt: skip
def test_nibabel_files(name: str) -> None:
    path = NIBABEL_DATA / name
    img = nib.load(path)
    src = tessera.open(path)
    assert src.reader == "nifti"
    ref = np.asarray(img.dataobj)
    assert src.shape == tuple(reversed(ref.shape))
    np.testing.assert_array_equal(np.asarray(src.levels[0]), ref.T.astype(src.dtype))
    zooms = img.header.get_zooms()[:3]
    assert src.spacing == pytest.approx(tuple(reversed(zooms))) and src.spacing_unit == "mm"
    affine = np.asarray(src.metadata["affine"])
    ijk = np.array([3, 2, 1, 1])
    np.testing.assert_allclose(affine @ [1, 2, 3, 1], img.affine @ ijk, atol=1e-4)
    assert src.metadata["orientation"] == "".join(reversed(nib.aff2axcodes(img.affine)))
    assert src.axes == ("TZYX" if ref.ndim == 4 else "ZYX")


def test_scaled_nifti_is_float32_like_nibabel(tmp_path: Path) -> None:
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    img = nib.Nifti1Image(data, np.diag([0.8, 0.8, 3.0, 1.0]))
    img.header.set_slope_inter(2.0, -5.0)
    path = tmp_path / "scaled.nii"
    nib.save(img, path)
    src = tessera.open(path)
    assert src.dtype == np.float32 and src.metadata["scale"] == [2.0, -5.0]
    np.testing.assert_allclose(np.asarray(src.levels[0]), nib.load(path).get_fdata().T)
    assert src.spacing == pytest.approx((3.0, 0.8, 0.8))


def test_nifti_chunks_are_slabs_and_reads_are_partial(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(-1000, 1000, (64, 48, 40), dtype=np.int16)
    path = tmp_path / "vol.nii"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    src = tessera.open(path)
    assert src.levels[0].numblocks[1:] == (1, 1)
    np.testing.assert_array_equal(
        np.asarray(src.levels[0][7:9, 10:20, 30:33]), data[30:33, 10:20, 7:9].T
    )


def test_truncated_nifti(tmp_path: Path) -> None:
    data = np.zeros((32, 32, 16), np.int16)
    path = tmp_path / "cut.nii"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    path.write_bytes(path.read_bytes()[:-3000])
    with pytest.raises(CorruptFile, match="truncated"):
        tessera.open(path)
