"""OME-TIFF and plain TIFF through tifffile: any dtype, channels, Z/T stacks, pyramids.

The first image series of the file is the Source (its pyramid levels, from SubIFDs or
reduced pages, are the levels); other series are listed in ``metadata["series"]``.
Axes are tifffile's, with samples ("S") called "C" when there are no channels, and a
stack of planes of unknown kind ("Q"/"I") read as "Z".

Spacing, in µm: OME ``PhysicalSizeX/Y/Z`` with their units; ImageJ ``unit`` and
``spacing`` with the resolution tags; otherwise resolution tags in centimetres, or
in inches unless the value is a screen/print default (72, 96, 300... dpi), which
says nothing about the pixel size.

Reading: tifffile parses the file once per process; each chunk's tiles or strips are
read with ``os.pread`` (``lazy.read_at``) and decoded with tifffile's own decoder for
the page, so reads from many threads never share a file position or a TiffFile (which
is not thread-safe). Uncompressed strips are read row range by row range.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tessera.pipelines.errors import CorruptFile, UnsupportedFile
from tessera.pipelines.sources.base import Source
from tessera.pipelines.sources.lazy import (
    FileSignature,
    LazyLevel,
    as_dask,
    close_fd,
    grouped_chunk,
    level_name,
    per_process,
    read_at,
)
from tessera.pipelines.sources.tiff_layout import is_tiff, open_tiff

#: Length units of OME/ImageJ metadata, in µm.
_UNIT_UM = {
    "µm": 1.0,
    "um": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "\\u00B5m": 1.0,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "Å": 1e-4,
    "angstrom": 1e-4,
    "pm": 1e-6,
    "mm": 1e3,
    "millimeter": 1e3,
    "cm": 1e4,
    "centimeter": 1e4,
    "m": 1e6,
    "meter": 1e6,
}
#: Inch resolutions that are software defaults, not a measured pixel size (dpi).
_DEFAULT_DPI = {1.0, 72.0, 96.0, 100.0, 150.0, 200.0, 300.0, 600.0, 1200.0}
#: Rows per chunk for uncompressed strips (read directly, so any number works).
_RAW_CHUNK_ROWS = 512


@dataclass
class _PageStore:
    """Where one page's segments are: its file and the offsets/byte counts (bytes)."""

    file: str
    offsets: np.ndarray
    counts: np.ndarray
    jpegtables: bytes | None


@dataclass
class _LevelIndex:
    """Everything needed to read one level, parsed once per process."""

    pages: list[_PageStore | None]
    decode: Any  # tifffile's decode closure for the keyframe (pure, thread-safe)
    jpegheader: bytes | None
    dtype: np.dtype  # stored dtype, file byte order


@dataclass(frozen=True)
class _Layout:
    """How the series' (squeezed) axes map onto pages and tifffile's normalised page
    shape (separate samples, depth, length, width, contiguous samples)."""

    lead_shape: tuple[int, ...]  # series dims that enumerate pages
    page_shape5: tuple[int, int, int, int, int]
    page_axes5: tuple[int, ...]  # for each non-leading series dim, its page-shape index
    tiled: bool
    segment_dlw: tuple[int, int, int]  # tile (depth, length, width) or (1, rows/strip, width)
    raw_rows: bool  # uncompressed strips: read any row range directly
    nodata: float


def _layout(series: Any) -> _Layout | str:
    kf = series.keyframe
    shape = tuple(int(s) for s in series.shape)
    shape5 = tuple(int(s) for s in kf.shaped)
    n_pages = len(series.pages)
    page_dims = [i for i, s in enumerate(shape5) if s != 1]
    page_sizes = tuple(shape5[i] for i in page_dims)
    for k in range(len(shape) + 1):
        if math.prod(shape[:k]) == n_pages and shape[k:] == page_sizes:
            break
    else:
        return f"series shape {shape} does not split into {n_pages} pages of {shape5}"
    if kf.is_tiled:
        seg = (int(kf.tiledepth), int(kf.tilelength), int(kf.tilewidth))
    else:
        if shape5[1] != 1:
            return "volumetric strips"
        seg = (1, min(int(kf.rowsperstrip) or shape5[2], shape5[2]), shape5[3])
    raw = (
        not kf.is_tiled
        and kf.compression == 1
        and kf.fillorder == 1
        and kf.dtype is not None
        and kf.bitspersample == kf.dtype.itemsize * 8
        and kf.predictor == 1
    )
    return _Layout(
        lead_shape=shape[:k],
        page_shape5=shape5,  # type: ignore[arg-type]
        page_axes5=tuple(page_dims),
        tiled=bool(kf.is_tiled),
        segment_dlw=seg,
        raw_rows=raw,
        nodata=float(kf.nodata or 0),
    )


class TiffSeriesLevel(LazyLevel):
    """One level of one TIFF image series as a lazy array in the series' axes."""

    def __init__(
        self,
        path: Path,
        signature: FileSignature,
        series_index: int,
        level: int,
        shape: tuple[int, ...],
        dtype: np.dtype,
        layout: _Layout,
    ) -> None:
        super().__init__(path, signature, shape, dtype)
        self.series_index = series_index
        self.level = level
        self.layout = layout

    def chunks(self) -> tuple[int, ...]:
        """Native chunking: one page along leading axes, tiles/strips in the plane."""
        lay = self.layout
        d, length, w = lay.segment_dlw
        if lay.raw_rows:
            length = _RAW_CHUNK_ROWS
        native5 = (1, d, length, w, lay.page_shape5[4])
        out = [1] * len(lay.lead_shape)
        for j in lay.page_axes5:
            if j in (2, 3):
                out.append(grouped_chunk(native5[j]))
            else:
                out.append(native5[j])
        return tuple(out)

    def _index(self) -> _LevelIndex:
        """Where every page's segments are, parsed once per process."""

        def build() -> _LevelIndex:
            self.signature.check(self.path)
            with open_tiff(self.path) as tif:
                series = tif.series[self.series_index].levels[self.level]
                kf = series.keyframe
                pages: list[_PageStore | None] = []
                for page in series.pages:
                    if page is None:
                        pages.append(None)
                        continue
                    pages.append(
                        _PageStore(
                            file=str(page.parent.filehandle.path),
                            offsets=np.asarray(page.dataoffsets, np.int64),
                            counts=np.asarray(page.databytecounts, np.int64),
                            jpegtables=getattr(page, "jpegtables", None),
                        )
                    )
                return _LevelIndex(
                    pages=pages,
                    decode=kf.decode,
                    jpegheader=kf.jpegheader,
                    dtype=np.dtype(kf.dtype).newbyteorder(tif.byteorder),
                )

        key = ("tifffile", str(self.path), self.signature, self.series_index, self.level)
        return per_process(key, build)

    def read(self, start: tuple[int, ...], stop: tuple[int, ...]) -> np.ndarray:
        lay = self.layout
        index = self._index()
        nlead = len(lay.lead_shape)
        out = np.empty([b - a for a, b in zip(start, stop, strict=True)], self.dtype)
        box5 = [(0, 1)] * 5
        for axis, j in enumerate(lay.page_axes5):
            box5[j] = (start[nlead + axis], stop[nlead + axis])
        lead_ranges = [range(a, b) for a, b in zip(start[:nlead], stop[:nlead], strict=True)]
        for lead in itertools.product(*lead_ranges):
            flat = int(np.ravel_multi_index(lead, lay.lead_shape)) if nlead else 0
            page = index.pages[flat] if flat < len(index.pages) else None
            plane = self._read_page(index, page, box5)
            dst = tuple(i - a for i, a in zip(lead, start[:nlead], strict=True))
            out[dst] = plane.reshape(out.shape[nlead:])
        return out

    def _read_page(
        self, index: _LevelIndex, page: _PageStore | None, box5: list[tuple[int, int]]
    ) -> np.ndarray:
        """The box of one page in its normalised 5D shape."""
        lay = self.layout
        out = np.full([b - a for a, b in box5], lay.nodata, self.dtype)
        if page is None:
            return out
        (s0, s1), (d0, d1), (y0, y1), (x0, x1), _ = box5
        if lay.raw_rows:
            return self._read_raw_rows(index, page, box5, out)
        sd, sl, sw = lay.segment_dlw
        _, depth, length, width, _ = lay.page_shape5
        n_d, n_l, n_w = -(-depth // sd), -(-length // sl), -(-width // sw)
        for s in range(s0, s1):
            for dz in range(d0 // sd, (d1 - 1) // sd + 1):
                for r in range(y0 // sl, (y1 - 1) // sl + 1):
                    for c in range(x0 // sw, (x1 - 1) // sw + 1):
                        seg = ((s * n_d + dz) * n_l + r) * n_w + c if lay.tiled else s * n_l + r
                        self._place(index, page, seg, box5, out)
        return out

    def _place(
        self,
        index: _LevelIndex,
        page: _PageStore,
        seg: int,
        box5: list[tuple[int, int]],
        out: np.ndarray,
    ) -> None:
        if seg >= len(page.counts) or page.counts[seg] == 0:
            return  # a missing segment: nodata, as tifffile does
        data = read_at(Path(page.file), int(page.offsets[seg]), int(page.counts[seg]))
        try:
            decoded, at, _ = index.decode(
                data, seg, jpegtables=page.jpegtables, jpegheader=index.jpegheader
            )
        except Exception as exc:
            msg = f"segment {seg} cannot be decoded ({exc}); the file is damaged"
            raise CorruptFile(msg, path=page.file) from exc
        s_at, d_at, y_at, x_at, _ = at
        (s0, _), (d0, d1), (y0, y1), (x0, x1), (c0, c1) = box5
        seg_d, seg_l, seg_w = decoded.shape[:3]
        dz0, dz1 = max(d0, d_at), min(d1, d_at + seg_d)
        ry0, ry1 = max(y0, y_at), min(y1, y_at + seg_l)
        rx0, rx1 = max(x0, x_at), min(x1, x_at + seg_w)
        if dz1 <= dz0 or ry1 <= ry0 or rx1 <= rx0:
            return
        out[s_at - s0, dz0 - d0 : dz1 - d0, ry0 - y0 : ry1 - y0, rx0 - x0 : rx1 - x0] = decoded[
            dz0 - d_at : dz1 - d_at, ry0 - y_at : ry1 - y_at, rx0 - x_at : rx1 - x_at, c0:c1
        ]

    def _read_raw_rows(
        self,
        index: _LevelIndex,
        page: _PageStore,
        box5: list[tuple[int, int]],
        out: np.ndarray,
    ) -> np.ndarray:
        """Uncompressed strips: read just the rows asked for, strip by strip."""
        lay = self.layout
        (s0, s1), _, (y0, y1), (x0, x1), (c0, c1) = box5
        _, _, length, width, samples = lay.page_shape5
        rps = lay.segment_dlw[1]
        n_l = -(-length // rps)
        item = index.dtype.itemsize
        row_bytes = width * samples * item
        for s in range(s0, s1):
            for r in range(y0 // rps, (y1 - 1) // rps + 1):
                seg = s * n_l + r
                if seg >= len(page.counts) or page.counts[seg] == 0:
                    continue
                a, b = max(y0, r * rps), min(y1, (r + 1) * rps)
                offset = int(page.offsets[seg]) + (a - r * rps) * row_bytes
                data = read_at(Path(page.file), offset, (b - a) * row_bytes)
                rows = np.frombuffer(data, index.dtype).reshape(b - a, width, samples)
                out[s - s0, 0, a - y0 : b - y0] = rows[:, x0:x1, c0:c1]
        return out


# ---- metadata --------------------------------------------------------------------------------


def _tessera_axes(axes: str) -> str:
    if "S" in axes and "C" not in axes:
        axes = axes.replace("S", "C")
    for unknown in "QI":
        if unknown in axes and "Z" not in axes and sum(a in "QI" for a in axes) == 1:
            axes = axes.replace(unknown, "Z")
    return axes


def _ome_root(tif: Any) -> dict[str, Any]:
    import tifffile

    try:
        return tifffile.xml2dict(tif.ome_metadata)["OME"]
    except Exception:
        return {}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def _ome_metadata(tif: Any, series: Any) -> tuple[dict[str, float], dict[str, Any]]:
    """Physical sizes in µm per axis letter, and the OME extras worth showing."""
    ome = _ome_root(tif)
    images = _as_list(ome.get("Image"))
    named = [im for im in images if im.get("Name") and im.get("Name") == series.name]
    image = named[0] if named else images[series.index] if series.index < len(images) else {}
    pixels = image.get("Pixels", {})
    sizes: dict[str, float] = {}
    for axis in "XYZ":
        value = pixels.get(f"PhysicalSize{axis}")
        unit = str(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
        if value is not None and unit in _UNIT_UM and float(value) > 0:
            sizes[axis] = float(value) * _UNIT_UM[unit]
    extra: dict[str, Any] = {}
    names = [
        str(ch.get("Name", "")) for ch in _as_list(pixels.get("Channel")) if isinstance(ch, dict)
    ]
    if any(names):
        extra["channel_names"] = names
    if image.get("Name"):
        extra["image_name"] = str(image["Name"])
    objective_id = image.get("ObjectiveSettings", {}).get("ID")
    for instrument in _as_list(ome.get("Instrument")):
        for objective in _as_list(instrument.get("Objective")):
            if objective.get("ID") == objective_id and objective.get("NominalMagnification"):
                extra["objective_power"] = float(objective["NominalMagnification"])
    return sizes, extra


def _resolution_um(page: Any, unit_um: float | None) -> tuple[float, float] | None:
    """(y, x) pixel size in µm from the resolution tags, or None if they say nothing."""
    try:
        xres, yres = (float(v) for v in page.resolution)
    except (TypeError, ValueError):
        return None
    if xres <= 0 or yres <= 0:
        return None
    runit = int(page.resolutionunit)
    if unit_um is not None:  # ImageJ: pixels per `unit`, unit tag NONE
        per_unit = unit_um
    elif runit == 3:  # centimetre
        per_unit = 1e4
    elif runit == 2 and not (xres in _DEFAULT_DPI and yres in _DEFAULT_DPI):  # inch
        per_unit = 25400.0
    else:
        return None
    return (per_unit / yres, per_unit / xres)


def _spacing(tif: Any, series: Any, axes: str) -> tuple[tuple[float, ...] | None, dict[str, Any]]:
    sizes: dict[str, float] = {}
    extra: dict[str, Any] = {}
    if tif.is_ome:
        sizes, extra = _ome_metadata(tif, series)
    elif tif.is_imagej and tif.imagej_metadata:
        meta = tif.imagej_metadata
        unit = _UNIT_UM.get(str(meta.get("unit", "")).strip())
        if unit is not None:
            res = _resolution_um(series.keyframe, unit)
            if res is not None:
                sizes["Y"], sizes["X"] = res
            if meta.get("spacing"):
                sizes["Z"] = float(meta["spacing"]) * unit
    else:
        res = _resolution_um(series.keyframe, None)
        if res is not None:
            sizes["Y"], sizes["X"] = res
    spatial = [a for a in axes if a in "ZYX"]
    if sizes and all(a in sizes for a in spatial):
        return tuple(sizes[a] for a in spatial), extra
    if sizes:
        extra["physical_size_um"] = {a.lower(): v for a, v in sizes.items()}
    return None, extra


# ---- the reader ------------------------------------------------------------------------------


class TifffileReader:
    """Any TIFF the slide readers left: OME-TIFF, ImageJ, plain and scientific TIFF."""

    name = "tifffile"

    def open(self, path: Path) -> Source | None:
        if not path.is_file() or not is_tiff(path):
            return None
        signature = FileSignature.of(path)
        with open_tiff(path) as tif:
            if not tif.series:
                msg = "the TIFF holds no image"
                raise CorruptFile(msg, path=path)
            series = tif.series[0]
            axes = _tessera_axes(series.axes)
            levels = []
            for k, lvl in enumerate(series.levels):
                if len(lvl.shape) != len(series.shape):
                    break  # a level tifffile squeezed differently: stop the pyramid there
                layout = _layout(lvl)
                if isinstance(layout, str):
                    if k == 0:
                        msg = f"unsupported TIFF layout: {layout}"
                        raise UnsupportedFile(msg, path=path)
                    break
                decode_name = getattr(lvl.keyframe.decode, "__name__", "")
                if decode_name.startswith("decode_raise"):
                    if k == 0:
                        msg = (
                            f"tifffile cannot decode this TIFF (compression "
                            f"{lvl.keyframe.compression!r}, {lvl.keyframe.dtype}); "
                            "convert it with another tool"
                        )
                        raise UnsupportedFile(msg, path=path)
                    break
                lazy = TiffSeriesLevel(path, signature, 0, k, tuple(lvl.shape), lvl.dtype, layout)
                levels.append(
                    as_dask(lazy, lazy.chunks(), name=level_name(self.name, path, signature, k))
                )
            spacing, extra = _spacing(tif, series, axes)
            metadata: dict[str, Any] = {
                "vendor": None,
                "objective_power": extra.pop("objective_power", None),
                "tiff_kind": series.kind,
                "compression": str(getattr(series.keyframe.compression, "name", "")),
                "photometric": str(getattr(series.keyframe.photometric, "name", "")),
                "series": [
                    {"index": s.index, "name": s.name, "shape": list(s.shape), "axes": s.axes}
                    for s in tif.series
                ],
                **extra,
            }
            rgb = series.keyframe.photometric in (2, 6) and series.shape[-1] in (3, 4)
            if axes.endswith("C") and rgb and "channel_names" not in metadata:
                metadata["channel_names"] = ["red", "green", "blue", "alpha"][: series.shape[-1]]
            fmt = "OME-TIFF" if tif.is_ome else "ImageJ TIFF" if tif.is_imagej else "TIFF"
        return Source(
            path=path,
            format=fmt,
            reader=self.name,
            levels=levels,
            axes=axes,
            spacing=spacing,
            spacing_unit="µm" if spacing else None,
            metadata=metadata,
            _close=lambda: close_fd(path),
        )
