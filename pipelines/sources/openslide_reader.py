"""Whole-slide images through OpenSlide: SVS, NDPI, MRXS, SCN, BIF, DICOM-WSI, tiled TIFF.

Levels are RGB (axes "YXC", uint8), chunked by each level's native tile size. A chunk
is one ``read_region`` call; transparent pixels (outside scanned areas, or beyond the
last tile) are composited onto the slide's background colour (white unless the file
says otherwise), so every reader hands out opaque RGB.

Handles: one OpenSlide handle per process and thread (``lazy.thread_handle``).
An OpenSlide handle is unusable after its first error, so a failed read discards the
handle and retries once with a fresh one; a second failure is a ``CorruptFile``.

Levels above 0 whose size is not an exact fraction of level 0 have a non-integer
downsample; OpenSlide then resamples (``read_region`` takes a level-0 origin), so
pixels there can differ slightly from the stored tiles. The tiff-tiles reader, which
serves SVS and generic TIFF first, returns the stored pixels exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tessera.pipelines.errors import CorruptFile
from tessera.pipelines.sources.base import Source
from tessera.pipelines.sources.lazy import (
    FileSignature,
    LazyLevel,
    as_dask,
    close_handles,
    discard_thread_handle,
    grouped_chunk,
    level_name,
)
from tessera.pipelines.sources.tiff_layout import SLIDE_ONLY_SUFFIXES, is_tiff, open_tiff

#: What each OpenSlide vendor is, in a user's words.
VENDOR_FORMATS = {
    "aperio": "Aperio SVS",
    "hamamatsu": "Hamamatsu NDPI/VMS",
    "mirax": "3DHISTECH MRXS",
    "leica": "Leica SCN",
    "ventana": "Ventana BIF",
    "philips": "Philips TIFF",
    "sakura": "Sakura SVSlide",
    "trestle": "Trestle TIFF",
    "generic-tiff": "tiled TIFF",
    "dicom": "DICOM whole-slide image",
    "zeiss": "Zeiss CZI",
    "synthetic": "OpenSlide synthetic slide",
}


def slide_metadata(slide: Any) -> tuple[tuple[float, float] | None, dict[str, Any]]:
    """Spacing (y, x) in µm and the metadata dict Tessera shows for an OpenSlide slide.

    Used by both slide readers, so a file gets the same description whichever one
    serves its pixels.
    """
    props = dict(slide.properties)
    vendor = props.get("openslide.vendor")
    spacing = None
    try:
        mpp_x = float(props["openslide.mpp-x"])
        mpp_y = float(props["openslide.mpp-y"])
        if mpp_x > 0 and mpp_y > 0:
            spacing = (mpp_y, mpp_x)
    except (KeyError, ValueError):
        pass
    objective = None
    with contextlib.suppress(KeyError, ValueError):
        objective = float(props["openslide.objective-power"])
    background = props.get("openslide.background-color", "FFFFFF")
    metadata: dict[str, Any] = {
        "vendor": vendor,
        "objective_power": objective,
        "channel_names": ["red", "green", "blue"],
        "background_color": f"#{background.lower()}",
        "associated_images": sorted(slide.associated_images),
        "tile_sizes_yx": [
            [
                int(props.get(f"openslide.level[{i}].tile-height", 0)),
                int(props.get(f"openslide.level[{i}].tile-width", 0)),
            ]
            for i in range(slide.level_count)
        ],
        "openslide_downsamples": [float(d) for d in slide.level_downsamples],
        "properties": props,
    }
    return spacing, metadata


def background_rgb(metadata: dict[str, Any]) -> tuple[int, int, int]:
    """The slide's background colour as (r, g, b) bytes."""
    hexcode = str(metadata.get("background_color", "#ffffff")).lstrip("#")
    try:
        return (int(hexcode[0:2], 16), int(hexcode[2:4], 16), int(hexcode[4:6], 16))
    except ValueError:
        return (255, 255, 255)


def open_slide(path: Path) -> Any:
    """An OpenSlide handle for ``path``; OpenSlide's failures become ``CorruptFile``."""
    import openslide

    try:
        return openslide.OpenSlide(str(path))
    except openslide.OpenSlideUnsupportedFormatError as exc:
        msg = "OpenSlide does not recognise this slide; it may be damaged or incomplete"
        raise CorruptFile(msg, path=path) from exc
    except openslide.OpenSlideError as exc:
        msg = f"OpenSlide cannot open this slide ({exc}); it is damaged or truncated"
        raise CorruptFile(msg, path=path) from exc


class OpenSlideLevel(LazyLevel):
    """One OpenSlide level as a lazy (y, x, 3) uint8 array; reads via ``read_region``."""

    def __init__(
        self,
        path: Path,
        signature: FileSignature,
        level: int,
        shape_yx: tuple[int, int],
        downsample: float,
        background: tuple[int, int, int],
    ) -> None:
        super().__init__(path, signature, (shape_yx[0], shape_yx[1], 3), np.uint8)
        self.level = level
        self.downsample = float(downsample)
        self.background = background

    handle_kind = "openslide"

    def open_handle(self) -> Any:
        return open_slide(self.path)

    def read(self, start: tuple[int, ...], stop: tuple[int, ...]) -> np.ndarray:
        import openslide

        (y0, x0, c0), (y1, x1, c1) = start, stop
        l0_xy = (round(x0 * self.downsample), round(y0 * self.downsample))
        size_wh = (x1 - x0, y1 - y0)
        for attempt in (1, 2):
            slide = self.handle()
            try:
                region = slide.read_region(l0_xy, self.level, size_wh)
                break
            except openslide.OpenSlideError as exc:
                discard_thread_handle(self.handle_key)  # a handle is dead after an error
                if attempt == 2:
                    msg = (
                        f"OpenSlide cannot read level {self.level} at level-0 (x, y) {l0_xy}, "
                        f"size {size_wh}: {exc}; the file is damaged"
                    )
                    raise CorruptFile(msg, path=self.path) from exc
        rgba = np.asarray(region)
        return composite_on_background(rgba, self.background)[..., c0:c1]


def composite_on_background(rgba: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """Opaque RGB from OpenSlide's (non-premultiplied) RGBA, over ``background``."""
    rgb = np.ascontiguousarray(rgba[..., :3])
    alpha = rgba[..., 3]
    if alpha.min() == 255:
        return rgb
    a = alpha[..., None].astype(np.uint16)
    bg = np.asarray(background, np.uint16)
    return ((rgb * a + bg * (255 - a) + 127) // 255).astype(np.uint8)


def slide_source(
    path: Path,
    slide: Any,
    *,
    reader: str,
    make_level: Callable[[int, tuple[int, int], tuple[int, int]], LazyLevel],
    close: Callable[[], None],
    extra: dict[str, Any] | None = None,
) -> Source:
    """A Source over an open OpenSlide slide; ``make_level(i, shape_yx, tile_yx)`` gives
    each level's LazyLevel. Shared by the OpenSlide and tiff-tiles readers."""
    spacing, metadata = slide_metadata(slide)
    if extra:
        metadata.update(extra)
    levels = []
    for i, (w, h) in enumerate(slide.level_dimensions):
        tile_yx = tuple(metadata["tile_sizes_yx"][i])
        lazy = make_level(i, (h, w), tile_yx)
        chunks = (grouped_chunk(tile_yx[0]), grouped_chunk(tile_yx[1]), 3)
        levels.append(as_dask(lazy, chunks, name=level_name(reader, path, lazy.signature, i)))
    vendor = metadata["vendor"]
    return Source(
        path=path,
        format=VENDOR_FORMATS.get(vendor, f"whole-slide image ({vendor})"),
        reader=reader,
        levels=levels,
        axes="YXC",
        spacing=spacing,
        spacing_unit="µm" if spacing else None,
        metadata=metadata,
        _close=close,
    )


def _dicom_wsi_file(folder: Path) -> Path | None:
    """A file of a DICOM whole-slide image in ``folder`` that OpenSlide recognises."""
    import openslide

    for candidate in sorted(folder.iterdir()):
        dicom_like = candidate.is_file() and candidate.suffix.lower() in (".dcm", "")
        if dicom_like and openslide.OpenSlide.detect_format(str(candidate)) == "dicom":
            return candidate
    return None


class OpenSlideReader:
    """Opens what OpenSlide recognises, except OME-TIFF and TIFFs that are not 8-bit
    colour (tifffile keeps their channels and bit depth)."""

    name = "openslide"

    def open(self, path: Path) -> Source | None:
        import openslide

        if path.is_dir():
            found = _dicom_wsi_file(path)
            if found is None:
                return None
            path = found
        vendor = openslide.OpenSlide.detect_format(str(path))
        if vendor is None:
            if path.suffix.lower() in SLIDE_ONLY_SUFFIXES:
                if is_tiff(path):
                    open_tiff(path).close()  # names what is wrong, if tifffile sees it
                msg = (
                    f"this {path.suffix} file is not a slide OpenSlide can read: it is "
                    "damaged, truncated or not what its name says"
                )
                raise CorruptFile(msg, path=path)
            return None
        if vendor == "generic-tiff" and not _is_rgb8_slide(path):
            return None
        if is_tiff(path):
            open_tiff(path).close()  # truncated copies fail here, naming the page
        signature = FileSignature.of(path)
        slide = open_slide(path)
        try:
            background = background_rgb(slide_metadata(slide)[1])

            def make_level(i: int, shape_yx: tuple[int, int], tile_yx: tuple) -> OpenSlideLevel:
                return OpenSlideLevel(
                    path, signature, i, shape_yx, slide.level_downsamples[i], background
                )

            key = ("openslide", str(path), signature)
            return slide_source(
                path,
                slide,
                reader=self.name,
                make_level=make_level,
                close=lambda: close_handles(key),
            )
        finally:
            slide.close()


def _is_rgb8_slide(path: Path) -> bool:
    """A generic TIFF OpenSlide should serve: 8-bit RGB(A)/YCbCr, not OME-TIFF, and not a
    pyramid in SubIFDs (OpenSlide would see only its first level; tifffile sees all)."""
    try:
        tif = open_tiff(path)
    except CorruptFile:
        return True  # let OpenSlide report what is wrong
    with tif:
        page = tif.pages.first
        if tif.is_ome or page.subifds:
            return False
        return (
            page.bitspersample == 8
            and page.photometric in (2, 6)
            and page.samplesperpixel in (3, 4)
        )
