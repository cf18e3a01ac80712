"""Tissue / foreground masks computed once at low resolution.

Empty glass must never be read at full resolution: a 60k x 60k slide is often more
than half background. The mask is computed on a thumbnail (a few thousand pixels on the
long side), saved next to the results as a PNG plus a JSON sidecar giving its scale
(level-0 pixels per mask pixel), and used to keep only the tiles that hold tissue.

Methods (``TissueOptions.method``):
- ``saturation``: HSV saturation, Otsu threshold. Stained tissue is coloured, glass and
  dust are grey/white; this is the usual choice for H&E/IHC brightfield slides.
- ``brightfield``: darkness (1 - grey), Otsu; for unstained or greyscale brightfield.
- ``fluorescence``: bright on dark, max over channels normalised per channel, Otsu.
- ``auto``: 8-bit RGB is brightfield: saturation when it has colour, else
  brightfield; single/multi-channel images are brightfield or fluorescence depending
  on whether the background (the median) is bright or dark.
- ``none``: everything is foreground.

Otsu splits whatever it is given in two, so an image that is tissue everywhere would
lose half of it; the threshold is therefore clamped to a band that is plausible for
each feature (``THRESHOLD_BOUNDS``), and ``TissueOptions.threshold`` overrides it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from tessera.pipelines.sources.base import Source

TissueMethod = Literal["auto", "saturation", "brightfield", "fluorescence", "none"]

# Plausible threshold band per feature (features are in 0..1).
THRESHOLD_BOUNDS: dict[str, tuple[float, float]] = {
    "saturation": (0.07, 0.2),
    "brightfield": (0.12, 0.4),
    "fluorescence": (0.02, 0.5),
}


@dataclass(frozen=True)
class TissueOptions:
    """How the tissue/foreground mask is made and used.

    Attributes:
        method: feature to threshold (see module docstring).
        thumbnail_px: the most pixels on the long side of the thumbnail the mask is
            computed on (fewer when the tiles are large, see ``mask_size_px``).
        threshold: fixed threshold on the 0..1 feature instead of Otsu.
        min_tile_fraction: a tile is processed when at least this fraction of its own
            area (its stride cell) is foreground.
        min_object_px: foreground specks smaller than this (mask pixels) are dropped.
    """

    method: TissueMethod = "auto"
    thumbnail_px: int = 1024
    threshold: float | None = None
    min_tile_fraction: float = 0.1
    min_object_px: int = 16

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class TissueMask:
    """A boolean foreground mask and its place in the level-0 frame.

    Attributes:
        mask: bool (Y, X), True where there is tissue/foreground.
        l0_per_px_yx: level-0 pixels per mask pixel along y and x.
        method: the feature used ("saturation", ...).
        threshold: the threshold applied to the 0..1 feature (None for "none").
    """

    mask: np.ndarray
    l0_per_px_yx: tuple[float, float]
    method: str
    threshold: float | None

    @property
    def area_l0_px2(self) -> float:
        """Foreground area in level-0 pixels²."""
        return float(self.mask.sum()) * self.l0_per_px_yx[0] * self.l0_per_px_yx[1]

    def fractions_in_l0_boxes(
        self, l0_y0: np.ndarray, l0_x0: np.ndarray, l0_y1: np.ndarray, l0_x1: np.ndarray
    ) -> np.ndarray:
        """Foreground fraction inside each level-0 box [y0, y1) x [x0, x1).

        Counts the mask pixels the box touches (at least one, the one under its
        top-left corner), with a summed-area table so a grid of 100k tiles costs
        one vectorised pass.
        """
        h, w = self.mask.shape
        sat = np.zeros((h + 1, w + 1), dtype=np.int64)
        sat[1:, 1:] = np.cumsum(np.cumsum(self.mask, axis=0, dtype=np.int64), axis=1)
        py, px = self.l0_per_px_yx
        i0 = np.clip(np.floor(np.asarray(l0_y0, float) / py), 0, h).astype(np.int64)
        j0 = np.clip(np.floor(np.asarray(l0_x0, float) / px), 0, w).astype(np.int64)
        i1 = np.clip(np.ceil(np.asarray(l0_y1, float) / py), 0, h).astype(np.int64)
        j1 = np.clip(np.ceil(np.asarray(l0_x1, float) / px), 0, w).astype(np.int64)
        i1 = np.maximum(i1, np.minimum(i0 + 1, h))
        j1 = np.maximum(j1, np.minimum(j0 + 1, w))
        total = sat[i1, j1] - sat[i0, j1] - sat[i1, j0] + sat[i0, j0]
        count = (i1 - i0) * (j1 - j0)
        return np.where(count > 0, total / np.maximum(count, 1), 0.0).astype(np.float32)

    def save(self, png_path: Path) -> Path:
        """Write the mask as a PNG (0/255) and ``<name>.json`` with its scale; returns the JSON path.

        Both are written under temporary names and renamed, so a crash never leaves
        a half-written mask behind.
        """
        from PIL import Image

        from tessera.pipelines.writers.atomic import atomic_path

        png_path = Path(png_path)
        with atomic_path(png_path) as tmp:
            Image.fromarray(self.mask.astype(np.uint8) * 255).save(tmp, format="PNG")
        meta = {
            "png": png_path.name,
            "shape_yx": [int(s) for s in self.mask.shape],
            "l0_per_px_yx": [float(v) for v in self.l0_per_px_yx],
            "method": self.method,
            "threshold": self.threshold,
        }
        json_path = png_path.with_suffix(".json")
        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps(meta, indent=2))
        return json_path

    @classmethod
    def load(cls, json_path: Path) -> TissueMask:
        """Read a mask saved by ``save`` (from its JSON sidecar)."""
        from PIL import Image

        json_path = Path(json_path)
        meta = json.loads(json_path.read_text())
        mask = np.asarray(Image.open(json_path.with_name(meta["png"]))) > 127
        return cls(
            mask=mask,
            l0_per_px_yx=(float(meta["l0_per_px_yx"][0]), float(meta["l0_per_px_yx"][1])),
            method=str(meta["method"]),
            threshold=meta["threshold"],
        )


def thumbnail_yxc(source: Source, max_size_px: int, min_size_px: int | None = None) -> np.ndarray:
    """A small (Y, X, C) image of the source (C of 1 for grey; the middle Z for volumes).

    Reads the coarsest level at least ``min_size_px`` (default ``max_size_px``) on its
    long side, decimated to at most ``max_size_px``, as ``Source.thumbnail`` does, but on
    a thread pool owned by this call (never dask's process-wide default pool, which
    would outlive the call). A lower ``min_size_px`` avoids decoding a level 16x larger
    than needed when the pyramid steps by 4.
    """
    from concurrent.futures import ThreadPoolExecutor

    min_size_px = min_size_px or max_size_px
    chosen = len(source.levels) - 1
    for i in range(len(source.levels) - 1, -1, -1):
        chosen = i
        if max(source.spatial_shape(i)[-2:]) >= min_size_px:
            break
    arr = source.levels[chosen]
    axes = source.axes
    if "Z" in axes:
        index: list = [slice(None)] * arr.ndim
        index[axes.index("Z")] = arr.shape[axes.index("Z")] // 2
        arr = arr[tuple(index)]
        axes = axes.replace("Z", "")
    iy, ix = axes.index("Y"), axes.index("X")
    step = max(1, math.ceil(max(arr.shape[iy], arr.shape[ix]) / max_size_px))
    index = [slice(None)] * arr.ndim
    index[iy] = index[ix] = slice(None, None, step)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        thumb = arr[tuple(index)].compute(scheduler="threads", pool=pool)
    return to_yxc(thumb, axes)


def to_yxc(arr: np.ndarray, axes: str) -> np.ndarray:
    """Reorder a 2D image with ``axes`` (e.g. "YX", "CYX", "YXC", "TYXC" with T of 1)
    to (Y, X, C). Axes other than Y, X and C must have length 1."""
    extra = [i for i, a in enumerate(axes) if a not in "YXC"]
    for i in extra:
        if arr.shape[i] != 1:
            msg = f"axis {axes[i]!r} of a 2D image has length {arr.shape[i]}; expected 1"
            raise ValueError(msg)
    arr = np.squeeze(arr, axis=tuple(extra)) if extra else arr
    axes = "".join(a for a in axes if a in "YXC")
    if "C" not in axes:
        arr = arr[..., None]
        axes = axes + "C"
    return np.transpose(arr, [axes.index(a) for a in "YXC"])


def _unit_scale(img: np.ndarray) -> np.ndarray:
    """Pixel values to 0..1 floats: by the dtype range for integers, by robust max otherwise."""
    if np.issubdtype(img.dtype, np.integer) and img.dtype.itemsize == 1:
        return img.astype(np.float32) / 255.0
    f = img.astype(np.float32)
    out = np.empty_like(f)
    for c in range(f.shape[-1]):
        ch = f[..., c]
        lo, hi = np.percentile(ch, 0.5), np.percentile(ch, 99.5)
        out[..., c] = np.clip((ch - lo) / max(hi - lo, 1e-12), 0, 1)
    return out


def _saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation (max - min) / max of an RGB image, float32 0..1."""
    mx = rgb.max(axis=-1)
    mn = rgb.min(axis=-1)
    sat = np.subtract(mx, mn, dtype=np.float32)
    sat /= np.maximum(mx, 1e-6 if rgb.dtype.kind == "f" else 1).astype(np.float32)
    return sat


def _feature(img_yxc: np.ndarray, method: TissueMethod) -> tuple[str, np.ndarray]:
    """The 0..1 foreground feature for ``method`` (resolving "auto").

    8-bit RGB (the common case, and the thumbnail of a 100k slide) is handled in
    integers until the one float feature map, so the mask costs a few bytes per
    thumbnail pixel and peak memory does not grow with the slide.
    """
    is_rgb = img_yxc.shape[-1] in (3, 4)
    if is_rgb and img_yxc.dtype == np.uint8:
        rgb8 = img_yxc[..., :3]
        if method == "auto":
            sat = _saturation(rgb8)
            if np.percentile(sat[::4, ::4], 99) >= 0.1:
                return "saturation", sat
            del sat
            method = "brightfield"
        if method == "saturation":
            return method, _saturation(rgb8)
        if method == "brightfield":
            grey = rgb8.sum(axis=-1, dtype=np.uint16).astype(np.float32)
            grey *= -1.0 / (3 * 255.0)
            grey += 1.0
            return method, grey
    unit = _unit_scale(img_yxc)
    rgb = unit[..., :3] if is_rgb else None
    if method == "auto":
        if rgb is not None:
            method = "saturation" if np.percentile(_saturation(rgb), 99) >= 0.1 else "brightfield"
        else:
            grey = unit.max(axis=-1)
            lo, hi = np.percentile(grey, 1), np.percentile(grey, 99)
            method = "brightfield" if np.median(grey) > (lo + hi) / 2 else "fluorescence"
    if method == "saturation":
        if rgb is None:
            msg = "tissue method 'saturation' needs an RGB image; use 'brightfield' or 'fluorescence'"
            raise ValueError(msg)
        return method, _saturation(rgb)
    if method == "brightfield":
        grey = rgb.mean(axis=-1) if rgb is not None else unit.mean(axis=-1)
        return method, 1.0 - grey
    if method == "fluorescence":
        return method, unit.max(axis=-1)
    msg = f"unknown tissue method {method!r}"
    raise ValueError(msg)


def mask_from_image(img_yxc: np.ndarray, options: TissueOptions) -> tuple[np.ndarray, str, float | None]:
    """Foreground mask of a small (Y, X, C) image: (mask, method used, threshold)."""
    from skimage import filters, morphology

    if options.method == "none":
        return np.ones(img_yxc.shape[:2], dtype=bool), "none", None
    method, feat = _feature(img_yxc, options.method)
    if options.threshold is not None:
        threshold = float(options.threshold)
    else:
        lo, hi = THRESHOLD_BOUNDS[method]
        sample = feat[:: max(1, feat.shape[0] // 1024), :: max(1, feat.shape[1] // 1024)]  # ~1M px: enough
        valid = sample[np.isfinite(sample)]
        otsu = float(filters.threshold_otsu(valid)) if valid.size and np.ptp(valid) > 0 else hi
        threshold = float(min(max(otsu, lo), hi))
    mask = feat > threshold
    del feat
    mask = _close(mask, morphology.disk(2).astype(bool))
    if options.min_object_px > 1:
        mask = _drop_small(mask, options.min_object_px, value=True)  # specks
        mask = _drop_small(mask, options.min_object_px, value=False)  # pinholes
    return mask, method, threshold


def _close(mask: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """Binary closing that treats outside the image as foreground during the erosion
    (so tissue touching the border is not eaten), in bool arrays throughout."""
    from scipy import ndimage

    return ndimage.binary_erosion(ndimage.binary_dilation(mask, footprint), footprint, border_value=1)


def _drop_small(mask: np.ndarray, min_px: int, *, value: bool) -> np.ndarray:
    """Flip connected regions of ``value`` smaller than ``min_px`` pixels (int32 labels;
    what skimage's remove_small_objects/holes do, with a quarter of their memory)."""
    from scipy import ndimage

    labels, n = ndimage.label(mask if value else ~mask, output=np.int32)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    small = sizes < min_px
    small[0] = False
    flip = small[labels]
    del labels
    out = mask.copy()
    out[flip] = not value
    return out


MIN_MASK_PX = 512


def mask_size_px(l0_long_px: int, cell_l0_px: float | None, thumbnail_px: int) -> int:
    """Long side of the mask: 8 mask pixels per tile cell are plenty, and anything finer
    only makes the thumbnail read decode more of the slide; at least ``MIN_MASK_PX`` (a
    readable saved mask), at most ``thumbnail_px``."""
    if cell_l0_px is None or cell_l0_px <= 0:
        return thumbnail_px
    wanted = math.ceil(l0_long_px / (cell_l0_px / 8))
    return int(min(max(wanted, MIN_MASK_PX), thumbnail_px))


def detect_tissue(source: Source, options: TissueOptions | None = None, *,
                  cell_l0_px: float | None = None) -> TissueMask:
    """Compute the tissue/foreground mask of a 2D source from its thumbnail.

    ``cell_l0_px``: the level-0 size of the tiles the mask will select, which sets how
    fine the mask needs to be (and so which pyramid level the thumbnail comes from).
    """
    options = options or TissueOptions()
    l0_h, l0_w = source.spatial_shape(0)[-2:]
    size_px = mask_size_px(max(l0_h, l0_w), cell_l0_px, options.thumbnail_px)
    if options.method == "none":
        # No pixels need reading: one mask pixel per (up to) thumbnail_px-th of the slide.
        step = max(1.0, max(l0_h, l0_w) / size_px)
        shape = (max(1, math.ceil(l0_h / step)), max(1, math.ceil(l0_w / step)))
        return TissueMask(np.ones(shape, dtype=bool), (l0_h / shape[0], l0_w / shape[1]), "none", None)
    thumb = thumbnail_yxc(source, size_px)
    mask, method, threshold = mask_from_image(thumb, options)
    scale = (l0_h / mask.shape[0], l0_w / mask.shape[1])
    return TissueMask(mask=mask, l0_per_px_yx=scale, method=method, threshold=threshold)
