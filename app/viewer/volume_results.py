"""What the CT dock shows from a segment-3d run, without Qt: the label volume, the
class table and the metrics as rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def reference_labels_for(path: Path) -> Path | None:
    """The ground-truth labels written next to a synthetic CT (``<stem>_labels.nii.gz``),
    or None: what the dock offers to score against."""
    path = Path(path)
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            stem = name[: -len(suffix)]
            for cand in (f"{stem}_labels.nii.gz", f"{stem}_labels.nii"):
                if (path.parent / cand).exists():
                    return path.parent / cand
    return None


def load_labels(out_dir: Path, summary: dict[str, Any]) -> np.ndarray:
    """The run's label volume (uint8 ZYX) from its NIfTI output."""
    import tessera

    path = Path(out_dir) / summary.get("outputs", {}).get("labels_nifti", "labels.nii.gz")
    with tessera.open(path) as src:
        return np.asarray(src.levels[0].compute(scheduler="synchronous")).astype(np.uint8)


def metric_rows(summary: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(class, measure, value) rows: volumes per label, then scores against the
    reference (DSC, precision, sensitivity, tree length detected, ...) when present."""
    rows: list[tuple[str, str, str]] = []
    unit = summary.get("volume_unit", "ml")
    for name, info in (summary.get("labels") or {}).items():
        rows.append((name, f"volume ({unit})", f"{info.get('volume_ml', 0):.3f}"))
    truth = summary.get("truth") or {}
    for name, scores in (truth.get("classes") or {}).items():
        for key, value in scores.items():
            if isinstance(value, int | float):
                rows.append((name, key, f"{value:.4f}" if isinstance(value, float) else str(value)))
    for key, value in truth.items():
        if key == "classes":
            continue
        if isinstance(value, dict):
            for k2, v2 in value.items():
                if isinstance(v2, int | float):
                    rows.append((key, k2, f"{v2:.4f}" if isinstance(v2, float) else str(v2)))
        elif isinstance(value, int | float):
            rows.append(("", key, f"{value:.4f}" if isinstance(value, float) else str(value)))
    return rows
