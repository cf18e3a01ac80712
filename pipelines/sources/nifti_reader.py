"""NIfTI-1/2 (and Analyze pairs) through nibabel: volumes as lazy "ZYX" arrays.

nibabel indexes voxels (i, j, k) with i fastest on disk; Tessera's axes are "ZYX"
(k, j, i), so levels are transposed views read slab by slab through nibabel's array
proxy (``dataobj``): only the slices a chunk needs are read. 4D files are "TZYX".

Spacing in mm (from the voxel sizes and the header's spatial unit);
``metadata["affine"]`` maps (z, y, x, 1) array indices to RAS+ mm (nibabel's affine
with its columns reordered), ``metadata["orientation"]`` names the direction each
array axis points to ("SAR": z superior, y anterior, x right for an RAS-stored file).
Scaled data (scl_slope/scl_inter) is returned as float32, unscaled data as stored.

Gzipped files (.nii.gz) cannot be read at random: each chunk decompresses from the
start of the file up to its slab, so chunks are larger there (fewer passes); install
``indexed_gzip`` and nibabel uses it for random access.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from tessera.pipelines.errors import CorruptFile, UnsupportedFile
from tessera.pipelines.sources.base import Source
from tessera.pipelines.sources.dicom_reader import axis_codes
from tessera.pipelines.sources.lazy import (
    FileSignature,
    LazyLevel,
    as_dask,
    close_handles,
    level_name,
)

SUFFIXES = (".nii", ".nii.gz", ".hdr", ".img", ".img.gz")
#: Target chunk size in bytes (uncompressed files / gzipped files).
_CHUNK_BYTES, _GZ_CHUNK_BYTES = 16 * 2**20, 128 * 2**20
_FORMATS = {
    "Nifti1Image": "NIfTI-1",
    "Nifti2Image": "NIfTI-2",
    "Nifti1Pair": "NIfTI-1 pair",
    "Nifti2Pair": "NIfTI-2 pair",
    "AnalyzeImage": "Analyze 7.5",
    "Spm2AnalyzeImage": "SPM2 Analyze",
    "Spm99AnalyzeImage": "SPM99 Analyze",
}
_UNIT_MM = {"mm": 1.0, "meter": 1000.0, "micron": 1e-3, "unknown": 1.0}


def _has_suffix(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in SUFFIXES)


class NiftiLevel(LazyLevel):
    """A NIfTI volume as a lazy array in Tessera's axis order (reversed nibabel order)."""

    def __init__(
        self, path: Path, signature: FileSignature, shape: tuple, dtype: Any, scaled: bool
    ) -> None:
        super().__init__(path, signature, shape, dtype)
        self.scaled = scaled

    handle_kind = "nifti"

    def open_handle(self) -> Any:
        import nibabel as nib

        return nib.load(str(self.path))

    def close_handle(self, handle: Any) -> None:
        pass  # nibabel images hold no open file (the proxy opens it per read)

    def read(self, start: tuple[int, ...], stop: tuple[int, ...]) -> np.ndarray:
        img = self.handle()
        # Tessera axes are nibabel's reversed: index nibabel with the reversed box
        index = tuple(slice(a, b) for a, b in zip(reversed(start), reversed(stop), strict=True))
        try:
            block = np.asarray(img.dataobj[index])
        except Exception as exc:
            msg = f"the voxel data cannot be read ({exc}); the file is damaged or truncated"
            raise CorruptFile(msg, path=self.path) from exc
        block = block.reshape([b - a for a, b in zip(reversed(start), reversed(stop), strict=True)])
        return np.ascontiguousarray(block.transpose()).astype(self.dtype, copy=False)


class NiftiReader:
    """.nii, .nii.gz and Analyze .hdr/.img volumes."""

    name = "nifti"

    def open(self, path: Path) -> Source | None:
        if not path.is_file() or not _has_suffix(path):
            return None
        import nibabel as nib

        try:
            img = nib.load(str(path))
        except Exception as exc:
            msg = f"not a readable NIfTI/Analyze image ({exc}); the file is damaged or mis-named"
            raise CorruptFile(msg, path=path) from exc
        shape = tuple(int(s) for s in img.shape)
        while len(shape) > 3 and shape[-1] == 1:
            shape = shape[:-1]
        if len(shape) < 2 or len(shape) > 4:
            msg = f"a NIfTI image of {len(shape)} dimensions {shape} is not supported (2-4)"
            raise UnsupportedFile(msg, path=path)
        header = img.header
        self._check_size(path, img, shape)
        # nibabel moves scl_slope/scl_inter from the header into the array proxy
        slope = float(getattr(img.dataobj, "slope", 1.0))
        inter = float(getattr(img.dataobj, "inter", 0.0))
        scaled = (slope != 1.0 and np.isfinite(slope)) or (inter != 0.0 and np.isfinite(inter))
        dtype = np.dtype(np.float32) if scaled else np.dtype(img.get_data_dtype()).newbyteorder("=")
        axes = {2: "YX", 3: "ZYX", 4: "TZYX"}[len(shape)]
        tessera_shape = tuple(reversed(shape))
        signature = FileSignature.of(path)
        lazy = NiftiLevel(path, signature, tessera_shape, dtype, scaled)
        plane_bytes = math.prod(shape[:2]) * dtype.itemsize
        budget = _GZ_CHUNK_BYTES if path.name.lower().endswith(".gz") else _CHUNK_BYTES
        chunks = list(tessera_shape)
        if len(shape) >= 3:
            chunks[-3] = max(1, min(shape[2], budget // max(1, plane_bytes)))
        if len(shape) == 4:
            chunks[0] = 1
        level = as_dask(lazy, tuple(chunks), name=level_name(self.name, path, signature))
        xyz_unit, t_unit = header.get_xyzt_units()
        to_mm = _UNIT_MM.get(xyz_unit or "unknown", 1.0)
        zooms = [float(z) * to_mm for z in header.get_zooms()[: min(3, len(shape))]]
        spacing = tuple(reversed(zooms)) if all(z > 0 for z in zooms) else None
        n_spatial = min(3, len(shape))
        order = list(reversed(range(n_spatial)))
        affine_xyz = np.asarray(img.affine, float)
        affine = np.eye(4)
        affine[:3, :n_spatial] = affine_xyz[:3, order]
        affine[:3, 3] = affine_xyz[:3, 3]
        metadata: dict[str, Any] = {
            "vendor": None,
            "affine": affine.round(6).tolist(),
            "orientation": axis_codes(affine)[:n_spatial] if n_spatial == 3 else None,
            "nifti_version": type(img).__name__,
            "qform_code": int(header["qform_code"]) if "qform_code" in header else None,
            "sform_code": int(header["sform_code"]) if "sform_code" in header else None,
            "scale": None if not scaled else [float(slope), float(inter)],
            "stored_dtype": str(img.get_data_dtype()),
            "description": _text(header, "descrip"),
        }
        if len(shape) == 4:
            metadata["time_step"] = [float(header.get_zooms()[3]), t_unit]
        return Source(
            path=path,
            format=_FORMATS.get(metadata["nifti_version"], "NIfTI"),
            reader=self.name,
            levels=[level],
            axes=axes,
            spacing=spacing,
            spacing_unit="mm" if spacing else None,
            metadata=metadata,
            _close=lambda: close_handles(lazy.handle_key),
        )

    @staticmethod
    def _check_size(path: Path, img: Any, shape: tuple[int, ...]) -> None:
        """Refuse an uncompressed file shorter than its header promises (truncated copy)."""
        name = path.name.lower()
        if name.endswith(".gz"):
            return
        image_file = path if name.endswith(".nii") else path.with_suffix(".img")
        if not image_file.exists():
            msg = f"the voxel file {image_file.name} of this Analyze/NIfTI pair is missing"
            raise CorruptFile(msg, path=path)
        offset = int(img.dataobj.offset) if hasattr(img.dataobj, "offset") else 0
        needed = offset + math.prod(shape) * np.dtype(img.get_data_dtype()).itemsize
        size = image_file.stat().st_size
        if size < needed:
            msg = (
                f"the voxel data needs {needed} bytes but the file has {size}: it is truncated; "
                "copy it again"
            )
            raise CorruptFile(msg, path=image_file)


def _text(header: Any, field: str) -> str | None:
    try:
        value = header[field]
        text = value.item().decode("latin-1") if hasattr(value, "item") else str(value)
        return text.strip("\x00 ").strip() or None
    except Exception:
        return None
