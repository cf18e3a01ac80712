"""BreakHis-like synthetic patches: 700 x 460 RGB at 40x/100x/200x/400x, eight subtypes,
grouped by synthetic patient.

BreakHis (Spanhol et al. 2016) has 7,909 H&E images of breast tumours from 82 patients,
700 x 460 px, at four magnifications, labelled benign (adenosis, fibroadenoma,
phyllodes tumour, tubular adenoma) or malignant (ductal, lobular, mucinous, papillary
carcinoma). Here each synthetic patient has one subtype (as in BreakHis), their own
stain (``StainModel.sample``) and their own tissue (a ``HistologyScene`` seeded per
patient); each field of view is imaged at the four magnifications around the same
centre, like the dataset's zoom series. Splits must be by patient
(``split_by_patient``): patches of one patient share stain and tissue.

Pixel size per magnification (µm/px) is ``100 / magnification`` (40x -> 2.5, 100x ->
1.0, 200x -> 0.5, 400x -> 0.25): the 400x images match a 40x-objective scan. BreakHis
does not publish its pixel size; this is an assumption (unverified), kept in
``MAGNIFICATION_MPP`` so it can be changed in one place.

``write_breakhis_like`` writes the dataset's folder layout and file names
(``BreaKHis_v1/histology_slides/breast/benign/SOB/adenosis/SOB_B_A-14-22549AB/40X/
SOB_B_A-14-22549AB-40-001.png``) so loaders written for BreakHis read it unchanged.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tessera.pipelines.synthetic.histology import (
    ARCHITECTURES,
    BREAKHIS_SUBTYPES,
    HistologyScene,
    StainModel,
    scene_for,
    sub_seed,
)

MAGNIFICATIONS: tuple[int, ...] = (40, 100, 200, 400)
MAGNIFICATION_MPP: dict[int, float] = {m: 100.0 / m for m in MAGNIFICATIONS}
#: BreakHis image size (rows, columns).
PATCH_SIZE_YX: tuple[int, int] = (460, 700)
BENIGN_SUBTYPES = tuple(s for s in BREAKHIS_SUBTYPES if not ARCHITECTURES[s].malignant)
MALIGNANT_SUBTYPES = tuple(s for s in BREAKHIS_SUBTYPES if ARCHITECTURES[s].malignant)

#: Extent of a patient's tissue that fields of view are drawn from (µm).
_PATIENT_EXTENT_UM = 20_000.0


def magnification_mpp(magnification: int) -> float:
    """µm/px of a BreakHis-like image at this magnification (see the module docstring)."""
    try:
        return MAGNIFICATION_MPP[int(magnification)]
    except KeyError:
        msg = f"magnification must be one of {MAGNIFICATIONS}, got {magnification}"
        raise ValueError(msg) from None


@dataclass(frozen=True)
class SyntheticPatient:
    """One synthetic patient: a subtype, their own tissue and stain."""

    index: int
    subtype: str
    seed: int

    @property
    def malignant(self) -> bool:
        return ARCHITECTURES[self.subtype].malignant

    @property
    def slide_id(self) -> str:
        """A BreakHis-like slide id, e.g. '22549AB'."""
        return f"{10000 + (self.seed % 89999):05d}{chr(65 + self.index % 26)}{chr(65 + self.seed % 26)}"

    @property
    def id(self) -> str:
        """BreakHis-like patient folder name, e.g. 'SOB_B_A-14-22549AB'."""
        code = ARCHITECTURES[self.subtype].code
        return f"SOB_{'M' if self.malignant else 'B'}_{code}-14-{self.slide_id}"

    @property
    def stain(self) -> StainModel:
        return StainModel.sample(self.seed)

    def scene(self) -> HistologyScene:
        return scene_for(self.subtype, self.seed, stain=self.stain)


def make_patients(
    n_patients: int, seed: int, subtypes: Sequence[str] = BREAKHIS_SUBTYPES
) -> list[SyntheticPatient]:
    """``n_patients`` patients, subtypes assigned in turn (balanced), in a seeded order."""
    for s in subtypes:
        if s not in ARCHITECTURES:
            msg = f"unknown subtype {s!r}; choose from {', '.join(BREAKHIS_SUBTYPES)}"
            raise ValueError(msg)
    rng = np.random.default_rng(sub_seed(seed, "patients"))
    order = rng.permutation(n_patients)
    return [
        SyntheticPatient(
            index=i, subtype=subtypes[int(order[i]) % len(subtypes)],
            seed=sub_seed(seed, "patient", i) & 0x7FFFFFFF,
        )
        for i in range(n_patients)
    ]


@dataclass(frozen=True)
class PatchRecord:
    """One BreakHis-like image: who, what, at what magnification and where (µm)."""

    patient: SyntheticPatient
    magnification: int
    field: int  # field-of-view number within the patient (1-based in file names)
    centre_yx_um: tuple[float, float]

    @property
    def mpp(self) -> float:
        return magnification_mpp(self.magnification)

    @property
    def subtype(self) -> str:
        return self.patient.subtype

    @property
    def malignant(self) -> bool:
        return self.patient.malignant

    @property
    def filename(self) -> str:
        return f"{self.patient.id}-{self.magnification}-{self.field:03d}.png"

    @property
    def relative_path(self) -> str:
        """Path inside the dataset root, in the BreakHis layout."""
        cls = "malignant" if self.malignant else "benign"
        return (f"BreaKHis_v1/histology_slides/breast/{cls}/SOB/{self.subtype}/"
                f"{self.patient.id}/{self.magnification}X/{self.filename}")


def render_view(
    scene: HistologyScene,
    centre_yx_um: tuple[float, float],
    mpp: float,
    size_yx: tuple[int, int],
    *,
    supersample: int = 1,
    jpeg_quality: int | None = None,
) -> np.ndarray:
    """uint8 RGB (h, w, 3) of ``scene`` centred at a point, at ``mpp`` µm/px.

    ``supersample`` > 1 renders at ``mpp / supersample`` and averages blocks, the way a
    pyramid level is made from a finer scan; ``jpeg_quality`` adds JPEG compression
    artefacts (as in SVS tiles).
    """
    h, w = size_yx
    s = max(1, int(supersample))
    fine = mpp / s
    y0 = round(centre_yx_um[0] / fine - h * s / 2)
    x0 = round(centre_yx_um[1] / fine - w * s / 2)
    img = scene.render(y0, x0, h * s, w * s, mpp=fine)
    if s > 1:
        img = (
            img.reshape(h, s, w, s, 3).mean(axis=(1, 3), dtype=np.float32) + 0.5
        ).astype(np.uint8)
    if jpeg_quality is not None:
        img = jpeg_roundtrip(img, jpeg_quality)
    return img


def jpeg_roundtrip(img: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode as JPEG (4:2:0 chroma, like most scanners' tiles)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(quality), subsampling=2)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def render_patch(
    rng: np.random.Generator,
    malignant: bool,
    mpp: float,
    size_yx: tuple[int, int] = PATCH_SIZE_YX,
    *,
    subtype: str | None = None,
    supersample: int = 1,
    jpeg_quality: int | None = None,
) -> np.ndarray:
    """A random H&E patch of a benign or malignant breast subtype (uint8 RGB).

    Draws the subtype (unless given), a new synthetic patient (tissue + stain) and a
    position from ``rng``; deterministic for the generator's state.
    """
    pool = MALIGNANT_SUBTYPES if malignant else BENIGN_SUBTYPES
    if subtype is None:
        subtype = pool[int(rng.integers(len(pool)))]
    elif subtype not in pool:
        msg = f"{subtype!r} is not a {'malignant' if malignant else 'benign'} subtype: {pool}"
        raise ValueError(msg)
    seed = int(rng.integers(0, 2**31 - 1))
    scene = scene_for(subtype, seed)
    centre = (float(rng.uniform(0, _PATIENT_EXTENT_UM)), float(rng.uniform(0, _PATIENT_EXTENT_UM)))
    return render_view(scene, centre, mpp, size_yx, supersample=supersample,
                       jpeg_quality=jpeg_quality)


def breakhis_like(
    n_patients: int = 16,
    seed: int = 0,
    *,
    fields_per_patient: int = 4,
    magnifications: Sequence[int] = MAGNIFICATIONS,
    size_yx: tuple[int, int] = PATCH_SIZE_YX,
    subtypes: Sequence[str] = BREAKHIS_SUBTYPES,
) -> Iterator[tuple[PatchRecord, np.ndarray]]:
    """Yield (record, uint8 RGB image) for every patient, field of view and magnification.

    Deterministic for ``seed``: the same arguments give the same images in the same order.
    """
    for patient in make_patients(n_patients, seed, subtypes):
        scene = patient.scene()
        rng = np.random.default_rng(sub_seed(patient.seed, "fields"))
        for f in range(fields_per_patient):
            centre = (float(rng.uniform(0, _PATIENT_EXTENT_UM)),
                      float(rng.uniform(0, _PATIENT_EXTENT_UM)))
            for mag in magnifications:
                rec = PatchRecord(patient, int(mag), f + 1, centre)
                yield rec, render_view(scene, centre, rec.mpp, size_yx)


def write_breakhis_like(
    out_dir: str | Path,
    n_patients: int = 16,
    seed: int = 0,
    *,
    fields_per_patient: int = 4,
    magnifications: Sequence[int] = MAGNIFICATIONS,
) -> list[PatchRecord]:
    """Write the dataset as PNGs in the BreakHis folder layout plus ``index.csv``
    (path, patient, subtype, label, magnification, mpp)."""
    from PIL import Image

    out_dir = Path(out_dir)
    records = []
    for rec, img in breakhis_like(n_patients, seed, fields_per_patient=fields_per_patient,
                                  magnifications=magnifications):
        p = out_dir / rec.relative_path
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(p)
        records.append(rec)
    with open(out_dir / "index.csv", "w", newline="", encoding="utf-8") as fh:
        wr = csv.writer(fh)
        wr.writerow(["path", "patient", "subtype", "label", "magnification", "mpp"])
        for r in records:
            wr.writerow([r.relative_path, r.patient.id, r.subtype,
                         "malignant" if r.malignant else "benign", r.magnification, r.mpp])
    return records


def split_by_patient(
    patients: Sequence[SyntheticPatient], held_out_fraction: float, seed: int
) -> tuple[list[SyntheticPatient], list[SyntheticPatient]]:
    """(train, held-out) patients, stratified by subtype so both sides see every subtype
    that has at least two patients."""
    rng = np.random.default_rng(sub_seed(seed, "split"))
    train: list[SyntheticPatient] = []
    held: list[SyntheticPatient] = []
    for subtype in dict.fromkeys(p.subtype for p in patients):
        group = [p for p in patients if p.subtype == subtype]
        order = rng.permutation(len(group))
        n_held = round(len(group) * held_out_fraction) if len(group) > 1 else 0
        n_held = min(max(n_held, 1 if len(group) > 1 else 0), len(group) - 1)
        held += [group[i] for i in order[:n_held]]
        train += [group[i] for i in order[n_held:]]
    return train, held
