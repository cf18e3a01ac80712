"""sac-cnn pre/post-processing (numpy only; used by the spectra-regress runner and screening).

- ``preprocess``: eDOS arrays ``[N, 4000, 9, 6]`` (states/eV, layout of
  ``tessera.pipelines.catalysis.layout``) -> ``{"edos": float32 [N, 4000, 9, 6]}``. The model
  bins the energy axis and scales the DOS itself, so arrays go in as they are; a single
  sample ``[4000, 9, 6]`` gets its batch axis.
- ``postprocess``: ``{"e_ads": [N] or [N, 1]}`` -> float32 ``[N]`` adsorption energies in eV.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tessera.pipelines.catalysis.layout import EDOS_SHAPE


def preprocess(edos: np.ndarray, manifest: Any = None) -> dict[str, np.ndarray]:
    """eDOS batch -> the model's input dict; ValueError for a wrong layout."""
    x = np.asarray(edos, dtype=np.float32)
    if x.shape == EDOS_SHAPE:
        x = x[None]
    if x.ndim != 4 or x.shape[1:] != EDOS_SHAPE:
        msg = f"eDOS batch must be [N, 4000, 9, 6], got {list(x.shape)}"
        raise ValueError(msg)
    return {"edos": np.ascontiguousarray(x)}


def postprocess(outputs: dict[str, np.ndarray], manifest: Any = None) -> np.ndarray:
    """Model outputs -> float32 [N] adsorption energies (eV)."""
    return np.asarray(outputs["e_ads"], dtype=np.float32).reshape(-1)
