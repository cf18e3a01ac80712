"""Segmentation metrics for volumes: overlap, volumes, and tree metrics after ATM'22.

- ``overlap``: DSC, precision, sensitivity, volumes per label in ml.
- ``components``: keep the largest 26-connected component (the airway tree).
- ``tree``: skeleton, branch parsing, tree length (mm), generations.
- ``atm``: the ATM'22 scores (tree length detected, branches detected) and one call
  that scores a predicted label volume against a reference.

Only numpy, scipy and scikit-image: usable from the CLI without the train extra.
"""

from __future__ import annotations

from tessera.pipelines.metrics.atm import (
    branches_detected,
    score_airway,
    score_labels,
    tree_length_detected,
)
from tessera.pipelines.metrics.components import keep_largest_component
from tessera.pipelines.metrics.overlap import dice, precision, sensitivity, volumes_ml
from tessera.pipelines.metrics.tree import AirwayTree, parse_tree, skeletonize_3d, tree_summary

__all__ = [
    "AirwayTree",
    "branches_detected",
    "dice",
    "keep_largest_component",
    "parse_tree",
    "precision",
    "score_airway",
    "score_labels",
    "sensitivity",
    "skeletonize_3d",
    "tree_length_detected",
    "tree_summary",
    "volumes_ml",
]
