"""The Source contract: one opened image, lazy and multiscale.

A Source is what every reader returns and what every pipeline, runner and viewer
consumes. Pixels are never read when a Source is made: ``levels`` are dask arrays
whose chunks are the file's native tiles, and a read happens only when a slice of
them is computed, in whatever thread or worker process computes it.

Frames and units (STYLE.md): ``l0_`` coordinates are level-0 pixels, ``lvl_``
coordinates are pixels of one level. ``spacing`` is the level-0 physical pixel size
per spatial axis, in ``spacing_unit`` ("µm" for slides and microscopy, "mm" for
volumes, "arcsec" for sky images), or None when the file does not say.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import dask.array as da
import numpy as np

SPATIAL_AXES = "ZYX"
CHANNEL_AXES = "CS"  # C: channels as stored (RGB, fluorescence); S: samples


@dataclass(eq=False)
class Source:
    """One opened image: lazy multiscale pixels plus what is known about them.

    Attributes:
        path: the file or folder that was opened.
        format: what the file is, in a user's words ("Aperio SVS", "DICOM series", "NIfTI-1").
        reader: the name of the reader that opened it ("tiff-tiles", "openslide", ...).
        levels: level 0 (full resolution) first; each a dask array with ``axes`` as its
            axes and chunks aligned to the file's native tiles.
        axes: axis letters of every level, e.g. "YXC" (RGB slide), "ZYX" (CT), "CYX".
        spacing: level-0 physical pixel size for each *spatial* axis of ``axes``, in
            order (so (y, x) for "YXC", (z, y, x) for "ZYX"); None when unknown.
        spacing_unit: unit of ``spacing``: "µm", "mm" or "arcsec"; None when unknown.
        downsamples: for each level, level-0 pixels per level pixel along each spatial
            axis (level 0 is all ones). Not always integers: pyramids with odd sizes
            have downsamples like 2.0004.
        metadata: everything else worth showing: vendor, objective_power,
            channel_names, affine (4x4, volumes), orientation, wcs (FITS header),
            modality, rescale, photometric, raw vendor properties.
    """

    path: Path
    format: str
    reader: str
    levels: list[da.Array]
    axes: str
    spacing: tuple[float, ...] | None = None
    spacing_unit: str | None = None
    downsamples: list[tuple[float, ...]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    _close: Callable[[], None] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if not self.levels:
            msg = "a Source needs at least one level"
            raise ValueError(msg)
        for level in self.levels:
            if level.ndim != len(self.axes):
                msg = f"level with shape {level.shape} does not match axes {self.axes!r}"
                raise ValueError(msg)
        if not self.downsamples:
            self.downsamples = [self._measured_downsample(i) for i in range(len(self.levels))]
        if self.spacing is not None and len(self.spacing) != len(self.spatial_axes):
            msg = f"spacing {self.spacing} does not match spatial axes {self.spatial_axes!r}"
            raise ValueError(msg)

    # ---- shape helpers -------------------------------------------------------------
    @property
    def spatial_axes(self) -> str:
        """The spatial axis letters in storage order, e.g. "YX" or "ZYX"."""
        return "".join(a for a in self.axes if a in SPATIAL_AXES)

    @property
    def ndim_spatial(self) -> int:
        return len(self.spatial_axes)

    @property
    def dtype(self) -> np.dtype:
        return self.levels[0].dtype

    @property
    def shape(self) -> tuple[int, ...]:
        """Level-0 shape, all axes."""
        return tuple(int(s) for s in self.levels[0].shape)

    def spatial_shape(self, level: int = 0) -> tuple[int, ...]:
        """Shape of one level along the spatial axes only."""
        arr = self.levels[level]
        return tuple(int(arr.shape[self.axes.index(a)]) for a in self.spatial_axes)

    @property
    def is_rgb(self) -> bool:
        return self.axes.endswith("C") and self.levels[0].shape[-1] in (3, 4)

    @property
    def mpp(self) -> float | None:
        """Level-0 microns per pixel (mean of y and x) for 2D images in µm, else None."""
        if self.spacing is None or self.spacing_unit != "µm":
            return None
        yx = self.spacing[-2:]
        return float(sum(yx) / len(yx))

    def level_spacing(self, level: int) -> tuple[float, ...] | None:
        """Physical pixel size of ``level`` per spatial axis (same unit as ``spacing``)."""
        if self.spacing is None:
            return None
        return tuple(s * d for s, d in zip(self.spacing, self.downsamples[level], strict=True))

    def downsample(self, level: int) -> float:
        """In-plane (y, x) downsample of ``level``: one number, as OpenSlide reports it."""
        yx = self.downsamples[level][-2:]
        return float(sum(yx) / len(yx))

    def best_level_for_downsample(self, downsample: float) -> int:
        """The coarsest level whose in-plane downsample does not exceed ``downsample``.

        Reading that level and resampling down by the small remainder keeps the
        detail a model expects, as OpenSlide's get_best_level_for_downsample does.
        A 1% tolerance accepts levels whose downsample is 4.0004 for a request of 4.
        """
        best = 0
        for i in range(len(self.levels)):
            if self.downsample(i) <= downsample * 1.01:
                best = i
        return best

    def _measured_downsample(self, level: int) -> tuple[float, ...]:
        l0 = self.spatial_shape(0)
        lv = self.spatial_shape(level)
        return tuple(a / b for a, b in zip(l0, lv, strict=True))

    # ---- reading -------------------------------------------------------------------
    def read_region(
        self,
        l0_yx: Sequence[int],
        lvl_size_yx: Sequence[int],
        level: int = 0,
        *,
        fill: float | int = 0,
    ) -> np.ndarray:
        """Read a 2D region whose top-left is given in level-0 pixels, at ``level``.

        Like ``openslide.read_region``: the origin is in the level-0 frame and the size
        in pixels of ``level``. Parts outside the image are filled with ``fill``. For
        volumes, use slicing on ``levels`` directly. Returns a numpy array in the
        level's axes order with Y and X of length ``lvl_size_yx``.
        """
        if self.ndim_spatial != 2:
            msg = f"read_region is for 2D images; {self.path} has axes {self.axes!r}"
            raise ValueError(msg)
        arr = self.levels[level]
        ds_y, ds_x = self.downsamples[level][-2:]
        lvl_y0 = math.floor(l0_yx[0] / ds_y)
        lvl_x0 = math.floor(l0_yx[1] / ds_x)
        h, w = int(lvl_size_yx[0]), int(lvl_size_yx[1])
        iy, ix = self.axes.index("Y"), self.axes.index("X")
        H, W = arr.shape[iy], arr.shape[ix]
        y0c, x0c = max(lvl_y0, 0), max(lvl_x0, 0)
        y1c, x1c = min(lvl_y0 + h, H), min(lvl_x0 + w, W)
        out_shape = list(arr.shape)
        out_shape[iy], out_shape[ix] = h, w
        out = np.full(out_shape, fill, dtype=arr.dtype)
        if y1c <= y0c or x1c <= x0c:
            return out
        index: list[slice] = [slice(None)] * arr.ndim
        index[iy], index[ix] = slice(y0c, y1c), slice(x0c, x1c)
        dst: list[slice] = [slice(None)] * arr.ndim
        dst[iy] = slice(y0c - lvl_y0, y1c - lvl_y0)
        dst[ix] = slice(x0c - lvl_x0, x1c - lvl_x0)
        out[tuple(dst)] = np.asarray(arr[tuple(index)])
        return out

    def thumbnail(self, max_size_px: int = 1024) -> np.ndarray:
        """A small in-plane image (the coarsest level that is at least ``max_size_px``
        on its long side, then decimated), for previews and tissue masks.

        Volumes return their middle Z slice.
        """
        chosen = len(self.levels) - 1
        for i in range(len(self.levels) - 1, -1, -1):
            chosen = i
            if max(self.spatial_shape(i)[-2:]) >= max_size_px:
                break
        arr = self.levels[chosen]
        if "Z" in self.axes:
            iz = self.axes.index("Z")
            index = [slice(None)] * arr.ndim
            index[iz] = arr.shape[iz] // 2
            arr = arr[tuple(index)]
            axes = self.axes.replace("Z", "")
        else:
            axes = self.axes
        iy, ix = axes.index("Y"), axes.index("X")
        step = max(1, math.ceil(max(arr.shape[iy], arr.shape[ix]) / max_size_px))
        index = [slice(None)] * arr.ndim
        index[iy] = slice(None, None, step)
        index[ix] = slice(None, None, step)
        return np.asarray(arr[tuple(index)])

    # ---- lifetime ------------------------------------------------------------------
    def close(self) -> None:
        """Release file handles. Levels stay valid: a later read reopens the file."""
        if self._close is not None:
            self._close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary (what ``tessera info --json`` prints)."""
        levels = []
        for i, lvl in enumerate(self.levels):
            levels.append(
                {
                    "level": i,
                    "shape": [int(s) for s in lvl.shape],
                    "chunks": [int(c[0]) for c in lvl.chunks],
                    "downsample": [round(float(d), 6) for d in self.downsamples[i]],
                }
            )
        meta = {k: v for k, v in self.metadata.items() if _jsonable(v)}
        return {
            "path": str(self.path),
            "format": self.format,
            "reader": self.reader,
            "axes": self.axes,
            "dtype": str(self.dtype),
            "shape": list(self.shape),
            "spacing": None if self.spacing is None else [float(s) for s in self.spacing],
            "spacing_unit": self.spacing_unit,
            "mpp": self.mpp,
            "objective_power": self.metadata.get("objective_power"),
            "vendor": self.metadata.get("vendor"),
            "levels": levels,
            "metadata": meta,
        }


def _jsonable(value: Any) -> bool:
    import json

    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


@runtime_checkable
class Reader(Protocol):
    """One way of opening files. Readers are tried in priority order.

    ``open`` returns None when the file is not for this reader (wrong extension or
    magic bytes): it does not raise. It raises ``CorruptFile`` when the file *is*
    of its format but cannot be read, and ``UnsupportedFile`` when it is of its
    format but a variant it cannot handle (so no later reader is tried in vain).
    """

    name: str

    def open(self, path: Path) -> Source | None: ...
