"""Zarr arrays (v2 and v3) and OME-Zarr multiscale images (NGFF 0.1-0.5).

OME-Zarr: the first multiscale of the group; each dataset is a level. Axes come from
``axes`` (names t, c, z, y, x upper-cased; old versions without ``axes`` are
"TCZYX"), spacing from the first dataset's ``scale`` transform times the global one,
in the axes' unit ("micrometer" -> µm, "millimeter" -> mm, "arcsecond" -> arcsec;
nanometres and other lengths converted to µm). A scale without units is kept as
spacing with ``spacing_unit=None``. Downsamples are the ratios of the levels'
scales. Channel names come from ``omero.channels[].label``; label images under
``labels/`` are listed in ``metadata["labels"]``.

A plain array: axes from its ``dimension_names`` (v3) or ``_ARRAY_DIMENSIONS`` (v2,
xarray), else guessed from the shape ("YX", "YXC" for a last axis of 3-4, "ZYX",
"CZYX", "TCZYX"). A plain group: its only array, or the array "0".

Reads go through zarr itself (one array handle per process and thread), chunked as
stored (small chunks grouped to at least 128 px per side).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tessera.pipelines.errors import CorruptFile, UnsupportedFile
from tessera.pipelines.sources.base import Source
from tessera.pipelines.sources.lazy import (
    FileSignature,
    LazyLevel,
    as_dask,
    close_handles,
    grouped_chunk,
    level_name,
    thread_handle,
)

_LENGTH_UM = {
    "angstrom": 1e-4, "nanometer": 1e-3, "micrometer": 1.0, "millimeter": 1e3,
    "centimeter": 1e4, "meter": 1e6,
}  # fmt: skip
_MARKERS = ("zarr.json", ".zgroup", ".zarray")


def _is_zarr(path: Path) -> bool:
    return path.is_dir() and any((path / m).exists() for m in _MARKERS)


class ZarrLevel(LazyLevel):
    """One zarr array (a level) as a lazy array; zarr opened per process and thread."""

    def __init__(
        self, root: Path, component: str, signature: FileSignature, shape: tuple, dtype: Any
    ) -> None:
        super().__init__(root, signature, shape, dtype)
        self.component = component

    @property
    def handle_key(self) -> tuple:
        # not keyed by signature: a store is a folder, its mtime changes as outputs land
        return ("zarr", str(self.path), self.component)

    def handle(self) -> Any:
        return thread_handle(self.handle_key, self.open_handle, self.close_handle)

    def open_handle(self) -> Any:
        import zarr

        return zarr.open_array(store=str(self.path), path=self.component, mode="r")

    def close_handle(self, handle: Any) -> None:
        pass

    def read(self, start: tuple[int, ...], stop: tuple[int, ...]) -> np.ndarray:
        array = self.handle()
        index = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
        try:
            return np.asarray(array[index])
        except Exception as exc:
            msg = f"zarr array {self.component!r} cannot be read ({exc}); a chunk is damaged"
            raise CorruptFile(msg, path=self.path) from exc


def _guess_axes(shape: tuple[int, ...]) -> str:
    if len(shape) == 3 and shape[-1] in (3, 4):
        return "YXC"
    guesses = {1: "X", 2: "YX", 3: "ZYX", 4: "CZYX", 5: "TCZYX"}
    if len(shape) not in guesses:
        msg = f"cannot name the axes of a {len(shape)}-dimensional array"
        raise ValueError(msg)
    return guesses[len(shape)]


def _array_axes(array: Any) -> str:
    names = getattr(array.metadata, "dimension_names", None) or array.attrs.get("_ARRAY_DIMENSIONS")
    if names and len(names) == array.ndim and all(names):
        letters = "".join(str(n)[0].upper() for n in names)
        if len(set(letters)) == len(letters):
            return letters
    return _guess_axes(tuple(array.shape))


def _multiscales(attrs: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
    """(multiscales, omero) of an OME-Zarr group's attributes (v0.5 nests them in "ome")."""
    ome = attrs.get("ome", attrs)
    multiscales = ome.get("multiscales")
    if not multiscales:
        return None
    return multiscales, ome.get("omero", {})


def _scale_of(transforms: list[dict[str, Any]] | None, ndim: int) -> list[float]:
    scale = [1.0] * ndim
    for t in transforms or []:
        if t.get("type") == "scale" and "scale" in t:
            scale = [a * float(b) for a, b in zip(scale, t["scale"], strict=False)]
    return scale


def _spacing_unit(
    axes_meta: list[dict[str, Any]], letters: str, scale: list[float]
) -> tuple[tuple[float, ...] | None, str | None]:
    spatial = [i for i, a in enumerate(letters) if a in "ZYX"]
    if not spatial:
        return None, None
    units = {str(axes_meta[i].get("unit", "")) for i in spatial} if axes_meta else {""}
    values = [scale[i] for i in spatial]
    if units == {""}:
        return tuple(values), None
    if len(units) == 1:
        unit = units.pop()
        if unit == "millimeter":
            return tuple(values), "mm"
        if unit in ("arcsecond", "arcsec"):
            return tuple(values), "arcsec"
    per_axis = [_LENGTH_UM.get(str(axes_meta[i].get("unit", ""))) for i in spatial]
    if all(f is not None for f in per_axis):
        return tuple(v * f for v, f in zip(values, per_axis, strict=True)), "µm"
    return None, None


class ZarrReader:
    """A zarr folder: an OME-Zarr image, a plain array, or a group holding one."""

    name = "zarr"

    def open(self, path: Path) -> Source | None:
        if not _is_zarr(path):
            return None
        import zarr

        try:
            node = zarr.open(store=str(path), mode="r")
        except Exception as exc:
            msg = f"zarr cannot open this store ({exc}); its metadata is damaged"
            raise CorruptFile(msg, path=path) from exc
        signature = FileSignature.of(path)
        if isinstance(node, zarr.Array):
            return self._plain(path, signature, "", node)
        found = _multiscales(dict(node.attrs))
        if found is not None:
            return self._ome(path, signature, node, *found)
        arrays = dict(node.arrays())
        if len(arrays) == 1 or "0" in arrays:
            name = "0" if "0" in arrays else next(iter(arrays))
            return self._plain(path, signature, name, arrays[name])
        listed = ", ".join(sorted(arrays)) or "none"
        msg = f"a zarr group without OME-Zarr metadata and several arrays ({listed}); open one"
        raise UnsupportedFile(msg, path=path)

    def _level(
        self, path: Path, signature: FileSignature, component: str, array: Any, axes: str
    ) -> Any:
        lazy = ZarrLevel(path, component, signature, tuple(array.shape), array.dtype)
        chunks = tuple(
            grouped_chunk(int(c)) if a in "YX" else int(c)
            for a, c in zip(axes, array.chunks, strict=True)
        )
        return as_dask(lazy, chunks, name=level_name(self.name, path, signature, component))

    def _plain(self, path: Path, signature: FileSignature, component: str, array: Any) -> Source:
        try:
            axes = _array_axes(array)
        except ValueError as exc:
            raise UnsupportedFile(str(exc), path=path) from exc
        level = self._level(path, signature, component, array, axes)
        return Source(
            path=path,
            format=f"zarr v{array.metadata.zarr_format} array",
            reader=self.name,
            levels=[level],
            axes=axes,
            metadata={"vendor": None, "component": component, "attrs": dict(array.attrs)},
            _close=lambda: close_handles(("zarr", str(path), component)),
        )

    def _ome(
        self,
        path: Path,
        signature: FileSignature,
        group: Any,
        multiscales: list[dict[str, Any]],
        omero: dict[str, Any],
    ) -> Source:
        ms = multiscales[0]
        datasets = ms.get("datasets", [])
        if not datasets:
            msg = "the OME-Zarr multiscales lists no datasets"
            raise CorruptFile(msg, path=path)
        axes_meta = ms.get("axes") or []
        if axes_meta and isinstance(axes_meta[0], dict):
            letters = "".join(str(a.get("name", "?"))[0].upper() for a in axes_meta)
        elif axes_meta:  # v0.3: a list of names
            letters = "".join(str(a)[0].upper() for a in axes_meta)
            axes_meta = [{"name": a} for a in axes_meta]
        else:  # v0.1/0.2: always 5D
            letters = "TCZYX"
        global_scale = _scale_of(ms.get("coordinateTransformations"), len(letters))
        levels, scales = [], []
        for ds in datasets:
            try:
                array = group[ds["path"]]
            except KeyError as exc:
                msg = f"OME-Zarr dataset {ds['path']!r} is missing from the store"
                raise CorruptFile(msg, path=path) from exc
            if array.ndim != len(letters):
                msg = f"dataset {ds['path']!r} has {array.ndim} axes, the metadata {letters!r}"
                raise CorruptFile(msg, path=path)
            levels.append(self._level(path, signature, str(ds["path"]), array, letters))
            own = _scale_of(ds.get("coordinateTransformations"), len(letters))
            scales.append([a * b for a, b in zip(own, global_scale, strict=True)])
        spatial = [i for i, a in enumerate(letters) if a in "ZYX"]
        spacing, unit = _spacing_unit(axes_meta, letters, scales[0])
        downsamples = [
            tuple(s[i] / scales[0][i] if scales[0][i] else 1.0 for i in spatial) for s in scales
        ]
        channels = [str(c.get("label", "")) for c in omero.get("channels", [])]
        metadata: dict[str, Any] = {
            "vendor": None,
            "ome_zarr_version": str(
                ms.get("version", group.attrs.get("ome", {}).get("version", ""))
            ),
            "name": ms.get("name"),
            "datasets": [str(d["path"]) for d in datasets],
            "scale": scales[0],
        }
        if any(channels):
            metadata["channel_names"] = channels
        if "labels" in group:
            try:
                metadata["labels"] = list(group["labels"].attrs.get("labels", []))
            except Exception:
                metadata["labels"] = []
        return Source(
            path=path,
            format="OME-Zarr",
            reader=self.name,
            levels=levels,
            axes=letters,
            spacing=spacing,
            spacing_unit=unit,
            downsamples=downsamples,
            metadata=metadata,
            _close=lambda: _close_all(path, metadata["datasets"]),
        )


def _close_all(path: Path, components: list[str]) -> None:
    for component in components:
        close_handles(("zarr", str(path), component))
