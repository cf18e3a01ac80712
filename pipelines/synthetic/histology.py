"""Synthetic H&E histology: breast tissue rendered procedurally, tile by tile.

What it draws, in the user's words: tissue on white glass with an irregular outline;
pink eosin stroma with collagen fibres and clefts; purple haematoxylin nuclei;
fat (adipocytes); glands (lumina lined by epithelial nuclei with an outer myoepithelial
layer). Benign tissue has small, regular, evenly spaced nuclei and intact glands;
malignant tissue has large, dense, pleomorphic, hyperchromatic nuclei, crowding and
disrupted glands. The eight BreakHis subtypes and the normal breast background are
``ARCHITECTURES`` (see their descriptions): each is built by construction from
different tissue components, so they differ visibly and measurably.

Colour is Beer-Lambert stain mixing in optical density (OD) space: every pixel has a
haematoxylin and an eosin concentration, ``OD = c_H * h_od + c_E * e_od`` (per RGB
channel) and ``I = I0 * 10**-OD``. The stain vectors are explicit (``StainModel``) and
vary per synthetic patient/slide, so stain normalisation (Macenko, Reinhard) has a
known ground truth to recover.

Rendering is a pure function of (seed, region, pixel size): ``HistologyScene.render(
y0, x0, h, w, mpp=...)`` returns the same pixels for a pixel whatever region it is
asked in, so a slide streams tile by tile to any size without seams and in bounded
memory. Everything is stateless hashing of absolute coordinates (no random state):
smooth fields (tissue shape, tumour, fibres, glands) are evaluated on coarse lattices
anchored at absolute positions and interpolated; nuclei are placed on jittered grids
of absolute cells and drawn as anti-aliased sprites.

Frames and units: the render frame of a scene at ``mpp`` µm/px has pixel ``(i, j)``
covering ``[i*mpp, (i+1)*mpp)`` µm in y and ``[j*mpp, (j+1)*mpp)`` in x, so a slide's
level 0 at 0.25 µm/px and a 1 µm/px patch of the same scene show the same tissue.
Lengths in names end in ``_um`` (µm) or ``_px`` (pixels of the render frame).

Why written here: no maintained library renders histology-like textures (the known
synthetic-histology generators are GANs/diffusion models needing weights and data).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar, Protocol

import numpy as np

F32 = np.float32
_BIG = F32(1e6)

#: Edge softness of sharp boundaries (µm): the optical point-spread blur of a scanner.
EDGE_UM = 0.45
#: Fine lattice step (µm) for glands, fibres, fat membranes; coarse one for shapes.
FINE_STEP_UM = 2.0
COARSE_STEP_UM = 16.0
FAT_STEP_UM = 1.0  # adipocyte walls (~2 µm thick) need a finer lattice
#: Render blocks are about this many pixels a side (bounded temporary memory).
BLOCK_PX = 1024


# ---- stateless hashing and noise ---------------------------------------------------------


def sub_seed(seed: int, *parts: object) -> int:
    """A 32-bit seed derived from ``seed`` and names, stable across processes and runs."""
    text = repr((int(seed), *(str(p) for p in parts))).encode()
    return zlib.crc32(text) ^ ((int(seed) * 0x9E3779B1) & 0xFFFFFFFF)


def _mix32(h: np.ndarray) -> np.ndarray:
    """lowbias32 finaliser (in place on a uint32 array): avalanches every input bit."""
    h ^= h >> 16
    h *= np.uint32(0x7FEB352D)
    h ^= h >> 15
    h *= np.uint32(0x846CA68B)
    h ^= h >> 16
    return h


def hash2(iy: np.ndarray, ix: np.ndarray, seed: int) -> np.ndarray:
    """uint32 hash of integer lattice coordinates (broadcast), a pure function of them."""
    hy = np.asarray(iy).astype(np.uint32) * np.uint32(0x9E3779B1)
    hx = np.asarray(ix).astype(np.uint32) * np.uint32(0x85EBCA77)
    hy ^= np.uint32(seed & 0xFFFFFFFF)
    return _mix32(hy + hx)


def uniform2(iy: np.ndarray, ix: np.ndarray, seed: int) -> np.ndarray:
    """Uniform [0, 1) float32 per lattice point (broadcast)."""
    return (hash2(iy, ix, seed) >> 8).astype(F32) * F32(1.0 / (1 << 24))


_GRAD_ANGLES = np.arange(16) * (2 * np.pi / 16) + np.pi / 16
_GRAD_Y = np.sin(_GRAD_ANGLES).astype(F32)
_GRAD_X = np.cos(_GRAD_ANGLES).astype(F32)


def perlin(y: np.ndarray, x: np.ndarray, seed: int) -> np.ndarray:
    """2-D gradient noise at ``(y, x)`` in lattice units (broadcast), about [-1, 1]."""
    fy, fx = np.floor(y), np.floor(x)
    ty, tx = (y - fy).astype(F32), (x - fx).astype(F32)
    iy, ix = fy.astype(np.int64), fx.astype(np.int64)
    uy = ty * ty * ty * (ty * (ty * 6 - 15) + 10)
    ux = tx * tx * tx * (tx * (tx * 6 - 15) + 10)

    def corner(cy: np.ndarray, cx: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
        g = hash2(cy, cx, seed) >> 28
        return _GRAD_Y[g] * dy + _GRAD_X[g] * dx

    n00 = corner(iy, ix, ty, tx)
    n01 = corner(iy, ix + 1, ty, tx - 1)
    n10 = corner(iy + 1, ix, ty - 1, tx)
    n11 = corner(iy + 1, ix + 1, ty - 1, tx - 1)
    a = n00 + ux * (n01 - n00)
    b = n10 + ux * (n11 - n10)
    return (a + uy * (b - a)) * F32(1.4)


def fbm(
    y_um: np.ndarray, x_um: np.ndarray, scale_um: float, seed: int, octaves: int = 4
) -> np.ndarray:
    """Fractal noise (octaves of ``perlin``), features about ``scale_um`` wide; sd ~0.25."""
    total: np.ndarray | float = 0.0
    amp, norm, freq = 1.0, 0.0, 1.0 / scale_um
    for o in range(octaves):
        total = total + F32(amp) * perlin(y_um * freq + 0.37 * o, x_um * freq + 0.71 * o, seed + o)
        norm += amp
        amp *= 0.5
        freq *= 2.03
    return np.asarray(total, dtype=F32) * F32(1.0 / norm)


#: Upper-tail quantiles of ``fbm`` (3-4 octaves): fraction of area above each threshold.
_FBM_TAIL = np.array(
    [[0.02, 0.386], [0.05, 0.315], [0.1, 0.25], [0.2, 0.167], [0.3, 0.105], [0.4, 0.051],
     [0.5, 0.0], [0.6, -0.051], [0.7, -0.105], [0.8, -0.167], [0.9, -0.25], [0.95, -0.315],
     [0.98, -0.386]],
    dtype=np.float64,
)


def fbm_threshold(area_fraction: float) -> float:
    """The ``fbm`` level above which about ``area_fraction`` of the plane lies."""
    return float(np.interp(area_fraction, _FBM_TAIL[:, 0], _FBM_TAIL[:, 1]))


def _smoothstep(e0: float, e1: float, v: np.ndarray) -> np.ndarray:
    t = np.clip((v - e0) * F32(1.0 / (e1 - e0)), 0, 1)
    return t * t * (3 - 2 * t)


# ---- stains ------------------------------------------------------------------------------

#: Reference stain OD vectors (R, G, B), unit length; the Macenko et al. (2009) reference.
HAEMATOXYLIN_OD = (0.5626, 0.7201, 0.4062)
EOSIN_OD = (0.2159, 0.8012, 0.5581)


def _unit(v: Sequence[float]) -> tuple[float, float, float]:
    a = np.asarray(v, dtype=np.float64)
    a = a / np.linalg.norm(a)
    return (float(a[0]), float(a[1]), float(a[2]))


@dataclass(frozen=True)
class StainModel:
    """H&E colour by Beer-Lambert mixing: ``I = I0 * 10**-(c_H*h_od + c_E*e_od)``.

    ``h_od``/``e_od`` are unit OD vectors (R, G, B); ``h_gain``/``e_gain`` scale the
    concentrations (staining strength of this slide); ``background_rgb`` is the
    brightness of empty glass (I0). A slide/patient draws its own with ``sample``.
    """

    h_od: tuple[float, float, float] = HAEMATOXYLIN_OD
    e_od: tuple[float, float, float] = EOSIN_OD
    h_gain: float = 1.0
    e_gain: float = 1.0
    background_rgb: tuple[float, float, float] = (243.0, 241.0, 245.0)

    @classmethod
    def sample(cls, seed: int) -> StainModel:
        """A per-patient/slide stain: vectors tilted a few degrees, strength -35..+35%."""
        rng = np.random.default_rng(sub_seed(seed, "stain"))
        h = np.asarray(HAEMATOXYLIN_OD) + rng.normal(0, 0.055, 3)
        e = np.asarray(EOSIN_OD) + rng.normal(0, 0.055, 3)
        bg = 241.0 + rng.uniform(-5, 5) + rng.normal(0, 1.5, 3)
        return cls(
            h_od=_unit(np.clip(h, 0.05, None)),
            e_od=_unit(np.clip(e, 0.05, None)),
            h_gain=float(rng.uniform(0.75, 1.3)),
            e_gain=float(rng.uniform(0.65, 1.35)),
            background_rgb=(
                float(np.clip(bg[0], 228, 252)),
                float(np.clip(bg[1], 228, 252)),
                float(np.clip(bg[2], 228, 252)),
            ),
        )

    @property
    def matrix(self) -> np.ndarray:
        """(2, 3) float64: rows are the H and E OD vectors (R, G, B)."""
        return np.array([self.h_od, self.e_od], dtype=np.float64)

    def concentrations(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Invert Beer-Lambert with this stain: (c_H, c_E) float32 maps of an RGB image
        (least squares in OD space; the concentrations the renderer used, up to noise)."""
        od = -np.log10(np.maximum(np.asarray(rgb, np.float32), 1.0) / np.asarray(
            self.background_rgb, np.float32))
        pinv = np.linalg.pinv(self.matrix).astype(np.float32)  # (3, 2)
        c = od @ pinv
        return c[..., 0] / F32(self.h_gain), c[..., 1] / F32(self.e_gain)

    def optical_density(self, conc_h: np.ndarray, conc_e: np.ndarray) -> np.ndarray:
        """OD (..., 3) float32 of given concentrations (before the per-slide gains)."""
        ch = conc_h[..., None] * F32(self.h_gain)
        ce = conc_e[..., None] * F32(self.e_gain)
        return ch * np.asarray(self.h_od, F32) + ce * np.asarray(self.e_od, F32)

    def to_rgb_float(self, conc_h: np.ndarray, conc_e: np.ndarray) -> np.ndarray:
        """RGB (..., 3) float32 in 0..255 (not yet quantised)."""
        od = self.optical_density(conc_h, conc_e)
        od *= F32(-math.log(10.0))
        np.exp(od, out=od)
        od *= np.asarray(self.background_rgb, F32)
        return od


# ---- nuclei ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NucleusStyle:
    """How a population of nuclei looks. Sizes are semi-axes in µm; darkness is the
    haematoxylin concentration at the nucleus centre (hyperchromasia)."""

    radius_um: tuple[float, float] = (2.6, 3.3)  # equivalent radius, uniform range
    aspect: tuple[float, float] = (0.75, 0.95)  # minor/major axis ratio range
    pleomorphism: float = 0.04  # amplitude of irregular outline harmonics
    darkness: tuple[float, float] = (0.75, 0.1)  # mean, +- half range
    texture: float = 0.12  # chromatin granularity
    vesicular: float = 0.0  # pale centre, dark rim (open chromatin)
    nucleolus_p: float = 0.0  # probability of a prominent nucleolus


@dataclass
class Nuclei:
    """A set of nuclei in µm (float32 arrays of equal length)."""

    y_um: np.ndarray
    x_um: np.ndarray
    a_um: np.ndarray  # semi-major
    b_um: np.ndarray  # semi-minor
    angle: np.ndarray  # radians, major axis from +x towards +y
    e2: np.ndarray
    p2: np.ndarray
    e3: np.ndarray
    p3: np.ndarray
    darkness: np.ndarray
    texture: np.ndarray
    vesicular: np.ndarray
    nucleolus: np.ndarray  # strength, 0 when none

    FIELDS: ClassVar[tuple[str, ...]] = (
        "y_um", "x_um", "a_um", "b_um", "angle", "e2", "p2", "e3", "p3", "darkness",
        "texture", "vesicular", "nucleolus",
    )

    @classmethod
    def empty(cls) -> Nuclei:
        return cls(*[np.zeros(0, F32) for _ in cls.FIELDS])

    def __len__(self) -> int:
        return int(self.y_um.shape[0])

    def select(self, keep: np.ndarray) -> Nuclei:
        return Nuclei(*[getattr(self, f)[keep] for f in self.FIELDS])

    @classmethod
    def concat(cls, parts: Sequence[Nuclei]) -> Nuclei:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        return cls(*[np.concatenate([getattr(p, f) for p in parts]) for f in cls.FIELDS])

    @classmethod
    def from_style(
        cls,
        style: NucleusStyle,
        y_um: np.ndarray,
        x_um: np.ndarray,
        u: np.ndarray,
        angle: np.ndarray | None = None,
    ) -> Nuclei:
        """Nuclei of ``style`` at the given centres; ``u`` (>= 9, N) uniforms make each unique;
        ``angle`` fixes the orientation (e.g. along fibres), else it is random."""
        n = y_um.shape[0]
        r = style.radius_um[0] + (style.radius_um[1] - style.radius_um[0]) * u[0]
        asp = style.aspect[0] + (style.aspect[1] - style.aspect[0]) * u[1]
        sq = np.sqrt(asp)
        ang = u[2] * F32(np.pi) if angle is None else angle
        pleo = F32(style.pleomorphism)
        nucleolus = np.where(u[7] < style.nucleolus_p, F32(0.55), F32(0.0))
        dark = style.darkness[0] + style.darkness[1] * (2 * u[8] - 1)
        return cls(
            y_um=y_um.astype(F32),
            x_um=x_um.astype(F32),
            a_um=(r / sq).astype(F32),
            b_um=(r * sq).astype(F32),
            angle=np.broadcast_to(ang, (n,)).astype(F32),
            e2=pleo * u[3],
            p2=u[4] * F32(2 * np.pi),
            e3=pleo * F32(0.7) * u[5],
            p3=u[6] * F32(2 * np.pi),
            darkness=dark.astype(F32),
            texture=np.full(n, style.texture, F32),
            vesicular=np.full(n, style.vesicular, F32),
            nucleolus=nucleolus.astype(F32),
        )


def _cell_uniforms(icy: np.ndarray, icx: np.ndarray, seed: int, n: int) -> np.ndarray:
    """(n, ...) uniforms for integer cells; stream k uses its own seed."""
    return np.stack([uniform2(icy, icx, sub_seed(seed, k)) for k in range(n)])


def _cells_in_box(
    box_um: tuple[float, float, float, float], cell_um: float
) -> tuple[np.ndarray, np.ndarray]:
    """Flat integer (icy, icx) of the cells of an absolute grid that meet a µm box."""
    y0, x0, y1, x1 = box_um
    cy = np.arange(math.floor(y0 / cell_um), math.floor(y1 / cell_um) + 1, dtype=np.int64)
    cx = np.arange(math.floor(x0 / cell_um), math.floor(x1 / cell_um) + 1, dtype=np.int64)
    gy, gx = np.meshgrid(cy, cx, indexing="ij")
    return gy.ravel(), gx.ravel()


def jittered_points(
    box_um: tuple[float, float, float, float], cell_um: float, seed: int, n_uniforms: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One candidate point per cell of an absolute grid, anywhere in its cell.

    Returns (y_um, x_um, u) with ``u`` (n_uniforms, N) further uniforms per point.
    The same cell always gives the same point, whatever box asks for it.
    """
    icy, icx = _cells_in_box(box_um, cell_um)
    u = _cell_uniforms(icy, icx, seed, n_uniforms + 2)
    y = (icy + u[0].astype(np.float64)) * cell_um
    x = (icx + u[1].astype(np.float64)) * cell_um
    return y, x, u[2:]


def draw_nuclei(
    canvas: np.ndarray,
    origin_yx_px: tuple[int, int],
    nuclei: Nuclei,
    mpp: float,
    seed: int,
) -> None:
    """Max-composite nuclei (haematoxylin density) into ``canvas`` (float32, YX).

    ``canvas[i, j]`` is render-frame pixel ``origin + (i, j)``. Each nucleus is an
    ellipse with a wavy outline (2nd and 3rd angular harmonics: pleomorphism),
    anti-aliased over ``EDGE_UM``, with chromatin grain hashed from absolute pixel
    coordinates, an optional vesicular (pale centre) profile and a nucleolus. Sprites
    are computed all at once per size bucket (no Python loop per nucleus or pixel).
    """
    if not len(nuclei):
        return
    oy, ox = origin_yx_px
    hc, wc = canvas.shape
    inv = F32(1.0 / mpp)
    cy = nuclei.y_um * inv
    cx = nuclei.x_um * inv
    a = np.maximum(nuclei.a_um * inv, F32(0.35))
    b = np.maximum(nuclei.b_um * inv, F32(0.35))
    ramp = F32(max(EDGE_UM / mpp, 0.7))
    ext = a * (1 + nuclei.e2 + nuclei.e3) + ramp + 1
    size = (np.ceil(2 * ext / 4) * 4).astype(np.int64)
    flat = canvas.reshape(-1)
    half = size / 2
    meets = (cy + half > oy) & (cy - half < oy + hc) & (cx + half > ox) & (cx - half < ox + wc)
    for s in np.unique(size[meets]):
        members = np.nonzero(meets & (size == s))[0]
        per_chunk = max(1, _SPRITE_CHUNK_PX // int(s * s))
        for c0 in range(0, members.size, per_chunk):
            _draw_sprites(flat, (hc, wc), (oy, ox), nuclei, members[c0 : c0 + per_chunk],
                          int(s), cy, cx, a, b, ramp, mpp, seed)


#: Sprite pixels computed at once (bounds temporary memory to ~100 MB).
_SPRITE_CHUNK_PX = 1 << 19


def _draw_sprites(
    flat: np.ndarray,
    shape: tuple[int, int],
    origin: tuple[int, int],
    nuclei: Nuclei,
    sel: np.ndarray,
    s: int,
    cy: np.ndarray,
    cx: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    ramp: np.float32,
    mpp: float,
    seed: int,
) -> None:
    """Draw nuclei ``sel`` (all with sprite size ``s`` px) into the flat canvas."""
    hc, wc = shape
    oy, ox = origin
    ar = np.arange(s)
    ys = np.floor(cy[sel] - s / 2).astype(np.int64)[:, None] + ar  # (N, S) absolute rows
    xs = np.floor(cx[sel] - s / 2).astype(np.int64)[:, None] + ar
    dy = (ys + F32(0.5) - cy[sel, None]).astype(F32)[:, :, None]
    dx = (xs + F32(0.5) - cx[sel, None]).astype(F32)[:, None, :]
    c = np.cos(nuclei.angle[sel])[:, None, None]
    sn = np.sin(nuclei.angle[sel])[:, None, None]
    aa, bb = a[sel, None, None], b[sel, None, None]
    un = (dx * c + dy * sn) / aa
    vn = (dy * c - dx * sn) / bb
    uu, vv = un * un, vn * vn
    r2 = uu + vv + F32(1e-12)
    rho = np.sqrt(r2)
    # wavy outline: 2nd and 3rd harmonics of the polar angle, from (un, vn) without atan2
    e2, e3 = nuclei.e2[sel, None, None], nuclei.e3[sel, None, None]
    p2, p3 = nuclei.p2[sel, None, None], nuclei.p3[sel, None, None]
    harm2 = ((uu - vv) * (e2 * np.cos(p2)) + (2 * un * vn) * (e2 * np.sin(p2))) / r2
    harm3 = (un * (uu - 3 * vv) * (e3 * np.cos(p3)) + vn * (3 * uu - vv) * (e3 * np.sin(p3))) / (
        r2 * rho
    )
    boundary = 1 + harm2 + harm3
    cov = np.clip(F32(0.5) - (rho - boundary) * (np.sqrt(aa * bb) / ramp), 0, 1)
    ves = nuclei.vesicular[sel, None, None]
    val = 1 - ves * F32(0.6) * (1 - _smoothstep(0.45, 0.95, rho / boundary))
    nuc = nuclei.nucleolus[sel, None, None]
    if np.any(nuc > 0):  # a nucleolus ~0.8 µm across, off centre
        rn = F32(0.8 / mpp)
        ny_ = (un - F32(0.25)) * (aa / rn)
        nx_ = (vn + F32(0.2)) * (bb / rn)
        val += nuc * np.exp(-(ny_ * ny_ + nx_ * nx_))
    grain = uniform2(ys[:, :, None], xs[:, None, :], seed) - F32(0.5)
    grain *= nuclei.texture[sel, None, None] * F32(2 * min(1.0, 0.5 / mpp))
    grain += 1
    val *= grain
    val *= cov
    val *= nuclei.darkness[sel, None, None]
    ly, lx = ys - oy, xs - ox
    inside = (cov > 0) & ((ly >= 0) & (ly < hc))[:, :, None] & ((lx >= 0) & (lx < wc))[:, None, :]
    idx = ly[:, :, None] * wc + lx[:, None, :]
    np.maximum.at(flat, idx[inside], val[inside])


# ---- where fields are evaluated: lattices and scattered points ---------------------------


def _upsample_axis(c: np.ndarray, f: int, axis: int, endpoint: bool) -> np.ndarray:
    """Linear interpolation by an integer factor along ``axis`` between samples that sit
    ``f`` apart; ``endpoint`` keeps the last sample (n -> (n-1)*f + 1), else (n-1)*f."""
    if f == 1:
        return c if endpoint else (c[:-1] if axis == 0 else c[:, :-1])
    t = np.arange(f, dtype=F32) / F32(f)
    if axis == 0:
        c0, c1 = c[:-1], c[1:]
        out = (c0[:, None, :] + (c1 - c0)[:, None, :] * t[None, :, None]).reshape(-1, c.shape[1])
        return np.concatenate([out, c[-1:]], axis=0) if endpoint else out
    c0, c1 = c[:, :-1], c[:, 1:]
    out = (c0[:, :, None] + (c1 - c0)[:, :, None] * t).reshape(c.shape[0], -1)
    return np.concatenate([out, c[:, -1:]], axis=1) if endpoint else out


def upsample(c: np.ndarray | float, f: int, endpoint: bool) -> np.ndarray | float:
    """Bilinear upsampling of a lattice by an integer factor (scalars pass through)."""
    if np.ndim(c) == 0:
        return c
    c = np.asarray(c, F32)
    return _upsample_axis(_upsample_axis(c, f, 0, endpoint), f, 1, endpoint)


class Where:
    """Where fields are evaluated: a lattice block or scattered points, in µm.

    ``y``/``x`` broadcast against each other: (ny, 1) and (1, nx) for a lattice, (N,)
    and (N,) for points. ``smooth(fn)`` evaluates a low-frequency field: on a lattice
    at every ``coarse``-th sample and interpolated (cheap), at points exactly.
    """

    def __init__(self, y: np.ndarray, x: np.ndarray, coarse: int = 1) -> None:
        self.y = y
        self.x = x
        self.coarse = coarse
        self.is_lattice = y.ndim == 2

    @property
    def shape(self) -> tuple[int, ...]:
        return np.broadcast_shapes(self.y.shape, self.x.shape)

    def smooth(self, fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
        if not self.is_lattice or self.coarse == 1:
            return np.broadcast_to(fn(self.y, self.x), self.shape)
        k = self.coarse
        val = fn(self.y[::k], self.x[:, ::k])
        return upsample(np.broadcast_to(val, (self.y[::k].shape[0], self.x[:, ::k].shape[1])),
                        k, True)

    def per_cell(
        self, fn: Callable[[np.ndarray, np.ndarray], np.ndarray], icy: np.ndarray, icx: np.ndarray
    ) -> np.ndarray:
        """``fn(icy, icx)`` for the cell of each point; on a lattice once per distinct cell."""
        if not self.is_lattice:
            return fn(icy, icx)
        uy, iy = np.unique(icy[:, 0], return_inverse=True)
        ux, ix = np.unique(icx[0, :], return_inverse=True)
        vals = np.broadcast_to(fn(uy[:, None], ux[None, :]), (uy.size, ux.size))
        return vals[iy][:, ix]


# ---- tissue components -------------------------------------------------------------------

Fields = dict[str, np.ndarray]


@dataclass(frozen=True)
class Palette:
    """Stain concentrations (H, E) of the compartments an architecture draws."""

    epi: tuple[float, float] = (0.10, 0.30)  # epithelial cytoplasm
    lumen: tuple[float, float] = (0.01, 0.05)  # lumen content (secretion)
    mucin: tuple[float, float] = (0.17, 0.07)  # extracellular mucin, pale blue-grey


@dataclass(frozen=True)
class Stroma:
    """Collagenous stroma: eosin in wavy fibre bundles with pale clefts, spindle
    fibroblasts along the fibres, scattered lymphocytes (in clusters).
    ``cell_um``/``occupancy`` set the fibroblast density."""

    e: float = 0.26
    h: float = 0.035
    e_variation: float = 0.25
    fibre_contrast: float = 0.8
    fibre_period_um: float = 7.0
    cell_um: float = 22.0
    occupancy: float = 0.45
    nucleus: NucleusStyle = NucleusStyle(
        radius_um=(2.2, 2.8), aspect=(0.18, 0.3), darkness=(0.8, 0.12), texture=0.08
    )
    lymph_occupancy: float = 0.03

    def phase(self, y: np.ndarray, x: np.ndarray, seed: int) -> np.ndarray:
        """Fibre phase (radians): 2*pi per fibre period across the fibres. Fibres run
        along a per-seed direction, bent over millimetres and waving over ~70 µm."""
        s = sub_seed(seed, "stroma-phase")
        theta = (s % 3600) * (np.pi / 3600)
        across = y * math.cos(theta) - x * math.sin(theta)
        warp = (F32(260.0) * fbm(y, x, 900.0, s + 11, 2) + F32(28.0) * fbm(y, x, 75.0, s + 17, 3)
                + F32(2.5) * fbm(y, x, 9.0, s + 23, 2))
        return ((across + warp) * (2 * np.pi / self.fibre_period_um)).astype(F32)

    def fields(self, w: Where, seed: int) -> Fields:
        s_e = sub_seed(seed, "stroma-e")
        s_c = sub_seed(seed, "stroma-clefts")
        e = w.smooth(lambda y, x: self.e * (1 + self.e_variation * 2.5 * fbm(y, x, 90.0, s_e, 3)))
        clefts = w.smooth(
            lambda y, x: self.fibre_contrast * np.clip(fbm(y, x, 20.0, s_c, 3) * 4 + 0.2, 0, 1)
        )
        return {"stroma_e": e, "stroma_h": F32(self.h), "phase": self.phase(w.y, w.x, seed),
                "fibre": clefts}

    def fibre_angle(self, y: np.ndarray, x: np.ndarray, seed: int) -> np.ndarray:
        """Direction of the fibres at points (radians): along the phase contours."""
        h = 0.5
        p0 = self.phase(y, x, seed)
        gy = self.phase(y + h, x, seed) - p0
        gx = self.phase(y, x + h, seed) - p0
        return (np.arctan2(gy, gx) + F32(np.pi / 2)).astype(F32)

    def nuclei(self, box: tuple[float, float, float, float], seed: int) -> Nuclei:
        y, x, u = jittered_points(box, self.cell_um, sub_seed(seed, "stroma-nuclei"))
        keep = u[9] < self.occupancy
        y, x, u = y[keep], x[keep], u[:, keep]
        spindle = Nuclei.from_style(self.nucleus, y, x, u, angle=self.fibre_angle(y, x, seed))
        ly, lx, lu = jittered_points(box, 30.0, sub_seed(seed, "lymphocytes"))
        lymph_field = fbm(ly, lx, 200.0, sub_seed(seed, "lymph-field"), 2)
        lkeep = lu[9] < self.lymph_occupancy * (1 + 6 * np.clip(lymph_field, 0, None))
        lymph = Nuclei.from_style(LYMPHOCYTE, ly[lkeep], lx[lkeep], lu[:, lkeep])
        return Nuclei.concat([spindle, lymph])


LYMPHOCYTE = NucleusStyle(
    radius_um=(2.3, 2.9), aspect=(0.85, 1.0), darkness=(1.25, 0.1), texture=0.05
)


@dataclass(frozen=True)
class Fat:
    """Adipose tissue: large empty adipocytes with thin membranes, in lobules covering
    about ``fraction`` of the area."""

    fraction: float = 0.3
    cell_um: float = 70.0
    region_scale_um: float = 350.0
    membrane_um: float = 1.8

    def region(self, y: np.ndarray, x: np.ndarray, seed: int) -> np.ndarray:
        thr = fbm_threshold(self.fraction)
        return (fbm(y, x, self.region_scale_um, sub_seed(seed, "fat-region"), 3) - F32(thr)) * F32(
            self.region_scale_um * 0.6
        )

    def fields(self, w: Where, seed: int) -> Fields:
        reg = w.smooth(lambda y, x: self.region(y, x, seed))
        if reg.max() <= -2 * self.cell_um:
            return {"fat_region": reg}
        s = sub_seed(seed, "fat-cells")
        cell = self.cell_um
        cy = np.floor(w.y / cell).astype(np.int64)
        cx = np.floor(w.x / cell).astype(np.int64)
        d1 = np.full(w.shape, np.inf, F32)
        d2 = np.full(w.shape, np.inf, F32)
        for oy in (-1, 0, 1):
            for ox in (-1, 0, 1):
                ny, nx = cy + oy, cx + ox
                py = (ny + 0.15 + 0.7 * uniform2(ny, nx, s)) * cell
                px = (nx + 0.15 + 0.7 * uniform2(ny, nx, s + 1)) * cell
                d = np.sqrt((w.y - py) ** 2 + (w.x - px) ** 2).astype(F32)
                d2 = np.minimum(d2, np.maximum(d1, d))
                d1 = np.minimum(d1, d)
        membrane = (d2 - d1) * F32(0.5)  # ~ distance to the nearest cell wall
        return {"fat": np.minimum(reg, membrane - F32(self.membrane_um / 2)), "fat_region": reg}


@dataclass(frozen=True)
class Glands:
    """Glands (acini, ducts, tubules): a lumen lined by a rim of epithelium, one per
    cell of a jittered grid so they never collide. Lining nuclei sit in ``layers``
    rows inside the rim; benign glands add flat myoepithelial nuclei at the outer edge.

    Sizes are µm: ``lumen_um`` the lumen semi-major axis range, ``aspect`` its
    minor/major ratio range, ``bend`` the curvature of elongated (slit) lumina,
    ``irregularity_um`` the amplitude of outline wobble.
    """

    cell_um: float = 60.0
    occupancy: float = 0.6
    lumen_um: tuple[float, float] = (5.0, 9.0)
    aspect: tuple[float, float] = (0.7, 1.0)
    bend: float = 0.0
    rim_um: float = 8.0
    irregularity_um: float = 0.8
    spacing_um: float = 6.5
    layers: int = 1
    myoepithelium: bool = True
    nucleus: NucleusStyle = NucleusStyle(radius_um=(2.5, 3.1), aspect=(0.7, 0.9))
    cluster_scale_um: float = 0.0  # >0: occupancy follows lobules of about this size
    cluster_fraction: float = 0.3
    angle_from_fibres: bool = False

    def _cells(self, icy: np.ndarray, icx: np.ndarray, seed: int, occupancy: np.ndarray):
        """Per-cell gland parameters (broadcast over icy/icx)."""
        u = _cell_uniforms(icy, icx, sub_seed(seed, "glands"), 8)
        present = u[0] < occupancy
        bend = F32(self.bend) * (2 * u[6] - 1)
        # the gland (lumen, bend, rim, wobble) always fits its cell: fields never clip it
        margin = self.rim_um + 1.5 * self.irregularity_um + 1.0
        a_max = (self.cell_um / 2 - margin) / (1 + np.abs(bend))
        a = np.minimum(self.lumen_um[0] + (self.lumen_um[1] - self.lumen_um[0]) * u[1], a_max)
        a = np.maximum(a, F32(0.5))
        b = a * (self.aspect[0] + (self.aspect[1] - self.aspect[0]) * u[2])
        ang = u[3] * F32(np.pi)
        ext = a * (1 + np.abs(bend)) + margin
        room = np.maximum(F32(self.cell_um / 2) - ext, 0)
        gy = (icy + 0.5) * self.cell_um + (2 * u[4] - 1) * room
        gx = (icx + 0.5) * self.cell_um + (2 * u[5] - 1) * room
        return present, a.astype(F32), b.astype(F32), ang, bend, gy, gx, u[7]

    def _occupancy(self, icy: np.ndarray, icx: np.ndarray, seed: int) -> np.ndarray:
        if self.cluster_scale_um <= 0:
            return np.asarray(F32(self.occupancy))
        s = sub_seed(seed, "gland-clusters")
        y = (icy + 0.5) * self.cell_um
        x = (icx + 0.5) * self.cell_um
        n = fbm(y, x, self.cluster_scale_um, s, 3) - F32(fbm_threshold(self.cluster_fraction))
        return F32(self.occupancy) * np.clip(n * 12, 0, 1)

    def fields(self, w: Where, seed: int) -> Fields:
        cell = self.cell_um
        icy = np.floor(w.y / cell).astype(np.int64)
        icx = np.floor(w.x / cell).astype(np.int64)
        occ = w.per_cell(lambda a, b: self._occupancy(a, b, seed), icy, icx)
        present, a, b, ang, bend, gy, gx, _ = self._cells(icy, icx, seed, occ)
        dy = (w.y - gy).astype(F32)
        dx = (w.x - gx).astype(F32)
        c, s = np.cos(ang), np.sin(ang)
        u = dx * c + dy * s
        v = dy * c - dx * s - bend * u * u / a
        # distance to the ellipse outline, rho (rho - 1) / |grad rho| (exact for circles)
        qa, qb = u / (a * a), v / (b * b)
        rho = np.sqrt(u * qa + v * qb)
        d = rho * (rho - 1) / (np.sqrt(qa * qa + qb * qb) + F32(1e-6))
        if self.irregularity_um:
            d = d + F32(self.irregularity_um) * perlin(w.y / 9.0, w.x / 9.0, sub_seed(seed, "gw"))
        d = np.where(present, d, _BIG)
        return {"lumen": -d, "epi": F32(self.rim_um) - d}

    def nuclei(self, box: tuple[float, float, float, float], seed: int) -> Nuclei:
        cell = self.cell_um
        icy, icx = _cells_in_box(box, cell)
        occ = self._occupancy(icy, icx, seed)
        present, a, b, ang, bend, gy, gx, uphase = self._cells(icy, icx, seed, occ)
        keep = np.nonzero(present)[0]
        if keep.size == 0:
            return Nuclei.empty()
        a, b, ang, bend, gy, gx = a[keep], b[keep], ang[keep], bend[keep], gy[keep], gx[keep]
        icy, icx = icy[keep], icx[keep]
        # lining nuclei evenly around the lumen, ``layers`` rows deep
        mid_a, mid_b = a + self.rim_um * 0.45, b + self.rim_um * 0.45
        perim = np.pi * (3 * (mid_a + mid_b) - np.sqrt((3 * mid_a + mid_b) * (mid_a + 3 * mid_b)))
        n_ring = np.clip(np.round(perim / self.spacing_um), 4, 400).astype(np.int64)
        m = int(n_ring.max())
        parts = []
        seed_n = sub_seed(seed, "gland-nuclei")
        for layer in range(self.layers):
            k = np.arange(m)[None, :]
            valid = k < n_ring[:, None]
            gid_y = icy[:, None] * 1000 + k
            gid_x = icx[:, None] * 7 + layer
            uu = _cell_uniforms(gid_y, gid_x, seed_n, 11)
            t = (2 * np.pi) * (k + 0.35 * (uu[9] - 0.5) + layer * 0.5) / n_ring[:, None] + (
                2 * np.pi * uphase[keep, None]
            )
            if self.layers == 1:
                depth = 0.45 + 0.1 * (uu[10] - 0.5)
            else:
                depth = 0.15 + 0.7 * (layer + uu[10]) / self.layers
            ny, nx, ang_n = self._ring_points(a, b, ang, bend, gy, gx, t, depth, seed)
            parts.append(
                Nuclei.from_style(self.nucleus, ny[valid], nx[valid], uu[:9][:, valid],
                                  angle=ang_n[valid])
            )
        if self.myoepithelium:
            k = np.arange(m)[None, :]
            n_myo = np.maximum(n_ring // 2, 3)
            valid = k < n_myo[:, None]
            uu = _cell_uniforms(icy[:, None] * 1000 + k, icx[:, None] * 7 + 99, seed_n, 10)
            t = (2 * np.pi) * (k + 0.5 * uu[9]) / n_myo[:, None]
            ny, nx, ang_n = self._ring_points(a, b, ang, bend, gy, gx, t, 0.93, seed)
            parts.append(
                Nuclei.from_style(MYOEPITHELIAL, ny[valid], nx[valid], uu[:9][:, valid],
                                  angle=ang_n[valid] + F32(np.pi / 2))
            )
        return Nuclei.concat(parts)

    def _ring_points(self, a, b, ang, bend, gy, gx, t, depth, seed):
        """Points ``depth`` (fraction of the rim) outside the lumen outline at angles t,
        and the outward normal angle there (world frame)."""
        a_, b_, bend_ = a[:, None], b[:, None], bend[:, None]
        ct, st = np.cos(t), np.sin(t)
        u = a_ * ct
        v = b_ * st + bend_ * u * u / a_
        # outward normal: gradient of q(u, v - bend u^2/a)
        vv = v - bend_ * u * u / a_
        gu = u / (a_ * a_) - (vv / (b_ * b_)) * 2 * bend_ * u / a_
        gv = vv / (b_ * b_)
        gn = np.sqrt(gu * gu + gv * gv) + 1e-9
        nu, nv = gu / gn, gv / gn
        c, s = np.cos(ang)[:, None], np.sin(ang)[:, None]
        py = gy[:, None] + u * s + v * c
        px = gx[:, None] + u * c - v * s
        wy = nu * s + nv * c
        wx = nu * c - nv * s
        if self.irregularity_um:
            eta = F32(self.irregularity_um) * perlin(py / 9.0, px / 9.0, sub_seed(seed, "gw"))
        else:
            eta = 0.0
        off = depth * self.rim_um - eta
        return py + wy * off, px + wx * off, np.arctan2(wy, wx).astype(F32)


MYOEPITHELIAL = NucleusStyle(
    radius_um=(2.0, 2.5), aspect=(0.3, 0.45), darkness=(0.85, 0.08), texture=0.05
)


@dataclass(frozen=True)
class Nests:
    """Solid sheets and islands of epithelium (tumour cells) covering ``fraction`` of the
    area in blobs about ``scale_um`` wide, packed with nuclei on a ``cell_um`` grid.
    With ``in_mucin`` the nests float inside mucin lakes (mucinous carcinoma)."""

    scale_um: float = 80.0
    fraction: float = 0.55
    cell_um: float = 9.0
    occupancy: float = 0.92
    nucleus: NucleusStyle = NucleusStyle()
    in_mucin: bool = False

    def field(self, y: np.ndarray, x: np.ndarray, seed: int) -> np.ndarray:
        n = fbm(y, x, self.scale_um, sub_seed(seed, "nests"), 4)
        return (n - F32(fbm_threshold(self.fraction))) * F32(self.scale_um * 0.7)

    def fields(self, w: Where, seed: int) -> Fields:
        return {"epi": w.smooth(lambda y, x: self.field(y, x, seed))}

    def nuclei(self, box, seed: int, arch_fields: Callable[[np.ndarray, np.ndarray], Fields]):
        y, x, u = jittered_points(box, self.cell_um, sub_seed(seed, "nest-nuclei"))
        keep = u[9] < self.occupancy
        y, x, u = y[keep], x[keep], u[:, keep]
        f = arch_fields(y, x)
        ok = (self.field(y, x, seed) > 1.0) & (f.get("lumen", -_BIG) < -1.0)
        if self.in_mucin:
            ok &= f.get("mucin", -_BIG) > 0
        return Nuclei.from_style(self.nucleus, y[ok], x[ok], u[:, ok])


@dataclass(frozen=True)
class Chains:
    """Single-file cords of small discohesive tumour cells threading through stroma along
    the collagen fibres (the "Indian file" pattern of lobular carcinoma)."""

    cell_um: float = 6.0
    width: float = 0.16  # fraction of the cord spacing the cords occupy
    every: int = 3  # one cord per this many fibre periods
    occupancy: float = 0.85
    nucleus: NucleusStyle = NucleusStyle()

    def nuclei(self, box, seed: int, stroma: Stroma, arch_fields) -> Nuclei:
        y, x, u = jittered_points(box, self.cell_um, sub_seed(seed, "chains"))
        f = arch_fields(y, x, True)
        crest = np.cos(f["phase"] / F32(self.every))  # 1 on every n-th fibre crest line
        patchy = fbm(y, x, 45.0, sub_seed(seed, "chain-gaps"), 2) > -0.12
        ok = (crest > np.cos(np.pi * self.width * 2)) & (u[9] < self.occupancy) & patchy
        ok &= f.get("fat", -_BIG) < 0
        ang = stroma.fibre_angle(y[ok], x[ok], seed)
        return Nuclei.from_style(self.nucleus, y[ok], x[ok], u[:, ok], angle=ang)


@dataclass(frozen=True)
class Mucin:
    """Lakes of extracellular mucin covering ``fraction`` of the area, separated by thin
    fibrous septa."""

    scale_um: float = 160.0
    fraction: float = 0.7

    def field(self, y: np.ndarray, x: np.ndarray, seed: int) -> np.ndarray:
        n = fbm(y, x, self.scale_um, sub_seed(seed, "mucin"), 4)
        return (n - F32(fbm_threshold(self.fraction))) * F32(self.scale_um * 0.5)

    def fields(self, w: Where, seed: int) -> Fields:
        return {"mucin": w.smooth(lambda y, x: self.field(y, x, seed))}


@dataclass(frozen=True)
class Papillae:
    """Finger-like fronds: thin fibrovascular stromal cores (where a noise field crosses
    zero) lined by stratified columnar tumour cells, projecting into cystic space."""

    scale_um: float = 110.0
    core_um: float = 7.0
    rim_um: float = 15.0
    cell_um: float = 5.5
    nucleus: NucleusStyle = NucleusStyle()

    def distance(self, y: np.ndarray, x: np.ndarray, seed: int) -> np.ndarray:
        n = fbm(y, x, self.scale_um, sub_seed(seed, "papillae"), 3)
        return np.abs(n) * F32(self.scale_um * 0.9)  # ~ µm from the core's centre line

    def fields(self, w: Where, seed: int) -> Fields:
        r = w.smooth(lambda y, x: self.distance(y, x, seed))
        edge = F32(self.core_um + self.rim_um)
        return {"epi": np.minimum(r - F32(self.core_um), edge - r), "lumen": r - edge}

    def nuclei(self, box, seed: int) -> Nuclei:
        y, x, u = jittered_points(box, self.cell_um, sub_seed(seed, "papilla-nuclei"))
        r = self.distance(y, x, seed)
        ok = (r > self.core_um + 1.5) & (r < self.core_um + self.rim_um - 1.0) & (u[9] < 0.85)
        y, x, u = y[ok], x[ok], u[:, ok]
        h = 0.5
        s = sub_seed(seed, "papillae")
        gy = np.abs(fbm(y + h, x, self.scale_um, s, 3)) - np.abs(fbm(y - h, x, self.scale_um, s, 3))
        gx = np.abs(fbm(y, x + h, self.scale_um, s, 3)) - np.abs(fbm(y, x - h, self.scale_um, s, 3))
        return Nuclei.from_style(self.nucleus, y, x, u, angle=np.arctan2(gy, gx).astype(F32))


# ---- architectures -------------------------------------------------------------------------


@dataclass(frozen=True)
class Architecture:
    """One kind of tissue, built from components (see the module docstring).

    ``code`` is the BreakHis abbreviation (A, F, PT, TA, DC, LC, MC, PC), None for the
    normal breast background of synthetic slides.
    """

    name: str
    malignant: bool
    code: str | None
    description: str
    stroma: Stroma = Stroma()
    fat: Fat | None = None
    glands: tuple[Glands, ...] = ()
    cribriform: Glands | None = None
    nests: Nests | None = None
    chains: Chains | None = None
    mucin: Mucin | None = None
    papillae: Papillae | None = None
    palette: Palette = Palette()

    def fields(self, w: Where, seed: int, *, stroma: bool = True) -> Fields:
        """Compartment fields (µm-like signed values, > 0 inside: "fat", "mucin", "epi",
        "lumen") and, with ``stroma``, the stroma's colour and fibre phase."""
        f = self.stroma.fields(w, seed) if stroma else {}
        parts: list[Fields] = []
        if self.fat is not None:
            parts.append(self.fat.fields(w, seed))
        for i, g in enumerate(self.glands):
            parts.append(g.fields(w, sub_seed(seed, self.name, "glands", i)))
        if self.mucin is not None:
            parts.append(self.mucin.fields(w, seed))
        if self.nests is not None:
            nest = self.nests.fields(w, sub_seed(seed, self.name))
            if self.nests.in_mucin and self.mucin is not None:
                nest["epi"] = np.minimum(nest["epi"], parts[-1]["mucin"])
            parts.append(nest)
            if self.cribriform is not None:
                cri = self.cribriform.fields(w, sub_seed(seed, self.name, "cribriform"))
                parts.append({"lumen": np.minimum(cri["lumen"], nest["epi"] - F32(4.0))})
        if self.papillae is not None:
            parts.append(self.papillae.fields(w, sub_seed(seed, self.name)))
        fat_region = None
        for p in parts:
            if "fat_region" in p:
                fat_region = p.pop("fat_region")
            for key, val in p.items():
                f[key] = np.maximum(f[key], val) if key in f else val
        if fat_region is not None:  # no epithelium inside fat lobules
            for key in ("epi", "lumen"):
                if key in f:
                    f[key] = np.minimum(f[key], -fat_region)
        return f

    def nuclei(self, box: tuple[float, float, float, float], seed: int) -> Nuclei:
        """Every nucleus whose centre lies in the µm box (y0, x0, y1, x1)."""

        def at(y: np.ndarray, x: np.ndarray, stroma: bool = False) -> Fields:
            w = Where(np.asarray(y, np.float64), np.asarray(x, np.float64))
            f = self.fields(w, seed, stroma=False)
            if stroma:
                f["phase"] = self.stroma.phase(w.y, w.x, seed)
            return f

        parts = []
        st = self.stroma.nuclei(box, seed)
        if len(st):
            f = at(st.y_um, st.x_um)
            ok = np.ones(len(st), bool)
            for key in ("epi", "lumen", "mucin"):
                if key in f:
                    ok &= f[key] < -1.0
            if "fat" in f:
                ok &= f["fat"] < -2.0
            parts.append(st.select(ok))
        for i, g in enumerate(self.glands):
            gn = g.nuclei(box, sub_seed(seed, self.name, "glands", i))
            if len(gn) and self.fat is not None:  # glands in fat lobules were removed
                gn = gn.select(at(gn.y_um, gn.x_um)["epi"] > -1.5)
            parts.append(gn)
        if self.nests is not None:
            parts.append(self.nests.nuclei(box, sub_seed(seed, self.name), at))
        if self.chains is not None:
            parts.append(self.chains.nuclei(box, sub_seed(seed, self.name), self.stroma, at))
        if self.papillae is not None:
            parts.append(self.papillae.nuclei(box, sub_seed(seed, self.name)))
        return Nuclei.concat(parts)


def _benign(**kw: object) -> NucleusStyle:
    base = {"radius_um": (2.3, 2.9), "aspect": (0.72, 0.95), "pleomorphism": 0.04,
            "darkness": (0.62, 0.07), "texture": 0.12}
    base.update(kw)
    return NucleusStyle(**base)  # type: ignore[arg-type]


def _malignant(**kw: object) -> NucleusStyle:
    base = {"radius_um": (3.6, 6.2), "aspect": (0.55, 0.95), "pleomorphism": 0.2,
            "darkness": (1.0, 0.25), "texture": 0.3, "vesicular": 0.4, "nucleolus_p": 0.55}
    base.update(kw)
    return NucleusStyle(**base)  # type: ignore[arg-type]


_BENIGN_EPI = _benign()
_MAL_PALETTE = Palette(epi=(0.17, 0.27), lumen=(0.03, 0.1))

ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in [
        Architecture(
            "normal",
            malignant=False,
            code=None,
            description="Normal breast: collagenous stroma, fat lobules, and terminal duct "
            "lobular units (clusters of small round acini with a two-cell lining).",
            fat=Fat(fraction=0.35),
            glands=(
                Glands(cell_um=38.0, occupancy=0.9, lumen_um=(3.0, 6.0), rim_um=8.0,
                       cluster_scale_um=160.0, cluster_fraction=0.25, nucleus=_BENIGN_EPI),
                Glands(cell_um=240.0, occupancy=0.12, lumen_um=(18.0, 30.0), aspect=(0.5, 0.9),
                       rim_um=9.0, nucleus=_BENIGN_EPI),
            ),
        ),
        Architecture(
            "adenosis",
            malignant=False,
            code="A",
            description="Adenosis (benign): lobules crowded with many small, round to "
            "slightly compressed glands with intact two-cell lining, sclerotic stroma.",
            stroma=Stroma(e=0.36, fibre_contrast=0.5, occupancy=0.3),
            glands=(
                Glands(cell_um=30.0, occupancy=0.95, lumen_um=(2.5, 5.5), aspect=(0.45, 1.0),
                       rim_um=7.0, cluster_scale_um=220.0, cluster_fraction=0.8,
                       nucleus=_BENIGN_EPI),
            ),
        ),
        Architecture(
            "fibroadenoma",
            malignant=False,
            code="F",
            description="Fibroadenoma (benign): abundant pale, loose (myxoid) stroma with "
            "few fibroblasts, compressing ducts into long curved slit-like lumina.",
            stroma=Stroma(e=0.16, h=0.09, fibre_contrast=0.25, fibre_period_um=10.0,
                          occupancy=0.25, lymph_occupancy=0.0),
            glands=(
                Glands(cell_um=140.0, occupancy=0.8, lumen_um=(22.0, 40.0), aspect=(0.06, 0.14),
                       bend=0.6, rim_um=8.0, irregularity_um=0.5, nucleus=_BENIGN_EPI),
            ),
        ),
        Architecture(
            "phyllodes_tumor",
            malignant=False,
            code="PT",
            description="Phyllodes tumour (benign): hypercellular stroma of dense spindle "
            "cells in fascicles, split by leaf-like elongated clefts lined by epithelium.",
            stroma=Stroma(e=0.28, h=0.06, fibre_contrast=0.45, cell_um=8.5, occupancy=0.8,
                          nucleus=NucleusStyle(radius_um=(2.4, 3.0), aspect=(0.22, 0.35),
                                               darkness=(0.85, 0.1), texture=0.1)),
            glands=(
                Glands(cell_um=170.0, occupancy=0.65, lumen_um=(40.0, 62.0), aspect=(0.05, 0.1),
                       bend=0.4, rim_um=8.0, irregularity_um=1.0, nucleus=_BENIGN_EPI),
            ),
        ),
        Architecture(
            "tubular_adenoma",
            malignant=False,
            code="TA",
            description="Tubular adenoma (benign): closely packed uniform small round "
            "tubules with tiny lumina, regular nuclei, scant stroma between them.",
            stroma=Stroma(e=0.3, occupancy=0.15, lymph_occupancy=0.0),
            glands=(
                Glands(cell_um=26.0, occupancy=0.93, lumen_um=(1.8, 3.2), aspect=(0.7, 1.0),
                       rim_um=6.5, irregularity_um=0.4, spacing_um=5.5, nucleus=_BENIGN_EPI),
            ),
            palette=Palette(epi=(0.1, 0.34)),
        ),
        Architecture(
            "ductal_carcinoma",
            malignant=True,
            code="DC",
            description="Invasive ductal carcinoma: solid nests and sheets of large "
            "pleomorphic, hyperchromatic, crowded nuclei with nucleoli; glands lost or "
            "reduced to irregular punched-out (cribriform) spaces; dense desmoplastic "
            "stroma with lymphocytes.",
            stroma=Stroma(e=0.36, fibre_contrast=0.6, occupancy=0.5, lymph_occupancy=0.1),
            nests=Nests(scale_um=90.0, fraction=0.62, cell_um=11.0, nucleus=_malignant()),
            cribriform=Glands(cell_um=34.0, occupancy=0.35, lumen_um=(3.0, 7.0),
                              aspect=(0.5, 1.0), rim_um=0.0, irregularity_um=1.5,
                              myoepithelium=False),
            palette=_MAL_PALETTE,
        ),
        Architecture(
            "lobular_carcinoma",
            malignant=True,
            code="LC",
            description="Invasive lobular carcinoma: small-to-medium, round, hyperchromatic, "
            "discohesive cells infiltrating the stroma in single-file cords along the "
            "collagen fibres; no glands.",
            stroma=Stroma(e=0.3, fibre_contrast=0.55, fibre_period_um=9.0, occupancy=0.2),
            chains=Chains(cell_um=6.0, width=0.17, occupancy=0.9,
                          nucleus=_malignant(radius_um=(3.2, 4.4), aspect=(0.75, 1.0),
                                             pleomorphism=0.1, darkness=(1.0, 0.2),
                                             vesicular=0.0, nucleolus_p=0.15)),
            palette=_MAL_PALETTE,
        ),
        Architecture(
            "mucinous_carcinoma",
            malignant=True,
            code="MC",
            description="Mucinous carcinoma: pale blue-grey lakes of extracellular mucin "
            "between thin fibrous septa, with floating clusters of malignant cells.",
            stroma=Stroma(e=0.33, occupancy=0.3),
            mucin=Mucin(scale_um=170.0, fraction=0.72),
            nests=Nests(scale_um=28.0, fraction=0.3, cell_um=8.5, in_mucin=True,
                        nucleus=_malignant(radius_um=(3.6, 5.6), darkness=(1.15, 0.25))),
            palette=_MAL_PALETTE,
        ),
        Architecture(
            "papillary_carcinoma",
            malignant=True,
            code="PC",
            description="Papillary carcinoma: branching finger-like fronds with thin "
            "fibrovascular cores lined by stratified, elongated, hyperchromatic tumour "
            "cells, projecting into cystic spaces.",
            stroma=Stroma(e=0.3, occupancy=0.4),
            papillae=Papillae(scale_um=130.0, core_um=6.0, rim_um=13.0, cell_um=6.5,
                              nucleus=_malignant(radius_um=(3.6, 5.0), aspect=(0.32, 0.5),
                                                 pleomorphism=0.12, darkness=(1.0, 0.2),
                                                 vesicular=0.2, nucleolus_p=0.3)),
            palette=Palette(epi=(0.17, 0.27), lumen=(0.03, 0.09)),
        ),
    ]
}

#: The eight BreakHis subtypes in the dataset's order (benign first).
BREAKHIS_SUBTYPES: tuple[str, ...] = (
    "adenosis",
    "fibroadenoma",
    "phyllodes_tumor",
    "tubular_adenoma",
    "ductal_carcinoma",
    "lobular_carcinoma",
    "mucinous_carcinoma",
    "papillary_carcinoma",
)


# ---- layouts: where tissue is, and which architecture -------------------------------------


class Layout(Protocol):
    """Decides, per point, whether there is tissue and which architecture it is."""

    benign: Architecture
    malignant: Architecture

    def tissue(self, y_um: np.ndarray, x_um: np.ndarray) -> np.ndarray:
        """Signed field, about µm: > 0 on tissue, <= 0 on glass."""
        ...

    def tumour(self, y_um: np.ndarray, x_um: np.ndarray) -> np.ndarray:
        """Signed field, about µm: > 0 where the ``malignant`` architecture is."""
        ...


@dataclass(frozen=True)
class UniformLayout:
    """Tissue everywhere, one architecture (BreakHis-like patches)."""

    architecture: Architecture

    @property
    def benign(self) -> Architecture:
        return self.architecture

    @property
    def malignant(self) -> Architecture:
        return self.architecture

    def tissue(self, y_um: np.ndarray, x_um: np.ndarray) -> np.ndarray:
        return np.full(np.broadcast_shapes(np.shape(y_um), np.shape(x_um)), _BIG, F32)

    def tumour(self, y_um: np.ndarray, x_um: np.ndarray) -> np.ndarray:
        return np.full(np.broadcast_shapes(np.shape(y_um), np.shape(x_um)), -_BIG, F32)


@dataclass(frozen=True)
class SlideLayout:
    """One tissue section on a slide of ``extent_um`` (height, width): an irregular piece
    of ``benign`` tissue covering most of the glass, with tumour (``malignant``) in
    blobs about ``tumour_scale_um`` wide; ``tumour_threshold`` sets how much."""

    extent_um: tuple[float, float]
    seed: int
    benign: Architecture
    malignant: Architecture
    tumour_scale_um: float
    tumour_threshold: float
    tissue_fill: float = 0.82

    def tissue(self, y_um: np.ndarray, x_um: np.ndarray) -> np.ndarray:
        h, w = self.extent_um
        big = max(h, w)
        ny = (y_um - h / 2) / (h / 2 * self.tissue_fill)
        nx = (x_um - w / 2) / (w / 2 * self.tissue_fill)
        r = np.sqrt(ny * ny + nx * nx).astype(F32)
        shape = F32(1) - r + F32(0.55) * fbm(y_um, x_um, big / 2.5, sub_seed(self.seed, "tissue"), 3)
        ragged = fbm(y_um, x_um, 40.0, sub_seed(self.seed, "ragged"), 2)
        return shape * F32(big * 0.2) + ragged * F32(12.0)

    def tumour(self, y_um: np.ndarray, x_um: np.ndarray) -> np.ndarray:
        n = fbm(y_um, x_um, self.tumour_scale_um, sub_seed(self.seed, "tumour"), 4)
        edge = fbm(y_um, x_um, 25.0, sub_seed(self.seed, "tumour-edge"), 2)
        return (n - F32(self.tumour_threshold)) * F32(self.tumour_scale_um * 0.6) + edge * F32(6.0)

    @classmethod
    def create(
        cls,
        extent_um: tuple[float, float],
        seed: int,
        *,
        benign: Architecture,
        malignant: Architecture,
        tumour_fraction: float = 0.3,
    ) -> SlideLayout:
        """Calibrate the tumour threshold so about ``tumour_fraction`` of the tissue is
        tumour (measured on a 160 x 160 grid over the slide)."""
        big = max(extent_um)
        scale = float(np.clip(big / 2.2, 350.0, 4000.0))
        probe = cls(extent_um, seed, benign, malignant, scale, 0.0)
        y = (np.arange(160) + 0.5)[:, None] * extent_um[0] / 160
        x = (np.arange(160) + 0.5)[None, :] * extent_um[1] / 160
        tissue = probe.tissue(y, x) > 0
        n = fbm(y, x, scale, sub_seed(seed, "tumour"), 4)[tissue]
        thr = float(np.quantile(n, 1 - tumour_fraction)) if n.size else 0.0
        return cls(extent_um, seed, benign, malignant, scale, thr)


# ---- the scene --------------------------------------------------------------------------

#: Ground-truth label values (``HistologyScene.labels``).
LABEL_GLASS, LABEL_BENIGN, LABEL_TUMOUR = 0, 1, 2


@dataclass(frozen=True)
class HistologyScene:
    """An unbounded plane of synthetic H&E tissue, rendered on demand.

    ``render(y0, x0, h, w, mpp=...)`` is a pure function of the scene (seed, layout,
    stain) and its arguments, so regions can be rendered in any order, in parallel,
    and tiled without seams.
    """

    seed: int
    layout: Layout
    stain: StainModel = field(default_factory=StainModel)
    noise_sd: float = 2.2  # camera noise, grey levels per pixel

    # -- ground truth
    def labels(self, y_um: np.ndarray, x_um: np.ndarray) -> np.ndarray:
        """Ground truth at points: 0 glass, 1 benign/normal tissue, 2 tumour."""
        tissue = self.layout.tissue(y_um, x_um) > 0
        tum = self.layout.tumour(y_um, x_um) > 0
        arch_mal = np.where(tum, self.layout.malignant.malignant, self.layout.benign.malignant)
        return np.where(tissue, np.where(arch_mal, LABEL_TUMOUR, LABEL_BENIGN), LABEL_GLASS).astype(
            np.uint8
        )

    # -- rendering
    def render(self, y0: int, x0: int, h: int, w: int, *, mpp: float) -> np.ndarray:
        """uint8 RGB (h, w, 3) of render-frame pixels [y0, y0+h) x [x0, x0+w) at ``mpp``."""
        out = np.empty((max(h, 0), max(w, 0), 3), np.uint8)
        if h <= 0 or w <= 0:
            return out
        f1 = max(1, round(FINE_STEP_UM / mpp))
        f2 = f1 * max(1, round(COARSE_STEP_UM / (f1 * mpp)))
        block = f2 * max(1, round(BLOCK_PX / f2))
        ya, yb = (y0 // f2) * f2, -(-(y0 + h) // f2) * f2
        xa, xb = (x0 // f2) * f2, -(-(x0 + w) // f2) * f2
        for by in range(ya, yb, block):
            bh = min(block, yb - by)
            for bx in range(xa, xb, block):
                bw = min(block, xb - bx)
                img = self._render_block(by, bx, bh, bw, mpp, f1, f2)
                sy0, sx0 = max(by, y0), max(bx, x0)
                sy1, sx1 = min(by + bh, y0 + h), min(bx + bw, x0 + w)
                out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = img[
                    sy0 - by : sy1 - by, sx0 - bx : sx1 - bx
                ]
        return out

    def _render_block(
        self, by: int, bx: int, bh: int, bw: int, mpp: float, f1: int, f2: int
    ) -> np.ndarray:
        """One block aligned to the coarse lattice (all of by, bx, bh, bw multiples of f2)."""
        k = f2 // f1
        ny1, nx1 = bh // f1 + 1, bw // f1 + 1
        y1 = ((by + np.arange(ny1) * f1 + 0.5) * mpp)[:, None]
        x1 = ((bx + np.arange(nx1) * f1 + 0.5) * mpp)[None, :]
        where = Where(y1, x1, coarse=k)
        lay = self.layout
        tissue = where.smooth(lay.tissue)
        ramp_um = max(EDGE_UM, mpp * 0.7)
        if tissue.max() <= -ramp_um:
            zero = np.zeros((bh, bw), F32)
            return self._to_rgb(zero, zero, by, bx)
        tum = where.smooth(lay.tumour)
        arch_ids = [i for i, present in ((0, tum.min() <= 0), (1, tum.max() > 0)) if present]
        archs = (lay.benign, lay.malignant)
        per_arch = {i: archs[i].fields(where, self.seed) for i in arch_ids}
        if len(arch_ids) == 1:
            fields = per_arch[arch_ids[0]]
            sel = None
        else:
            sel = tum > 0
            fields = {
                key: np.where(sel, per_arch[1].get(key, -_BIG), per_arch[0].get(key, -_BIG))
                for key in set(per_arch[0]) | set(per_arch[1])
            }

        # adipocyte walls are thin: sample their field on a finer lattice than the others
        f_fat = max(1, round(FAT_STEP_UM / mpp))
        fine: dict[str, tuple[np.ndarray, int]] = {}
        if "fat" in fields and f1 > f_fat and f1 % f_fat == 0 and np.max(fields["fat"]) > -1.0:
            yf = ((by + np.arange(bh // f_fat + 1) * f_fat + 0.5) * mpp)[:, None]
            xf = ((bx + np.arange(bw // f_fat + 1) * f_fat + 0.5) * mpp)[None, :]
            wf = Where(yf, xf, coarse=f2 // f_fat)
            parts = [archs[i].fat.fields(wf, self.seed).get("fat", -_BIG)  # type: ignore[union-attr]
                     if archs[i].fat is not None else -_BIG for i in (0, 1)]
            if sel is None:
                fat_f = parts[arch_ids[0]]
            else:
                fat_f = np.where(upsample(tum, f1 // f_fat, True) > 0, parts[1], parts[0])
            fine["fat"] = (np.broadcast_to(fat_f, (yf.shape[0], xf.shape[1])).astype(F32), f_fat)

        def px(value: np.ndarray | float) -> np.ndarray | float:
            return upsample(value, f1, False)

        def palette_px(attr: str) -> tuple[np.ndarray | float, np.ndarray | float]:
            pal = [getattr(archs[i].palette, attr) for i in (0, 1)]
            if sel is None:
                h_, e_ = pal[arch_ids[0]]
                return F32(h_), F32(e_)
            return (px(np.where(sel, pal[1][0], pal[0][0]).astype(F32)),
                    px(np.where(sel, pal[1][1], pal[0][1]).astype(F32)))

        inv_ramp = F32(1.0 / ramp_um)

        def mask(key: str) -> np.ndarray | None:
            if key not in fields or np.max(fields[key]) <= -ramp_um:
                return None
            if key in fine:
                value, f = fine[key]
                m = upsample(value * inv_ramp + F32(0.5), f, False)
            else:
                m = px(fields[key] * inv_ramp + F32(0.5))
            return np.clip(m, 0, 1, out=m)

        # stroma: eosin in wavy fibre bundles, with pale clefts between some of them
        c = np.cos(px(fields["phase"]))
        t = (F32(1) - c) * F32(0.5)
        t *= t
        t *= t * t  # ((1 - cos) / 2) ** 6: thin clefts where the phase is near pi
        t *= px(fields["fibre"])
        conc_e = F32(1) - t
        c *= F32(0.12)
        c += F32(0.88)
        conc_e *= c
        conc_e *= px(fields["stroma_e"])
        conc_h = np.empty_like(conc_e)
        conc_h[:] = px(fields["stroma_h"])
        m = mask("fat")
        if m is not None:
            m -= 1
            conc_e *= -m
            conc_h *= -m
        for key in ("mucin", "epi", "lumen"):
            m = mask(key)
            if m is None:
                continue
            th, te = palette_px(key)
            if key == "mucin":  # wispy strands in the mucin
                te = te * (F32(0.6) + t * F32(2.0))
            conc_h += m * (th - conc_h)
            conc_e += m * (te - conc_e)
        # nuclei: every nucleus whose sprite may reach the block
        pad_um = 12.0
        box = (by * mpp - pad_um, bx * mpp - pad_um, (by + bh) * mpp + pad_um,
               (bx + bw) * mpp + pad_um)
        parts = []
        for i in arch_ids:
            n = archs[i].nuclei(box, self.seed)
            if len(n) and sel is not None:
                inside = lay.tumour(n.y_um.astype(np.float64), n.x_um.astype(np.float64)) > 0
                n = n.select(inside if i == 1 else ~inside)
            parts.append(n)
        nuclei = Nuclei.concat(parts)
        if len(nuclei) and tissue.min() <= ramp_um:
            keep = lay.tissue(nuclei.y_um.astype(np.float64), nuclei.x_um.astype(np.float64)) > 0
            nuclei = nuclei.select(keep)
        canvas = np.zeros((bh, bw), F32)
        draw_nuclei(canvas, (by, bx), nuclei, mpp, sub_seed(self.seed, "chromatin"))
        conc_h += canvas
        np.minimum(canvas, F32(1.0), out=canvas)
        canvas *= F32(-0.6)
        canvas += F32(1)
        conc_e *= canvas
        if tissue.min() <= ramp_um:
            m = px(tissue * inv_ramp + F32(0.5))
            np.clip(m, 0, 1, out=m)
            conc_h *= m
            conc_e *= m
        return self._to_rgb(conc_h, conc_e, by, bx)

    def _to_rgb(self, conc_h: np.ndarray, conc_e: np.ndarray, by: int, bx: int) -> np.ndarray:
        """Beer-Lambert to uint8 RGB, plus camera noise hashed from absolute pixel indices
        (uniform, ``noise_sd`` grey levels)."""
        bh, bw = conc_h.shape
        st = self.stain
        ln10 = -math.log(10.0)
        noise = hash2(np.arange(by, by + bh)[:, None], np.arange(bx, bx + bw)[None, :],
                      sub_seed(self.seed, "camera"))
        scale = F32(self.noise_sd * math.sqrt(12.0) / 1024.0)
        out = np.empty((bh, bw, 3), np.uint8)
        od = np.empty((bh, bw), F32)
        tmp = np.empty((bh, bw), F32)
        for ch in range(3):
            np.multiply(conc_h, F32(ln10 * st.h_gain * st.h_od[ch]), out=od)
            np.multiply(conc_e, F32(ln10 * st.e_gain * st.e_od[ch]), out=tmp)
            od += tmp
            np.exp(od, out=od)
            od *= F32(st.background_rgb[ch])
            tmp[:] = (noise >> (10 * ch)) & 0x3FF
            tmp *= scale
            tmp += F32(0.5 - 511.5 * scale)  # zero-mean noise, + 0.5 to round to nearest
            od += tmp
            np.clip(od, 0, 255, out=od)
            out[..., ch] = od
        return out


def scene_for(
    architecture: str | Architecture,
    seed: int,
    *,
    stain: StainModel | None = None,
) -> HistologyScene:
    """A scene of one architecture everywhere (no glass), with a per-seed stain."""
    arch = ARCHITECTURES[architecture] if isinstance(architecture, str) else architecture
    return HistologyScene(
        seed=seed, layout=UniformLayout(arch), stain=stain or StainModel.sample(seed)
    )


def with_stain(scene: HistologyScene, stain: StainModel) -> HistologyScene:
    """The same tissue stained differently (for stain-normalisation tests)."""
    return replace(scene, stain=stain)
