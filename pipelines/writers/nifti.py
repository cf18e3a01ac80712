"""NIfTI label volumes that line up with their input in 3D Slicer, ITK-SNAP and nibabel.

Tessera volumes are "ZYX" and their ``metadata["affine"]`` maps (z, y, x, 1) array
indices to RAS+ mm (see the NIfTI and DICOM readers); NIfTI stores (i, j, k) = (x, y, z),
so the array is transposed and the affine's first three columns reversed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tessera.pipelines.writers.atomic import atomic_path

NIFTI_INTENT_LABEL = 1002


def affine_zyx_from(metadata: dict, spacing_mm: Sequence[float] | None) -> np.ndarray:
    """The source's (z, y, x) affine, or a diagonal one from its spacing (1 mm when unknown)."""
    affine = metadata.get("affine")
    if affine is not None:
        return np.asarray(affine, dtype=float)
    sz, sy, sx = spacing_mm if spacing_mm is not None else (1.0, 1.0, 1.0)
    out = np.zeros((4, 4))
    out[0, 2], out[1, 1], out[2, 0], out[3, 3] = sx, sy, sz, 1.0
    return out


def write_nifti_labels(
    path: Path, labels_zyx: np.ndarray, affine_zyx: np.ndarray, *,
    description: str = "tessera labels", codes: tuple[int, int] = (1, 1),
) -> None:
    """Write uint8 labels (Z, Y, X) as NIfTI-1 (gzip when the name ends .gz), atomically.

    ``codes``: (qform_code, sform_code) to record, normally the input's (1 = scanner).
    """
    import nibabel as nib

    affine_xyz = np.asarray(affine_zyx, float)[:, [2, 1, 0, 3]]
    img = nib.Nifti1Image(np.ascontiguousarray(np.asarray(labels_zyx, np.uint8).transpose(2, 1, 0)), affine_xyz)
    img.header.set_xyzt_units("mm")
    img.header.set_intent(NIFTI_INTENT_LABEL)
    img.header["descrip"] = description[:79].encode()
    img.set_qform(affine_xyz, code=int(codes[0] or 1))
    img.set_sform(affine_xyz, code=int(codes[1] or 1))
    with atomic_path(Path(path), keep_suffix=True) as tmp:
        nib.save(img, str(tmp))
