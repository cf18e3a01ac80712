"""Synthetic chest CT with airway, artery and vein ground truth.

``synth_ct`` writes a contrast chest CT as NIfTI (int16 HU, anisotropic spacing, an
affine as a DICOM-to-NIfTI converter writes it) plus a label volume alongside
(uint8: 1 airway lumen, 2 artery, 3 vein) and the centreline graph of all three trees
as JSON. The airway and artery-vein plugin trains and is scored on these volumes, and
the ATM'22 metrics are tested against the true branch list.

Anatomy, in the array frame (Z, Y, X) with positions in mm (index * spacing):
z grows towards the head, y from anterior to posterior, x from the patient's right
to left (DICOM LPS rows/columns), so the NIfTI affine flips x and y into RAS.

- body: an elliptic cylinder of soft tissue (~40 HU) in a fat layer (~-100 HU), a
  spine (cortical ~700 HU, cancellous ~250 HU) and ribs (~700 HU);
- two lungs (~-850 HU with smooth texture) around a heart (~50 HU);
- an airway tree grown from the trachea into both lungs: air lumen (-1000 HU) with a
  soft-tissue wall, radii shrinking by Murray's law with the lung territory each
  branch supplies (a space-filling growth after Tawhai et al.), down to ~1 mm;
- pulmonary arteries beside every bronchus (radius close to the bronchus lumen,
  contrast ~+180..300 HU) from a trunk leaving the heart; veins as a separate
  space-filling tree (slightly less contrast) grown towards lung regions away from
  the bronchi, draining into the left atrium;
- partial-volume blur (the trees are rasterised with signed distances, so edges are
  fractional), then Gaussian-filtered blur and noise.

Everything is drawn from ``numpy.random.default_rng(seed)``: the same seed gives the
same volume, labels and graph.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy import ndimage as ndi

TreeName = Literal["airway", "artery", "vein"]
LABEL_VALUES: dict[str, int] = {"airway": 1, "artery": 2, "vein": 3}

#: HU of the tissues (the vessel contrast is drawn per volume around these).
HU_AIR = -1000.0
HU_LUNG = -850.0
HU_FAT = -100.0
HU_SOFT = 40.0
HU_HEART = 50.0
HU_BONE = 700.0
HU_MARROW = 250.0

_MIN_LUMEN_RADIUS_MM = 0.9  # thinnest airway grown: ~2.5 voxels across at 0.7 mm


@dataclass(frozen=True)
class Branch:
    """One straight centreline segment of a tree, positions in mm in the array frame.

    ``start_zyx_mm``/``end_zyx_mm`` are (z, y, x) * spacing, i.e. voxel index times
    spacing; ``radius_mm`` is the lumen radius at the start and end (linear between);
    ``wall_mm`` the wall thickness (airways only, 0 for vessels). ``generation`` counts
    from 0 at the trachea (airway) or the trunk (vessels).
    """

    id: int
    tree: TreeName
    parent: int | None
    generation: int
    start_zyx_mm: tuple[float, float, float]
    end_zyx_mm: tuple[float, float, float]
    radius_mm: tuple[float, float]
    wall_mm: float = 0.0

    @property
    def length_mm(self) -> float:
        return float(np.linalg.norm(np.subtract(self.end_zyx_mm, self.start_zyx_mm)))

    def centreline_voxels(
        self, spacing_mm: tuple[float, float, float], shape_zyx: tuple[int, int, int]
    ) -> np.ndarray:
        """Voxel indices (n, 3) ZYX the centreline passes through, in order, unique."""
        return segment_voxels(self.start_zyx_mm, self.end_zyx_mm, spacing_mm, shape_zyx)


@dataclass
class CTTruth:
    """What ``synth_ct`` wrote and the ground truth behind it."""

    image_path: Path
    labels_path: Path
    graph_path: Path
    shape_zyx: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    affine: np.ndarray  # 4x4, NIfTI voxel (i=x, j=y, k=z) -> RAS mm
    seed: int
    branches: list[Branch] = field(default_factory=list)
    hu: dict[str, float] = field(default_factory=dict)
    volumes_ml: dict[str, float] = field(default_factory=dict)

    def tree(self, name: TreeName) -> list[Branch]:
        """The branches of one tree, parents before children."""
        return [b for b in self.branches if b.tree == name]

    def generations(self, name: TreeName = "airway") -> int:
        """Deepest generation of a tree (trachea = 0)."""
        return max(b.generation for b in self.tree(name))

    def branch_voxels(self, name: TreeName = "airway", within: np.ndarray | None = None
                      ) -> list[np.ndarray]:
        """Centreline voxels (n, 3) ZYX of each branch of a tree, for ATM'22 branch scores.

        ``within``: a boolean volume (e.g. the airway label) the voxels must lie in;
        a branch's start inside its parent's lumen is kept (as ATM's parsing does).
        """
        out = []
        for b in self.tree(name):
            zyx = b.centreline_voxels(self.spacing_mm, self.shape_zyx)
            if within is not None and len(zyx):
                zyx = zyx[within[tuple(zyx.T)]]
            out.append(zyx)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image_path.name,
            "labels": self.labels_path.name,
            "shape_zyx": list(self.shape_zyx),
            "spacing_mm": list(self.spacing_mm),
            "affine": np.asarray(self.affine).tolist(),
            "seed": self.seed,
            "label_values": LABEL_VALUES,
            "hu": self.hu,
            "volumes_ml": self.volumes_ml,
            "branches": [asdict(b) for b in self.branches],
        }


def load_truth(graph_path: str | Path) -> CTTruth:
    """Read the ``*_truth.json`` that ``synth_ct`` writes (branches included)."""
    graph_path = Path(graph_path)
    data = json.loads(graph_path.read_text(encoding="utf-8"))
    branches = [
        Branch(
            id=b["id"],
            tree=b["tree"],
            parent=b["parent"],
            generation=b["generation"],
            start_zyx_mm=tuple(b["start_zyx_mm"]),
            end_zyx_mm=tuple(b["end_zyx_mm"]),
            radius_mm=tuple(b["radius_mm"]),
            wall_mm=b["wall_mm"],
        )
        for b in data["branches"]
    ]
    return CTTruth(
        image_path=graph_path.with_name(data["image"]),
        labels_path=graph_path.with_name(data["labels"]),
        graph_path=graph_path,
        shape_zyx=tuple(data["shape_zyx"]),
        spacing_mm=tuple(data["spacing_mm"]),
        affine=np.asarray(data["affine"], dtype=float),
        seed=data["seed"],
        branches=branches,
        hu=data["hu"],
        volumes_ml=data["volumes_ml"],
    )


def segment_voxels(
    start_zyx_mm: tuple[float, float, float] | np.ndarray,
    end_zyx_mm: tuple[float, float, float] | np.ndarray,
    spacing_mm: tuple[float, float, float],
    shape_zyx: tuple[int, int, int],
) -> np.ndarray:
    """Voxels (n, 3) ZYX a straight segment passes through (sampled at 1/4 voxel), clipped."""
    spacing = np.asarray(spacing_mm, dtype=float)
    a = np.asarray(start_zyx_mm, dtype=float) / spacing
    b = np.asarray(end_zyx_mm, dtype=float) / spacing
    n = max(2, math.ceil(np.abs(b - a).max() * 4) + 1)
    t = np.linspace(0.0, 1.0, n)[:, None]
    idx = np.rint(a + t * (b - a)).astype(np.int64)
    inside = np.all((idx >= 0) & (idx < np.asarray(shape_zyx)), axis=1)
    idx = idx[inside]
    if len(idx) == 0:
        return idx.reshape(0, 3)
    keep = np.ones(len(idx), dtype=bool)
    keep[1:] = np.any(idx[1:] != idx[:-1], axis=1)
    idx = idx[keep]
    _, first = np.unique(idx, axis=0, return_index=True)
    return idx[np.sort(first)]


def nifti_affine(
    spacing_mm: tuple[float, float, float], shape_zyx: tuple[int, int, int]
) -> np.ndarray:
    """The affine a DICOM converter writes for an axial LPS series, centred on the origin.

    NIfTI voxel axes are (i, j, k) = (x, y, z) of our ZYX array; DICOM columns run to
    the patient's left and rows to posterior, so i and j point to -R and -A in RAS.
    """
    sz, sy, sx = spacing_mm
    nz, ny, nx = shape_zyx
    affine = np.diag([-sx, -sy, sz, 1.0])
    affine[:3, 3] = [sx * (nx - 1) / 2, sy * (ny - 1) / 2, -sz * (nz - 1) / 2]
    return affine


# ---------------------------------------------------------------------------------
# Tree growth
# ---------------------------------------------------------------------------------


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-9 else v


def _perpendicular(v: np.ndarray, hint: np.ndarray) -> np.ndarray:
    """A unit vector perpendicular to ``v``, as close to ``hint`` as possible."""
    v = _unit(v)
    p = hint - np.dot(hint, v) * v
    if np.linalg.norm(p) < 1e-6:
        alt = np.array([1.0, 0.0, 0.0]) if abs(v[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        p = alt - np.dot(alt, v) * v
    return _unit(p)


@dataclass
class _Node:
    """A growing branch: the bookkeeping the space-filling growth needs."""

    id: int
    parent: int | None
    generation: int
    start: np.ndarray
    end: np.ndarray
    r0: float
    r1: float
    children: list[int] = field(default_factory=list)


class _TreeBuilder:
    """Space-filling growth (after Tawhai et al. 2000) of a tree into point clouds.

    Each branch heads for the centroid of the territory points it supplies, covers a
    fraction of the way, and splits its points in two along their widest spread
    across the branch; child radii follow Murray's law with flow proportional to the
    points supplied (r_child = r * (n_child / n) ** (1/3)).
    """

    def __init__(self, rng: np.random.Generator, *, min_radius_mm: float, max_generation: int,
                 min_points: int, reach: tuple[float, float] = (0.5, 0.65),
                 avoid: Any = None) -> None:
        self.rng = rng
        # avoid(points (n, 3) mm, radius mm) -> bool (n,): too close to something to keep clear of
        self.avoid = avoid
        self.min_radius = min_radius_mm
        self.max_generation = max_generation
        self.min_points = min_points
        self.reach = reach
        self.nodes: list[_Node] = []

    def add(self, parent: int | None, generation: int, start: np.ndarray, end: np.ndarray,
            r0: float, r1: float) -> int:
        node = _Node(len(self.nodes), parent, generation, np.asarray(start, float),
                     np.asarray(end, float), r0, r1)
        self.nodes.append(node)
        if parent is not None:
            self.nodes[parent].children.append(node.id)
        return node.id

    def _collisions(self, start: np.ndarray, direction: np.ndarray, length: float,
                    radius: float) -> float:
        """Fraction of a candidate segment (past its first few mm) that is too close."""
        skip = min(0.5 * length, 1.5 * radius + 2.0)
        t = np.linspace(skip, length, 12)
        return float(self.avoid(start + t[:, None] * direction, radius).mean())

    def _steer_clear(self, start: np.ndarray, direction: np.ndarray, parent_dir: np.ndarray,
                     length: float, radius: float) -> np.ndarray:
        """Turn a branch (within the angle limit) until it keeps clear, or the best try."""
        best = (self._collisions(start, direction, length, radius), direction)
        for _ in range(10):
            if best[0] <= 0.1:
                break
            cand = _unit(direction + self.rng.normal(0.0, 0.5, 3))
            if np.dot(cand, parent_dir) < 0.26:
                continue
            hit = self._collisions(start, cand, length, radius)
            if hit < best[0]:
                best = (hit, cand)
        return best[1]

    def grow(self, parent: int, points: np.ndarray, radius: float, generation: int) -> None:
        """Grow a child of ``parent`` supplying ``points`` (n, 3 mm), then recurse."""
        start = self.nodes[parent].end
        centroid = points.mean(axis=0)
        to_c = centroid - start
        dist = float(np.linalg.norm(to_c))
        parent_dir = _unit(self.nodes[parent].end - self.nodes[parent].start)
        if dist < 1e-6:
            to_c = parent_dir
            dist = 2.0 * radius
        direction = _unit(to_c)
        # branching angle limit: a child never turns back more than ~75 degrees
        cos = float(np.dot(direction, parent_dir))
        if cos < 0.26:
            direction = _unit(direction + (0.26 - cos + 0.2) * parent_dir)
        terminal = (
            generation >= self.max_generation
            or len(points) < self.min_points
            or radius * 0.5 ** (1.0 / 3.0) < self.min_radius
        )
        # a terminal branch runs into the middle of its territory
        reach = self.rng.uniform(0.85, 1.0) if terminal else self.rng.uniform(*self.reach)
        length = max(3.0 * radius, dist * reach)
        if self.avoid is not None:
            direction = self._steer_clear(start, direction, parent_dir, length, radius)
        end = start + direction * length
        r_end = radius * 0.92
        node = self.add(parent, generation, start, end, radius, r_end)
        if terminal:
            return
        # split the territory across the branch along its widest spread
        rel = points - end
        rel_perp = rel - np.outer(rel @ direction, direction)
        cov = rel_perp.T @ rel_perp
        _, vecs = np.linalg.eigh(cov)
        axis = vecs[:, -1]
        proj = rel_perp @ axis
        cut = np.median(proj) + self.rng.normal(0.0, 0.1) * proj.std()
        halves = [points[proj <= cut], points[proj > cut]]
        n_total = float(len(points))
        for half in halves:
            if len(half) == 0:
                continue
            r_child = radius * (len(half) / n_total) ** (1.0 / 3.0)
            if r_child < self.min_radius:
                continue
            self.grow(node, half, r_child, generation + 1)


# ---------------------------------------------------------------------------------
# Rasterisation
# ---------------------------------------------------------------------------------


def _rasterise_min_sdf(
    sdf: np.ndarray,
    segments: list[tuple[np.ndarray, np.ndarray, float, float]],
    spacing: np.ndarray,
    grow_mm: float = 0.0,
) -> None:
    """Lower ``sdf`` (mm, ZYX) to the signed distance of tapered capsules.

    Each segment (a, b, ra, rb) in mm is the set of points within r(t) of the segment,
    r linear from ra to rb. Only the bounding box of a segment is evaluated, vectorised.
    """
    shape = np.asarray(sdf.shape)
    for a, b, ra, rb in segments:
        ra, rb = ra + grow_mm, rb + grow_mm
        rmax = max(ra, rb) + 2.0 * float(spacing.max())
        lo = np.maximum(np.floor((np.minimum(a, b) - rmax) / spacing).astype(int), 0)
        hi = np.minimum(np.ceil((np.maximum(a, b) + rmax) / spacing).astype(int) + 1, shape)
        if np.any(hi <= lo):
            continue
        zz, yy, xx = (np.arange(lo[i], hi[i]) * spacing[i] for i in range(3))
        ab = b - a
        ll = float(ab @ ab)
        pz = (zz - a[0])[:, None, None]
        py = (yy - a[1])[None, :, None]
        px = (xx - a[2])[None, None, :]
        if ll < 1e-12:
            t = np.zeros((len(zz), len(yy), len(xx)))
        else:
            t = np.clip((pz * ab[0] + py * ab[1] + px * ab[2]) / ll, 0.0, 1.0)
        dz = pz - t * ab[0]
        dy = py - t * ab[1]
        dx = px - t * ab[2]
        d = np.sqrt(dz * dz + dy * dy + dx * dx) - (ra + t * (rb - ra))
        box = sdf[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        np.minimum(box, d.astype(np.float32), out=box)


def _occupancy(sdf: np.ndarray, voxel_mm: float) -> np.ndarray:
    """Fraction of a voxel inside a surface given its signed distance (partial volume)."""
    return np.clip(0.5 - sdf / voxel_mm, 0.0, 1.0).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: tuple[float, ...]
                  ) -> np.ndarray:
    """Gaussian-filtered white noise scaled to unit standard deviation (float32)."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    noise = ndi.gaussian_filter(noise, sigma_vox, mode="wrap")
    std = float(noise.std())
    return noise / std if std > 0 else noise


# ---------------------------------------------------------------------------------
# The phantom
# ---------------------------------------------------------------------------------


@dataclass
class _Anatomy:
    """Shapes in mm derived from the field of view, so any volume size works."""

    extent: np.ndarray  # (Z, Y, X) mm
    body_c: np.ndarray  # (y, x)
    body_ax: np.ndarray  # (ay, ax) semi axes
    lung_c: list[np.ndarray]  # per lung (z, y, x)
    lung_ax: np.ndarray  # (az, ay, ax)
    heart_c: np.ndarray
    heart_ax: np.ndarray
    spine_c: np.ndarray  # (y, x)
    spine_r: float
    trachea_yx: np.ndarray
    carina_z: float
    trachea_r: float


def _anatomy(shape_zyx: tuple[int, int, int], spacing: np.ndarray, rng: np.random.Generator
             ) -> _Anatomy:
    extent = np.asarray(shape_zyx) * spacing
    ez, ey, ex = extent
    j = lambda s: 1.0 + rng.uniform(-s, s)  # noqa: E731 - small anatomical jitter
    body_c = np.array([ey * 0.51, ex * 0.5])
    body_ax = np.array([ey * 0.40 * j(0.04), ex * 0.47 * j(0.03)])
    ay, ax = body_ax
    lung_ax = np.array([ez * 0.62 * j(0.05), ay * 0.70 * j(0.04), ax * 0.36 * j(0.04)])
    lung_c = [
        np.array([ez * 0.36, body_c[0] + ay * 0.02, body_c[1] + s * ax * 0.50 * j(0.03)])
        for s in (-1.0, 1.0)
    ]
    heart_c = np.array([ez * 0.12, body_c[0] - ay * 0.22, body_c[1] + ax * 0.10])
    heart_ax = np.array([ez * 0.42, ay * 0.42, ax * 0.36])
    spine_c = np.array([body_c[0] + ay * 0.70, body_c[1]])
    trachea_r = min(ax, ay) * 0.075 * j(0.06)
    trachea_yx = np.array([body_c[0] - ay * 0.05, body_c[1] + rng.uniform(-1, 1) * 0.01 * ax])
    carina_z = ez * 0.62 * j(0.03)
    return _Anatomy(extent, body_c, body_ax, lung_c, lung_ax, heart_c, heart_ax, spine_c,
                    ay * 0.16, trachea_yx, carina_z, trachea_r)


def _lung_masks(shape_zyx: tuple[int, int, int], spacing: np.ndarray, an: _Anatomy
                ) -> list[np.ndarray]:
    """Boolean masks (ZYX) of the right and left lungs (heart and mediastinum cut out)."""
    zz, yy, xx = (np.arange(n, dtype=np.float32) * s for n, s in zip(shape_zyx, spacing, strict=True))
    heart = (
        ((zz[:, None, None] - an.heart_c[0]) / an.heart_ax[0]) ** 2
        + ((yy[None, :, None] - an.heart_c[1]) / an.heart_ax[1]) ** 2
        + ((xx[None, None, :] - an.heart_c[2]) / an.heart_ax[2]) ** 2
    ) <= 1.0
    spine = ((yy[:, None] - an.spine_c[0]) ** 2 + (xx[None, :] - an.spine_c[1]) ** 2) <= (
        an.spine_r * 1.6
    ) ** 2
    body_in = (
        ((yy[:, None] - an.body_c[0]) / (an.body_ax[0] * 0.86)) ** 2
        + ((xx[None, :] - an.body_c[1]) / (an.body_ax[1] * 0.88)) ** 2
    ) <= 1.0
    masks = []
    for c in an.lung_c:
        # a dome: the cross-section narrows towards the apex (top, large z)
        dz = (zz - c[0]) / an.lung_ax[0]
        m = (
            dz[:, None, None] ** 2
            + ((yy[None, :, None] - c[1]) / an.lung_ax[1]) ** 2
            + ((xx[None, None, :] - c[2]) / an.lung_ax[2]) ** 2
        ) <= 1.0
        # flatten the base a little: below the centre the lung keeps its full section
        below = zz < c[0]
        base = (
            ((yy[None, :, None] - c[1]) / an.lung_ax[1]) ** 2
            + ((xx[None, None, :] - c[2]) / an.lung_ax[2]) ** 2
        ) <= 1.0
        m[below] = np.broadcast_to(base, m.shape)[below]
        m &= ~heart
        m &= ~spine[None]
        m &= body_in[None]
        masks.append(m)
    return masks


def _sample_points(mask: np.ndarray, spacing: np.ndarray, n: int, rng: np.random.Generator
                   ) -> np.ndarray:
    """``n`` random points (mm) inside ``mask``, jittered within their voxels."""
    idx = np.flatnonzero(mask)
    pick = rng.choice(idx, size=min(n, idx.size), replace=False)
    pick.sort()
    zyx = np.stack(np.unravel_index(pick, mask.shape), axis=1).astype(float)
    zyx += rng.uniform(-0.5, 0.5, zyx.shape)
    return zyx * spacing


def _grow_airway(an: _Anatomy, lungs: list[np.ndarray], spacing: np.ndarray,
                 rng: np.random.Generator, eroded: list[np.ndarray]
                 ) -> _TreeBuilder:
    builder = _TreeBuilder(rng, min_radius_mm=_MIN_LUMEN_RADIUS_MM, max_generation=9,
                           min_points=6)
    top = np.array([an.extent[0] + 2.0, *an.trachea_yx])
    carina = np.array([an.carina_z, an.trachea_yx[0] + an.body_ax[0] * 0.06, an.trachea_yx[1]])
    trachea = builder.add(None, 0, top, carina, an.trachea_r, an.trachea_r * 0.95)
    r = an.trachea_r * 0.95
    n_points = 1500
    for lung_i, c in enumerate(an.lung_c):
        points = _sample_points(eroded[lung_i], spacing, n_points, rng)
        # main bronchus: heads for the hilum (medial, slightly below the carina)
        side = np.sign(c[2] - carina[2])
        hilum = np.array([
            carina[0] - an.extent[0] * 0.08,
            carina[1] + rng.uniform(-1, 1) * 2.0,
            c[2] - side * an.lung_ax[2] * 0.45,
        ])
        share = 0.55 if side > 0 else 0.45  # the right lung is a little larger
        r_main = r * share ** (1.0 / 3.0)
        main = builder.add(trachea, 1, carina, hilum, r_main, r_main * 0.95)
        # lobar split of the territory: upper vs lower by height, then space filling
        upper = points[:, 0] >= np.median(points[:, 0])
        for part in (points[upper], points[~upper]):
            rc = r_main * 0.95 * (len(part) / len(points)) ** (1.0 / 3.0)
            builder.grow(main, part, rc, 2)
    return builder


def _vessel_offsets(builder: _TreeBuilder, rng: np.random.Generator) -> dict[int, np.ndarray]:
    """A unit offset per airway node end: perpendicular to the plane of its children."""
    offsets: dict[int, np.ndarray] = {}
    for node in builder.nodes:  # parents come before children
        d = _unit(node.end - node.start)
        # the first offset points anterior; children inherit their parent's side
        hint = np.array([0.0, -1.0, 0.0]) if node.parent is None else offsets[node.parent]
        kids = [builder.nodes[k] for k in node.children]
        if len(kids) >= 2:
            n = np.cross(_unit(kids[0].end - kids[0].start), _unit(kids[1].end - kids[1].start))
            if np.linalg.norm(n) > 1e-3:
                n = _unit(n)
                hint = n if np.dot(n, hint) >= 0 else -n
        offsets[node.id] = _perpendicular(d, hint)
    return offsets


def _grow_arteries(an: _Anatomy, airway: _TreeBuilder, rng: np.random.Generator
                   ) -> list[tuple[int | None, int, np.ndarray, np.ndarray, float, float]]:
    """Arteries beside every bronchus below the trachea, fed by a trunk from the heart.

    Returns (parent, generation, start, end, r0, r1) rows; parents index these rows.
    """
    offsets = _vessel_offsets(airway, rng)
    nodes = airway.nodes
    scale = {n.id: rng.uniform(0.9, 1.15) for n in nodes}

    def art_radius(node: _Node, at_end: bool) -> float:
        return (node.r1 if at_end else node.r0) * scale[node.id]

    def point(node: _Node, at_end: bool) -> np.ndarray:
        r = node.r1 if at_end else node.r0
        wall = _wall_mm(r)
        gap = 0.6
        base = node.end if at_end else node.start
        off = offsets[node.id] if at_end else offsets[node.parent] if node.parent is not None \
            else offsets[node.id]
        if not at_end:
            # the start sits beside the parent's end, perpendicular to this branch too
            off = _perpendicular(node.end - node.start, off)
        return base + off * (r + wall + art_radius(node, at_end) + gap)

    rows: list[tuple[int | None, int, np.ndarray, np.ndarray, float, float]] = []
    trachea = nodes[0]
    mains = [nodes[k] for k in trachea.children]
    r_trunk = trachea.r0 * 1.1
    trunk_start = np.array([an.heart_c[0] + an.heart_ax[0] * 0.55, an.heart_c[1], an.body_c[1]])
    split = np.array([an.carina_z - an.extent[0] * 0.04,
                      trachea.end[1] - trachea.r0 * 2.6, an.body_c[1]])
    rows.append((None, 0, trunk_start, split, r_trunk, r_trunk * 0.95))
    row_of: dict[int, int] = {}

    def follow(node: _Node, parent_row: int, start: np.ndarray, generation: int) -> None:
        end = point(node, True)
        rows.append((parent_row, generation, start, end, art_radius(node, False),
                     art_radius(node, True)))
        row_of[node.id] = len(rows) - 1
        for k in node.children:
            follow(nodes[k], row_of[node.id], end, generation + 1)

    for main in mains:
        # left/right pulmonary artery from the split to the side of the main bronchus
        start_side = point(main, False)
        rows.append((0, 1, split, start_side, r_trunk * 0.8, art_radius(main, False)))
        follow(main, len(rows) - 1, start_side, 2)
    return rows


def _wall_mm(lumen_r_mm: float) -> float:
    return max(0.55, 0.22 * lumen_r_mm)


def _grow_veins(an: _Anatomy, away: list[np.ndarray], bundle_sdf: np.ndarray, grown_mm: float,
                spacing: np.ndarray, rng: np.random.Generator, r_trunk: float) -> _TreeBuilder:
    """Veins: space filling towards lung regions away from the bronchovascular bundles,
    each branch steered (within the branching-angle limit) to keep clear of them."""
    shape = np.asarray(bundle_sdf.shape)

    def too_close(points: np.ndarray, radius: float) -> np.ndarray:
        idx = np.clip(np.rint(points / spacing).astype(int), 0, shape - 1)
        gap = bundle_sdf[tuple(idx.T)] + grown_mm  # distance to a bundle surface, mm
        return gap < radius + 1.0

    builder = _TreeBuilder(rng, min_radius_mm=_MIN_LUMEN_RADIUS_MM, max_generation=8,
                           min_points=6, reach=(0.55, 0.7), avoid=too_close)
    atrium = np.array([an.heart_c[0] + an.heart_ax[0] * 0.35,
                       an.heart_c[1] + an.heart_ax[1] * 0.55, an.heart_c[2] - an.heart_ax[2] * 0.1])
    root = builder.add(None, 0, atrium - np.array([0.0, 0.0, 0.01]), atrium, r_trunk, r_trunk)
    for lung_i, c in enumerate(an.lung_c):
        points = _sample_points(away[lung_i], spacing, 1200, rng)
        side = np.sign(c[2] - atrium[2])
        for part_upper in (True, False):
            sel = (points[:, 0] >= np.median(points[:, 0])) == part_upper
            part = points[sel]
            hilum = np.array([
                an.carina_z - an.extent[0] * (0.12 if part_upper else 0.30),
                c[1] + an.lung_ax[1] * 0.25,
                c[2] - side * an.lung_ax[2] * 0.55,
            ])
            r = r_trunk * 0.62
            trunk = builder.add(root, 1, atrium, hilum, r, r * 0.95)
            builder.grow(trunk, part, r * 0.95, 2)
    return builder


def synth_ct(
    path: str | Path,
    *,
    shape_zyx: tuple[int, int, int] = (96, 192, 192),
    spacing_mm: tuple[float, float, float] = (1.0, 0.7, 0.7),
    seed: int = 0,
    noise_hu: float = 18.0,
) -> CTTruth:
    """Write a synthetic contrast chest CT and its ground truth; return the truth.

    Args:
        path: the CT NIfTI to write (``.nii.gz`` or ``.nii``). Written next to it:
            ``<stem>_labels.nii.gz`` (uint8: 0 background, 1 airway lumen, 2 artery,
            3 vein) and ``<stem>_truth.json`` (the centreline graph and metadata).
        shape_zyx: volume size in voxels (Z, Y, X).
        spacing_mm: voxel size in mm (Z, Y, X); anisotropic like a clinical CT.
        seed: everything random comes from this seed (deterministic).
        noise_hu: standard deviation of the added noise, HU.
    """
    import nibabel as nib

    path = Path(path)
    shape_zyx = tuple(int(s) for s in shape_zyx)  # type: ignore[assignment]
    if len(shape_zyx) != 3 or min(shape_zyx) < 16:
        msg = f"shape_zyx must be three sizes of at least 16 voxels, got {shape_zyx}"
        raise ValueError(msg)
    spacing = np.asarray(spacing_mm, dtype=float)
    if spacing.shape != (3,) or np.any(spacing <= 0):
        msg = f"spacing_mm must be three positive sizes, got {spacing_mm}"
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    an = _anatomy(shape_zyx, spacing, rng)
    lungs = _lung_masks(shape_zyx, spacing, an)
    lung_any = lungs[0] | lungs[1]
    erode_vox = tuple(max(1, round(3.0 / s)) for s in spacing)
    eroded = [
        ndi.binary_erosion(m, structure=np.ones((3, 3, 3), bool), iterations=max(erode_vox))
        if m.sum() > 5000 else m for m in lungs
    ]

    # --- trees --------------------------------------------------------------------
    airway = _grow_airway(an, lungs, spacing, rng, eroded)
    art_rows = _grow_arteries(an, airway, rng)
    # vein territory: lung voxels at least ~6 mm from any bronchus or artery centreline
    bundle_sdf = np.full(shape_zyx, 1e3, dtype=np.float32)
    bundle_segments = [(n.start, n.end, n.r0 + _wall_mm(n.r0), n.r1 + _wall_mm(n.r1))
                       for n in airway.nodes]
    bundle_segments += [(s, e, r0, r1) for _, _, s, e, r0, r1 in art_rows]
    grown = 6.0
    _rasterise_min_sdf(bundle_sdf, bundle_segments, spacing, grow_mm=grown)
    away = [m & (bundle_sdf > 0) for m in eroded]
    away = [a if a.sum() > 2000 else m for a, m in zip(away, eroded, strict=True)]
    veins = _grow_veins(an, away, bundle_sdf, grown, spacing, rng, r_trunk=an.trachea_r * 1.2)

    branches: list[Branch] = []

    def emit(tree: TreeName, rows: list[tuple[int | None, int, np.ndarray, np.ndarray, float, float]],
             wall: bool) -> None:
        base = len(branches)
        for parent, gen, s, e, r0, r1 in rows:
            branches.append(Branch(
                id=len(branches), tree=tree, parent=None if parent is None else base + parent,
                generation=gen, start_zyx_mm=tuple(round(float(v), 4) for v in s),
                end_zyx_mm=tuple(round(float(v), 4) for v in e),
                radius_mm=(round(float(r0), 4), round(float(r1), 4)),
                wall_mm=round(_wall_mm(r0), 4) if wall else 0.0))

    emit("airway", [(n.parent, n.generation, n.start, n.end, n.r0, n.r1) for n in airway.nodes],
         wall=True)
    emit("artery", art_rows, wall=False)
    # the vein root is a stub inside the atrium: drop it, its children become roots
    vein_rows = [(n.parent, n.generation, n.start, n.end, n.r0, n.r1) for n in veins.nodes[1:]]
    vein_rows = [(None if p == 0 else p - 1, g - 1, s, e, r0, r1)
                 for p, g, s, e, r0, r1 in vein_rows]
    emit("vein", vein_rows, wall=False)

    # --- signed distance fields ----------------------------------------------------
    def segs(tree: str, grow_wall: bool = False) -> list[tuple[np.ndarray, np.ndarray, float, float]]:
        out = []
        for b in branches:
            if b.tree != tree:
                continue
            w0 = _wall_mm(b.radius_mm[0]) if grow_wall else 0.0
            w1 = _wall_mm(b.radius_mm[1]) if grow_wall else 0.0
            out.append((np.asarray(b.start_zyx_mm), np.asarray(b.end_zyx_mm),
                        b.radius_mm[0] + w0, b.radius_mm[1] + w1))
        return out

    sdf = {}
    for name, grow_wall in (("lumen", False), ("wall", True), ("artery", False), ("vein", False)):
        field_ = np.full(shape_zyx, 1e3, dtype=np.float32)
        _rasterise_min_sdf(field_, segs("airway" if name in ("lumen", "wall") else name,
                                        grow_wall), spacing)
        sdf[name] = field_

    # --- intensities ---------------------------------------------------------------
    zz, yy, xx = (np.arange(n, dtype=np.float32) * s for n, s in zip(shape_zyx, spacing, strict=True))
    voxel_mm = float(np.mean(spacing))
    hu = np.full(shape_zyx, HU_AIR, dtype=np.float32)
    ell = ((yy[:, None] - an.body_c[0]) / an.body_ax[0]) ** 2 + (
        (xx[None, :] - an.body_c[1]) / an.body_ax[1]
    ) ** 2
    body = ell <= 1.0
    inner = ell <= 0.88**2
    hu[:, body] = HU_FAT
    hu[:, inner] = HU_SOFT
    # ribs: arcs of bone just inside the fat layer, every ~25 mm, tilted downwards laterally
    rib_ring = (ell >= 0.80**2) & (ell <= 0.86**2) & (yy[:, None] > an.body_c[0] - an.body_ax[0] * 0.3)
    lateral = np.abs(xx[None, :] - an.body_c[1]) / an.body_ax[1]
    rib_pitch = 25.0
    rib_phase = rng.uniform(0, rib_pitch)
    rib_z = (zz[:, None, None] + 8.0 * lateral[None]) % rib_pitch
    ribs = rib_ring[None] & (np.abs(rib_z - rib_phase) < 4.0)
    hu[ribs] = HU_BONE
    spine_d2 = (yy[:, None] - an.spine_c[0]) ** 2 + (xx[None, :] - an.spine_c[1]) ** 2
    hu[:, spine_d2 <= an.spine_r**2] = HU_BONE
    hu[:, spine_d2 <= (an.spine_r * 0.8) ** 2] = HU_MARROW
    canal = (yy[:, None] - an.spine_c[0] - an.spine_r * 1.4) ** 2 + (
        xx[None, :] - an.spine_c[1]
    ) ** 2 <= (an.spine_r * 0.45) ** 2
    hu[:, canal] = HU_SOFT - 20.0
    heart = (
        ((zz[:, None, None] - an.heart_c[0]) / an.heart_ax[0]) ** 2
        + ((yy[None, :, None] - an.heart_c[1]) / an.heart_ax[1]) ** 2
        + ((xx[None, None, :] - an.heart_c[2]) / an.heart_ax[2]) ** 2
    ) <= 1.0
    hu[heart] = HU_HEART
    texture = _smooth_noise(rng, shape_zyx, tuple(2.0 / s for s in spacing))
    lung_hu = HU_LUNG + 25.0 * texture
    lung_soft = ndi.gaussian_filter(lung_any.astype(np.float32), tuple(0.6 / s for s in spacing))
    hu = hu * (1.0 - lung_soft) + lung_hu * lung_soft
    del lung_hu, texture

    artery_hu = float(rng.uniform(190.0, 300.0))
    vein_hu = float(artery_hu - rng.uniform(50.0, 110.0))
    for name, value in (("vein", vein_hu), ("artery", artery_hu), ("wall", HU_SOFT),
                        ("lumen", HU_AIR)):
        occ = _occupancy(sdf[name], voxel_mm)
        hu += occ * (value - hu)
    # outside the body nothing is drawn (the trachea enters from the top slab only)
    hu[:, ~body] = HU_AIR

    # --- labels: the voxel centre inside the surface; airway over artery over vein ----
    labels = np.zeros(shape_zyx, dtype=np.uint8)
    labels[sdf["vein"] <= 0] = LABEL_VALUES["vein"]
    labels[sdf["artery"] <= 0] = LABEL_VALUES["artery"]
    labels[sdf["lumen"] <= 0] = LABEL_VALUES["airway"]
    labels[:, ~body] = 0
    del sdf

    # --- scanner: point spread (blur) and noise -----------------------------------------
    hu = ndi.gaussian_filter(hu, (0.45, 0.5, 0.5))
    hu += noise_hu * rng.standard_normal(shape_zyx, dtype=np.float32)
    hu += 0.5 * noise_hu * _smooth_noise(rng, shape_zyx, (0.8, 1.0, 1.0))
    image = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    del hu

    # --- files ------------------------------------------------------------------
    affine = nifti_affine(tuple(spacing), shape_zyx)
    name = path.name
    stem = name[:-7] if name.endswith(".nii.gz") else name[:-4] if name.endswith(".nii") else path.stem
    labels_path = path.with_name(f"{stem}_labels.nii.gz")
    graph_path = path.with_name(f"{stem}_truth.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_nifti(nib, image, affine, spacing, path, "Tessera synthetic chest CT (HU)")
    _write_nifti(nib, labels, affine, spacing, labels_path,
                 "labels: 1 airway 2 artery 3 vein", intent="label")
    voxel_ml = float(np.prod(spacing)) / 1000.0
    counts = np.bincount(labels.ravel(), minlength=4)
    truth = CTTruth(
        image_path=path, labels_path=labels_path, graph_path=graph_path,
        shape_zyx=shape_zyx, spacing_mm=tuple(float(s) for s in spacing), affine=affine,
        seed=seed, branches=branches,
        hu={"air": HU_AIR, "lung": HU_LUNG, "fat": HU_FAT, "soft_tissue": HU_SOFT,
            "bone": HU_BONE, "artery": round(artery_hu, 1), "vein": round(vein_hu, 1),
            "noise_sd": noise_hu},
        volumes_ml={name: round(float(counts[v]) * voxel_ml, 3) for name, v in LABEL_VALUES.items()},
    )
    graph_path.write_text(json.dumps(truth.to_json(), indent=1), encoding="utf-8")
    return truth


def _write_nifti(nib: Any, zyx: np.ndarray, affine: np.ndarray, spacing: np.ndarray, path: Path,
                 description: str, intent: str | None = None) -> None:
    """Write a ZYX array as NIfTI-1 (voxel axes i, j, k = x, y, z), atomically."""
    img = nib.Nifti1Image(np.ascontiguousarray(zyx.transpose(2, 1, 0)), affine)
    hdr = img.header
    hdr.set_xyzt_units("mm", "sec")
    hdr.set_zooms(tuple(float(s) for s in spacing[::-1]))
    img.set_sform(affine, code="scanner")
    img.set_qform(affine, code="scanner")
    hdr["descrip"] = description[:79].encode()
    if intent == "label":
        hdr.set_intent("label")
    else:
        hdr.set_slope_inter(1.0, 0.0)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    tmp = path.with_name(f".{path.name}.partial{suffix}")
    nib.save(img, tmp)
    tmp.replace(path)
