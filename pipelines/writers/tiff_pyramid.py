"""Streaming writer for pyramidal tiled TIFF: Aperio SVS, generic tiled TIFF, OME-TIFF.

``write_pyramid_tiff`` renders level 0 one band of tile rows at a time (each band in
segments a few thousand pixels wide), encodes its tiles in a small thread pool, and
streams them into the file with tifffile. While a level is written, its area-averaged
reduction (by ``level_downsample``) goes into a raw disk-backed buffer next to the
output; the next level is then read back from that buffer band by band. So memory
stays at a few bands whatever the slide size (a 100k x 100k slide needs no more RAM
than a 10k one), and the disk holds at most two reduced levels besides the output.

Flavours:
- ``"svs"``: the Aperio layout OpenSlide recognises (vendor ``aperio``): level 0, a
  stripped thumbnail, the reduced levels; ``ImageDescription`` carries
  ``AppMag`` and ``MPP``; JPEG tiles share one ``JPEGTables`` like Aperio's own files.
- ``"tiff"``: a generic tiled pyramid, one page per level (reduced levels flagged
  ``NewSubfileType=1``), resolution tags in pixels per centimetre; OpenSlide reads it
  as ``generic-tiff``, libvips and tifffile as a pyramid.
- ``"ome"``: OME-TIFF with the reduced levels in SubIFDs and ``PhysicalSizeX/Y`` in µm.

Why by hand: tifffile writes tiles from iterators but neither builds the pyramid
levels nor streams them; pyvips does both but cannot write the Aperio layout or an
arbitrary Python renderer without holding the image.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np

from tessera.pipelines.progress import NullProgress, ProgressReporter

Compression = Literal["jpeg", "deflate", "lzw", "none"]
Flavour = Literal["svs", "tiff", "ome"]

#: Stop adding levels once the long side of the coarsest one is at most this (pixels).
COARSEST_LONG_SIDE_PX = 1024
#: Width of the level-0 segments rendered at once (pixels, rounded to whole tiles).
SEGMENT_WIDTH_PX = 8192
#: Long side of the Aperio thumbnail page (pixels, at most).
THUMBNAIL_LONG_SIDE_PX = 768

_TIFF_COMPRESSION = {"jpeg": "jpeg", "deflate": "adobe_deflate", "lzw": "lzw", "none": None}


def pyramid_level_shapes(
    l0_shape_yx: tuple[int, int], *, n_levels: int | None, level_downsample: int
) -> list[tuple[int, int]]:
    """Level sizes (rows, columns) of the pyramid: each ``ceil(previous / downsample)``.

    With ``n_levels=None`` levels are added until the coarsest one's long side is at
    most ``COARSEST_LONG_SIDE_PX`` (1024 px).
    """
    shapes = [(int(l0_shape_yx[0]), int(l0_shape_yx[1]))]
    while True:
        if n_levels is not None and len(shapes) >= n_levels:
            break
        h, w = shapes[-1]
        if n_levels is None and max(h, w) <= COARSEST_LONG_SIDE_PX:
            break
        if h == 1 and w == 1:
            break
        shapes.append((math.ceil(h / level_downsample), math.ceil(w / level_downsample)))
    return shapes


def write_pyramid_tiff(
    path: Path,
    *,
    l0_shape_yx: tuple[int, int],
    render_region: Callable[[int, int, int, int], np.ndarray],
    tile_size_px: int = 256,
    n_levels: int | None = None,
    level_downsample: int = 4,
    compression: Compression = "jpeg",
    jpeg_quality: int = 90,
    mpp: float | None = None,
    app_mag: float | None = None,
    flavour: Flavour = "svs",
    progress: ProgressReporter | None = None,
    jpeg_colorspace: Literal["ycbcr", "rgb"] = "ycbcr",
    workers: int | None = None,
) -> None:
    """Write an RGB image, rendered on demand, as a pyramidal tiled TIFF.

    Args:
        path: output file (.svs, .tif, .ome.tif). Written to ``<name>.partial`` in
            the same folder and renamed when complete, so a crash never leaves a
            file that looks finished.
        l0_shape_yx: level-0 size in pixels (rows, columns).
        render_region: ``(l0_y0, l0_x0, h, w) -> uint8 (h, w, 3)`` RGB pixels of level
            0. Called for bands ``tile_size_px`` high and at most ``SEGMENT_WIDTH_PX``
            wide, top to bottom, left to right; each pixel is asked for once.
        tile_size_px: tile width and height (pixels); a multiple of 16 (TIFF) and of
            ``level_downsample``.
        n_levels: number of pyramid levels; None adds levels until the coarsest
            one's long side is at most 1024 px.
        level_downsample: size ratio between consecutive levels (area averaging).
        compression: tile compression. JPEG is lossy (``jpeg_quality`` 1-100).
        mpp: level-0 pixel size in µm per pixel (Aperio ``MPP``, TIFF resolution,
            OME ``PhysicalSizeX/Y``); None when unknown.
        app_mag: objective power of the scan (Aperio ``AppMag``), e.g. 20 or 40.
        flavour: ``"svs"`` (Aperio), ``"tiff"`` (generic pyramid, a page per level)
            or ``"ome"`` (OME-TIFF, levels in SubIFDs).
        progress: told the total number of tiles, advanced per band.
        jpeg_colorspace: ``"ycbcr"`` (photometric YCbCr, 2x2 chroma subsampling, as
            most scanners write) or ``"rgb"`` (photometric RGB, RGB-coded JPEG without
            subsampling, as classic Aperio files do).
        workers: threads encoding tiles (default: up to 4, at most the CPU count).

    Raises:
        ValueError: bad sizes or arguments (nothing is written).
    """
    path = Path(path)
    h0, w0 = int(l0_shape_yx[0]), int(l0_shape_yx[1])
    ts = int(tile_size_px)
    ds = int(level_downsample)
    _check_arguments(h0, w0, ts, ds, compression, flavour, jpeg_quality, jpeg_colorspace)
    shapes = pyramid_level_shapes((h0, w0), n_levels=n_levels, level_downsample=ds)
    progress = progress if progress is not None else NullProgress()
    total_tiles = sum(math.ceil(h / ts) * math.ceil(w / ts) for h, w in shapes)
    encoder = _TileEncoder(compression, jpeg_quality, jpeg_colorspace, flavour == "svs")
    n_workers = workers if workers is not None else max(1, min(4, os.cpu_count() or 1))

    import tifffile

    partial = path.with_name(path.name + ".partial")
    raw_total = sum(h * w * 3 for h, w in shapes)
    bigtiff = raw_total > 2**31  # compressed size is unknown up front: be safe
    progress.start(total_tiles, f"writing {path.name}")
    try:
        with (
            tempfile.TemporaryDirectory(prefix=".tessera-pyramid-", dir=path.parent) as tmp,
            ThreadPoolExecutor(n_workers, thread_name_prefix="tessera-tiff-encode") as pool,
            tifffile.TiffWriter(partial, bigtiff=bigtiff, ome=flavour == "ome") as tw,
        ):
            source: _BandSource = _RenderedLevel(render_region, (h0, w0))
            for level, (lh, lw) in enumerate(shapes):
                next_buffer = None
                if level + 1 < len(shapes):
                    next_buffer = _LevelBuffer(
                        Path(tmp) / f"level{level + 1}.raw", shapes[level + 1]
                    )
                tiles = _level_tiles(source, ts, ds, encoder, pool, next_buffer, progress)
                tw.write(
                    tiles,
                    shape=(lh, lw, 3),
                    dtype=np.uint8,
                    **_page_options(
                        flavour, level, shapes, ts, encoder, compression, jpeg_quality, mpp, app_mag
                    ),
                )
                source.close()
                if next_buffer is None:
                    break
                next_buffer.finish()
                if flavour == "svs" and level == 0:
                    _write_svs_thumbnail(tw, next_buffer, (h0, w0), jpeg_quality)
                source = next_buffer
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        progress.close()


# ---- arguments and tags -----------------------------------------------------------------


def _check_arguments(
    h0: int,
    w0: int,
    ts: int,
    ds: int,
    compression: str,
    flavour: str,
    jpeg_quality: int,
    jpeg_colorspace: str,
) -> None:
    if h0 < 1 or w0 < 1:
        msg = f"l0_shape_yx must be positive, got {(h0, w0)}"
        raise ValueError(msg)
    if ts < 16 or ts % 16:
        msg = f"tile_size_px must be a positive multiple of 16 (TIFF tiles), got {ts}"
        raise ValueError(msg)
    if ds < 2 or ts % ds:
        msg = f"level_downsample must be >= 2 and divide tile_size_px={ts}, got {ds}"
        raise ValueError(msg)
    if compression not in _TIFF_COMPRESSION:
        msg = f"compression must be one of {sorted(_TIFF_COMPRESSION)}, got {compression!r}"
        raise ValueError(msg)
    if flavour not in ("svs", "tiff", "ome"):
        msg = f"flavour must be 'svs', 'tiff' or 'ome', got {flavour!r}"
        raise ValueError(msg)
    if not 1 <= jpeg_quality <= 100:
        msg = f"jpeg_quality must be within 1..100, got {jpeg_quality}"
        raise ValueError(msg)
    if jpeg_colorspace not in ("ycbcr", "rgb"):
        msg = f"jpeg_colorspace must be 'ycbcr' or 'rgb', got {jpeg_colorspace!r}"
        raise ValueError(msg)


def _aperio_description(
    shapes: list[tuple[int, int]],
    level: int,
    ts: int,
    compression: str,
    jpeg_quality: int,
    jpeg_colorspace: str,
    mpp: float | None,
    app_mag: float | None,
) -> str:
    """ImageDescription in the Aperio layout: a header line, then ``key = value`` fields.

    OpenSlide recognises the vendor by the leading "Aperio" and turns each field of
    the first page into an ``aperio.<key>`` property (``AppMag``, ``MPP``).
    """
    from tessera import __version__

    h0, w0 = shapes[0]
    codec = {
        "jpeg": f"JPEG/{'YCC' if jpeg_colorspace == 'ycbcr' else 'RGB'} Q={jpeg_quality}",
        "deflate": "Deflate",
        "lzw": "LZW",
        "none": "Raw",
    }[compression]
    head = f"Aperio Image Library Tessera {__version__} \r\n{w0}x{h0} [0,0 {w0}x{h0}] ({ts}x{ts})"
    if level > 0:
        head += f" -> {shapes[level][1]}x{shapes[level][0]}"
    fields = [f"{head} {codec}"]
    if app_mag is not None:
        fields.append(f"AppMag = {app_mag:g}")
    if mpp is not None:
        fields.append(f"MPP = {mpp:.6g}")
    fields.append("Software = Tessera")
    return "|".join(fields)


def _page_options(
    flavour: str,
    level: int,
    shapes: list[tuple[int, int]],
    ts: int,
    encoder: _TileEncoder,
    compression: str,
    jpeg_quality: int,
    mpp: float | None,
    app_mag: float | None,
) -> dict:
    """tifffile ``write`` keywords for one pyramid level of the given flavour."""
    options: dict = {
        "tile": (ts, ts),
        "compression": _TIFF_COMPRESSION[compression],
        "photometric": "rgb",
        "planarconfig": "contig",
        "metadata": None,
        "software": "Tessera",
    }
    if compression == "jpeg":
        # tifffile derives PhotometricInterpretation and YCbCrSubSampling from these
        options["subsampling"] = encoder.subsampling or (1, 1)
        options["compressionargs"] = {"outcolorspace": encoder.photometric.upper()}
    if encoder.jpegtables is not None:
        options["jpegtables"] = encoder.jpegtables
    ds_yx = (shapes[0][0] / shapes[level][0], shapes[0][1] / shapes[level][1])
    if flavour == "svs":
        options["description"] = _aperio_description(
            shapes, level, ts, compression, jpeg_quality, encoder.colorspace, mpp, app_mag
        )
    elif flavour == "tiff":
        if level > 0:
            options["subfiletype"] = 1
        if mpp is not None:
            # pixels per centimetre at this level
            options["resolution"] = (1e4 / (mpp * ds_yx[1]), 1e4 / (mpp * ds_yx[0]))
            options["resolutionunit"] = "CENTIMETER"
    else:  # ome
        if level == 0:
            meta: dict = {"axes": "YXS", "Name": "image"}
            if mpp is not None:
                meta.update(
                    PhysicalSizeX=mpp,
                    PhysicalSizeXUnit="µm",
                    PhysicalSizeY=mpp,
                    PhysicalSizeYUnit="µm",
                )
            if app_mag is not None:
                meta["NominalMagnification"] = app_mag
            options["metadata"] = meta
            options["subifds"] = len(shapes) - 1
        else:
            options["subfiletype"] = 1
        if mpp is not None:
            options["resolution"] = (1e4 / (mpp * ds_yx[1]), 1e4 / (mpp * ds_yx[0]))
            options["resolutionunit"] = "CENTIMETER"
    return options


# ---- tile encoding ------------------------------------------------------------------------


class _TileEncoder:
    """Encodes one RGB tile to the bytes TIFF stores for it (thread-safe).

    For JPEG with shared tables (the Aperio way), every tile is encoded with the same
    quantisation and standard Huffman tables; those are stored once in ``JPEGTables``
    and stripped from each tile, leaving an "abbreviated" JPEG stream per tile.
    """

    def __init__(
        self, compression: str, jpeg_quality: int, colorspace: str, shared_tables: bool
    ) -> None:
        self.compression = compression
        self.quality = int(jpeg_quality)
        self.colorspace = colorspace
        self.photometric = "rgb"
        self.subsampling: tuple[int, int] | None = None
        self.jpegtables: bytes | None = None
        if compression == "jpeg":
            if colorspace == "ycbcr":
                self.photometric = "ycbcr"
                self.subsampling = (2, 2)
            if shared_tables:
                probe = self._jpeg(np.zeros((16, 16, 3), np.uint8))
                self.jpegtables, _ = split_jpeg_tables(probe)

    def _jpeg(self, tile: np.ndarray) -> bytes:
        import imagecodecs

        ycbcr = self.colorspace == "ycbcr"
        return imagecodecs.jpeg8_encode(
            tile,
            level=self.quality,
            colorspace="RGB",
            outcolorspace="YCBCR" if ycbcr else "RGB",
            subsampling="420" if ycbcr else "444",
            optimize=False,  # standard Huffman tables: identical in every tile
        )

    def encode(self, tile: np.ndarray) -> bytes:
        import imagecodecs

        if self.compression == "jpeg":
            stream = self._jpeg(tile)
            if self.jpegtables is not None:
                tables, abbreviated = split_jpeg_tables(stream)
                if tables == self.jpegtables:
                    return abbreviated
            return stream  # tables inside the tile override JPEGTables
        if self.compression == "deflate":
            return imagecodecs.zlib_encode(tile, level=6)
        if self.compression == "lzw":
            return imagecodecs.lzw_encode(tile)
        return np.ascontiguousarray(tile).tobytes()


_SOI, _EOI, _SOS, _DQT, _DHT = 0xD8, 0xD9, 0xDA, 0xDB, 0xC4


def split_jpeg_tables(stream: bytes) -> tuple[bytes, bytes]:
    """Split a complete JPEG stream into (tables-only stream, abbreviated image stream).

    The tables stream is SOI + every DQT/DHT segment + EOI (what TIFF's ``JPEGTables``
    holds); the image stream is the original without those segments.
    """
    if stream[:2] != b"\xff\xd8":
        msg = "not a JPEG stream (no SOI marker)"
        raise ValueError(msg)
    tables = bytearray(b"\xff\xd8")
    image = bytearray(b"\xff\xd8")
    pos = 2
    while pos + 4 <= len(stream):
        if stream[pos] != 0xFF:
            msg = f"bad JPEG marker at byte {pos}"
            raise ValueError(msg)
        marker = stream[pos + 1]
        if marker == _SOS:
            image += stream[pos:]
            break
        length = int.from_bytes(stream[pos + 2 : pos + 4], "big")
        segment = stream[pos : pos + 2 + length]
        if marker in (_DQT, _DHT):
            tables += segment
        else:
            image += segment
        pos += 2 + length
    tables += b"\xff\xd9"
    return bytes(tables), bytes(image)


# ---- level sources and buffers -----------------------------------------------------------


class _BandSource:
    """Pixels of one level, handed out as (y0, x0, h, w) segments."""

    shape_yx: tuple[int, int]

    def segment(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _RenderedLevel(_BandSource):
    """Level 0: asks the caller's renderer for each segment and checks what it returns."""

    def __init__(
        self, render: Callable[[int, int, int, int], np.ndarray], shape_yx: tuple[int, int]
    ):
        self.render = render
        self.shape_yx = shape_yx

    def segment(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        arr = np.asarray(self.render(y0, x0, h, w))
        if arr.shape != (h, w, 3) or arr.dtype != np.uint8:
            msg = (
                f"render_region({y0}, {x0}, {h}, {w}) returned {arr.dtype} {arr.shape}; "
                f"expected uint8 ({h}, {w}, 3) RGB"
            )
            raise ValueError(msg)
        return arr


class _LevelBuffer(_BandSource):
    """A reduced level on disk, row-major uint8 RGB, written and read with pwrite/pread.

    Plain file I/O rather than a memory map: mapped pages would count towards the
    process's resident memory, while the page cache does not.
    """

    def __init__(self, path: Path, shape_yx: tuple[int, int]) -> None:
        self.path = path
        self.shape_yx = shape_yx
        self._row_bytes = shape_yx[1] * 3
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0))
        os.ftruncate(self._fd, shape_yx[0] * self._row_bytes)

    def write(self, y0: int, x0: int, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block)
        for r in range(block.shape[0]):
            os.pwrite(self._fd, block[r].tobytes(), (y0 + r) * self._row_bytes + x0 * 3)

    def finish(self) -> None:
        """Called once the level is complete (reads may start)."""

    def segment(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        out = np.empty((h, w, 3), np.uint8)
        if x0 == 0 and w == self.shape_yx[1]:
            data = os.pread(self._fd, h * self._row_bytes, y0 * self._row_bytes)
            out[:] = np.frombuffer(data, np.uint8).reshape(h, w, 3)
            return out
        for r in range(h):
            data = os.pread(self._fd, w * 3, (y0 + r) * self._row_bytes + x0 * 3)
            out[r] = np.frombuffer(data, np.uint8).reshape(w, 3)
        return out

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self.path.unlink(missing_ok=True)


def area_reduce(block: np.ndarray, factor: int) -> np.ndarray:
    """Mean of ``factor`` x ``factor`` pixel blocks of a (h, w, C) uint8 array, rounded.

    Partial blocks at the bottom/right edge average the pixels they have (edge
    replicated), so the result is ``ceil(h / factor) x ceil(w / factor)``.
    """
    h, w = block.shape[:2]
    ph, pw = (-h) % factor, (-w) % factor
    if ph or pw:
        block = np.pad(block, ((0, ph), (0, pw), (0, 0)), mode="edge")
    hh, ww = block.shape[0] // factor, block.shape[1] // factor
    sums = block.reshape(hh, factor, ww, factor, -1).sum(axis=(1, 3), dtype=np.uint32)
    n = factor * factor
    return ((sums + n // 2) // n).astype(np.uint8)


def _level_tiles(
    source: _BandSource,
    ts: int,
    ds: int,
    encoder: _TileEncoder,
    pool: ThreadPoolExecutor,
    next_buffer: _LevelBuffer | None,
    progress: ProgressReporter,
) -> Iterator[bytes]:
    """Encoded tiles of one level in TIFF order (row-major), feeding the next level's buffer.

    Each band of one tile row is taken in segments of whole tiles; the segment's tiles
    are encoded in the pool while the next segment is fetched.
    """
    lh, lw = source.shape_yx
    seg_tiles = max(1, SEGMENT_WIDTH_PX // ts)
    pending = None
    for y0 in range(0, lh, ts):
        h = min(ts, lh - y0)
        for x0 in range(0, lw, seg_tiles * ts):
            w = min(seg_tiles * ts, lw - x0)
            seg = source.segment(y0, x0, h, w)
            if next_buffer is not None:
                next_buffer.write(y0 // ds, x0 // ds, area_reduce(seg, ds))
            tiles = [_pad_tile(seg[:, tx : tx + ts], ts) for tx in range(0, w, ts)]
            futures = [pool.submit(encoder.encode, t) for t in tiles]
            if pending is not None:
                yield from (f.result() for f in pending)
            pending = futures
        progress.advance(math.ceil(lw / ts))
    if pending is not None:
        yield from (f.result() for f in pending)


def _pad_tile(tile: np.ndarray, ts: int) -> np.ndarray:
    """A full ``ts`` x ``ts`` tile; edge tiles are padded by replicating their last pixels
    (smoother than zeros for JPEG, and never visible: readers crop to the image size)."""
    h, w = tile.shape[:2]
    if h == ts and w == ts:
        return np.ascontiguousarray(tile)
    return np.pad(tile, ((0, ts - h), (0, ts - w), (0, 0)), mode="edge")


def _write_svs_thumbnail(
    tw: object, level1: _LevelBuffer, l0_shape_yx: tuple[int, int], jpeg_quality: int
) -> None:
    """Aperio's second page: a small stripped JPEG overview, reduced from level 1."""
    h1, w1 = level1.shape_yx
    factor = max(1, math.ceil(max(h1, w1) / THUMBNAIL_LONG_SIDE_PX))
    rows = []
    band = factor * max(1, 256 // factor)
    for y0 in range(0, h1, band):
        h = min(band, h1 - y0)
        rows.append(area_reduce(level1.segment(y0, 0, h, w1), factor))
    thumb = np.concatenate(rows, axis=0)
    th, tw_ = thumb.shape[:2]
    desc = (
        f"Aperio Image Library Tessera \r\n{l0_shape_yx[1]}x{l0_shape_yx[0]} -> {tw_}x{th} - "
        "|Software = Tessera"
    )
    tw.write(  # type: ignore[attr-defined]
        thumb,
        photometric="rgb",
        compression="jpeg",
        compressionargs={"level": jpeg_quality},
        description=desc,
        metadata=None,
        software="Tessera",
        rowsperstrip=16,
    )
