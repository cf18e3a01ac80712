"""How each kind of Source is shown: napari layer data tuples, built without napari.

- RGB slides: one multiscale image over the Source's dask levels (napari reads only the
  visible chunks of the level it needs), contrast limits fixed to the dtype's range so
  napari never scans the data to guess them.
- Volumes (ZYX): physical voxel size (mm) as the layer scale, so 3D rendering has the
  right proportions; a CT window when the values are Hounsfield units.
- FITS / sky images: an asinh stretch around the sky level (Lupton et al. 2004), applied
  lazily per chunk, with percentile contrast; multi-band images as additive channels.
- Anything else (grey, fluorescence channels): percentile contrast from a thumbnail.

The layer's metadata carries the Source and its frame, so docks and the live overlay
find them from the layer.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from tessera.app.viewer.display_levels import display_levels, shared_display_cache
from tessera.app.viewer.frame import SourceFrame
from tessera.pipelines.sources.base import Source

LayerDataTuple = tuple[Any, dict[str, Any], str]

SOURCE_KEY = "tessera_source"
FRAME_KEY = "tessera_frame"

#: Window (HU) for CT: wide enough for lung parenchyma, airways and vessels alike.
CT_WINDOW_HU = (-1000.0, 400.0)
#: asinh softening in units of the sky noise: fainter than this is linear, brighter log.
ASINH_SOFTENING_SIGMA = 3.0
#: Channel colours for three-band sky images stored blue-to-red (g, r, z).
SKY_BAND_COLOURS = ("blue", "green", "red")


def source_layer_data(source: Source, *, name: str | None = None) -> list[LayerDataTuple]:
    """Layer data tuples for ``source`` (usually one; one per channel for multichannel)."""
    frame = SourceFrame.of(source)
    name = name or source.path.name or str(source.path)
    meta = {SOURCE_KEY: source, FRAME_KEY: frame}
    common: dict[str, Any] = {
        "name": name,
        "metadata": meta,
        "scale": frame.spacing,
        "units": (frame.pint_unit,) * len(frame.spacing),
    }
    levels = list(source.levels)
    multiscale = len(levels) > 1 and _decreasing(levels)
    shown = levels
    if source.ndim_spatial == 2:
        # the canvas reads native tiles through a bounded cache, not through dask
        shown = display_levels(levels, shared_display_cache(), key=str(source.path))
    data: Any = shown if multiscale else shown[0]
    if source.is_rgb:
        kw = common | {"rgb": True, "multiscale": multiscale,
                       "contrast_limits": _dtype_range(source.dtype)}
        return [(data, kw, "image")]
    if source.spacing_unit == "arcsec" or source.format.upper().startswith("FITS"):
        return _sky_layers(source, levels, multiscale, common)
    if "C" in source.axes:
        return _channel_layers(source, data, multiscale, common)
    kw = common | {"multiscale": multiscale, "colormap": "gray",
                   "contrast_limits": intensity_window(source)}
    if source.ndim_spatial == 3:
        kw |= {"rendering": "mip", "interpolation2d": "linear"}
    return [(data, kw, "image")]


def intensity_window(source: Source) -> tuple[float, float]:
    """Contrast limits for a single-channel image: the CT window for Hounsfield data,
    the 0.5-99.5 percentiles of a thumbnail otherwise."""
    thumb = np.asarray(source.thumbnail(512), dtype=np.float32)
    if _looks_like_hu(source, thumb):
        window = source.metadata.get("window")
        if isinstance(window, list | tuple) and len(window) == 2 and all(np.isfinite(window)):
            centre, width = float(window[0]), float(window[1])
            if width > 0:
                return (centre - width / 2, centre + width / 2)
        return CT_WINDOW_HU
    return _percentiles(thumb, 0.5, 99.5)


def _looks_like_hu(source: Source, thumb: np.ndarray) -> bool:
    modality = str(source.metadata.get("modality", "")).upper()
    if modality == "CT":
        return True
    if modality or source.ndim_spatial != 3:
        return False
    finite = thumb[np.isfinite(thumb)]
    return finite.size > 0 and float(finite.min()) <= -900 and float(np.percentile(finite, 99)) < 4000


def _percentiles(values: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return (0.0, 1.0)
    a, b = (float(v) for v in np.percentile(finite, [lo, hi]))
    if b <= a:
        b = a + 1.0
    return (a, b)


def _dtype_range(dtype: np.dtype) -> tuple[float, float]:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return (float(max(info.min, 0)), float(info.max))
    return (0.0, 1.0)


def _decreasing(levels: list) -> bool:
    sizes = [int(np.prod(lv.shape)) for lv in levels]
    return all(a > b for a, b in itertools.pairwise(sizes))


def _channel_layers(source: Source, data: Any, multiscale: bool, common: dict[str, Any]) -> list[LayerDataTuple]:
    axis = source.axes.index("C")
    thumb = np.asarray(source.thumbnail(512), dtype=np.float32)
    t_axis = source.axes.replace("Z", "").index("C")
    names = source.metadata.get("channel_names") or [f"channel {i}" for i in range(thumb.shape[t_axis])]
    limits = [_percentiles(np.take(thumb, i, axis=t_axis), 0.5, 99.5) for i in range(thumb.shape[t_axis])]
    colours = ["magenta", "green", "cyan", "yellow", "red", "blue"]
    kw = common | {
        "multiscale": multiscale,
        "channel_axis": axis,
        "name": [f"{common['name']} [{n}]" for n in names],
        "colormap": [colours[i % len(colours)] for i in range(len(names))],
        "contrast_limits": limits,
        "blending": "additive",
    }
    return [(data, kw, "image")]


def asinh_stretch(sky: float, noise: float) -> tuple[float, float]:
    """(offset, softening) of the display transform ``asinh((x - offset) / softening)``:
    linear within a few noise sigmas of the sky, logarithmic for bright sources."""
    return float(sky), float(max(noise, 1e-12) * ASINH_SOFTENING_SIGMA)


def _sky_layers(source: Source, levels: list, multiscale: bool, common: dict[str, Any]) -> list[LayerDataTuple]:
    import dask.array as da

    thumb = np.asarray(source.thumbnail(1024), dtype=np.float32)
    bands = thumb[None] if thumb.ndim == 2 else thumb
    if "C" in source.axes and source.axes.index("C") != 0:
        bands = np.moveaxis(thumb, source.axes.index("C"), 0)
    params = []
    for band in bands:
        finite = band[np.isfinite(band)]
        sky = float(np.median(finite)) if finite.size else 0.0
        noise = float(1.4826 * np.median(np.abs(finite - sky))) if finite.size else 1.0
        params.append(asinh_stretch(sky, noise or float(np.std(finite) or 1.0)))

    def stretch(arr: da.Array, c_axis: int | None) -> da.Array:
        offs = np.array([p[0] for p in params], dtype=np.float32)
        soft = np.array([p[1] for p in params], dtype=np.float32)
        shape = [1] * arr.ndim
        if c_axis is not None:
            shape[c_axis] = len(params)
        o, s = offs.reshape(shape), soft.reshape(shape)
        return da.map_blocks(lambda b: np.arcsinh((b.astype(np.float32) - o) / s), arr, dtype=np.float32)

    c_axis = source.axes.index("C") if "C" in source.axes else None
    stretched = [stretch(lv, c_axis) for lv in levels]
    thumb_s = [np.arcsinh((b - o) / s) for b, (o, s) in zip(bands, params, strict=True)]
    # black at one noise sigma under the sky (faint outskirts stay visible, the noise dark and
    # not tinted by three independent percentiles); white high enough for galaxy cores
    black = float(np.arcsinh(-1.0 / ASINH_SOFTENING_SIGMA))
    limits = [(black, max(_percentiles(t, 1, 99.9)[1], 1.0)) for t in thumb_s]
    data: Any = stretched if multiscale else stretched[0]
    kw = common | {"multiscale": multiscale, "metadata": common["metadata"] | {"stretch": "asinh", "asinh": params}}
    if c_axis is None:
        return [(data, kw | {"colormap": "gray", "contrast_limits": limits[0]}, "image")]
    names = source.metadata.get("channel_names") or source.metadata.get("bands") or \
        [f"band {i}" for i in range(len(params))]
    colours = list(SKY_BAND_COLOURS) if len(params) == 3 else ["gray"] * len(params)
    kw |= {"channel_axis": c_axis, "name": [f"{common['name']} [{n}]" for n in names],
           "colormap": colours, "contrast_limits": limits, "blending": "additive"}
    return [(data, kw, "image")]
