"""PNG previews: a thumbnail of the input with the result drawn over it, translucent."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from tessera.pipelines.writers.atomic import atomic_path
from tessera.pipelines.writers.ome_zarr import hex_rgb


def display_rgb(image_yxc: np.ndarray) -> np.ndarray:
    """Any (Y, X, C) image as 8-bit RGB for display (robust per-channel stretch when not uint8)."""
    img = np.asarray(image_yxc)
    if img.dtype != np.uint8:
        f = img.astype(np.float32)
        lo = np.percentile(f, 0.5, axis=(0, 1))
        hi = np.percentile(f, 99.5, axis=(0, 1))
        img = np.clip((f - lo) / np.maximum(hi - lo, 1e-12) * 255, 0, 255).astype(np.uint8)
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    elif img.shape[-1] == 2:
        img = np.concatenate([img, np.zeros_like(img[..., :1])], axis=-1)
    return np.ascontiguousarray(img[..., :3])


def probability_overlay(prob: np.ndarray, colour: str, *, max_alpha: float = 0.65) -> np.ndarray:
    """RGBA (h, w, 4) uint8: ``colour`` with opacity growing with ``prob`` (NaN: clear)."""
    p = np.asarray(prob, np.float32)
    out = np.zeros((*p.shape, 4), np.uint8)
    out[..., :3] = hex_rgb(colour)
    alpha = np.nan_to_num(p, nan=0.0)
    np.clip(alpha, 0, 1, out=alpha)
    alpha *= max_alpha * 255
    np.rint(alpha, out=alpha)
    out[..., 3] = alpha
    return out


def label_overlay(labels: np.ndarray, colours: Mapping[int, str], *, alpha: float = 0.45) -> np.ndarray:
    """RGBA (h, w, 4) uint8 of label colours; labels without a colour (and 0) stay clear."""
    lut = np.zeros((256, 4), np.uint8)
    for value, colour in colours.items():
        if 0 < value < 256:
            lut[value] = [*hex_rgb(colour), int(alpha * 255)]
    return lut[np.asarray(labels, np.uint8)]


def write_preview(path: Path, thumbnail_yxc: np.ndarray, overlay_rgba: np.ndarray | None, *,
                  overlay_box: tuple[float, float, float, float] | None = None) -> None:
    """Composite ``overlay_rgba`` on the thumbnail and write a PNG atomically.

    The overlay is stretched over the whole image with nearest neighbour (tiles stay
    crisp); ``overlay_box`` (x0, y0, x1, y1, in overlay pixels) is the part of the
    overlay that covers the thumbnail, e.g. a tile grid that runs past the slide's edge.
    Only the overlay raster and one image of the thumbnail's size are allocated.
    """
    from PIL import Image

    base = Image.fromarray(display_rgb(thumbnail_yxc)).convert("RGBA")
    if overlay_rgba is not None:
        over = Image.fromarray(np.ascontiguousarray(overlay_rgba), mode="RGBA").resize(
            base.size, Image.Resampling.NEAREST, box=overlay_box
        )
        base.alpha_composite(over)
    with atomic_path(Path(path)) as tmp:
        base.convert("RGB").save(tmp, format="PNG", compress_level=3)  # optimize=True costs seconds
