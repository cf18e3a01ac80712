"""PNG and JPEG through Pillow: one level, one chunk (neither format reads by region).

Axes "YXC" for colour (RGB, RGBA; palette images expanded to RGB/RGBA), "YX" for grey
(8 or 16 bit). No physical spacing: the DPI these files carry is a display setting,
not a pixel size; it is kept in ``metadata["dpi"]``. JPEG EXIF orientation is not
applied (pixels as stored); it is reported in ``metadata["exif_orientation"]``.

Damage is found at open time where it is cheap: PNG chunks are CRC-checked
(``Image.verify``) and a JPEG must end with its EOI marker.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from tessera.pipelines.errors import CorruptFile, UnsupportedFile
from tessera.pipelines.sources.base import Source
from tessera.pipelines.sources.lazy import FileSignature, LazyLevel, as_dask, level_name

#: The last decoded image (key, pixels) per process, if at most ``_KEEP_BYTES`` big.
_LAST: list = []
_LAST_LOCK = threading.Lock()
_KEEP_BYTES = 256 * 2**20
_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG"}
#: Pillow mode -> (mode to convert to, numpy dtype, axes).
_MODES = {
    "1": ("L", np.uint8, "YX"),
    "L": ("L", np.uint8, "YX"),
    "LA": ("LA", np.uint8, "YXC"),
    "P": (None, np.uint8, "YXC"),  # resolved per file: RGB or RGBA
    "PA": ("RGBA", np.uint8, "YXC"),
    "RGB": ("RGB", np.uint8, "YXC"),
    "RGBA": ("RGBA", np.uint8, "YXC"),
    "CMYK": ("RGB", np.uint8, "YXC"),
    "YCbCr": ("RGB", np.uint8, "YXC"),
    "I;16": ("I;16", np.uint16, "YX"),
    "I;16B": ("I;16", np.uint16, "YX"),
    "I": ("I", np.int32, "YX"),
    "F": ("F", np.float32, "YX"),
}


def _kind(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return None
    for magic, kind in _SIGNATURES.items():
        if head.startswith(magic):
            return kind
    return None


class RasterLevel(LazyLevel):
    """A whole PNG/JPEG decoded on read (the formats have no random access)."""

    def __init__(
        self, path: Path, signature: FileSignature, shape: tuple, dtype: Any, mode: str
    ) -> None:
        super().__init__(path, signature, shape, dtype)
        self.mode = mode

    def decoded(self) -> np.ndarray:
        """The whole image, decoded; the last one decoded is kept per process (see
        ``_LAST``), so a viewer or tiler slicing one PNG many times decodes it once."""
        key = (str(self.path), self.signature, self.mode)
        with _LAST_LOCK:
            if _LAST and _LAST[0] == key:
                return _LAST[1]
        from PIL import Image

        self.signature.check(self.path)
        try:
            with Image.open(self.path) as img:
                img.load()
                pixels = np.asarray(img if img.mode == self.mode else img.convert(self.mode))
        except Exception as exc:
            msg = f"the image cannot be decoded ({exc}); the file is damaged or truncated"
            raise CorruptFile(msg, path=self.path) from exc
        pixels = pixels.astype(self.dtype, copy=False).reshape(self.shape)
        pixels.setflags(write=False)
        if pixels.nbytes <= _KEEP_BYTES:
            with _LAST_LOCK:
                _LAST[:] = [key, pixels]
        return pixels

    def read(self, start: tuple[int, ...], stop: tuple[int, ...]) -> np.ndarray:
        box = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
        return self.decoded()[box].copy()


class RasterReader:
    """PNG and JPEG images (recognised by content, whatever the suffix)."""

    name = "raster"

    def open(self, path: Path) -> Source | None:
        if not path.is_file():
            return None
        kind = _kind(path)
        if kind is None:
            return None
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = None  # slides and masks are legitimately huge
        try:
            with Image.open(path) as img:
                mode, size_wh, info = img.mode, img.size, dict(img.info)
                palette_alpha = mode == "P" and "transparency" in img.info
                exif = img.getexif() if kind == "JPEG" else {}
                if kind == "PNG":
                    img.verify()
        except Exception as exc:
            msg = f"the {kind} file is damaged or truncated ({exc}); copy it again"
            raise CorruptFile(msg, path=path) from exc
        if kind == "JPEG":
            with open(path, "rb") as fh:
                fh.seek(-2, 2)
                if fh.read(2) != b"\xff\xd9":
                    msg = "the JPEG file does not end with its end marker: it is truncated"
                    raise CorruptFile(msg, path=path)
        if mode not in _MODES:
            msg = f"{kind} pixel mode {mode!r} is not supported; convert it to RGB or grey"
            raise UnsupportedFile(msg, path=path)
        target, dtype, axes = _MODES[mode]
        if target is None:
            target = "RGBA" if palette_alpha else "RGB"
        w, h = size_wh
        channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}.get(target, 1)
        shape = (h, w, channels) if axes == "YXC" else (h, w)
        signature = FileSignature.of(path)
        lazy = RasterLevel(path, signature, shape, dtype, target)
        level = as_dask(lazy, shape, name=level_name(self.name, path, signature))
        metadata: dict[str, Any] = {"vendor": None, "mode": mode}
        if target in ("RGB", "RGBA"):
            metadata["channel_names"] = ["red", "green", "blue", "alpha"][:channels]
        if "dpi" in info:
            metadata["dpi"] = [float(d) for d in info["dpi"]]
        if exif and exif.get(0x0112, 1) != 1:
            metadata["exif_orientation"] = int(exif[0x0112])
        return Source(
            path=path,
            format=kind,
            reader=self.name,
            levels=[level],
            axes=axes,
            metadata=metadata,
        )
