"""Connected components of binary volumes."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

#: 26-connectivity: voxels touching by a face, an edge or a corner are connected.
STRUCTURE_26 = np.ones((3, 3, 3), dtype=bool)


def keep_largest_component(mask: np.ndarray, *, connectivity: int = 26) -> np.ndarray:
    """The largest connected component of a boolean volume (an empty mask stays empty).

    ATM'22 scores an airway prediction by its largest 26-connected component; the same
    step removes isolated false positives after inference. ``connectivity`` is 6, 18
    or 26 (3D) — the neighbourhoods of ``scipy.ndimage.generate_binary_structure``.
    """
    mask = np.asarray(mask, dtype=bool)
    rank = {6: 1, 18: 2, 26: 3}.get(connectivity) if mask.ndim == 3 else None
    if rank is None:
        msg = f"connectivity must be 6, 18 or 26 for a 3D mask, got {connectivity} ({mask.ndim}D)"
        raise ValueError(msg)
    if not mask.any():
        return mask.copy()
    # work inside the bounding box: whole-body CTs are mostly background
    box = ndi.find_objects(mask.astype(np.uint8))[0]
    sub = mask[box]
    labels, n = ndi.label(sub, structure=ndi.generate_binary_structure(3, rank))
    out = np.zeros_like(mask)
    if n == 1:
        out[box] = sub
        return out
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    out[box] = labels == int(np.argmax(sizes))
    return out
