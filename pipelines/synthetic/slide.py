"""Synthetic whole-slide images: an Aperio SVS of H&E breast tissue plus its ground truth.

``synth_slide`` streams a ``HistologyScene`` (pipelines/synthetic/histology.py) through
the pyramid writer: level 0 is rendered band by band, never held whole, so a
100k x 100k slide needs no more memory than a 4k one. Next to ``slide.svs`` it writes

- ``slide.truth.png``: the ground-truth label mask at low resolution (uint8: 0 glass,
  1 benign/normal tissue, 2 tumour), each mask pixel ``downsample`` level-0 pixels wide;
- ``slide.truth.json``: what was generated (seed, sizes, µm/px, architectures, the
  stain vectors, the mask's downsample and µm/px, tumour and tissue areas in mm², the
  largest tumour regions with level-0 bounding boxes).

``SlideTruth.load(json_path)`` reads both back for tests and benchmarks.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tessera.pipelines.progress import ProgressReporter
from tessera.pipelines.synthetic.breakhis import render_patch
from tessera.pipelines.synthetic.histology import (
    ARCHITECTURES,
    LABEL_BENIGN,
    LABEL_GLASS,
    LABEL_TUMOUR,
    HistologyScene,
    SlideLayout,
    StainModel,
    sub_seed,
)
from tessera.pipelines.writers.atomic import atomic_path

#: Malignant architectures a slide may draw, with how often (invasive ductal most common).
MALIGNANT_WEIGHTS: dict[str, float] = {
    "ductal_carcinoma": 0.55,
    "lobular_carcinoma": 0.15,
    "mucinous_carcinoma": 0.15,
    "papillary_carcinoma": 0.15,
}
#: Long side of the ground-truth mask, at most (pixels).
MASK_LONG_SIDE_PX = 2048

__all__ = ["SlideTruth", "render_patch", "slide_scene", "synth_slide"]

LABEL_NAMES = {LABEL_GLASS: "glass", LABEL_BENIGN: "benign tissue", LABEL_TUMOUR: "tumour"}


@dataclass(frozen=True)
class SlideTruth:
    """What ``synth_slide`` wrote and the truth about it (paths, sizes, areas)."""

    slide_path: Path
    mask_path: Path
    info_path: Path
    seed: int
    size_yx_px: tuple[int, int]
    mpp: float  # level-0 µm/px
    app_mag: float
    benign: str  # architecture names (histology.ARCHITECTURES)
    malignant: str
    mask_downsample: int  # level-0 pixels per mask pixel
    mask_mpp: float
    tissue_area_mm2: float
    tumour_area_mm2: float
    stain: StainModel
    tumour_fraction_requested: float = 0.3

    @property
    def tumour_fraction(self) -> float:
        """Tumour area / tissue area."""
        return self.tumour_area_mm2 / self.tissue_area_mm2 if self.tissue_area_mm2 else 0.0

    def load_mask(self) -> np.ndarray:
        """The label mask (uint8 YX: 0 glass, 1 benign tissue, 2 tumour)."""
        from PIL import Image

        with Image.open(self.mask_path) as im:
            return np.asarray(im, dtype=np.uint8)

    def scene(self) -> HistologyScene:
        """The scene the slide was rendered from (to render any region again)."""
        return slide_scene(
            self.size_yx_px, self.seed, mpp=self.mpp, benign=self.benign,
            malignant=self.malignant, stain=self.stain,
            tumour_fraction=self.tumour_fraction_requested,
        )

    @classmethod
    def load(cls, info_path: str | Path) -> SlideTruth:
        """Read a ``*.truth.json`` written by ``synth_slide``."""
        info_path = Path(info_path)
        info = json.loads(info_path.read_text(encoding="utf-8"))
        truth = info["truth"]
        return cls(
            slide_path=info_path.parent / info["slide"],
            mask_path=info_path.parent / truth["mask"],
            info_path=info_path,
            seed=int(info["seed"]),
            size_yx_px=tuple(info["size_yx_px"]),  # type: ignore[arg-type]
            mpp=float(info["mpp"]),
            app_mag=float(info["app_mag"]),
            benign=info["architectures"]["benign"]["name"],
            malignant=info["architectures"]["malignant"]["name"],
            mask_downsample=int(truth["downsample"]),
            mask_mpp=float(truth["mpp"]),
            tissue_area_mm2=float(info["tissue_area_mm2"]),
            tumour_area_mm2=float(info["tumour_area_mm2"]),
            stain=StainModel(**{k: tuple(v) if isinstance(v, list) else v
                                for k, v in info["stain"].items()}),
            tumour_fraction_requested=float(info["tumour_fraction_requested"]),
        )


def choose_malignant(seed: int) -> str:
    """The malignant architecture a slide of this seed shows (weighted by frequency)."""
    names = list(MALIGNANT_WEIGHTS)
    p = np.array([MALIGNANT_WEIGHTS[n] for n in names])
    rng = np.random.default_rng(sub_seed(seed, "slide-malignant"))
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def slide_scene(
    size_yx_px: tuple[int, int],
    seed: int,
    *,
    mpp: float = 0.25,
    benign: str = "normal",
    malignant: str | None = None,
    tumour_fraction: float = 0.3,
    stain: StainModel | None = None,
) -> HistologyScene:
    """The scene of a synthetic slide: one tissue section on glass, tumour in blobs.

    ``tumour_fraction`` is the share of the tissue that is tumour (calibrated on a grid).
    """
    for name in (benign, malignant):
        if name is not None and name not in ARCHITECTURES:
            msg = f"unknown architecture {name!r}; choose from {', '.join(ARCHITECTURES)}"
            raise ValueError(msg)
    malignant = malignant or choose_malignant(seed)
    extent_um = (size_yx_px[0] * mpp, size_yx_px[1] * mpp)
    layout = SlideLayout.create(
        extent_um, seed, benign=ARCHITECTURES[benign], malignant=ARCHITECTURES[malignant],
        tumour_fraction=tumour_fraction,
    )
    return HistologyScene(seed=seed, layout=layout, stain=stain or StainModel.sample(seed))


def synth_slide(
    path: str | Path,
    *,
    size_px: int | tuple[int, int],
    seed: int,
    mpp: float = 0.25,
    app_mag: float = 40,
    benign: str = "normal",
    malignant: str | None = None,
    tumour_fraction: float = 0.3,
    tile_size_px: int = 256,
    jpeg_quality: int = 90,
    progress: ProgressReporter | None = None,
) -> SlideTruth:
    """Write a synthetic H&E slide (Aperio SVS, JPEG tiles, pyramid) and its ground truth.

    Args:
        path: the .svs to write; ``<stem>.truth.png`` and ``<stem>.truth.json`` go next
            to it.
        size_px: level-0 size in pixels, one number (square) or (height, width);
            4096 .. 100000 a side are the intended range (any size >= 256 works).
        seed: everything (tissue shape, tumour, stain, every nucleus) follows from it.
        mpp: level-0 pixel size, µm/px (0.25 ~ a 40x scan, 0.5 ~ 20x).
        app_mag: objective power written as Aperio ``AppMag``.
        benign / malignant: architecture names (``histology.ARCHITECTURES``) of the
            background and of the tumour; ``malignant=None`` draws one from the seed.
        tumour_fraction: share of the tissue area that is tumour.
        tile_size_px / jpeg_quality: SVS tiles.
        progress: told the number of tiles written.

    Memory stays bounded whatever the size: level 0 is rendered a band of tiles at a
    time and the mask is computed from the scene's fields, not from pixels.
    """
    from tessera.pipelines.writers.tiff_pyramid import pyramid_level_shapes, write_pyramid_tiff

    path = Path(path)
    h, w = (size_px, size_px) if isinstance(size_px, int) else (int(size_px[0]), int(size_px[1]))
    if min(h, w) < 256:
        msg = f"size_px must be at least 256 a side, got {(h, w)}"
        raise ValueError(msg)
    if not 0.0 < tumour_fraction < 1.0:
        msg = f"tumour_fraction must be within (0, 1), got {tumour_fraction}"
        raise ValueError(msg)
    scene = slide_scene((h, w), seed, mpp=mpp, benign=benign, malignant=malignant,
                        tumour_fraction=tumour_fraction)
    malignant_name = scene.layout.malignant.name

    # ground truth first (cheap, from the fields): a failed slide leaves no stale truth
    ds = mask_downsample((h, w))
    labels = truth_mask(scene, (h, w), mpp=mpp, downsample=ds)
    mask_mpp = ds * mpp
    px_mm2 = (mask_mpp / 1000.0) ** 2
    tissue_mm2 = float(np.count_nonzero(labels != LABEL_GLASS)) * px_mm2
    tumour_mm2 = float(np.count_nonzero(labels == LABEL_TUMOUR)) * px_mm2

    def render_region(l0_y0: int, l0_x0: int, rh: int, rw: int) -> np.ndarray:
        return scene.render(l0_y0, l0_x0, rh, rw, mpp=mpp)

    path.parent.mkdir(parents=True, exist_ok=True)
    # at least 3 levels (Aperio-like), more until the coarsest is <= ~1024 px
    n_levels = max(3, len(pyramid_level_shapes((h, w), n_levels=None, level_downsample=4)))
    levels = pyramid_level_shapes((h, w), n_levels=n_levels, level_downsample=4)
    write_pyramid_tiff(
        path, l0_shape_yx=(h, w), render_region=render_region, tile_size_px=tile_size_px,
        n_levels=n_levels,
        compression="jpeg", jpeg_quality=jpeg_quality, mpp=mpp, app_mag=app_mag,
        flavour="svs", progress=progress,
    )
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    mask_path = path.with_name(f"{stem}.truth.png")
    info_path = path.with_name(f"{stem}.truth.json")
    _write_png(mask_path, labels)
    info: dict[str, Any] = {
        "generator": "tessera.pipelines.synthetic.slide.synth_slide",
        "slide": path.name,
        "seed": seed,
        "size_yx_px": [h, w],
        "mpp": mpp,
        "app_mag": app_mag,
        "levels_yx_px": [list(s) for s in levels],
        "tile_size_px": tile_size_px,
        "jpeg_quality": jpeg_quality,
        "architectures": {
            role: {"name": a.name, "malignant": a.malignant, "breakhis_code": a.code,
                   "description": a.description}
            for role, a in (("benign", scene.layout.benign), ("malignant", scene.layout.malignant))
        },
        "stain": asdict(scene.stain),
        "truth": {
            "mask": mask_path.name,
            "labels": {str(k): v for k, v in LABEL_NAMES.items()},
            "downsample": ds,
            "mpp": mask_mpp,
            "shape_yx": list(labels.shape),
            "note": "mask pixel (i, j) is the label at level-0 µm ((i+0.5)*mpp, (j+0.5)*mpp)",
        },
        "tissue_area_mm2": round(tissue_mm2, 6),
        "tumour_area_mm2": round(tumour_mm2, 6),
        "tumour_fraction_requested": tumour_fraction,
        "tumour_fraction_of_tissue": round(tumour_mm2 / tissue_mm2, 6) if tissue_mm2 else 0.0,
        "tumour_regions": tumour_regions(labels, ds, mask_mpp),
    }
    _write_text(info_path, json.dumps(info, indent=2))
    return SlideTruth(
        slide_path=path, mask_path=mask_path, info_path=info_path, seed=seed,
        size_yx_px=(h, w), mpp=mpp, app_mag=float(app_mag), benign=benign,
        malignant=malignant_name, mask_downsample=ds, mask_mpp=mask_mpp,
        tissue_area_mm2=tissue_mm2, tumour_area_mm2=tumour_mm2, stain=scene.stain,
        tumour_fraction_requested=tumour_fraction,
    )


def mask_downsample(size_yx_px: tuple[int, int]) -> int:
    """Level-0 pixels per truth-mask pixel: a power of two >= 16 keeping the mask's long
    side within ``MASK_LONG_SIDE_PX``."""
    need = max(size_yx_px) / MASK_LONG_SIDE_PX
    return max(16, 1 << max(0, math.ceil(math.log2(max(need, 1.0)))))


def truth_mask(
    scene: HistologyScene, size_yx_px: tuple[int, int], *, mpp: float, downsample: int
) -> np.ndarray:
    """Label mask (uint8 YX, ``ceil(size / downsample)``) sampled at mask-pixel centres."""
    mh, mw = -(-size_yx_px[0] // downsample), -(-size_yx_px[1] // downsample)
    out = np.empty((mh, mw), np.uint8)
    step = downsample * mpp
    xs = ((np.arange(mw) + 0.5) * step)[None, :]
    for r0 in range(0, mh, 256):  # bands: bounded memory for any mask
        ys = ((np.arange(r0, min(mh, r0 + 256)) + 0.5) * step)[:, None]
        out[r0 : r0 + ys.shape[0]] = scene.labels(ys, xs)
    return out


def tumour_regions(
    labels: np.ndarray, downsample: int, mask_mpp: float, top: int = 10
) -> list[dict[str, Any]]:
    """The largest connected tumour regions: area (mm²) and level-0 bounding box."""
    from scipy import ndimage as ndi

    lab, n = ndi.label(labels == LABEL_TUMOUR)
    if n == 0:
        return []
    areas = np.bincount(lab.ravel())[1:]
    boxes = ndi.find_objects(lab)
    order = np.argsort(-areas)[:top]
    px_mm2 = (mask_mpp / 1000.0) ** 2
    return [
        {
            "area_mm2": round(float(areas[i]) * px_mm2, 6),
            "l0_bbox_yxyx": [
                boxes[i][0].start * downsample, boxes[i][1].start * downsample,
                boxes[i][0].stop * downsample, boxes[i][1].stop * downsample,
            ],
        }
        for i in order
    ]


def _write_png(path: Path, labels: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(labels).save(tmp, format="PNG")


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
