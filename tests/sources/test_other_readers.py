"""FITS, PNG/JPEG, zarr/OME-Zarr and tifffile readers against their libraries' values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

import tessera
from tessera.pipelines.errors import CorruptFile

# ---- FITS ------------------------------------------------------------------------------------


def _wcs_header(header, scale_arcsec: float) -> None:
    header.update(
        CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRPIX1=50.0, CRPIX2=40.0, CRVAL1=150.1,
        CRVAL2=2.2, CDELT1=-scale_arcsec / 3600, CDELT2=scale_arcsec / 3600, CUNIT1="deg",
        CUNIT2="deg", OBJECT="COSMOS", TELESCOP="Blanco", BUNIT="nanomaggy",
    )  # fmt: skip


def test_fits_bscale_wcs_and_sections(tmp_path: Path) -> None:
    from astropy.io import fits
    from skimage import data

    raw = data.hubble_deep_field()[..., 1].astype(np.int16) * 7 - 300
    hdu = fits.PrimaryHDU(raw)
    hdu.header["BSCALE"], hdu.header["BZERO"] = 0.25, 100.0
    _wcs_header(hdu.header, 0.262)
    path = tmp_path / "field.fits"
    hdu.writeto(path)
    src = tessera.open(path)
    with fits.open(path) as ref:
        expected = ref[0].data
        assert src.dtype == expected.dtype == np.float32
        np.testing.assert_array_equal(np.asarray(src.levels[0]), expected)
        np.testing.assert_array_equal(
            np.asarray(src.levels[0][100:130, 5:900]), expected[100:130, 5:900]
        )
    assert (
        src.axes == "YX"
        and src.spacing == pytest.approx((0.262, 0.262))
        and src.spacing_unit == "arcsec"
    )
    assert (
        src.metadata["wcs"]["CTYPE1"] == "RA---TAN" and src.metadata["header"]["OBJECT"] == "COSMOS"
    )
    assert src.metadata["vendor"] == "Blanco" and src.metadata["units"] == "nanomaggy"
    json.dumps(src.describe())


def test_fits_unsigned_cube_in_extension(tmp_path: Path) -> None:
    from astropy.io import fits

    cube = np.random.default_rng(0).integers(0, 65535, (3, 40, 50), dtype=np.uint16)
    path = tmp_path / "cube.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(cube, name="SCI")]).writeto(path)
    src = tessera.open(path)
    assert src.axes == "CYX" and src.dtype == np.uint16 and src.metadata["hdu"] == 1
    assert src.spacing is None
    np.testing.assert_array_equal(np.asarray(src.levels[0]), cube)
    assert "bands" not in src.metadata  # unnamed planes stay unnamed


def test_fits_cube_band_names_from_bandn_or_filtern(tmp_path: Path) -> None:
    from astropy.io import fits

    cube = np.zeros((3, 8, 8), np.float32)
    for key, names in (("BAND", ["g", "r", "z"]), ("FILTER", ["F435W", "F606W", "F814W"])):
        hdu = fits.PrimaryHDU(cube)
        for i, name in enumerate(names, start=1):
            hdu.header[f"{key}{i}"] = name
        path = tmp_path / f"{key}.fits"
        hdu.writeto(path)
        assert tessera.open(path).metadata["bands"] == names
    partial = fits.PrimaryHDU(cube)
    partial.header["BAND1"] = "g"  # one plane named: no names rather than wrong ones
    partial.writeto(tmp_path / "partial.fits")
    assert "bands" not in tessera.open(tmp_path / "partial.fits").metadata


# ---- PNG / JPEG ------------------------------------------------------------------------------


def test_hubble_png_and_jpeg_equal_pillow(tmp_path: Path) -> None:
    from PIL import Image
    from skimage import data

    rgb = data.hubble_deep_field()
    Image.fromarray(rgb).save(tmp_path / "hubble.png")
    Image.fromarray(rgb).save(tmp_path / "hubble.jpg", quality=90)
    Image.fromarray(data.camera()).save(tmp_path / "camera.png")
    for name, axes in [("hubble.png", "YXC"), ("hubble.jpg", "YXC"), ("camera.png", "YX")]:
        src = tessera.open(tmp_path / name)
        ref = np.asarray(Image.open(tmp_path / name))
        assert src.reader == "raster" and src.axes == axes and src.spacing is None
        np.testing.assert_array_equal(np.asarray(src.levels[0]), ref)
        np.testing.assert_array_equal(np.asarray(src.levels[0][10:20, 30:70]), ref[10:20, 30:70])


def test_sixteen_bit_and_palette_png(tmp_path: Path) -> None:
    from PIL import Image

    grey16 = np.arange(60 * 70, dtype=np.uint16).reshape(60, 70) * 13
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    src = tessera.open(tmp_path / "g16.png")
    assert src.dtype == np.uint16
    np.testing.assert_array_equal(np.asarray(src.levels[0]), grey16)
    pal = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).convert("P")
    pal.save(tmp_path / "pal.png")
    src = tessera.open(tmp_path / "pal.png")
    assert src.axes == "YXC" and src.shape == (8, 8, 3)
    np.testing.assert_array_equal(np.asarray(src.levels[0]), np.asarray(pal.convert("RGB")))


def test_truncated_png(tmp_path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8)).save(
        tmp_path / "a.png"
    )
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFile) as err:
        tessera.open(tmp_path / "cut.png")
    assert "cut.png" in str(err.value)


# ---- zarr / OME-Zarr -------------------------------------------------------------------------


def _ome_zarr(path: Path, levels: list[np.ndarray], *, zarr_format: int, version: str) -> None:
    """OME-Zarr written with zarr itself: v0.4 (zarr v2, attrs at top) or v0.5 (zarr v3)."""
    import zarr

    root = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    datasets = []
    for i, arr in enumerate(levels):
        a = root.create_array(str(i), shape=arr.shape, dtype=arr.dtype, chunks=(1, 64, 64))
        a[:] = arr
        f = 2**i
        datasets.append({"path": str(i), "coordinateTransformations": [
            {"type": "scale", "scale": [1.0, 0.5 * f, 0.5 * f]}]})  # fmt: skip
    ms = {
        "version": version,
        "axes": [{"name": "c", "type": "channel"},
                 {"name": "y", "type": "space", "unit": "micrometer"},
                 {"name": "x", "type": "space", "unit": "micrometer"}],
        "datasets": datasets,
        "coordinateTransformations": [{"type": "scale", "scale": [1.0, 2.0, 2.0]}],
    }  # fmt: skip
    omero = {"channels": [{"label": "DAPI"}, {"label": "CD8"}]}
    if version == "0.5":
        root.attrs["ome"] = {"version": "0.5", "multiscales": [ms], "omero": omero}
    else:
        root.attrs["multiscales"] = [ms]
        root.attrs["omero"] = omero


@pytest.mark.parametrize(("zarr_format", "version"), [(2, "0.4"), (3, "0.5")])
def test_ome_zarr_multiscales(tmp_path: Path, zarr_format: int, version: str) -> None:
    rng = np.random.default_rng(1)
    l0 = rng.integers(0, 4000, (2, 150, 130), dtype=np.uint16)
    levels = [l0, l0[:, ::2, ::2].copy()]
    path = tmp_path / f"img{version}.ome.zarr"
    _ome_zarr(path, levels, zarr_format=zarr_format, version=version)
    src = tessera.open(path)
    assert src.reader == "zarr" and src.format == "OME-Zarr" and src.axes == "CYX"
    assert src.spacing == pytest.approx((1.0, 1.0)) and src.spacing_unit == "µm"
    assert src.downsamples == [(1.0, 1.0), (2.0, 2.0)]
    assert src.metadata["channel_names"] == ["DAPI", "CD8"]
    for lazy, ref in zip(src.levels, levels, strict=True):
        np.testing.assert_array_equal(np.asarray(lazy), ref)
    np.testing.assert_array_equal(np.asarray(src.levels[0][1, 70:140, 3:99]), l0[1, 70:140, 3:99])


def test_ome_zarr_from_ome_zarr_writer_reopens(tmp_path: Path) -> None:
    """What Tessera's writers produce with ome-zarr-py opens again, levels and all."""
    import zarr
    from ome_zarr.writer import write_image

    data = np.random.default_rng(2).integers(0, 255, (300, 260), dtype=np.uint8)
    root = zarr.open_group(str(tmp_path / "heat.ome.zarr"), mode="w")
    write_image(data, root, axes="yx", scale_factors=[2, 4])
    src = tessera.open(tmp_path / "heat.ome.zarr")
    assert src.axes == "YX" and src.levels[0].shape == (300, 260)
    assert len(src.levels) == 3 and src.downsamples[1] == (2.0, 2.0)
    np.testing.assert_array_equal(np.asarray(src.levels[0]), data)


def test_plain_zarr_arrays(tmp_path: Path) -> None:
    import zarr

    rgb = zarr.open_array(
        str(tmp_path / "rgb.zarr"),
        mode="w",
        shape=(70, 90, 3),
        chunks=(32, 32, 3),
        dtype="u1",
        zarr_format=2,
    )
    rgb[:] = np.arange(70 * 90 * 3, dtype=np.uint8).reshape(70, 90, 3)
    src = tessera.open(tmp_path / "rgb.zarr")
    assert src.axes == "YXC" and src.format == "zarr v2 array"
    np.testing.assert_array_equal(np.asarray(src.levels[0]), rgb[:])
    vol = zarr.create_array(
        str(tmp_path / "vol.zarr"),
        shape=(5, 40, 30),
        chunks=(1, 40, 30),
        dtype="f4",
        dimension_names=["z", "y", "x"],
    )
    vol[:] = np.random.default_rng(3).random((5, 40, 30), dtype=np.float32)
    src = tessera.open(tmp_path / "vol.zarr")
    assert src.axes == "ZYX" and src.levels[0].chunksize == (1, 40, 30)
    np.testing.assert_array_equal(np.asarray(src.levels[0]), vol[:])


# ---- tifffile: OME-TIFF, ImageJ, plain -------------------------------------------------------


def test_ome_tiff_channels_physical_sizes_and_pyramid(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    data = rng.integers(0, 4000, (3, 5, 301, 257), dtype=np.uint16)  # CZYX
    path = tmp_path / "stack.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tw:
        tw.write(
            data, tile=(128, 128), compression="zlib", subifds=1,
            metadata={"axes": "CZYX", "PhysicalSizeX": 0.325, "PhysicalSizeY": 0.325,
                      "PhysicalSizeZ": 1.5, "PhysicalSizeZUnit": "µm",
                      "Channel": {"Name": ["DAPI", "GFP", "RFP"]}},
        )  # fmt: skip
        tw.write(data[..., ::2, ::2].copy(), tile=(128, 128), compression="zlib", subfiletype=1)
    src = tessera.open(path)
    assert src.reader == "tifffile" and src.format == "OME-TIFF" and src.axes == "CZYX"
    assert src.spacing == pytest.approx((1.5, 0.325, 0.325)) and src.spacing_unit == "µm"
    assert src.metadata["channel_names"] == ["DAPI", "GFP", "RFP"]
    assert [lv.shape for lv in src.levels] == [(3, 5, 301, 257), (3, 5, 151, 129)]
    assert src.levels[0].chunksize == (1, 1, 128, 128)
    with tifffile.TiffFile(path) as tif:
        for lazy, ref in zip(src.levels, tif.series[0].levels, strict=True):
            np.testing.assert_array_equal(np.asarray(lazy), ref.asarray())
    np.testing.assert_array_equal(
        np.asarray(src.levels[0][2, 1:4, 100:250, 7:200]), data[2, 1:4, 100:250, 7:200]
    )


def test_imagej_hyperstack_and_raw_strips(tmp_path: Path) -> None:
    data = np.random.default_rng(5).integers(0, 60000, (4, 2, 120, 90), dtype=np.uint16)
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / 0.2, 1 / 0.2),
                     metadata={"axes": "ZCYX", "spacing": 0.8, "unit": "um"})  # fmt: skip
    src = tessera.open(path)
    assert src.format == "ImageJ TIFF" and src.axes == "ZCYX"
    assert src.spacing == pytest.approx((0.8, 0.2, 0.2))
    np.testing.assert_array_equal(np.asarray(src.levels[0]), data)
    np.testing.assert_array_equal(
        np.asarray(src.levels[0][1:3, 1, 33:77, 5:6]), data[1:3, 1, 33:77, 5:6]
    )


def test_plain_tiffs_strips_planar_and_float(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    cases = {
        "strips.tif": (rng.integers(0, 255, (301, 203, 3), dtype=np.uint8),
                       {"photometric": "rgb", "rowsperstrip": 17, "compression": "lzw"}),
        "planar.tif": (rng.integers(0, 255, (3, 130, 150), dtype=np.uint8),
                       {"photometric": "rgb", "planarconfig": "separate", "tile": (64, 64)}),
        "float.tif": (rng.random((2, 77, 66), dtype=np.float32), {"predictor": True, "compression": "zlib"}),
        "big_endian.tif": (rng.integers(0, 2**15, (50, 60), dtype=np.int16), {"byteorder": ">"}),
    }  # fmt: skip
    for name, (data, kwargs) in cases.items():
        tifffile.imwrite(tmp_path / name, data, **kwargs)
        src = tessera.open(tmp_path / name, reader="tifffile")
        np.testing.assert_array_equal(np.asarray(src.levels[0]), tifffile.imread(tmp_path / name))
    assert tessera.open(tmp_path / "float.tif").axes == "ZYX"  # a stack of planes
    assert tessera.open(tmp_path / "planar.tif", reader="tifffile").axes == "CYX"


def test_resolution_tags_in_centimetres_give_microns(tmp_path: Path) -> None:
    path = tmp_path / "res.tif"
    tifffile.imwrite(
        path,
        np.zeros((20, 30), np.uint8),
        resolution=(1e4 / 0.5, 1e4 / 0.25),
        resolutionunit="CENTIMETER",
    )
    src = tessera.open(path)
    assert src.spacing == pytest.approx((0.25, 0.5)) and src.spacing_unit == "µm"
    tifffile.imwrite(
        tmp_path / "dpi.tif",
        np.zeros((20, 30), np.uint8),
        resolution=(72, 72),
        resolutionunit="INCH",
    )
    assert tessera.open(tmp_path / "dpi.tif").spacing is None  # 72 dpi is a default, not a size


def test_tessera_heatmap_output_reopens(tmp_path: Path) -> None:
    """An OME-Zarr written by Tessera's own writer (pipelines/writers/ome_zarr.py)."""
    from tessera.pipelines.writers.ome_zarr import write_small_image

    heat = np.random.default_rng(7).integers(0, 255, (2, 600, 520), dtype=np.uint8)
    labels = (heat[0] > 128).astype(np.uint8)
    path = tmp_path / "heatmap.ome.zarr"
    write_small_image(
        path, heat, axes="cyx", spacing=(0.25, 0.25), l0_per_px=(16, 16), unit="µm",
        name="tumour", channels=[("benign", "#00ff00"), ("tumour", "#ff0000")],
        labels={"argmax": (labels, [(0, "glass", "#000000"), (1, "tumour", "#ff0000")])},
    )  # fmt: skip
    src = tessera.open(path)
    assert src.format == "OME-Zarr" and src.axes == "CYX"
    assert src.spacing == pytest.approx((4.0, 4.0)) and src.spacing_unit == "µm"
    assert src.metadata["channel_names"] == ["benign", "tumour"]
    assert src.metadata["labels"] == ["argmax"]
    assert src.downsamples[1] == pytest.approx((2.0, 2.0))
    np.testing.assert_array_equal(np.asarray(src.levels[0]), heat)
    labels_src = tessera.open(path / "labels" / "argmax")
    np.testing.assert_array_equal(np.asarray(labels_src.levels[0]), labels)


def test_read_region_on_grey_and_channel_images(tmp_path: Path) -> None:
    """Source.read_region for "YX" and "CYX" sources: level-0 origin, fill outside."""
    from astropy.io import fits

    image = np.arange(30 * 40, dtype=np.int16).reshape(30, 40)
    fits.PrimaryHDU(image).writeto(tmp_path / "g.fits")
    src = tessera.open(tmp_path / "g.fits")
    out = src.read_region((-5, 35), (10, 10), fill=-1)
    expected = np.full((10, 10), -1, np.int16)
    expected[5:, :5] = image[0:5, 35:40]
    np.testing.assert_array_equal(out, expected)
    cube = np.arange(2 * 30 * 40, dtype=np.uint16).reshape(2, 30, 40)
    tifffile.imwrite(tmp_path / "c.tif", cube, metadata={"axes": "CYX"})
    src = tessera.open(tmp_path / "c.tif")
    assert src.axes == "CYX"
    np.testing.assert_array_equal(
        src.read_region((25, 0), (8, 4)), np.pad(cube[:, 25:30, 0:4], ((0, 0), (0, 3), (0, 0)))
    )
