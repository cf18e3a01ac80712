"""Sample data for napari's File > Open Sample > Tessera menu.

Each sample is made by Tessera's synthetic generators the first time it is asked for
(deterministic for its seed, with its ground truth next to it) and kept in Tessera's
cache folder (``TESSERA_CACHE_DIR``), so later opens are instant.
"""

from __future__ import annotations

import threading
from pathlib import Path

from tessera.app.viewer.layers import LayerDataTuple, source_layer_data
from tessera.pipelines.plugin_system import cache_dir

SLIDE_SIZE_PX = 8192
CT_SHAPE_ZYX = (96, 192, 192)
FIELD_SIZE_PX = 1024
_lock = threading.Lock()


def sample_path(kind: str) -> Path:
    """The cached sample file of ``kind`` ("slide", "ct" or "galaxies"), made if missing."""
    folder = cache_dir("samples")
    with _lock:
        if kind == "slide":
            path = folder / "demo-slide.svs"
            if not path.exists():
                from tessera.pipelines.synthetic.slide import synth_slide

                synth_slide(path, size_px=SLIDE_SIZE_PX, seed=3)
        elif kind == "ct":
            path = folder / "demo-ct.nii.gz"
            if not path.exists():
                from tessera.pipelines.synthetic.ct import synth_ct

                synth_ct(path, shape_zyx=CT_SHAPE_ZYX, seed=0)
        elif kind == "galaxies":
            path = folder / "demo-field" / "field.fits"
            if not path.exists():
                from tessera.pipelines.synthetic.galaxies import synth_galaxy_field

                synth_galaxy_field(path.parent, size_px=FIELD_SIZE_PX, n_galaxies=40, seed=0)
        else:
            msg = f"unknown sample {kind!r}; choose slide, ct or galaxies"
            raise ValueError(msg)
    return path


def _open(kind: str) -> list[LayerDataTuple]:
    import tessera

    return source_layer_data(tessera.open(sample_path(kind)))


def demo_slide() -> list[LayerDataTuple]:
    """An 8192 x 8192 synthetic H&E slide (0.25 µm/px, 40x) with a tumour."""
    return _open("slide")


def ct_volume() -> list[LayerDataTuple]:
    """A synthetic contrast chest CT (HU) with airways, arteries and veins."""
    return _open("ct")


def galaxy_field() -> list[LayerDataTuple]:
    """A synthetic three-band (g, r, z) survey field with galaxies and stars."""
    return _open("galaxies")
