"""ATM'22 scores for airway trees, and scoring of airway/artery/vein label volumes.

Definitions (Zhang et al., "Multi-site, Multi-domain Airway Tree Modeling", MedIA 2023):

- tree length detected TD = |P ∩ S(L)| / |S(L)|, with S(L) the skeleton of the
  reference L and P the prediction's largest 26-connected component;
- branches detected BD = the fraction of reference branches whose skeleton voxels are
  covered by P to at least 80 %;
- DSC and precision on P.

The reference branches come from parsing the reference skeleton (``tree.parse_tree``),
or, for synthetic data, from the generator's true centreline graph (voxel lists).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tessera.pipelines.metrics.components import keep_largest_component
from tessera.pipelines.metrics.overlap import dice, precision, sensitivity, volumes_ml
from tessera.pipelines.metrics.tree import parse_tree, skeletonize_3d

BRANCH_COVERAGE = 0.8


def tree_length_detected(pred: np.ndarray, skeleton_zyx: np.ndarray) -> float:
    """Fraction of reference skeleton voxels (n, 3) that the prediction covers."""
    pred = np.asarray(pred, dtype=bool)
    if len(skeleton_zyx) == 0:
        return 1.0
    return float(pred[tuple(np.asarray(skeleton_zyx).T)].mean())


def branches_detected(
    pred: np.ndarray,
    branches_zyx: Sequence[np.ndarray],
    *,
    coverage: float = BRANCH_COVERAGE,
) -> tuple[int, int]:
    """(detected, total) reference branches whose voxels are >= ``coverage`` covered.

    Branches with no voxel inside the volume are left out of the total.
    """
    pred = np.asarray(pred, dtype=bool)
    detected = total = 0
    for zyx in branches_zyx:
        zyx = np.asarray(zyx)
        if len(zyx) == 0:
            continue
        total += 1
        if pred[tuple(zyx.T)].mean() >= coverage:
            detected += 1
    return detected, total


def score_airway(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing_mm: Sequence[float],
    *,
    truth_branches_zyx: Sequence[np.ndarray] | None = None,
    largest_component: bool = True,
) -> dict[str, Any]:
    """ATM'22 scores of a predicted airway mask against a reference mask (both ZYX bool).

    ``truth_branches_zyx``: the reference branches as voxel lists (e.g. the synthetic
    generator's centrelines restricted to the lumen); default: parse the reference
    skeleton. ``largest_component``: score the prediction's largest 26-connected
    component, as ATM'22 does.
    """
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        msg = f"prediction {pred.shape} and reference {truth.shape} differ in shape"
        raise ValueError(msg)
    if largest_component:
        pred = keep_largest_component(pred)
    skel = skeletonize_3d(truth)
    if truth_branches_zyx is None:
        ref_tree = parse_tree(truth, spacing_mm, skeleton_zyx=skel)
        truth_branches_zyx = ref_tree.branches
        branch_source = "reference skeleton"
    else:
        branch_source = "given centrelines"
    found, total = branches_detected(pred, truth_branches_zyx)
    return {
        "dsc": dice(pred, truth),
        "precision": precision(pred, truth),
        "sensitivity": sensitivity(pred, truth),
        "tree_length_detected": tree_length_detected(pred, skel),
        "branches_detected": found / total if total else 1.0,
        "branches_found": found,
        "branches_total": total,
        "branch_source": branch_source,
    }


def score_labels(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing_mm: Sequence[float],
    *,
    classes: Mapping[int, str],
    airway_value: int | None = None,
    truth_branches_zyx: Sequence[np.ndarray] | None = None,
) -> dict[str, Any]:
    """Score a label volume against a reference: per class DSC/precision/sensitivity.

    For ``airway_value`` the ATM'22 tree scores are added (``score_airway``). Volumes
    per class (ml) of both are included, so a report shows under- or over-segmentation.
    """
    pred = np.asarray(pred)
    truth = np.asarray(truth)
    if pred.shape != truth.shape:
        msg = f"prediction {pred.shape} and reference {truth.shape} differ in shape"
        raise ValueError(msg)
    out: dict[str, Any] = {"classes": {}}
    vol_p = volumes_ml(pred, spacing_mm, classes)
    vol_t = volumes_ml(truth, spacing_mm, classes)
    for value, name in classes.items():
        p, t = pred == value, truth == value
        if value == airway_value:
            scores = score_airway(p, t, spacing_mm, truth_branches_zyx=truth_branches_zyx)
        else:
            scores = {"dsc": dice(p, t), "precision": precision(p, t),
                      "sensitivity": sensitivity(p, t)}
        scores["volume_ml"] = vol_p[name]
        scores["reference_volume_ml"] = vol_t[name]
        out["classes"][name] = scores
    return out
