"""ATM'22 metrics and tree parsing against hand-built trees with known answers."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest

from tessera.pipelines.metrics import (
    branches_detected,
    dice,
    keep_largest_component,
    parse_tree,
    precision,
    score_airway,
    score_labels,
    sensitivity,
    skeletonize_3d,
    tree_length_detected,
    tree_summary,
    volumes_ml,
)
from tessera.pipelines.synthetic.ct import segment_voxels, synth_ct


def draw_tree(shape, spacing, segments, radius_mm):
    """Boolean tubes of ``radius_mm`` around segments given in mm (z, y, x)."""
    spacing = np.asarray(spacing, float)
    grid = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)],
                                indexing="ij"), axis=-1)
    mask = np.zeros(shape, bool)
    for a, b in segments:
        a, b = np.asarray(a, float), np.asarray(b, float)
        ab = b - a
        t = np.clip(((grid - a) @ ab) / (ab @ ab), 0, 1)
        d = np.linalg.norm(grid - (a + t[..., None] * ab), axis=-1)
        mask |= d <= radius_mm
    return mask


def binary_tree(depth: int, top=(60.0, 32.0, 32.0), length=16.0):
    """Segments of a planar-alternating binary tree, generation by generation."""
    segs, gens = [], []
    trunk_end = (top[0] - length, top[1], top[2])
    segs.append((top, trunk_end))
    gens.append(0)
    frontier = [(np.array(trunk_end), np.array([-1.0, 0, 0]), 0)]
    for g in range(1, depth + 1):
        nxt = []
        ln = length * 0.8**g
        for p, d, _ in frontier:
            axis = np.array([0, 1.0, 0]) if g % 2 else np.array([0, 0, 1.0])
            for sgn in (-1, 1):
                nd = d * math.cos(0.6) + sgn * axis * math.sin(0.6)
                nd /= np.linalg.norm(nd)
                q = p + nd * ln
                segs.append((tuple(p), tuple(q)))
                gens.append(g)
                nxt.append((q, nd, g))
        frontier = nxt
    return segs, gens


Y_SEGMENTS = [((35.0, 20.0, 20.0), (20.0, 20.0, 20.0)),
              ((20.0, 20.0, 20.0), (5.0, 20.0, 8.0)),
              ((20.0, 20.0, 20.0), (5.0, 20.0, 32.0))]


@pytest.fixture(scope="module")
def y_tree():
    return draw_tree((40, 40, 40), (1.0, 1.0, 1.0), Y_SEGMENTS, 2.0)


def test_overlap_known_values() -> None:
    truth = np.zeros((1, 1, 10), bool)
    pred = np.zeros_like(truth)
    truth[..., :6] = True
    pred[..., 3:7] = True  # 3 right, 1 wrong, 3 missed
    assert dice(pred, truth) == pytest.approx(0.6)
    assert precision(pred, truth) == pytest.approx(0.75)
    assert sensitivity(pred, truth) == pytest.approx(0.5)
    empty = np.zeros_like(truth)
    assert dice(empty, empty) == 1.0 and precision(empty, truth) == 1.0
    assert dice(empty, truth) == 0.0
    with pytest.raises(ValueError, match="differ in shape"):
        dice(pred, truth[..., :5])


def test_volumes_ml() -> None:
    labels = np.zeros((10, 10, 20), np.uint8)
    labels[:, :, :10] = 1  # 1000 voxels
    labels[:5, :, 10:] = 3  # 500 voxels
    assert volumes_ml(labels, (1, 1, 1), {1: "airway", 2: "artery", 3: "vein"}) == {
        "airway": pytest.approx(1.0), "artery": 0.0, "vein": pytest.approx(0.5)}
    assert volumes_ml(labels, (2.0, 0.5, 0.5)) == {"1": pytest.approx(0.5),
                                                   "3": pytest.approx(0.25)}


def test_keep_largest_component_is_26_connected() -> None:
    m = np.zeros((8, 8, 8), bool)
    m[0, 0, :4] = True  # 4 voxels
    m[1, 1, 4] = True  # touches the first line only by an edge/corner
    m[6, 6, 0:3] = True  # 3 voxels, separate
    kept = keep_largest_component(m)
    assert kept.sum() == 5 and kept[1, 1, 4] and not kept[6, 6, 0]
    kept6 = keep_largest_component(m, connectivity=6)
    assert kept6.sum() == 4 and not kept6[1, 1, 4]
    assert not keep_largest_component(np.zeros((3, 3, 3), bool)).any()


@pytest.mark.parametrize("shape", [(0, 4, 4), (3, 5, 5), (21, 9, 7)])
def test_label_counts_equal_bincount(shape) -> None:
    from tessera.pipelines.metrics.components import label_counts

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 40, shape).astype(np.int32)
    for minlength in (0, 5, 60):
        np.testing.assert_array_equal(label_counts(labels, minlength, planes=4),
                                      np.bincount(labels.ravel(), minlength=minlength))
    mask = labels > 20
    np.testing.assert_array_equal(label_counts(mask), np.bincount(mask.ravel()))


def test_components_touching_seeds_match_a_whole_volume_reference() -> None:
    """Blockwise lookups give the same components as labelling and testing in one go."""
    from scipy import ndimage as ndi

    from tessera.pipelines.metrics.components import keep_components_touching

    rng = np.random.default_rng(2)
    mask = ndi.binary_opening(rng.random((30, 24, 24)) > 0.55)
    seeds = rng.random(mask.shape) > 0.995
    labels, _ = ndi.label(mask, structure=np.ones((3, 3, 3), bool))
    touched = np.unique(labels[mask & seeds])
    expected = np.isin(labels, touched[touched > 0])
    assert 0 < expected.sum() < mask.sum()  # some kept, some dropped
    np.testing.assert_array_equal(keep_components_touching(mask, seeds), expected)


def test_y_tree_parsing(y_tree) -> None:
    tree = parse_tree(y_tree, (1.0, 1.0, 1.0))
    assert tree.n_branches == 3
    assert sorted(tree.generation) == [0, 1, 1]
    root = tree.branches[tree.root]
    assert root[:, 0].min() > 17  # the trunk is the root (z 20..35)
    assert [tree.parent[i] for i in range(3) if i != tree.root] == [tree.root, tree.root]
    expected = 15.0 + 2 * math.hypot(15.0, 12.0)
    # the skeleton stops about a radius short of each free end
    assert expected - 8 < tree.length_mm < expected + 3
    summary = tree_summary(y_tree, (1.0, 1.0, 1.0))
    assert summary["branch_count"] == 3 and summary["generations"] == 1


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (1.5, 0.8, 0.8)])
def test_binary_tree_generations_and_length(spacing) -> None:
    segs, gens = binary_tree(3)
    shape = tuple(round(64 / s) for s in spacing)
    mask = draw_tree(shape, spacing, segs, 1.3)
    tree = parse_tree(mask, spacing)
    assert tree.n_branches == len(segs) == 15
    assert tree.generations_reached == 3
    assert sorted(tree.generation) == sorted(gens)
    true_len = sum(np.linalg.norm(np.subtract(b, a)) for a, b in segs)
    assert 0.8 * true_len < tree.length_mm < 1.1 * true_len


def test_tree_length_and_branches_detected(y_tree) -> None:
    spacing = (1.0, 1.0, 1.0)
    branches = [segment_voxels(a, b, spacing, y_tree.shape) for a, b in Y_SEGMENTS]
    branches = [b[y_tree[tuple(b.T)]] for b in branches]
    assert score_airway(y_tree, y_tree, spacing, truth_branches_zyx=branches)[
        "branches_detected"] == 1.0
    # cut off the right child: one of three branches missed, TD drops by its share
    pred = y_tree.copy()
    pred[:, :, 24:] = False
    found, total = branches_detected(pred, branches)
    assert (found, total) == (2, 3)
    skel = skeletonize_3d(y_tree)
    td = tree_length_detected(pred, skel)
    right = (skel[:, 2] >= 24).sum() / len(skel)
    assert td == pytest.approx(1 - right)
    assert 0.55 < td < 0.8
    scores = score_airway(pred, y_tree, spacing)  # branches parsed from the reference
    assert (scores["branches_found"], scores["branches_total"]) == (2, 3)
    assert scores["precision"] == 1.0 and scores["dsc"] < 0.9


def test_branch_needs_80_percent_coverage() -> None:
    branch = np.array([[5, 5, x] for x in range(10)])
    pred = np.zeros((10, 10, 10), bool)
    pred[5, 5, :8] = True
    assert branches_detected(pred, [branch]) == (1, 1)
    pred[5, 5, 7] = False
    assert branches_detected(pred, [branch]) == (0, 1)


def test_largest_component_is_what_atm_scores(y_tree) -> None:
    pred = y_tree.copy()
    pred[0:3, 0:3, 0:3] = True  # an isolated false positive blob
    scores = score_airway(pred, y_tree, (1.0, 1.0, 1.0))
    assert scores["precision"] == 1.0
    raw = score_airway(pred, y_tree, (1.0, 1.0, 1.0), largest_component=False)
    assert raw["precision"] < 1.0


def test_score_labels_multiclass(y_tree) -> None:
    truth = y_tree.astype(np.uint8)
    truth[:, 30:34, 10:30] = 2  # an "artery" slab
    pred = truth.copy()
    pred[pred == 2] = 3  # every artery voxel called vein
    out = score_labels(pred, truth, (1.0, 1.0, 1.0), classes={1: "airway", 2: "artery",
                                                               3: "vein"}, airway_value=1)
    c = out["classes"]
    assert c["airway"]["dsc"] == 1.0 and c["airway"]["tree_length_detected"] == 1.0
    assert c["artery"]["dsc"] == 0.0 and c["vein"]["precision"] == 0.0
    assert c["vein"]["volume_ml"] == pytest.approx(c["artery"]["reference_volume_ml"])


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    truth = synth_ct(tmp_path_factory.mktemp("metrics_ct") / "ct.nii.gz",
                     shape_zyx=(64, 128, 128), spacing_mm=(1.2, 0.8, 0.8), seed=11)
    labels = np.asarray(nib.load(truth.labels_path).dataobj).transpose(2, 1, 0)
    return truth, labels


def test_parsing_recovers_synthetic_airway_graph(synthetic) -> None:
    truth, labels = synthetic
    airway = keep_largest_component(labels == 1)
    tree = parse_tree(airway, truth.spacing_mm)
    n_true = len(truth.tree("airway"))
    assert abs(tree.n_branches - n_true) <= max(2, 0.1 * n_true)
    assert tree.generations_reached == truth.generations("airway")
    true_len = sum(b.length_mm for b in truth.tree("airway"))
    assert 0.85 * true_len < tree.length_mm < 1.15 * true_len


def test_generator_branches_score_a_damaged_prediction(synthetic) -> None:
    truth, labels = synthetic
    airway = labels == 1
    branches = truth.branch_voxels("airway", within=airway)
    assert score_airway(airway, airway, truth.spacing_mm, truth_branches_zyx=branches)[
        "branches_detected"] == 1.0
    # erase the deepest-generation branches: each erased one must count as missed
    deepest = truth.generations("airway")
    pred = airway.copy()
    erased = 0
    for b, zyx in zip(truth.tree("airway"), branches, strict=True):
        if b.generation == deepest and len(zyx):
            mid = zyx[len(zyx) // 2:]
            pred[tuple(mid.T)] = False  # half the centreline gone: coverage <= ~50 %
            erased += 1
    scores = score_airway(pred, airway, truth.spacing_mm, truth_branches_zyx=branches,
                          largest_component=False)
    assert scores["branches_total"] == len(branches)
    assert scores["branches_found"] == len(branches) - erased
    assert scores["tree_length_detected"] < 1.0
