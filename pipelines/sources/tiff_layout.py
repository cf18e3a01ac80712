"""TIFF structure checks shared by the TIFF-based readers (tiff-tiles, openslide, tifffile).

Opening a TIFF with tifffile is cheap (only the directories are read), so readers use
``open_tiff`` to recognise the format and refuse damaged files *before* handing out
lazy levels: a truncated copy is an error at open time, naming the file, not a
failure deep inside a dask task hours later.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from tessera.pipelines.errors import CorruptFile

if TYPE_CHECKING:
    import tifffile

TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
#: Suffixes used only by whole-slide formats: such a file that nothing opens is damaged.
SLIDE_ONLY_SUFFIXES = (".svs", ".ndpi", ".scn", ".bif", ".mrxs", ".vms", ".vmu", ".svslide")


def is_tiff(path: Path) -> bool:
    """Whether ``path`` is a file starting with a classic or BigTIFF header."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) in TIFF_MAGICS
    except OSError:
        return False


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _tifffile_warnings() -> Iterator[list[str]]:
    """Collect what tifffile logs while parsing (it logs, rather than raises, on a
    broken directory chain and keeps the pages it could read)."""
    logger = logging.getLogger("tifffile")
    recorder = _Recorder()
    logger.addHandler(recorder)
    try:
        yield recorder.messages
    finally:
        logger.removeHandler(recorder)


def open_tiff(path: Path) -> tifffile.TiffFile:
    """Open ``path`` with tifffile and check that every directory and tile is in the file.

    Raises:
        CorruptFile: the TIFF structure is damaged or the file is truncated.
    """
    import tifffile

    size = path.stat().st_size
    with _tifffile_warnings() as warnings:
        try:
            tif = tifffile.TiffFile(path)
            pages = list(tif.pages)
        except tifffile.TiffFileError as exc:
            msg = f"the TIFF structure is damaged ({exc}); the file is corrupt or truncated"
            raise CorruptFile(msg, path=path) from exc
    broken = [
        m.split("> ", 1)[-1] for m in warnings if "offset" in m or "truncat" in m or "corrupt" in m
    ]
    if broken:
        tif.close()
        msg = (
            f"the TIFF directory chain is broken after page {len(pages) - 1} ({broken[0]}); "
            "the file is truncated or damaged: copy it again"
        )
        raise CorruptFile(msg, path=path)
    try:
        check_complete(path, tif, size)
    except CorruptFile:
        tif.close()
        raise
    return tif


def check_complete(path: Path, tif: tifffile.TiffFile, size: int) -> None:
    """Raise ``CorruptFile`` if any page's tiles or strips reach past the end of the file.

    Checks the main directory chain and the pyramid levels in SubIFDs (OME-TIFF).
    """
    pages = {id(p): (f"page {i}", p) for i, p in enumerate(tif.pages)}
    for series in tif.series:
        for k, level in enumerate(series.levels[1:], start=1):
            for page in level.pages:
                if page is not None and page.parent is tif and id(page) not in pages:
                    pages[id(page)] = (f"pyramid level {k} of series {series.index}", page)
    for where, page in pages.values():
        ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts, strict=False) if c]
        if ends and max(ends) > size:
            msg = (
                f"{where} needs {max(ends)} bytes but the file has {size}: it is truncated; "
                "copy it again"
            )
            raise CorruptFile(msg, path=path)
