"""OME-Zarr (NGFF 0.4) heatmaps and label images that napari, QuPath and Tessera open.

NGFF 0.4 on zarr format 2 ("/"-separated chunk keys) is what napari-ome-zarr, QuPath,
Bio-Formats and ome-zarr-py all read today; the multiscales/label metadata is written
with ome-zarr-py (``write_multiscales_metadata``, ``write_label_metadata``), the arrays
with zarr directly so large rasters can be written chunk by chunk from dask workers.

Physical frame: each level's ``scale`` is its pixel size (µm for slides, mm for volumes)
and ``translation`` puts its pixel centres where they belong in the frame of the
source's level 0 (whose pixel i is centred at i * spacing, as napari draws it). A
heatmap pixel that stands for f level-0 pixels is therefore shifted by (f - 1) / 2
level-0 pixels, so it overlays the slide exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np

NGFF_UNITS = {"µm": "micrometer", "um": "micrometer", "mm": "millimeter", "nm": "nanometer"}
ZARR_KW = {"chunk_key_encoding": {"name": "v2", "separator": "/"}}


def _fmt():
    from ome_zarr.format import FormatV04

    return FormatV04()


def ngff_axes(axes: str, unit: str | None) -> list[dict[str, str]]:
    """NGFF axis entries for e.g. "cyx" / "zyx" / "yx"; spatial axes carry the unit."""
    out = []
    ngff_unit = NGFF_UNITS.get(unit or "")
    for a in axes.lower():
        if a == "c":
            out.append({"name": "c", "type": "channel"})
        else:
            entry = {"name": a, "type": "space"}
            if ngff_unit:
                entry["unit"] = ngff_unit
            out.append(entry)
    return out


def level_transforms(
    axes: str, spacing: Sequence[float], l0_per_px: Sequence[float], factors: Sequence[Sequence[float]]
) -> list[list[dict]]:
    """Per level: scale = pixel size, translation = pixel-centre offset from level 0's.

    ``spacing``: the source's level-0 pixel size per spatial axis (physical units, or 1
    when unknown); ``l0_per_px``: level-0 pixels per pixel of this image's first level;
    ``factors``: for each level, its downsample from the first level per spatial axis.
    """
    out = []
    for fac in factors:
        scale, trans = [], []
        k = 0
        for a in axes.lower():
            if a == "c":
                scale.append(1.0)
                trans.append(0.0)
                continue
            f = l0_per_px[k] * fac[k]
            scale.append(float(spacing[k] * f))
            trans.append(float(spacing[k] * (f - 1) / 2))
            k += 1
        entry = [{"type": "scale", "scale": scale}]
        if any(abs(t) > 0 for t in trans):
            entry.append({"type": "translation", "translation": trans})
        out.append(entry)
    return out


def pyramid_levels(shape_spatial: Sequence[int], *, min_px: int = 256, max_levels: int = 8) -> int:
    """How many 2x levels until the long side is at most ``min_px``."""
    n, size = 1, max(shape_spatial[-2:])
    while size > min_px and n < max_levels:
        size = math.ceil(size / 2)
        n += 1
    return n


def _downsample(arr, spatial: tuple[int, ...], kind: Literal["mean", "nearest"]):
    """One 2x step of a dask array along the ``spatial`` axes (odd sizes: edge padding)."""
    import dask.array as da

    pad = [(0, (arr.shape[i] % 2) if i in spatial else 0) for i in range(arr.ndim)]
    if any(p[1] for p in pad):
        arr = da.pad(arr, pad, mode="edge")
    if kind == "nearest":
        index = tuple(slice(None, None, 2) if i in spatial else slice(None) for i in range(arr.ndim))
        return arr[index]
    factors = {i: (2 if i in spatial else 1) for i in range(arr.ndim)}
    out = da.coarsen(np.mean, arr.astype(np.float32), factors)
    return da.round(out).astype(arr.dtype) if np.issubdtype(arr.dtype, np.integer) else out.astype(arr.dtype)


def build_pyramid(group, *, axes: str, n_levels: int, kind: Literal["mean", "nearest"], workers: int = 2) -> None:
    """Write levels "1".."n-1" of an NGFF group from its level "0", each from the one
    before, streamed chunk by chunk (never the whole image in memory)."""
    import dask.array as da

    spatial = tuple(i for i, a in enumerate(axes.lower()) if a in "zyx")
    inplane = spatial[-2:]  # slides and volumes alike are downsampled in-plane only
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for level in range(1, n_levels):
            prev = group[str(level - 1)]
            src = da.from_zarr(prev)
            nxt = _downsample(src, inplane, kind)
            chunks = tuple(min(c, s) for c, s in zip(prev.chunks, nxt.shape, strict=True))
            arr = group.create_array(str(level), shape=nxt.shape, chunks=chunks, dtype=prev.dtype,
                                     fill_value=0, overwrite=True, **ZARR_KW)
            da.store(nxt.rechunk(chunks), arr, lock=False, compute=True, scheduler="threads", pool=pool)


def write_multiscales(
    group, *, axes: str, n_levels: int, spacing: Sequence[float], l0_per_px: Sequence[float],
    unit: str | None, name: str, channels: Sequence[tuple[str, str]] | None = None,
) -> None:
    """The NGFF multiscales metadata (and omero channel names/colours) of a group whose
    arrays "0".."n-1" are already written, each 2x smaller in-plane."""
    from ome_zarr.writer import write_multiscales_metadata

    n_spatial = sum(a in "zyx" for a in axes.lower())
    factors = [[1.0] * (n_spatial - 2) + [2.0**k, 2.0**k] for k in range(n_levels)]
    transforms = level_transforms(axes, spacing, l0_per_px, factors)
    datasets = [{"path": str(k), "coordinateTransformations": transforms[k]} for k in range(n_levels)]
    extra = {}
    if channels:
        extra["metadata"] = {"omero": {
            "name": name,
            "channels": [
                {"label": label, "color": colour.lstrip("#").upper(), "active": True,
                 "window": {"start": 0, "end": 255, "min": 0, "max": 255}}
                for label, colour in channels
            ],
            "rdefs": {"model": "color"},
        }}
    write_multiscales_metadata(group, datasets, fmt=_fmt(), axes=ngff_axes(axes, unit), name=name, **extra)


def write_label_metadata(image_group, label_name: str, classes: Sequence[tuple[int, str, str]]) -> None:
    """``labels`` listing + image-label colours/properties for ``image_group/labels/<name>``:
    ``classes`` are (label value, name, #rrggbb); label 0 stays transparent."""
    from ome_zarr.writer import write_label_metadata as _write

    labels = image_group["labels"]  # ome-zarr-py adds label_name to its "labels" list
    colors = [{"label-value": int(v), "rgba": [*hex_rgb(c), 0 if v == 0 else 255]} for v, _, c in classes]
    properties = [{"label-value": int(v), "class": n} for v, n, _ in classes]
    _write(labels, label_name, colors=colors, properties=properties, fmt=_fmt(),
           source={"image": "../../"})


def hex_rgb(colour: str) -> list[int]:
    """'#a1b2c3' -> [161, 178, 195]."""
    c = colour.lstrip("#")
    return [int(c[i : i + 2], 16) for i in (0, 2, 4)]


def write_small_image(
    path: Path, image: np.ndarray, *, axes: str, spacing: Sequence[float], l0_per_px: Sequence[float],
    unit: str | None, name: str, channels: Sequence[tuple[str, str]] | None = None,
    labels: dict[str, tuple[np.ndarray, Sequence[tuple[int, str, str]]]] | None = None,
    kind: Literal["mean", "nearest"] = "mean", chunk: int = 512,
) -> None:
    """Write an in-memory image (and label images of the same in-plane shape) as a
    complete NGFF group at ``path`` (which must not exist; callers write into a
    temporary folder and rename it)."""
    import zarr

    root = zarr.open_group(path, mode="w", zarr_format=2)
    _write_array_pyramid(root, image, axes=axes, kind=kind, chunk=chunk)
    n = len([k for k in root.array_keys()])
    write_multiscales(root, axes=axes, n_levels=n, spacing=spacing, l0_per_px=l0_per_px,
                      unit=unit, name=name, channels=channels)
    for label_name, (label_img, classes) in (labels or {}).items():
        group = root.require_group("labels").create_group(label_name)
        label_axes = axes.lower().replace("c", "")
        _write_array_pyramid(group, label_img, axes=label_axes, kind="nearest", chunk=chunk, n_levels=n)
        write_multiscales(group, axes=label_axes, n_levels=n, spacing=spacing, l0_per_px=l0_per_px,
                          unit=unit, name=label_name)
        write_label_metadata(root, label_name, classes)


def _write_array_pyramid(group, image: np.ndarray, *, axes: str, kind: str, chunk: int, n_levels: int | None = None) -> None:
    spatial = [i for i, a in enumerate(axes.lower()) if a in "zyx"]
    n = n_levels or pyramid_levels([image.shape[i] for i in spatial])
    chunks = tuple(1 if a == "c" else min(chunk, s) for a, s in zip(axes.lower(), image.shape, strict=True))
    group.create_array("0", shape=image.shape, chunks=chunks, dtype=image.dtype, fill_value=0, **ZARR_KW)[...] = image
    build_pyramid(group, axes=axes, n_levels=n, kind=kind)  # type: ignore[arg-type]
