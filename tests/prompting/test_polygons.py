"""Exact pixel-edge polygons."""

from __future__ import annotations

import numpy as np
from matplotlib.path import Path as MplPath

from tessera.pipelines.prompting.polygons import mask_to_polygons, ring_area


def rasterise(polys, shape):
    """Pixel (r, c) is in when its centre (c + 0.5, r + 0.5) is in the exterior and in no hole."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    centres = np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], axis=1)
    out = np.zeros(len(centres), bool)
    for p in polys:
        inside = MplPath(p.exterior).contains_points(centres)
        for h in p.holes:
            inside &= ~MplPath(h).contains_points(centres)
        out |= inside
    return out.reshape(shape)


def test_square_l_shape_and_hole_are_exact():
    m = np.zeros((8, 8), bool)
    m[1:5, 2:4] = True
    m[3:5, 4:7] = True  # an L
    (p,) = mask_to_polygons(m)
    assert p.area == m.sum() == 14
    assert sorted(map(tuple, p.exterior[:-1].tolist())) == sorted(
        [(2.0, 1.0), (4.0, 1.0), (4.0, 3.0), (7.0, 3.0), (7.0, 5.0), (2.0, 5.0)]
    )
    ring = np.zeros((7, 7), bool)
    ring[1:6, 1:6] = True
    ring[3, 3] = False
    (q,) = mask_to_polygons(ring)
    assert len(q.holes) == 1 and q.area == 24
    assert ring_area(q.exterior) < 0 < ring_area(q.holes[0])


def test_diagonal_neighbours_are_separate_polygons():
    m = np.zeros((6, 6), bool)
    m[1:3, 1:3] = True
    m[3:5, 3:5] = True
    polys = mask_to_polygons(m)
    assert len(polys) == 2 and all(p.area == 4 for p in polys)


def test_random_masks_round_trip_exactly():
    rng = np.random.default_rng(0)
    for _ in range(60):
        m = rng.random((17, 23)) < rng.uniform(0.2, 0.8)
        polys = mask_to_polygons(m)
        assert sum(p.area for p in polys) == m.sum()
        assert np.array_equal(rasterise(polys, m.shape), m)
