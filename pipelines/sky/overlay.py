"""Overlay picture of a catalogue: every galaxy ringed in its class colour with its label."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tessera.pipelines.writers.ome_zarr import hex_rgb

STAR_COLOUR = (150, 150, 150)


def draw_overlay(
    picture: np.ndarray,
    table,
    *,
    class_names: Sequence[str],
    class_colours: Sequence[str],
    max_side_px: int = 4096,
    short_names: Sequence[str] | None = None,
    label_min_px: float = 8.0,
) -> np.ndarray:
    """uint8 (H', W', 3) copy of ``picture`` (downscaled so its long side is at most
    ``max_side_px``) with galaxies as ellipses (2.5 half-light radii, catalogue shape) in
    their class colour, labelled ``<id> <class>`` when their ellipse is at least ``label_min_px`` across
    in the output, and stars as small grey circles."""
    from PIL import Image, ImageDraw, ImageFont

    h, w = picture.shape[:2]
    scale = min(1.0, max_side_px / max(h, w))
    img = Image.fromarray(picture)
    if scale < 1.0:
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
    draw = ImageDraw.Draw(img)
    font_px = max(11, round(13 * max(img.size) / 2048))
    try:
        font = ImageFont.load_default(size=font_px)  # scalable font (Pillow >= 10.1)
    except TypeError:
        font = ImageFont.load_default()
    labels = list(short_names or class_names)
    width = max(1, round(2 * max(img.size) / 2048))
    for row in table:
        x, y = float(row["x_px"]) * scale, float(row["y_px"]) * scale
        if row["kind"] != "galaxy" or int(row["class_id"]) < 0:
            r = max(3.0, 1.5 * float(row["r50_px"]) * scale)
            draw.ellipse((x - r, y - r, x + r, y + r), outline=STAR_COLOUR, width=1)
            continue
        k = int(row["class_id"])
        colour = tuple(hex_rgb(class_colours[k]))
        r_major = max(4.0, 2.5 * float(row["r50_px"]) * scale)
        q = max(0.25, float(row["b_px"]) / max(float(row["a_px"]), 1e-6))
        theta = math.radians(float(row["theta_deg"]))
        t = np.linspace(0, 2 * math.pi, 48)
        u, v = r_major * np.cos(t), r_major * q * np.sin(t)
        pts = list(zip(x + u * math.cos(theta) - v * math.sin(theta),
                       y + u * math.sin(theta) + v * math.cos(theta), strict=True))
        draw.line([*pts, pts[0]], fill=colour, width=width)
        if r_major < label_min_px:
            continue  # crowded fields: label only galaxies big enough to read
        text = f"{int(row['id'])} {labels[k]}"
        tx, ty = x + r_major * 0.75, y - r_major * 0.75 - font_px
        draw.text((tx + 1, ty + 1), text, fill=(0, 0, 0), font=font)
        draw.text((tx, ty), text, fill=colour, font=font)
    return np.asarray(img)
