"""Where a Source sits in the viewer's world, and the conversions the viewer needs.

The viewer draws every image in physical units when the file says its pixel size (µm
for slides, mm for volumes, arcsec for sky images) and in pixels otherwise. Level-0
pixel k of a spatial axis is centred at world ``k * spacing`` (napari's convention), so
a raster whose pixels each stand for ``f`` level-0 pixels is placed with scale
``f * spacing`` and translate ``(f - 1) / 2 * spacing``.

No Qt here: these are plain functions the window, the live adapter, the status bar and
the tests share.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from tessera.pipelines.live import ViewBox
from tessera.pipelines.sources.base import Source

#: µm/px of a 10x objective's scan (the usual equivalence: 40x ~ 0.25 µm/px).
UM_PER_PX_AT_10X = 1.0

#: napari/pint unit names for Tessera's spacing units.
PINT_UNITS = {"µm": "um", "mm": "mm", "arcsec": "arcsec", None: "pixel"}


@dataclass(frozen=True)
class SourceFrame:
    """The world placement of one Source: physical size of a level-0 pixel per spatial
    axis (1.0 each when unknown) and its unit ("µm", "mm", "arcsec" or "px")."""

    spacing: tuple[float, ...]
    unit: str
    spatial_axes: str

    @classmethod
    def of(cls, source: Source) -> SourceFrame:
        unit = source.spacing_unit if source.spacing is not None else None
        spacing = tuple(float(s) for s in source.spacing) if source.spacing is not None \
            else (1.0,) * source.ndim_spatial
        if unit == "arcsec" or unit is None:
            # Sky images: draw in pixels (a WCS is not a uniform grid); the status bar
            # still reports arcsec.
            spacing = (1.0,) * source.ndim_spatial
            unit = "px"
        return cls(spacing=spacing, unit=unit, spatial_axes=source.spatial_axes)

    @property
    def physical(self) -> bool:
        return self.unit in ("µm", "mm")

    @property
    def pint_unit(self) -> str:
        return PINT_UNITS.get(self.unit, "pixel")

    @property
    def yx_spacing(self) -> tuple[float, float]:
        return (self.spacing[-2], self.spacing[-1])

    def world_to_l0_yx(self, world_yx: tuple[float, float]) -> tuple[float, float]:
        sy, sx = self.yx_spacing
        return (world_yx[0] / sy, world_yx[1] / sx)

    def l0_to_world_yx(self, l0_yx: tuple[float, float]) -> tuple[float, float]:
        sy, sx = self.yx_spacing
        return (l0_yx[0] * sy, l0_yx[1] * sx)

    def raster_placement(self, l0_per_px_yx: tuple[float, float]) -> tuple[tuple[float, float], tuple[float, float]]:
        """(scale, translate) in world units of a raster whose pixel (i, j) covers level-0
        [i*fy, (i+1)*fy) x [j*fx, (j+1)*fx)."""
        sy, sx = self.yx_spacing
        fy, fx = l0_per_px_yx
        return (fy * sy, fx * sx), ((fy - 1) / 2 * sy, (fx - 1) / 2 * sx)


def view_box(frame: SourceFrame, centre_world_yx: tuple[float, float], zoom: float,
             canvas_hw: tuple[int, int]) -> ViewBox:
    """The level-0 box a canvas of ``canvas_hw`` screen pixels shows, centred on
    ``centre_world_yx`` at ``zoom`` screen pixels per world unit. Level-0 pixel k covers
    world [(k - 0.5) * s, (k + 0.5) * s), hence the half-pixel shift."""
    h_world = canvas_hw[0] / zoom
    w_world = canvas_hw[1] / zoom
    cy, cx = frame.world_to_l0_yx(centre_world_yx)
    sy, sx = frame.yx_spacing
    h, w = h_world / sy, w_world / sx
    return ViewBox(cy - h / 2 + 0.5, cx - w / 2 + 0.5, cy + h / 2 + 0.5, cx + w / 2 + 0.5)


def screen_resolution(frame: SourceFrame, zoom: float) -> float:
    """World units (µm, mm or px) per screen pixel at ``zoom``."""
    return 1.0 / zoom if zoom > 0 else math.inf


def magnification(um_per_screen_px: float) -> float:
    """Objective-equivalent magnification of a screen showing ``um_per_screen_px``."""
    return 10.0 * UM_PER_PX_AT_10X / um_per_screen_px if um_per_screen_px > 0 else 0.0


def describe_position(source: Source, frame: SourceFrame, world: tuple[float, ...], zoom: float) -> str:
    """The status-bar text for the cursor at ``world`` (world coordinates, any leading
    axes such as Z first): level-0 pixel, physical position, on-screen µm/px and
    magnification (slides), or the world position and voxel (volumes)."""
    nd = frame.spatial_axes
    coords = list(world)[-len(nd):]
    l0 = [c / s for c, s in zip(coords, frame.spacing, strict=True)]
    px = ", ".join(f"{a.lower()} {round(v)}" for a, v in zip(nd, l0, strict=True))
    parts = [f"px {px}"]
    if frame.physical:
        unit = frame.unit
        phys = ", ".join(f"{v:.1f}" if unit == "µm" else f"{v:.2f}" for v in coords)
        parts.append(f"{phys} {unit}")
        res = screen_resolution(frame, zoom)
        if unit == "µm" and len(nd) == 2:
            parts.append(f"{res:.3g} µm/px  {magnification(res):.3g}x")
        else:
            parts.append(f"{res:.3g} {unit}/px")
    elif source.spacing_unit == "arcsec" and source.spacing is not None:
        ra_dec = _sky_position(source, l0)
        if ra_dec:
            parts.append(ra_dec)
        parts.append(f"{source.spacing[-1] / zoom:.3g} arcsec/px")
    else:
        parts.append(f"zoom {zoom:.3g}")
    return "   ".join(parts)


def _sky_position(source: Source, l0_yx: list[float]) -> str | None:
    """RA/Dec of a pixel from the FITS WCS kept in the metadata (None without one)."""
    header = source.metadata.get("wcs")
    if not isinstance(header, dict) or not header:
        return None
    try:
        wcs = _celestial_wcs(tuple(sorted((k, v) for k, v in header.items() if not isinstance(v, list))))
        ra, dec = wcs.pixel_to_world_values(l0_yx[-1], l0_yx[-2])
        return f"RA {float(ra):.5f}°  Dec {float(dec):+.5f}°"
    except Exception:  # a WCS astropy cannot use: show pixels only
        return None


@functools.lru_cache(maxsize=8)
def _celestial_wcs(cards: tuple) -> object:
    from astropy.io.fits import Header
    from astropy.wcs import WCS

    return WCS(Header(dict(cards))).celestial
