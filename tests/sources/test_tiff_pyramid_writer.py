"""write_pyramid_tiff: what OpenSlide, tifffile and libvips see in the files it writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile

from tessera.pipelines.progress import RecordingProgress
from tessera.pipelines.writers.tiff_pyramid import (
    area_reduce,
    pyramid_level_shapes,
    split_jpeg_tables,
    write_pyramid_tiff,
)


def _render(y0: int, x0: int, h: int, w: int) -> np.ndarray:
    """A deterministic, position-dependent RGB pattern (every pixel unique-ish)."""
    yy, xx = np.mgrid[y0 : y0 + h, x0 : x0 + w]
    return np.stack([(yy * 7 + xx) % 256, (xx * 3) % 256, (yy ^ xx) % 256], -1).astype(np.uint8)


def test_svs_is_aperio_with_mpp_appmag_and_downsamples(tmp_path: Path) -> None:
    path = tmp_path / "slide.svs"
    progress = RecordingProgress()
    write_pyramid_tiff(
        path,
        l0_shape_yx=(1500, 2100),
        render_region=_render,
        tile_size_px=256,
        n_levels=3,
        mpp=0.2502,
        app_mag=40,
        progress=progress,
    )
    with openslide.OpenSlide(path) as slide:
        assert slide.properties["openslide.vendor"] == "aperio"
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.2502)
        assert float(slide.properties["openslide.objective-power"]) == 40
        assert slide.level_dimensions == ((2100, 1500), (525, 375), (132, 94))
        assert slide.level_downsamples[1] == pytest.approx(4.0)
        assert slide.level_downsamples[2] == pytest.approx((2100 / 132 + 1500 / 94) / 2)
        assert "thumbnail" in slide.associated_images
        assert slide.properties["openslide.level[0].tile-width"] == "256"
        region = np.asarray(slide.read_region((300, 700), 0, (256, 200)))[..., :3]
    truth = _render(700, 300, 200, 256)
    assert np.abs(region.astype(int) - truth).mean() < 6  # JPEG q90, 2x2 chroma
    assert progress.total == progress.done == 6 * 9 + 3 * 2 + 1 and progress.closed
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob(".tessera-*"))
    with tifffile.TiffFile(path) as tif:
        assert tif.is_svs
        assert tif.pages[0].jpegtables is not None  # shared tables, like Aperio


@pytest.mark.parametrize("compression", ["deflate", "lzw", "none"])
def test_lossless_levels_are_exact_area_means(tmp_path: Path, compression: str) -> None:
    path = tmp_path / f"p_{compression}.tif"
    write_pyramid_tiff(
        path,
        l0_shape_yx=(333, 517),
        render_region=_render,
        tile_size_px=64,
        level_downsample=2,
        n_levels=3,
        compression=compression,
        flavour="tiff",
        mpp=0.5,
    )
    l0 = _render(0, 0, 333, 517)
    with tifffile.TiffFile(path) as tif:
        levels = tif.series[0].levels
        assert [lv.shape for lv in levels] == [(333, 517, 3), (167, 259, 3), (84, 130, 3)]
        np.testing.assert_array_equal(levels[0].asarray(), l0)
        np.testing.assert_array_equal(levels[1].asarray(), area_reduce(l0, 2))
        np.testing.assert_array_equal(levels[2].asarray(), area_reduce(area_reduce(l0, 2), 2))
    with openslide.OpenSlide(path) as slide:
        assert slide.properties["openslide.vendor"] == "generic-tiff"
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.5)
        got = np.asarray(slide.read_region((64, 128), 0, (64, 64)))[..., :3]
    np.testing.assert_array_equal(got, l0[128:192, 64:128])


def test_ome_flavour_has_subifd_levels_and_physical_size(tmp_path: Path) -> None:
    path = tmp_path / "p.ome.tif"
    write_pyramid_tiff(
        path,
        l0_shape_yx=(700, 900),
        render_region=_render,
        tile_size_px=128,
        n_levels=2,
        mpp=0.5,
        flavour="ome",
        compression="deflate",
    )
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        series = tif.series[0]
        assert [lv.shape for lv in series.levels] == [(700, 900, 3), (175, 225, 3)]
        assert 'PhysicalSizeX="0.5"' in tif.ome_metadata
        np.testing.assert_array_equal(
            series.levels[0].asarray()[100:200, 300:400], _render(100, 300, 100, 100)
        )


def test_pyvips_reads_the_pyramid(tmp_path: Path) -> None:
    pyvips = pytest.importorskip("pyvips")
    path = tmp_path / "v.tif"
    write_pyramid_tiff(
        path,
        l0_shape_yx=(400, 640),
        render_region=_render,
        tile_size_px=128,
        n_levels=2,
        flavour="tiff",
        compression="lzw",
    )
    img = pyvips.Image.new_from_file(str(path), page=1)
    assert (img.height, img.width, img.bands) == (100, 160, 3)


def test_default_levels_stop_at_1024() -> None:
    assert pyramid_level_shapes((20000, 20000), n_levels=None, level_downsample=4) == [
        (20000, 20000),
        (5000, 5000),
        (1250, 1250),
        (313, 313),
    ]
    assert pyramid_level_shapes((1000, 800), n_levels=None, level_downsample=4) == [(1000, 800)]


def test_bad_renderer_output_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.svs"
    with pytest.raises(ValueError, match="expected uint8"):
        write_pyramid_tiff(
            path,
            l0_shape_yx=(300, 300),
            render_region=lambda y, x, h, w: np.zeros((h, w)),
        )
    assert not list(tmp_path.iterdir())


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multiple of 16"):
        write_pyramid_tiff(
            tmp_path / "x.svs", l0_shape_yx=(10, 10), render_region=_render, tile_size_px=100
        )
    with pytest.raises(ValueError, match="level_downsample"):
        write_pyramid_tiff(
            tmp_path / "x.svs", l0_shape_yx=(10, 10), render_region=_render, level_downsample=3
        )


def test_split_jpeg_tables_roundtrip() -> None:
    import imagecodecs

    tile = _render(0, 0, 64, 64)
    stream = imagecodecs.jpeg8_encode(tile, level=80)
    tables, image = split_jpeg_tables(stream)
    assert b"\xff\xdb" in tables and b"\xff\xdb" not in image.split(b"\xff\xda")[0]
    np.testing.assert_array_equal(
        imagecodecs.jpeg8_decode(image, tables=tables), imagecodecs.jpeg8_decode(stream)
    )
