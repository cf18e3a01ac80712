"""Session fixtures for the sources tests: small files written by Tessera and by other tools.

Sizes are chosen to exercise edges: tiles that do not divide the image, odd sizes,
levels whose downsample is exact (so OpenSlide's level reads are exact too) and
levels where it is not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tessera.pipelines.writers.tiff_pyramid import write_pyramid_tiff

_WAVE = (127.5 + 127.5 * np.sin(np.arange(256) * 2 * np.pi / 256)).astype(np.uint8)


def tissue_like(y0: int, x0: int, h: int, w: int) -> np.ndarray:
    """A deterministic RGB texture with edges and colour (JPEG has something to do)."""
    yy = np.arange(y0, y0 + h, dtype=np.int64)[:, None]
    xx = np.arange(x0, x0 + w, dtype=np.int64)[None, :]
    r = _WAVE[(xx * 5 + yy * 3) & 255] // 2 + 120
    g = _WAVE[(xx * 2 - yy * 7) & 255] // 2 + 60
    b = _WAVE[(xx * 11 + yy) & 255] // 3 + 150
    rgb = np.stack(np.broadcast_arrays(r, g, b), -1).astype(np.uint8)
    rgb[((xx // 37 + yy // 41) % 5) == 0] //= 3  # dark "nuclei" blocks
    return rgb


@pytest.fixture(scope="session")
def slide_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("slides")


@pytest.fixture(scope="session")
def svs_ycbcr(slide_dir: Path) -> Path:
    """Aperio SVS, YCbCr 2x2 JPEG q90, 256 px tiles, 2048 x 1536: exact downsamples 1, 4, 16."""
    path = slide_dir / "ycbcr.svs"
    write_pyramid_tiff(
        path, l0_shape_yx=(1536, 2048), render_region=tissue_like, tile_size_px=256,
        n_levels=3, mpp=0.25, app_mag=40,
    )  # fmt: skip
    return path


@pytest.fixture(scope="session")
def svs_rgb_odd(slide_dir: Path) -> Path:
    """Aperio SVS, RGB JPEG (classic Aperio), 240 px tiles, odd size 1501 x 1999."""
    path = slide_dir / "rgb_odd.svs"
    write_pyramid_tiff(
        path, l0_shape_yx=(1501, 1999), render_region=tissue_like, tile_size_px=240,
        n_levels=2, mpp=0.5, app_mag=20, jpeg_colorspace="rgb",
    )  # fmt: skip
    return path


@pytest.fixture(scope="session")
def vips_pyramids(slide_dir: Path) -> dict[str, Path]:
    """Pyramids written by libvips: JPEG 240 px tiles and deflate+predictor 128 px tiles
    (pages), and LZW in SubIFDs; 1001 x 777, so no tile size divides the image."""
    pyvips = pytest.importorskip("pyvips")
    img = pyvips.Image.new_from_array(tissue_like(0, 0, 777, 1001))
    out = {
        "jpeg": slide_dir / "vips_jpeg.tif",
        "deflate": slide_dir / "vips_deflate.tif",
        "lzw_subifd": slide_dir / "vips_lzw_subifd.tif",
    }
    img.tiffsave(str(out["jpeg"]), tile=True, pyramid=True, compression="jpeg", Q=90,
                 tile_width=240, tile_height=240)  # fmt: skip
    img.tiffsave(str(out["deflate"]), tile=True, pyramid=True, compression="deflate",
                 predictor="horizontal", tile_width=128, tile_height=128)  # fmt: skip
    img.tiffsave(str(out["lzw_subifd"]), tile=True, pyramid=True, compression="lzw",
                 tile_width=128, tile_height=128, subifd=True)  # fmt: skip
    return out


@pytest.fixture(scope="session")
def tifffile_pyramid(slide_dir: Path) -> Path:
    """A tiled RGB pyramid in pages written by tifffile: 997 x 1203, 112 px JPEG tiles."""
    import tifffile

    path = slide_dir / "tifffile_pyramid.tif"
    l0 = tissue_like(0, 0, 997, 1203)
    with tifffile.TiffWriter(path) as tw:
        tw.write(l0, tile=(112, 112), compression="jpeg", photometric="rgb", metadata=None)
        tw.write(
            np.ascontiguousarray(l0[::2, ::2]), tile=(112, 112), compression="jpeg",
            photometric="rgb", subfiletype=1, metadata=None,
        )  # fmt: skip
    return path


@pytest.fixture(autouse=True)
def _dask_synchronous():
    """Compute in the calling thread: dask's default thread pool lives for the whole
    process and the suite's leaked-thread check would flag it. Tests that exercise
    threads pass a pool they own (``scheduler="threads", pool=...``)."""
    import dask

    with dask.config.set(scheduler="synchronous"):
        yield


@pytest.fixture(scope="session")
def render():
    """The level-0 renderer the slide fixtures were written with."""
    return tissue_like


@pytest.fixture()
def unicode_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "Präparat ü 切片"
    folder.mkdir()
    return folder
