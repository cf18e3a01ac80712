"""Voxel overlap scores and label volumes.

Empty-versus-empty conventions: DSC and sensitivity are 1.0 when both masks are empty
(nothing to find, nothing found); precision is 1.0 when nothing was predicted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from tessera.pipelines.metrics.components import label_counts


def _counts(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        msg = f"prediction {pred.shape} and reference {truth.shape} differ in shape"
        raise ValueError(msg)
    tp = int(np.count_nonzero(pred & truth))
    return tp, int(np.count_nonzero(pred)) - tp, int(np.count_nonzero(truth)) - tp


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice similarity coefficient 2|P∩T| / (|P| + |T|) of two boolean masks."""
    tp, fp, fn = _counts(pred, truth)
    denom = 2 * tp + fp + fn
    return 1.0 if denom == 0 else 2.0 * tp / denom


def precision(pred: np.ndarray, truth: np.ndarray) -> float:
    """|P∩T| / |P|: the fraction of predicted voxels that are right."""
    tp, fp, _ = _counts(pred, truth)
    return 1.0 if tp + fp == 0 else tp / (tp + fp)


def sensitivity(pred: np.ndarray, truth: np.ndarray) -> float:
    """|P∩T| / |T|: the fraction of reference voxels found (recall)."""
    tp, _, fn = _counts(pred, truth)
    return 1.0 if tp + fn == 0 else tp / (tp + fn)


def volumes_ml(
    labels: np.ndarray,
    spacing_mm: Sequence[float],
    names: Mapping[int, str] | None = None,
) -> dict[str, float]:
    """Volume of each label value in millilitres (voxel count x voxel volume / 1000).

    ``names`` maps label values to names (values not named are left out); without it
    every non-zero value present is reported under its number.
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iub":
        msg = f"labels must be an integer array, got {labels.dtype}"
        raise ValueError(msg)
    voxel_ml = float(np.prod(np.asarray(spacing_mm, dtype=float))) / 1000.0
    counts = label_counts(labels)
    if names is None:
        names = {v: str(v) for v in range(1, len(counts)) if counts[v]}
    return {
        name: float(counts[v]) * voxel_ml if v < len(counts) else 0.0 for v, name in names.items()
    }
