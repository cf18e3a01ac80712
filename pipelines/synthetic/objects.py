"""Synthetic prompt-segmentation data: textured scenes of objects with exact masks.

Scenes imitate three kinds of images people prompt SAM on, hard in the ways real ones
are (low contrast, faint blurred boundaries, texture inside and outside objects,
speckle):

- ``"he"``: H&E-like histology: pink fibrous stroma, purple nuclei ("cell") with
  chromatin texture, glands ("gland": a pale lumen ringed by darker epithelium);
- ``"ct"``: CT-like grey levels: soft-tissue organs ("organ") a few HU-equivalents
  apart from their surroundings, bright tubular vessels ("vessel"), quantum noise;
- ``"us"``: ultrasound-like: multiplicative Rayleigh speckle, hypo- or hyperechoic
  lesions ("lesion") and vessels with faint walls, depth attenuation.

Every scene is drawn from a ``numpy.random.Generator`` and is deterministic for a seed.
Objects are drawn in order with soft edges; later objects occlude earlier ones and the
instance labels record what is visible. Prompts are sampled as SAM's training does:
jittered boxes and points inside (positive) or outside (negative) an object.

Coordinates: points and boxes are (x, y) pixel coordinates of the scene, boxes as
(x0, y0, x1, y1) with x1/y1 the last pixel's coordinate + 1 (so a full 256 px image is
(0, 0, 256, 256)).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy import ndimage as ndi

Style = Literal["he", "ct", "us"]
STYLES: tuple[Style, ...] = ("he", "ct", "us")


@dataclass
class ObjectScene:
    """One scene: ``image`` uint8 (H, W, 3) RGB, ``labels`` int32 (H, W) with 0 for
    background and i + 1 for ``kinds[i]``."""

    image: np.ndarray
    labels: np.ndarray
    kinds: list[str]
    style: str
    meta: dict[str, float] = field(default_factory=dict)

    def mask(self, instance: int) -> np.ndarray:
        """Boolean mask of instance ``instance`` (1-based, as in ``labels``)."""
        return self.labels == instance

    @property
    def n_objects(self) -> int:
        return len(self.kinds)


# ---------------------------------------------------------------------------------------
# shapes
# ---------------------------------------------------------------------------------------
def _blob(rng: np.random.Generator, shape: tuple[int, int], centre: tuple[float, float],
          radius: float, *, roughness: float = 0.15, elong: float = 1.0) -> np.ndarray:
    """A star-shaped blob: radius r(θ) = R (1 + Σ a_k cos(kθ + φ_k)), optionally
    elongated and rotated. Returns a signed distance-like field (>0 inside), in px."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = centre
    rot = rng.uniform(0, np.pi)
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(rot) + dy * np.sin(rot)
    v = -dx * np.sin(rot) + dy * np.cos(rot)
    u = u / elong
    theta = np.arctan2(v, u)
    rr = np.hypot(u, v)
    r_theta = np.ones_like(theta)
    for k in range(2, 6):
        r_theta += rng.normal(0, roughness / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return (radius * np.clip(r_theta, 0.5, 1.6) - rr).astype(np.float32)


def _tube(rng: np.random.Generator, shape: tuple[int, int], thickness: float) -> np.ndarray:
    """A smooth curved tube across part of the image (a vessel); signed field, px."""
    h, w = shape
    n = 5
    start = np.array([rng.uniform(0, h), rng.uniform(0, w)])
    angle = rng.uniform(0, 2 * np.pi)
    length = rng.uniform(0.45, 0.9) * max(h, w)
    pts = [start]
    for _ in range(n):
        angle += rng.normal(0, 0.5)
        step = length / n
        pts.append(pts[-1] + step * np.array([np.sin(angle), np.cos(angle)]))
    pts_arr = np.array(pts)
    # dense polyline by linear interpolation, then distance to it
    t = np.linspace(0, len(pts_arr) - 1, 200)
    dense = np.stack([np.interp(t, np.arange(len(pts_arr)), pts_arr[:, i]) for i in range(2)], axis=1)
    seed_img = np.zeros(shape, bool)
    iy = np.clip(np.round(dense[:, 0]).astype(int), -1, h)
    ix = np.clip(np.round(dense[:, 1]).astype(int), -1, w)
    ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    seed_img[iy[ok], ix[ok]] = True
    if not seed_img.any():
        seed_img[h // 2, w // 2] = True
    dist = ndi.distance_transform_edt(~seed_img).astype(np.float32)
    # thickness varies slowly along the image
    wobble = 1 + 0.2 * _smooth_noise(rng, shape, max(h, w) / 6)
    return (thickness / 2 * wobble - dist).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise scaled to unit standard deviation."""
    n = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    s = n.std()
    return n / s if s > 0 else n


def _alpha(field_px: np.ndarray, edge_px: float) -> np.ndarray:
    """Soft coverage from a signed field: 0.5 on the boundary, ramp of width ~edge_px."""
    z = np.clip(field_px / max(edge_px, 0.3) * 1.7, -30, 30)
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


# ---------------------------------------------------------------------------------------
# scenes
# ---------------------------------------------------------------------------------------
def _place_objects(rng: np.random.Generator, shape: tuple[int, int], style: Style) -> list[tuple[str, np.ndarray]]:
    """Signed fields of the scene's objects, in drawing order."""
    h, w = shape
    side = min(h, w)
    objs: list[tuple[str, np.ndarray]] = []
    occupied = np.zeros(shape, bool)

    def add(kind: str, make: object, tries: int = 6) -> None:
        # Blobs may touch but not hide much of each other (two overlapping organs of
        # similar grey would have no visible boundary); vessels may cross anything.
        for _ in range(tries):
            fld = make()  # type: ignore[operator]
            inside = fld > 0
            area = int(inside.sum())
            if area == 0:
                continue
            if kind == "vessel" or (inside & occupied).sum() <= 0.08 * area:
                objs.append((kind, fld))
                if kind != "vessel":
                    occupied[inside] = True
                return

    def centre(margin: float) -> tuple[float, float]:
        return rng.uniform(margin, h - margin), rng.uniform(margin, w - margin)

    if style == "he":
        for _ in range(rng.integers(0, 3)):
            r = rng.uniform(0.12, 0.24) * side
            add("gland", lambda r=r: _blob(rng, shape, centre(r * 0.6), r, roughness=0.25, elong=rng.uniform(1, 1.6)))
        for _ in range(rng.integers(1, 6)):
            r = rng.uniform(0.04, 0.08) * side
            add("cell", lambda r=r: _blob(rng, shape, centre(r), r, roughness=0.12, elong=rng.uniform(1, 1.5)))
    elif style == "ct":
        for _ in range(rng.integers(1, 3)):
            r = rng.uniform(0.14, 0.3) * side
            add("organ", lambda r=r: _blob(rng, shape, centre(r * 0.5), r, roughness=0.3, elong=rng.uniform(1, 1.8)))
        for _ in range(rng.integers(0, 3)):
            add("vessel", lambda: _tube(rng, shape, rng.uniform(0.035, 0.06) * side))
    else:
        for _ in range(rng.integers(1, 3)):
            r = rng.uniform(0.1, 0.24) * side
            add("lesion", lambda r=r: _blob(rng, shape, centre(r * 0.6), r, roughness=0.2, elong=rng.uniform(1, 1.7)))
        for _ in range(rng.integers(0, 2)):
            add("vessel", lambda: _tube(rng, shape, rng.uniform(0.04, 0.07) * side))
    return objs


def _composite(rng: np.random.Generator, shape: tuple[int, int], objs: list[tuple[str, np.ndarray]],
               background: np.ndarray, paint: dict[str, object], min_area_px: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Alpha-composite object appearances over ``background`` (H, W, C float); returns
    the image, the visible instance labels and their kinds (tiny remnants dropped)."""
    img = background.copy()
    labels = np.zeros(shape, np.int32)
    kinds: list[str] = []
    for kind, fld in objs:
        edge = float(rng.choice([0.6, 1.0, 1.8, 3.0]))  # faint boundaries sometimes
        alpha = _alpha(fld, edge)[..., None]
        appearance = paint[kind](fld)  # type: ignore[operator]
        img = img * (1 - alpha) + appearance * alpha
        kinds.append(kind)
        labels[fld > 0] = len(kinds)
    # drop objects whose visible part is too small, renumber
    out = np.zeros_like(labels)
    kept: list[str] = []
    for i, kind in enumerate(kinds, start=1):
        m = labels == i
        if m.sum() >= min_area_px:
            kept.append(kind)
            out[m] = len(kept)
    return img, out, kept


def _render_he(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, dict[str, object]]:
    stroma = np.array([232, 160, 196], np.float32) + rng.normal(0, 8, 3)
    fibre = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), (0.8, 4.0) if rng.random() < 0.5 else (4.0, 0.8))
    fibre /= fibre.std() + 1e-6
    low = _smooth_noise(rng, shape, 12)
    bg = stroma[None, None] + (10 * fibre + 12 * low)[..., None] * np.array([0.6, 1.0, 0.7], np.float32)

    def nucleus(fld: np.ndarray) -> np.ndarray:
        contrast = rng.uniform(0.35, 1.0)  # low contrast sometimes
        base = np.array([120, 72, 160], np.float32) + rng.normal(0, 10, 3)
        col = stroma + contrast * (base - stroma)
        chrom = _smooth_noise(rng, shape, 1.2)
        return col[None, None] + (14 * chrom)[..., None]

    def gland(fld: np.ndarray) -> np.ndarray:
        epi = np.array([190, 110, 175], np.float32) + rng.normal(0, 8, 3)
        lumen = np.array([245, 235, 240], np.float32)
        contrast = rng.uniform(0.35, 1.0)
        epi = stroma + contrast * (epi - stroma)
        wall = rng.uniform(5, 10)
        inner = _alpha(fld - wall, 1.0)[..., None]
        tex = _smooth_noise(rng, shape, 1.5)[..., None] * 10
        return (epi[None, None] + tex) * (1 - inner) + lumen[None, None] * inner

    return bg, {"cell": nucleus, "gland": gland}


def _render_ct(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, dict[str, object]]:
    level = rng.uniform(80, 130)
    bg = level + 10 * _smooth_noise(rng, shape, 10)

    def organ(fld: np.ndarray) -> np.ndarray:
        contrast = rng.uniform(14, 45) * rng.choice([-1, 1])
        return level + contrast + 4 * _smooth_noise(rng, shape, 6)

    def vessel(fld: np.ndarray) -> np.ndarray:
        return np.full(shape, level + rng.uniform(40, 90), np.float32)

    return bg[..., None], {"organ": lambda f: organ(f)[..., None], "vessel": lambda f: vessel(f)[..., None]}


def _render_us(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, dict[str, object]]:
    level = rng.uniform(90, 140)
    bg = level + 12 * _smooth_noise(rng, shape, 14)

    def lesion(fld: np.ndarray) -> np.ndarray:
        ratio = rng.choice([rng.uniform(0.35, 0.7), rng.uniform(1.35, 1.8)])  # hypo/hyperechoic
        return (level * ratio + 6 * _smooth_noise(rng, shape, 8))[..., None]

    def vessel(fld: np.ndarray) -> np.ndarray:
        return np.full((*shape, 1), level * 0.3, np.float32)

    return bg[..., None], {"lesion": lesion, "vessel": vessel}


def render_scene(
    rng: np.random.Generator,
    *,
    size_yx: tuple[int, int] = (256, 256),
    style: Style | None = None,
    min_area_px: int = 120,
) -> ObjectScene:
    """One scene of ``style`` (random when None) with at least one object."""
    style = style or STYLES[int(rng.integers(len(STYLES)))]
    shape = (int(size_yx[0]), int(size_yx[1]))
    renderer = {"he": _render_he, "ct": _render_ct, "us": _render_us}[style]
    for _ in range(20):
        bg, paint = renderer(rng, shape)
        objs = _place_objects(rng, shape, style)
        img, labels, kinds = _composite(rng, shape, objs, bg, paint, min_area_px)
        if kinds:
            break
    img = _finish(rng, img, style)
    return ObjectScene(image=img, labels=labels, kinds=kinds, style=style)


def _finish(rng: np.random.Generator, img: np.ndarray, style: Style) -> np.ndarray:
    """Blur, noise and speckle of the imaging device; -> uint8 RGB."""
    shape = img.shape[:2]
    if style == "he":
        img = ndi.gaussian_filter(img, (0.7, 0.7, 0))
        img = img + rng.normal(0, 4, img.shape)
    elif style == "ct":
        img = ndi.gaussian_filter(img, (0.8, 0.8, 0))
        img = img + rng.normal(0, rng.uniform(6, 14), img.shape)
    else:
        # multiplicative speckle (Rayleigh, correlated over a few px) and depth attenuation
        speckle = rng.rayleigh(1.0, shape).astype(np.float32)
        speckle = ndi.gaussian_filter(speckle, 0.9) / 1.2533
        depth = np.linspace(1.0, rng.uniform(0.55, 0.85), shape[0], dtype=np.float32)[:, None, None]
        img = img * speckle[..., None] * depth
    img = np.clip(img, 0, 255).astype(np.uint8)
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    return img


# ---------------------------------------------------------------------------------------
# prompts
# ---------------------------------------------------------------------------------------
def mask_box(mask: np.ndarray) -> np.ndarray:
    """Tight box (x0, y0, x1, y1) of a mask, x1/y1 exclusive, float32."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def sample_box(rng: np.random.Generator, mask: np.ndarray, *, jitter: float = 0.1, max_px: float = 20) -> np.ndarray:
    """The mask's tight box with each side moved by N(0, jitter x side length), at most
    ``max_px`` (SAM's recipe), clipped to the image."""
    box = mask_box(mask)
    h, w = mask.shape
    bw, bh = box[2] - box[0], box[3] - box[1]
    noise = rng.normal(0, jitter, 4) * np.array([bw, bh, bw, bh])
    noise = np.clip(noise, -max_px, max_px)
    out = box + noise
    out[[0, 2]] = np.clip(out[[0, 2]], 0, w)
    out[[1, 3]] = np.clip(out[[1, 3]], 0, h)
    if out[2] - out[0] < 2 or out[3] - out[1] < 2:
        return box
    return out.astype(np.float32)


def sample_points(
    rng: np.random.Generator,
    mask: np.ndarray,
    *,
    n_pos: int = 1,
    n_neg: int = 0,
    inside_fraction: float = 0.0,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``n_pos`` points inside ``mask`` and ``n_neg`` outside it (near it: within twice
    its box, not in ``exclude``) as ((N, 2) float32 x, y pixel coordinates, (N,) labels
    1/0). ``inside_fraction`` > 0 keeps positives at least that fraction of the maximum
    depth from the boundary (0: anywhere in the mask)."""
    coords: list[np.ndarray] = []
    labels: list[int] = []
    if n_pos:
        depth = ndi.distance_transform_edt(mask)
        ok = depth >= max(1.0, inside_fraction * depth.max())
        ys, xs = np.nonzero(ok)
        idx = rng.integers(len(ys), size=n_pos)
        coords += [np.array([xs[i], ys[i]], np.float32) for i in idx]
        labels += [1] * n_pos
    if n_neg:
        box = mask_box(mask)
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        bw, bh = box[2] - box[0], box[3] - box[1]
        h, w = mask.shape
        yy, xx = np.mgrid[0:h, 0:w]
        near = (np.abs(xx - cx) <= bw) & (np.abs(yy - cy) <= bh) & ~mask
        if exclude is not None:
            near &= ~exclude
        ys, xs = np.nonzero(near if near.any() else ~mask)
        idx = rng.integers(len(ys), size=n_neg)
        coords += [np.array([xs[i], ys[i]], np.float32) for i in idx]
        labels += [0] * n_neg
    return np.array(coords, np.float32).reshape(-1, 2), np.array(labels, np.float32)


def centre_point(mask: np.ndarray) -> np.ndarray:
    """The most interior pixel of a mask (distance-transform maximum), (x, y) float32:
    the 'one click in the middle' prompt benchmarks use."""
    depth = ndi.distance_transform_edt(mask)
    y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return np.array([x, y], np.float32)


def make_scenes(seed: int, n: int, *, size_yx: tuple[int, int] = (256, 256)) -> list[ObjectScene]:
    """``n`` scenes, styles in turn (he, ct, us, he, ...), deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    return [render_scene(rng, size_yx=size_yx, style=STYLES[i % len(STYLES)]) for i in range(n)]
