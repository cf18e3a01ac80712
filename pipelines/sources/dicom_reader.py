"""DICOM series (CT, MR, PET...): a folder of slices, or one file of such a folder.

The slices of one series (same SeriesInstanceUID) are sorted by their position along
the slice normal (ImagePositionPatient projected on the cross product of the two
ImageOrientationPatient directions), never by file name or InstanceNumber. Pixels
are converted with the modality LUT (RescaleSlope/Intercept: Hounsfield units for
CT) into the smallest exact type (int16, int32, else float32).

Axes "ZYX"; spacing in mm: (slice step, row spacing, column spacing) from the slice
positions and PixelSpacing. ``metadata["affine"]`` maps (z, y, x, 1) array indices
to RAS+ world coordinates in mm (nibabel's convention, so DICOM and NIfTI volumes
compare directly), ``metadata["orientation"]`` names the direction each array axis
points to (e.g. "SPL": z to superior, y to posterior, x to the patient's left).

Choosing a series: a folder holding several image series is refused with a list of
them (UID, description, slice count, one file each); open one file of the series you
want, and that series is read. A folder never silently yields one of several series.

Damage is found at open time: a truncated file (its pixel data shorter than its
header says) or a missing slice (a gap in the positions) is a ``CorruptFile`` that
names the file(s). Whole-slide DICOM (VL WSI) is left to OpenSlide.
"""

from __future__ import annotations

import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tessera.pipelines.errors import CorruptFile, UnsupportedFile
from tessera.pipelines.sources.base import Source
from tessera.pipelines.sources.lazy import FileSignature, LazyLevel, as_dask, level_name

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
#: Slices whose step differs from the median step by more than this fraction are a gap.
GAP_TOLERANCE = 0.1
#: Slices closer than this fraction of the median step are duplicates.
DUPLICATE_TOLERANCE = 0.01


def is_dicom_file(path: Path) -> bool:
    """Whether ``path`` has the DICOM Part 10 preamble ("DICM" at byte 128)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


@dataclass
class _Slice:
    """What the header of one slice file says (positions and directions in mm, LPS)."""

    path: Path
    series_uid: str
    description: str
    rows: int
    cols: int
    position: np.ndarray | None
    orientation: np.ndarray | None
    pixel_spacing: tuple[float, float] | None
    slope: float
    intercept: float
    bits_stored: int
    signed: bool
    samples: int
    frames: int
    header: Any


def _read_header(path: Path) -> _Slice | None:
    """Header of an image slice, or None for a DICOM object without pixels (SR, RT...).

    Raises:
        CorruptFile: the header cannot be parsed, or an image's file is truncated.
    """
    import pydicom

    try:
        with open(path, "rb") as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's notes on foreign files of the folder
            ds = pydicom.dcmread(fh, stop_before_pixels=True)
            pixel_pos = fh.tell()
    except Exception as exc:
        msg = f"the DICOM header cannot be read ({exc}); the file is damaged or truncated"
        raise CorruptFile(msg, path=path) from exc
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class == WSI_SOP_CLASS:
        return None
    if "Rows" not in ds or "Columns" not in ds:
        if sop_class and "Image Storage" in pydicom.uid.UID(sop_class).name:
            msg = "the DICOM file ends inside its header (no image size): it is truncated"
            raise CorruptFile(msg, path=path)
        return None
    problem = _pixel_data_problem(path, ds, pixel_pos)
    if problem:
        raise CorruptFile(problem, path=path)
    try:
        return _slice_from(path, ds)
    except (ValueError, TypeError, AttributeError) as exc:
        msg = f"the DICOM header holds invalid values ({exc}); the file is damaged"
        raise CorruptFile(msg, path=path) from exc


def _slice_from(path: Path, ds: Any) -> _Slice:
    position = ds.get("ImagePositionPatient")
    orientation = ds.get("ImageOrientationPatient")
    spacing = ds.get("PixelSpacing")
    return _Slice(
        path=path,
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        description=str(ds.get("SeriesDescription", "")),
        rows=int(ds.Rows),
        cols=int(ds.Columns),
        position=None if position is None else np.asarray(position, float),
        orientation=None if orientation is None else np.asarray(orientation, float),
        pixel_spacing=None if spacing is None else (float(spacing[0]), float(spacing[1])),
        slope=float(ds.get("RescaleSlope", 1) or 1),
        intercept=float(ds.get("RescaleIntercept", 0) or 0),
        bits_stored=int(ds.get("BitsStored", ds.get("BitsAllocated", 16))),
        signed=int(ds.get("PixelRepresentation", 0)) == 1,
        samples=int(ds.get("SamplesPerPixel", 1)),
        frames=int(ds.get("NumberOfFrames", 1) or 1),
        header=ds,
    )


def _series_uid_of(path: Path) -> str | None:
    """The SeriesInstanceUID of a damaged file, if its header still says it."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
        return str(ds.get("SeriesInstanceUID", "")) or None
    except Exception:
        return None


def _pixel_data_problem(path: Path, ds: Any, pos: int) -> str | None:
    """Why the pixel data element at byte ``pos`` is incomplete, or None if it is whole.

    Reads only element and fragment headers: the declared length of native pixel
    data, or the item lengths of encapsulated (compressed) data, against the file size.
    """
    size = path.stat().st_size
    meta = getattr(ds, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None)
    little = True if syntax is None else bool(syntax.is_little_endian)
    implicit = False if syntax is None else bool(syntax.is_implicit_VR)
    end = "<" if little else ">"
    with open(path, "rb") as fh:
        fh.seek(pos)
        head = fh.read(12)
        if len(head) < 8:
            return "the file ends before its pixel data: it is truncated"
        group, elem = struct.unpack(end + "HH", head[:4])
        if (group, elem) != (0x7FE0, 0x0010):
            return None  # no pixel data element found where expected; let pydicom decide
        if implicit:
            (length,), header_len = struct.unpack(end + "I", head[4:8]), 8
        elif head[4:6] in (b"OB", b"OW", b"OF", b"OD", b"UN", b"OL", b"OV"):
            (length,), header_len = struct.unpack(end + "I", head[8:12]), 12
        else:
            (length,), header_len = struct.unpack(end + "H", head[6:8]), 8
        start = pos + header_len
        if length != 0xFFFFFFFF:
            if start + length > size:
                return (
                    f"the pixel data needs {length} bytes but the file ends {size - start} bytes "
                    "after it starts: it is truncated; copy it again"
                )
            return None
        fh.seek(start)
        while True:  # encapsulated fragments until the sequence delimiter
            item = fh.read(8)
            if len(item) < 8:
                return "the compressed pixel data stops before its end marker: truncated"
            tag = struct.unpack(end + "HH", item[:4])
            (item_len,) = struct.unpack(end + "I", item[4:8])
            if tag == (0xFFFE, 0xE0DD):
                return None
            if fh.tell() + item_len > size:
                return "a compressed pixel data fragment runs past the end of the file: truncated"
            fh.seek(item_len, 1)


def _output_dtype(slices: list[_Slice]) -> np.dtype:
    """The smallest type that holds every slice's rescaled values exactly."""
    lo, hi = np.inf, -np.inf
    integral = True
    for s in slices:
        bits = max(1, min(s.bits_stored, 32))
        smin, smax = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if s.signed else (0, 2**bits - 1)
        a, b = smin * s.slope + s.intercept, smax * s.slope + s.intercept
        lo, hi = min(lo, a, b), max(hi, a, b)
        integral &= float(s.slope).is_integer() and float(s.intercept).is_integer()
    if integral:
        for dtype in (np.int16, np.int32):
            info = np.iinfo(dtype)
            if info.min <= lo and hi <= info.max:
                return np.dtype(dtype)
    return np.dtype(np.float32)


class DicomSliceLevel(LazyLevel):
    """A DICOM series as a lazy (z, y, x) volume: one chunk per slice file."""

    def __init__(
        self, folder: Path, files: list[str], signature: FileSignature, shape: tuple, dtype: Any
    ) -> None:
        super().__init__(folder, signature, shape, dtype)
        self.files = files

    def read_slice(self, z: int) -> np.ndarray:
        """Slice ``z`` (sorted order) in rescaled units, as ``dtype``."""
        import pydicom
        from pydicom.pixels import apply_modality_lut

        path = Path(self.files[z])
        try:
            ds = pydicom.dcmread(path)
            values = apply_modality_lut(ds.pixel_array, ds)
        except Exception as exc:
            msg = f"slice {z} cannot be decoded ({exc}); the file is damaged"
            raise CorruptFile(msg, path=path) from exc
        if values.shape != self.shape[1:]:
            msg = f"slice {z} is {values.shape}, the series is {self.shape[1:]}; it changed"
            raise CorruptFile(msg, path=path)
        if np.issubdtype(self.dtype, np.integer):
            values = np.rint(values)
        return values.astype(self.dtype, copy=False)

    def read(self, start: tuple[int, ...], stop: tuple[int, ...]) -> np.ndarray:
        (z0, y0, x0), (z1, y1, x1) = start, stop
        out = np.empty((z1 - z0, y1 - y0, x1 - x0), self.dtype)
        for z in range(z0, z1):
            out[z - z0] = self.read_slice(z)[y0:y1, x0:x1]
        return out


def _series_summary(groups: dict[str, list[_Slice]]) -> str:
    parts = []
    for uid, slices in groups.items():
        desc = f" '{slices[0].description}'" if slices[0].description else ""
        parts.append(f"{uid}{desc}: {len(slices)} slices, e.g. {slices[0].path.name}")
    return "; ".join(parts)


def _sorted_by_position(slices: list[_Slice]) -> tuple[list[_Slice], np.ndarray, np.ndarray]:
    """Slices sorted along the normal, with the normal and each slice's distance (mm)."""
    orientation = slices[0].orientation
    for s in slices:
        if s.position is None or s.orientation is None:
            msg = "a slice has no ImagePositionPatient/ImageOrientationPatient; cannot order it"
            raise UnsupportedFile(msg, path=s.path)
        if not np.allclose(s.orientation, orientation, atol=1e-3):
            msg = "the series mixes slice orientations (e.g. a localizer); open a folder of one"
            raise UnsupportedFile(msg, path=s.path)
    assert orientation is not None
    normal = np.cross(orientation[:3], orientation[3:])
    distance = np.array([float(np.dot(s.position, normal)) for s in slices])
    order = np.argsort(distance, kind="stable")
    return [slices[i] for i in order], normal, distance[order]


def _check_steps(slices: list[_Slice], distance: np.ndarray) -> float:
    """The slice step in mm; raises ``CorruptFile`` for duplicates and missing slices."""
    steps = np.diff(distance)
    step = float(np.median(steps))
    if step <= 0:
        msg = "all slices are at the same position; the series is not a volume"
        raise CorruptFile(msg, path=slices[0].path.parent)
    for i, d in enumerate(steps):
        if d < DUPLICATE_TOLERANCE * step:
            msg = (
                f"two slices at the same position {distance[i]:.3f} mm: {slices[i].path.name} "
                f"and {slices[i + 1].path.name}; remove the duplicate"
            )
            raise CorruptFile(msg, path=slices[i + 1].path)
        if abs(d - step) > GAP_TOLERANCE * step:
            missing = round(d / step) - 1
            what = f"about {missing} slice(s) missing" if missing >= 1 else "irregular spacing"
            msg = (
                f"{what} between {slices[i].path.name} ({distance[i]:.3f} mm) and "
                f"{slices[i + 1].path.name} ({distance[i + 1]:.3f} mm): a step of {d:.3f} mm "
                f"where the series steps {step:.3f} mm; copy the whole series again"
            )
            raise CorruptFile(msg, path=slices[i + 1].path)
    return step


def _affine_ras(first: _Slice, last: _Slice, n: int, normal: np.ndarray, step: float) -> np.ndarray:
    """4x4 matrix from (z, y, x, 1) indices to RAS+ mm."""
    assert first.orientation is not None and first.position is not None
    row_dir, col_dir = first.orientation[:3], first.orientation[3:]
    dy, dx = first.pixel_spacing or (1.0, 1.0)
    if n > 1 and last.position is not None:
        z_vec = (last.position - first.position) / (n - 1)
    else:
        z_vec = normal * step
    lps = np.eye(4)
    lps[:3, 0] = z_vec
    lps[:3, 1] = col_dir * dy
    lps[:3, 2] = row_dir * dx
    lps[:3, 3] = first.position
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def axis_codes(affine: np.ndarray) -> str:
    """Where each array axis points in RAS+ terms, e.g. "SPL" (nibabel's aff2axcodes)."""
    from nibabel.orientations import aff2axcodes

    return "".join(c or "?" for c in aff2axcodes(affine))


class DicomSeriesReader:
    """A folder of DICOM slices, or one slice file (its series is read from its folder)."""

    name = "dicom"

    def open(self, path: Path) -> Source | None:
        if path.is_dir():
            folder, chosen = path, None
            files = sorted(p for p in path.iterdir() if p.is_file() and is_dicom_file(p))
            if not files:
                return None
        elif is_dicom_file(path):
            folder, chosen = path.parent, path
            files = sorted(p for p in folder.iterdir() if p.is_file() and is_dicom_file(p))
        else:
            return None
        chosen_header = None
        if chosen is not None:
            chosen_header = _read_header(chosen)  # a damaged chosen file raises here
            if chosen_header is None:
                return None  # WSI (OpenSlide) or a DICOM object without pixels
        headers, damaged = [], []
        for f in files:
            try:
                header = chosen_header if f == chosen else _read_header(f)
            except CorruptFile as exc:
                damaged.append((f, exc))
                continue
            if header is not None:
                headers.append(header)
        groups: dict[str, list[_Slice]] = {}
        for h in headers:
            groups.setdefault(h.series_uid, []).append(h)
        if chosen_header is not None:
            wanted = chosen_header.series_uid
            for f, exc in damaged:  # damage in other series of the folder is not our business
                if _series_uid_of(f) == wanted:
                    raise exc
            slices = groups[wanted]
        else:
            if damaged:
                raise damaged[0][1]
            if not groups:
                return None
            if len(groups) > 1:
                msg = (
                    f"the folder holds {len(groups)} image series; open one file of the series "
                    f"you want: {_series_summary(groups)}"
                )
                raise UnsupportedFile(msg, path=folder)
            slices = next(iter(groups.values()))
        return self._source(folder, chosen, slices, len(files))

    def _source(
        self, folder: Path, chosen: Path | None, slices: list[_Slice], n_files: int
    ) -> Source:
        first = slices[0]
        for s in slices:
            if s.samples != 1:
                msg = f"colour DICOM ({s.samples} samples per pixel) is not a CT/MR series"
                raise UnsupportedFile(msg, path=s.path)
            if s.frames != 1:
                msg = "multi-frame (enhanced) DICOM is not supported yet; export single slices"
                raise UnsupportedFile(msg, path=s.path)
            if (s.rows, s.cols) != (first.rows, first.cols):
                msg = f"slice size {s.rows}x{s.cols} differs from {first.rows}x{first.cols}"
                raise UnsupportedFile(msg, path=s.path)
        ds = first.header
        if len(slices) > 1:
            slices, normal, distance = _sorted_by_position(slices)
            step = _check_steps(slices, distance)
        else:
            normal = None
            if first.orientation is not None:
                normal = np.cross(first.orientation[:3], first.orientation[3:])
            step = float(ds.get("SpacingBetweenSlices", ds.get("SliceThickness", 0)) or 0)
        first = slices[0]
        dtype = _output_dtype(slices)
        shape = (len(slices), first.rows, first.cols)
        signature = FileSignature.of(first.path)
        lazy = DicomSliceLevel(folder, [str(s.path) for s in slices], signature, shape, dtype)
        level = as_dask(
            lazy,
            (1, first.rows, first.cols),
            name=level_name(self.name, folder, signature, *lazy.files),
        )
        spacing = None
        if first.pixel_spacing is not None and step > 0:
            spacing = (step, *first.pixel_spacing)
        modality = str(ds.get("Modality", ""))
        metadata: dict[str, Any] = {
            "vendor": str(ds.get("Manufacturer", "")) or None,
            "modality": modality,
            "series_uid": first.series_uid,
            "series_description": first.description,
            "study_uid": str(ds.get("StudyInstanceUID", "")),
            "n_slices": len(slices),
            "files_in_folder": n_files,
            "first_file": first.path.name,
            "units": "HU" if modality == "CT" else str(ds.get("RescaleType", "")) or None,
            "rescale": sorted({(s.slope, s.intercept) for s in slices}),
            "photometric": str(ds.get("PhotometricInterpretation", "")),
        }
        if "WindowCenter" in ds and "WindowWidth" in ds:
            wc, ww = ds.WindowCenter, ds.WindowWidth
            metadata["window"] = [
                float(wc[0] if _multi(wc) else wc),
                float(ww[0] if _multi(ww) else ww),
            ]
        if first.position is not None and first.orientation is not None and normal is not None:
            affine = _affine_ras(first, slices[-1], len(slices), normal, step)
            metadata["affine"] = affine.round(6).tolist()
            metadata["orientation"] = axis_codes(affine)
        return Source(
            path=chosen if chosen is not None else folder,
            format=f"DICOM series ({modality})" if modality else "DICOM series",
            reader=self.name,
            levels=[level],
            axes="ZYX",
            spacing=spacing,
            spacing_unit="mm" if spacing else None,
            metadata=metadata,
        )


def _multi(value: Any) -> bool:
    return hasattr(value, "__len__") and not isinstance(value, str | bytes)
