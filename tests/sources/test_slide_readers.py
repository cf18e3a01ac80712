"""Whole-slide readers (tiff-tiles fast path, OpenSlide) against OpenSlide's own values."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import openslide
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tessera
from tessera.pipelines.sources.base import Source


def _openslide_rgb(path: Path, l0_xy: tuple[int, int], level: int, size_wh: tuple[int, int]):
    with openslide.OpenSlide(path) as slide:
        return np.asarray(slide.read_region(l0_xy, level, size_wh))


def _exact_levels(slide: openslide.OpenSlide) -> list[int]:
    """Levels whose downsample is an integer (OpenSlide's level reads are exact there)."""
    return [i for i, d in enumerate(slide.level_downsamples) if abs(d - round(d)) < 1e-9]


@pytest.mark.parametrize("fixture", ["svs_ycbcr", "svs_rgb_odd"])
def test_fast_path_is_bit_identical_to_openslide_on_aligned_tiles(fixture, request) -> None:
    path = request.getfixturevalue(fixture)
    src = tessera.open(path)
    assert src.reader == "tiff-tiles"
    rng = np.random.default_rng(0)
    with openslide.OpenSlide(path) as slide:
        for level in _exact_levels(slide):
            lazy = src.levels[level]
            th, tw = lazy.chunksize[:2]
            rows, cols = -(-lazy.shape[0] // th), -(-lazy.shape[1] // tw)
            picks = {(rows - 1, cols - 1), (0, 0)}  # an edge tile and a corner
            picks |= {(int(rng.integers(rows)), int(rng.integers(cols))) for _ in range(6)}
            ds = round(slide.level_downsamples[level])
            for r, c in sorted(picks):
                ours = np.asarray(lazy[r * th : (r + 1) * th, c * tw : (c + 1) * tw])
                ref = np.asarray(slide.read_region((c * tw * ds, r * th * ds), level, (tw, th)))
                h, w = ours.shape[:2]
                assert (ref[:h, :w, 3] == 255).all()
                np.testing.assert_array_equal(ours, ref[:h, :w, :3])


def test_slide_metadata_matches_openslide(svs_ycbcr: Path) -> None:
    fast = tessera.open(svs_ycbcr)
    slow = tessera.open(svs_ycbcr, reader="openslide")
    with openslide.OpenSlide(svs_ycbcr) as slide:
        for src in (fast, slow):
            assert src.format == "Aperio SVS" and src.axes == "YXC" and src.dtype == np.uint8
            assert src.spacing == (0.25, 0.25) and src.spacing_unit == "µm" and src.mpp == 0.25
            assert src.metadata["objective_power"] == 40 and src.metadata["vendor"] == "aperio"
            assert [lv.shape[1::-1] for lv in src.levels] == list(slide.level_dimensions)
            assert [src.downsample(i) for i in range(3)] == pytest.approx(slide.level_downsamples)
            assert src.levels[0].chunksize == (256, 256, 3)
            assert "thumbnail" in src.metadata["associated_images"]
    assert fast.describe()["levels"] == slow.describe()["levels"]


def test_openslide_reader_equals_read_region_on_odd_levels(svs_rgb_odd: Path) -> None:
    """Where the downsample is not an integer, the OpenSlide reader returns what
    read_region returns for the same level-0 origin (the reference library's values)."""
    src = tessera.open(svs_rgb_odd, reader="openslide")
    with openslide.OpenSlide(svs_rgb_odd) as slide:
        ds = slide.level_downsamples[1]
        assert ds != round(ds)
        ours = np.asarray(src.levels[1][0:240, 240:480])
        ref = np.asarray(slide.read_region((round(240 * ds), 0), 1, (240, 240)))[..., :3]
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("kind", ["jpeg", "deflate"])
def test_vips_pyramids_fast_path_equals_openslide(vips_pyramids, kind: str) -> None:
    path = vips_pyramids[kind]
    src = tessera.open(path)
    assert src.reader == "tiff-tiles" and src.format == "tiled TIFF"
    assert [lv.shape for lv in src.levels] == [
        (777, 1001, 3), (388, 500, 3), (194, 250, 3), (97, 125, 3),
    ]  # fmt: skip
    ref = _openslide_rgb(path, (0, 0), 0, (1001, 777))[..., :3]
    np.testing.assert_array_equal(np.asarray(src.levels[0]), ref)
    # an unaligned region crossing tiles, through the dask slicing path
    np.testing.assert_array_equal(np.asarray(src.levels[0][100:431, 77:900]), ref[100:431, 77:900])


def test_vips_subifd_pyramid_goes_to_tifffile_with_all_levels(vips_pyramids, render) -> None:
    src = tessera.open(vips_pyramids["lzw_subifd"])
    assert src.reader == "tifffile"
    assert [lv.shape for lv in src.levels] == [
        (777, 1001, 3), (388, 500, 3), (194, 250, 3), (97, 125, 3),
    ]  # fmt: skip
    np.testing.assert_array_equal(np.asarray(src.levels[0]), render(0, 0, 777, 1001))


def test_tifffile_written_pyramid(tifffile_pyramid: Path) -> None:
    import tifffile

    src = tessera.open(tifffile_pyramid)
    assert src.reader == "tiff-tiles"
    assert src.levels[0].chunksize == (224, 224, 3)  # 112 px tiles, grouped 2 x 2
    with tifffile.TiffFile(tifffile_pyramid) as tif:
        for i, lv in enumerate(src.levels):
            np.testing.assert_array_equal(np.asarray(lv), tif.pages[i].asarray())
    ref = _openslide_rgb(tifffile_pyramid, (448, 336), 0, (224, 224))[..., :3]
    np.testing.assert_array_equal(np.asarray(src.levels[0][336:560, 448:672]), ref)


def test_fast_path_declines_what_it_cannot_decode(tmp_path: Path, render) -> None:
    """A JPEG-compressed RGBA tiled TIFF is OpenSlide's, not the fast path's."""
    import tifffile

    path = tmp_path / "rgba.tif"
    rgba = np.dstack([render(0, 0, 300, 300), np.full((300, 300), 255, np.uint8)])
    tifffile.imwrite(path, rgba, tile=(128, 128), compression="zlib", photometric="rgb",
                     extrasamples="unassalpha")  # fmt: skip
    assert tessera.open(path).reader == "openslide"
    from tessera.pipelines.sources.tiff_tiles import TiffTileReader

    assert TiffTileReader().open(path) is None


def test_fast_path_reads_from_threads(svs_ycbcr: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    src = tessera.open(svs_ycbcr)
    lvl = src.levels[0]
    boxes = [(y, x) for y in range(0, 1536, 256) for x in range(0, 2048, 256)]
    serial = [np.asarray(lvl[y : y + 256, x : x + 256]) for y, x in boxes]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(
            pool.map(lambda b: np.asarray(lvl[b[0] : b[0] + 256, b[1] : b[1] + 256]), boxes)
        )
        whole = lvl.compute(scheduler="threads", pool=pool)
    for a, b in zip(serial, threaded, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(whole[512:768, 1024:1280], serial[2 * 8 + 4])


def test_openslide_reader_reopens_after_an_error(tmp_path: Path, svs_ycbcr: Path) -> None:
    """A damaged tile is a CorruptFile naming the file; the next read of a good tile works
    (OpenSlide handles are dead after an error, so the reader opened a new one)."""
    import tifffile

    from tessera.pipelines.errors import CorruptFile

    path = tmp_path / "damaged.svs"
    shutil.copyfile(svs_ycbcr, path)
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[0].dataoffsets[3], tif.pages[0].databytecounts[3]
    with open(path, "r+b") as fh:  # keep the JPEG header, garble the entropy data
        fh.seek(offset + count // 2)
        fh.write(b"\xff\xd9" + b"\x00" * 64)
        fh.seek(offset + 2)
        fh.write(b"\xff\xc0\x00\x02")  # a broken frame header
    src = tessera.open(path, reader="openslide")
    with pytest.raises(CorruptFile) as err:
        np.asarray(src.levels[0][0:256, 768:1024])
    assert str(path) in str(err.value)
    good = np.asarray(src.levels[0][0:256, 0:256])
    np.testing.assert_array_equal(good, np.asarray(tessera.open(svs_ycbcr).levels[0][0:256, 0:256]))
    fast = tessera.open(path)
    with pytest.raises(CorruptFile, match="tile"):
        np.asarray(fast.levels[0][0:256, 768:1024])


@settings(max_examples=40, deadline=None)
@given(
    l0_y=st.integers(-300, 1700), l0_x=st.integers(-300, 2200),
    h=st.integers(1, 300), w=st.integers(1, 300), level=st.integers(0, 2),
)  # fmt: skip
def test_read_region_matches_numpy_reference(svs_ycbcr_source, l0_y, l0_x, h, w, level) -> None:
    """read_region (level-0 origin, level size, fill outside) against plain numpy."""
    src, full = svs_ycbcr_source
    out = src.read_region((l0_y, l0_x), (h, w), level, fill=7)
    ds = [1, 4, 16][level]
    y0, x0 = int(np.floor(l0_y / ds)), int(np.floor(l0_x / ds))
    arr = full[level]
    ref = np.full((h, w, 3), 7, np.uint8)
    ys, xs = (
        slice(max(y0, 0), min(y0 + h, arr.shape[0])),
        slice(max(x0, 0), min(x0 + w, arr.shape[1])),
    )
    if ys.start < ys.stop and xs.start < xs.stop:
        ref[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0] = arr[ys, xs]
    np.testing.assert_array_equal(out, ref)


@pytest.fixture(scope="module")
def svs_ycbcr_source(svs_ycbcr: Path) -> tuple[Source, list[np.ndarray]]:
    src = tessera.open(svs_ycbcr)
    return src, [np.asarray(lv) for lv in src.levels]


def test_unicode_path(unicode_dir: Path, svs_ycbcr: Path) -> None:
    path = unicode_dir / "Schnitt Nr. 1 – ß.svs"
    shutil.copyfile(svs_ycbcr, path)
    src = tessera.open(path)
    assert src.path == path and src.reader == "tiff-tiles"
    assert np.asarray(src.levels[2]).shape == (96, 128, 3)
    assert tessera.open(path, reader="openslide").levels[0][0:8, 0:8].compute().shape == (8, 8, 3)


@settings(max_examples=60, deadline=None)
@given(ds=st.floats(0.5, 200.0, allow_nan=False))
def test_best_level_agrees_with_openslide_away_from_level_boundaries(svs_rgb_odd_slide, ds) -> None:
    """Same level as OpenSlide's get_best_level_for_downsample, except within the 1%
    tolerance Source allows just below a level (4.0004 asked as 4)."""
    src, level_downsamples, expected = svs_rgb_odd_slide
    if any(d / 1.01 <= ds < d for d in level_downsamples):
        return
    assert src.best_level_for_downsample(ds) == expected(ds)


@pytest.fixture(scope="module")
def svs_rgb_odd_slide(svs_rgb_odd: Path):
    slide = openslide.OpenSlide(svs_rgb_odd)
    yield (
        tessera.open(svs_rgb_odd),
        list(slide.level_downsamples),
        slide.get_best_level_for_downsample,
    )
    slide.close()
