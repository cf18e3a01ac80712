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
    p = np.nan_to_num(np.asarray(prob, np.float32), nan=0.0).clip(0, 1)
    out = np.zeros((*p.shape, 4), np.uint8)
    out[..., :3] = hex_rgb(colour)
    out[..., 3] = np.rint(p * max_alpha * 255).astype(np.uint8)
    return out


def label_overlay(labels: np.ndarray, colours: Mapping[int, str], *, alpha: float = 0.45) -> np.ndarray:
    """RGBA (h, w, 4) uint8 of label colours; labels without a colour (and 0) stay clear."""
    out = np.zeros((*labels.shape, 4), np.uint8)
    for value, colour in colours.items():
        if value == 0:
            continue
        m = labels == value
        out[m, :3] = hex_rgb(colour)
        out[m, 3] = int(alpha * 255)
    return out


def write_preview(path: Path, thumbnail_yxc: np.ndarray, overlay_rgba: np.ndarray | None) -> None:
    """Composite ``overlay_rgba`` (any size; stretched over the whole image, nearest
    neighbour so tiles stay crisp) on the thumbnail and write a PNG atomically."""
    from PIL import Image

    base = Image.fromarray(display_rgb(thumbnail_yxc)).convert("RGBA")
    if overlay_rgba is not None:
        over = Image.fromarray(np.ascontiguousarray(overlay_rgba), mode="RGBA").resize(
            base.size, Image.Resampling.NEAREST
        )
        base = Image.alpha_composite(base, over)
    with atomic_path(Path(path)) as tmp:
        base.convert("RGB").save(tmp, format="PNG", compress_level=3)  # optimize=True costs seconds
