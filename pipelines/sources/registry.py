"""Which reader opens which file: an ordered list, tried first to last.

Readers are named by import path and imported only when tried, so opening a PNG
never imports OpenSlide or astropy. Order matters: specific formats (DICOM folders,
NIfTI, FITS, zarr) come before the general TIFF readers, and the fast TIFF tile
reader comes before OpenSlide for the formats it can decode bit-identically.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

from tessera.pipelines.errors import CorruptFile, TesseraError, UnsupportedFile
from tessera.pipelines.sources.base import Reader, Source


@dataclass(frozen=True)
class ReaderEntry:
    """A reader by name and import path (``module:attribute``), imported on first use."""

    name: str
    target: str

    def load(self) -> Reader:
        module_name, _, attr = self.target.partition(":")
        module = importlib.import_module(module_name)
        return getattr(module, attr)()


_PKG = "tessera.pipelines.sources"

READERS: list[ReaderEntry] = [
    ReaderEntry("dicom", f"{_PKG}.dicom_reader:DicomSeriesReader"),
    ReaderEntry("nifti", f"{_PKG}.nifti_reader:NiftiReader"),
    ReaderEntry("fits", f"{_PKG}.fits_reader:FitsReader"),
    ReaderEntry("zarr", f"{_PKG}.zarr_reader:ZarrReader"),
    ReaderEntry("tiff-tiles", f"{_PKG}.tiff_tiles:TiffTileReader"),
    ReaderEntry("openslide", f"{_PKG}.openslide_reader:OpenSlideReader"),
    ReaderEntry("tifffile", f"{_PKG}.tifffile_reader:TifffileReader"),
    ReaderEntry("raster", f"{_PKG}.raster_reader:RasterReader"),
]


def reader_names() -> list[str]:
    return [entry.name for entry in READERS]


def open_source(path: str | os.PathLike[str], *, reader: str | None = None) -> Source:
    """Open ``path`` with the first reader that takes it (or the named ``reader``).

    Raises:
        UnsupportedFile: no reader takes the file, or it does not exist.
        CorruptFile: a reader recognised the format but the content is damaged.
    """
    path = Path(path).expanduser()
    if not path.exists():
        msg = "no such file or folder; check the path"
        raise UnsupportedFile(msg, path=path)
    if path.is_file() and path.stat().st_size == 0:
        msg = "the file is empty (0 bytes); it was probably not copied completely"
        raise CorruptFile(msg, path=path)
    entries = READERS
    if reader is not None:
        entries = [e for e in READERS if e.name == reader]
        if not entries:
            msg = f"unknown reader {reader!r}; choose one of {', '.join(reader_names())}"
            raise UnsupportedFile(msg, path=path)
    for entry in entries:
        try:
            source = entry.load().open(path)
        except TesseraError:
            raise
        except ImportError as exc:  # an optional backend missing: try the next reader
            if reader is not None:
                msg = f"reader {reader!r} is not available: {exc}"
                raise UnsupportedFile(msg, path=path) from exc
            continue
        if source is not None:
            return source
    msg = (
        "no reader takes this file; supported: whole-slide images (SVS, NDPI, MRXS, SCN, "
        "BIF, DICOM-WSI, tiled TIFF), OME-TIFF/TIFF, zarr/OME-Zarr, DICOM series, NIfTI, "
        "FITS, PNG/JPEG"
    )
    raise UnsupportedFile(msg, path=path)
