"""Shared fixtures: a small synthetic eDOS dataset (generated once per session)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # sac_oracle: the oracle predictor module

from sac_oracle import METALS, SUPPORTS


@pytest.fixture(scope="session")
def small_edos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """11 metals x 2 supports x 9 adsorbates (198 samples) as one HDF5 file, seed 5."""
    from tessera.pipelines.synthetic.edos import synth_edos

    path = tmp_path_factory.mktemp("edos") / "small.h5"
    synth_edos(path, seed=5, metals=METALS, supports=SUPPORTS)
    return path
