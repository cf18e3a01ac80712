"""Every reader's levels pickle, compute in another process and reopen after close()."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cloudpickle
import numpy as np
import pytest

import tessera
from tessera.pipelines.errors import CorruptFile
from tessera.pipelines.sources.lazy import FileSignature, LazyLevel, as_dask


@pytest.fixture(scope="module")
def one_file_per_reader(
    tmp_path_factory: pytest.TempPathFactory, svs_ycbcr: Path
) -> dict[str, tuple[Path, str | None]]:
    """A small file for each reader: name -> (path, forced reader or None)."""
    import nibabel as nib
    import pydicom
    import tifffile
    import zarr
    from astropy.io import fits
    from PIL import Image
    from pydicom.data import get_testdata_file

    d = tmp_path_factory.mktemp("per_reader")
    rng = np.random.default_rng(0)
    tifffile.imwrite(d / "a.ome.tif", rng.integers(0, 999, (2, 200, 150), dtype=np.uint16),
                     tile=(64, 64), compression="zlib", metadata={"axes": "CYX"})  # fmt: skip
    (d / "dicom").mkdir()
    for k in range(3):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.ImagePositionPatient = [0.0, 0.0, 3.0 * k]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(d / "dicom" / f"s{k}.dcm", enforce_file_format=True)
    nib.save(nib.Nifti1Image(rng.random((20, 16, 12), dtype=np.float32), np.eye(4)), d / "v.nii.gz")
    fits.PrimaryHDU(rng.integers(0, 99, (40, 50), dtype=np.int16)).writeto(d / "f.fits")
    z = zarr.open_array(str(d / "z.zarr"), mode="w", shape=(80, 60), chunks=(32, 32), dtype="u2")
    z[:] = rng.integers(0, 9999, (80, 60), dtype=np.uint16)
    Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(d / "p.png")
    return {
        "tiff-tiles": (svs_ycbcr, None),
        "openslide": (svs_ycbcr, "openslide"),
        "tifffile": (d / "a.ome.tif", None),
        "dicom": (d / "dicom", None),
        "nifti": (d / "v.nii.gz", None),
        "fits": (d / "f.fits", None),
        "zarr": (d / "z.zarr", None),
        "raster": (d / "p.png", None),
    }


def _window(src: tessera.Source):
    """A small window of level 0 crossing chunk borders where there are several."""
    lvl = src.levels[0]
    index = []
    for axis, n in zip(src.axes, lvl.shape, strict=True):
        index.append(slice(n // 3, min(n, n // 3 + 90)) if axis in "YX" else slice(None))
    return lvl[tuple(index)]


@pytest.mark.slow
def test_levels_compute_in_a_spawned_process(one_file_per_reader) -> None:
    """Graphs travel to workers in other processes (as dask.distributed sends them):
    each level object pickles without handles and reopens the file there."""
    windows, expected = {}, {}
    for name, (path, reader) in one_file_per_reader.items():
        src = tessera.open(path, reader=reader)
        assert src.reader == name
        windows[name] = _window(src)
        expected[name] = np.asarray(windows[name])
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        results = {name: pool.submit(np.asarray, w) for name, w in windows.items()}
        for name, future in results.items():
            np.testing.assert_array_equal(future.result(timeout=300), expected[name], err_msg=name)


def test_cloudpickle_round_trip_after_close(one_file_per_reader) -> None:
    for name, (path, reader) in one_file_per_reader.items():
        src = tessera.open(path, reader=reader)
        window = _window(src)
        before = np.asarray(window)
        payload = cloudpickle.dumps(window)
        assert len(payload) < 20_000, (name, len(payload))  # parameters, never pixels
        src.close()
        np.testing.assert_array_equal(np.asarray(cloudpickle.loads(payload)), before, err_msg=name)
        np.testing.assert_array_equal(np.asarray(window), before, err_msg=name)  # reopened


def test_names_are_deterministic(svs_ycbcr: Path) -> None:
    a, b = tessera.open(svs_ycbcr), tessera.open(svs_ycbcr)
    assert [lv.name for lv in a.levels] == [lv.name for lv in b.levels]
    assert a.levels[0].name != tessera.open(svs_ycbcr, reader="openslide").levels[0].name


def test_a_changed_file_is_refused_on_reopen(tmp_path: Path, svs_ycbcr: Path) -> None:
    import shutil

    path = tmp_path / "moving.svs"
    shutil.copyfile(svs_ycbcr, path)
    src = tessera.open(path, reader="openslide")
    payload = cloudpickle.dumps(src.levels[0][:16, :16])
    src.close()
    with open(path, "ab") as fh:
        fh.write(b"\x00" * 10)
    with pytest.raises(CorruptFile, match="changed on disk"):
        np.asarray(cloudpickle.loads(payload))


class _Counting(LazyLevel):
    """A level over arange data that records the boxes it was asked for."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__(Path("mem"), FileSignature(0, 0), shape, np.int64)
        self.boxes: list[tuple] = []
        self.data = np.arange(int(np.prod(shape))).reshape(shape)

    def read(self, start, stop):
        self.boxes.append((start, stop))
        return self.data[tuple(slice(a, b) for a, b in zip(start, stop, strict=True))]


def test_lazy_level_indexing_and_chunk_reads() -> None:
    lazy = _Counting((50, 40, 3))
    assert np.array_equal(lazy[5:9, -3:, 1], lazy.data[5:9, -3:, 1])
    assert np.array_equal(lazy[..., 0][::7], lazy.data[..., 0][::7])
    assert lazy[3:3].shape == (0, 40, 3)
    arr = as_dask(lazy, (16, 16, 3), name="counting")
    lazy.boxes.clear()
    np.testing.assert_array_equal(np.asarray(arr[20:30, 10:20]), lazy.data[20:30, 10:20])
    assert all(start[0] >= 16 and stop[0] <= 32 for start, stop in lazy.boxes)
    assert len(lazy.boxes) == 2  # only the two chunks the window touches


def test_array_source_for_in_memory_images() -> None:
    from tessera.pipelines.sources import array_source

    l0 = np.arange(600 * 500 * 3, dtype=np.uint32).reshape(600, 500, 3).astype(np.uint8)
    src = array_source([l0, l0[::4, ::4]], axes="YXC", spacing=(0.5, 0.5), spacing_unit="µm")
    assert src.reader == "memory" and src.mpp == 0.5 and src.levels[0].chunksize == (256, 256, 3)
    assert src.downsamples[1] == (4.0, 4.0)
    np.testing.assert_array_equal(src.read_region((8, 16), (10, 10), 1), l0[::4, ::4][2:12, 4:14])
