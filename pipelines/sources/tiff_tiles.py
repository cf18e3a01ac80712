"""The fast path for Aperio SVS and generic tiled TIFF: native tiles, decoded directly.

OpenSlide composites every ``read_region`` through cairo with a shared tile cache;
for tile-aligned reads that is mostly overhead. This reader, like tiffslide and
cuCIM, reads each tile's bytes with ``os.pread`` (no shared file position, so any
number of threads read at once) and decodes them with imagecodecs (libjpeg-turbo,
zlib, LZW; the GIL is released while decoding).

It serves only what it decodes exactly as OpenSlide does, so the two paths return
identical pixels for aligned tiles (bit-identical JPEG decode: the same
libjpeg-turbo, the JPEG colour space taken from the TIFF photometric tag exactly as
OpenSlide does, JPEGTables honoured, chroma upsampling by libjpeg-turbo's default).
It declines (returns None, leaving the file to OpenSlide) anything else: other
vendors (NDPI, MRXS, SCN, BIF, Philips...), JPEG 2000 SVS, OME-TIFF, non-8-bit or
non-RGB TIFFs, planar or predictor variants it does not know, and pyramids whose
levels OpenSlide would arrange differently.

Metadata (levels, MPP, objective power, vendor properties) comes from OpenSlide
itself at open time, so both readers describe a file identically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tessera.pipelines.errors import CorruptFile
from tessera.pipelines.sources.base import Source
from tessera.pipelines.sources.lazy import (
    FileSignature,
    LazyLevel,
    close_fd,
    per_process,
    read_at,
    tile_grid_boxes,
)
from tessera.pipelines.sources.openslide_reader import (
    background_rgb,
    open_slide,
    slide_metadata,
    slide_source,
)
from tessera.pipelines.sources.tiff_layout import is_tiff, open_tiff

#: TIFF compression tag values this reader decodes.
COMPRESSIONS = {1: "none", 5: "LZW", 7: "JPEG", 8: "deflate", 32946: "deflate"}
_PHOTOMETRIC_RGB, _PHOTOMETRIC_YCBCR = 2, 6


@dataclass(frozen=True)
class TileCodec:
    """How the tiles of one TIFF page are stored: everything needed to decode one."""

    compression: int
    photometric: int
    predictor: int
    tile_yx: tuple[int, int]
    jpegtables: bytes | None

    def decode(self, data: bytes) -> np.ndarray:
        """One full tile as uint8 (tile_h, tile_w, 3) RGB."""
        import imagecodecs

        th, tw = self.tile_yx
        if self.compression == 7:
            colorspace = "RGB" if self.photometric == _PHOTOMETRIC_RGB else "YCBCR"
            tile = imagecodecs.jpeg8_decode(
                data, tables=self.jpegtables, colorspace=colorspace, outcolorspace="RGB"
            )
            if tile.shape != (th, tw, 3):
                msg = f"JPEG tile is {tile.shape}, expected {(th, tw, 3)}"
                raise ValueError(msg)
            return tile
        if self.compression == 5:
            raw = imagecodecs.lzw_decode(data)
        elif self.compression in (8, 32946):
            raw = imagecodecs.zlib_decode(data)
        else:
            raw = data
        tile = np.frombuffer(raw, np.uint8)[: th * tw * 3]
        if tile.size != th * tw * 3:
            msg = f"tile holds {tile.size} bytes, expected {th * tw * 3}"
            raise ValueError(msg)
        tile = tile.reshape(th, tw, 3)
        if self.predictor == 2:
            tile = imagecodecs.delta_decode(tile, axis=-2)
        return tile


def page_codec(page: Any) -> TileCodec | str:
    """The page's ``TileCodec``, or why this reader cannot decode it exactly."""
    if not page.is_tiled:
        return "not tiled"
    if page.compression not in COMPRESSIONS:
        return f"compression {page.compression!r}"
    if page.bitspersample != 8 or page.sampleformat != 1:
        return f"{page.bitspersample}-bit samples (format {page.sampleformat!r})"
    if page.samplesperpixel != 3 or page.extrasamples:
        return f"{page.samplesperpixel} samples per pixel"
    if page.planarconfig != 1:
        return "planar (separate) samples"
    if page.tiledepth != 1:
        return "volumetric tiles"
    photometric = int(page.photometric)
    if photometric not in (_PHOTOMETRIC_RGB, _PHOTOMETRIC_YCBCR):
        return f"photometric {page.photometric!r}"
    if photometric == _PHOTOMETRIC_YCBCR and page.compression != 7:
        return "YCbCr without JPEG"
    predictor = int(page.predictor)
    if predictor not in (1, 2) or (predictor == 2 and page.compression not in (5, 8, 32946)):
        return f"predictor {page.predictor!r}"
    if int(page.tags.valueof(274, 1)) != 1:  # Orientation
        return "orientation other than top-left"
    if int(page.tags.valueof(266, 1)) != 1:  # FillOrder
        return "fill order"
    return TileCodec(
        compression=int(page.compression),
        photometric=photometric,
        predictor=predictor,
        tile_yx=(int(page.tilelength), int(page.tilewidth)),
        jpegtables=page.jpegtables if page.compression == 7 else None,
    )


class TiffTileLevel(LazyLevel):
    """One pyramid level as a lazy (y, x, 3) uint8 array of natively decoded tiles.

    Pickles to its parameters; the tile index (offsets, byte counts) is read from the
    file once per process, the bytes with ``read_at``.
    """

    def __init__(
        self,
        path: Path,
        signature: FileSignature,
        page_index: int,
        shape_yx: tuple[int, int],
        codec: TileCodec,
        background: tuple[int, int, int],
    ) -> None:
        super().__init__(path, signature, (shape_yx[0], shape_yx[1], 3), np.uint8)
        self.page_index = page_index
        self.codec = codec
        self.background = background

    @property
    def tile_yx(self) -> tuple[int, int]:
        return self.codec.tile_yx

    @property
    def grid_rc(self) -> tuple[int, int]:
        """Number of tile rows and columns."""
        th, tw = self.tile_yx
        return (-(-self.shape[0] // th), -(-self.shape[1] // tw))

    def _index(self) -> tuple[np.ndarray, np.ndarray]:
        """(offsets, byte counts) of this level's tiles, parsed once per process."""

        def build() -> tuple[np.ndarray, np.ndarray]:
            self.signature.check(self.path)
            with open_tiff(self.path) as tif:
                page = tif.pages[self.page_index]
                return (
                    np.asarray(page.dataoffsets, np.int64),
                    np.asarray(page.databytecounts, np.int64),
                )

        return per_process(("tiff-tiles", str(self.path), self.signature, self.page_index), build)

    def read_tile(self, tile_rc: tuple[int, int]) -> np.ndarray:
        """Tile (row, column) of this level, decoded, cropped to the image: (h, w, 3)."""
        offsets, counts = self._index()
        rows, cols = self.grid_rc
        r, c = tile_rc
        th, tw = self.tile_yx
        h, w = min(th, self.shape[0] - r * th), min(tw, self.shape[1] - c * tw)
        i = r * cols + c
        if not (0 <= r < rows and 0 <= c < cols) or i >= len(offsets):
            msg = f"tile {tile_rc} is outside the {rows} x {cols} tile grid"
            raise IndexError(msg)
        if counts[i] == 0:  # a tile never written (seen in the wild): background, as OpenSlide
            return np.broadcast_to(np.asarray(self.background, np.uint8), (h, w, 3)).copy()
        data = read_at(self.path, int(offsets[i]), int(counts[i]))
        try:
            tile = self.codec.decode(data)
        except Exception as exc:
            msg = (
                f"tile {tile_rc} of page {self.page_index} cannot be decoded ({exc}); "
                "the file is damaged: copy it again"
            )
            raise CorruptFile(msg, path=self.path) from exc
        return tile[:h, :w]

    def read(self, start: tuple[int, ...], stop: tuple[int, ...]) -> np.ndarray:
        (y0, x0, c0), (y1, x1, c1) = start, stop
        th, tw = self.tile_yx
        tiles = tile_grid_boxes((y0, x0), (y1, x1), (th, tw))
        if len(tiles) == 1:
            r, c = tiles[0]
            tile = self.read_tile((r, c))
            return tile[y0 - r * th : y1 - r * th, x0 - c * tw : x1 - c * tw, c0:c1]
        out = np.empty((y1 - y0, x1 - x0, c1 - c0), np.uint8)
        for r, c in tiles:
            tile = self.read_tile((r, c))
            ty0, tx0 = r * th, c * tw
            sy0, sx0 = max(y0, ty0), max(x0, tx0)
            sy1, sx1 = min(y1, ty0 + tile.shape[0]), min(x1, tx0 + tile.shape[1])
            out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = tile[
                sy0 - ty0 : sy1 - ty0, sx0 - tx0 : sx1 - tx0, c0:c1
            ]
        return out


class TiffTileReader:
    """Aperio SVS and generic tiled TIFF with JPEG/LZW/deflate/raw RGB tiles."""

    name = "tiff-tiles"

    def open(self, path: Path) -> Source | None:
        levels = self.open_levels(path)
        if levels is None:
            return None
        slide = open_slide(path)
        try:
            return slide_source(
                path,
                slide,
                reader=self.name,
                make_level=lambda i, shape_yx, tile_yx: levels[i],
                close=lambda: close_fd(path),
                extra={"compression": COMPRESSIONS[levels[0].codec.compression], "fast_path": True},
            )
        finally:
            slide.close()

    def open_levels(self, path: Path) -> list[TiffTileLevel] | None:
        """The fast-path levels of ``path`` (level 0 first), or None if it declines the file.

        For callers that want tiles without dask (``read_tile``), e.g. the read benchmark.
        """
        import openslide

        if not path.is_file() or not is_tiff(path):
            return None
        vendor = openslide.OpenSlide.detect_format(str(path))
        if vendor not in ("aperio", "generic-tiff"):
            return None
        signature = FileSignature.of(path)
        with open_tiff(path) as tif:
            if tif.is_ome or tif.pages.first.subifds:
                return None  # tifffile reads OME metadata and SubIFD pyramids
            candidates: dict[tuple[int, int], tuple[int, Any]] = {}
            for i, page in enumerate(tif.pages):
                if page.is_tiled:
                    candidates.setdefault((int(page.imagelength), int(page.imagewidth)), (i, page))
            slide = open_slide(path)
            try:
                levels = []
                background = background_rgb(slide_metadata(slide)[1])
                for w, h in slide.level_dimensions:
                    if (h, w) not in candidates:
                        return None  # OpenSlide arranges this pyramid differently
                    i, page = candidates[(h, w)]
                    codec = page_codec(page)
                    if isinstance(codec, str):
                        return None  # not exactly decodable here: OpenSlide serves it
                    levels.append(TiffTileLevel(path, signature, i, (h, w), codec, background))
                return levels
            finally:
                slide.close()
