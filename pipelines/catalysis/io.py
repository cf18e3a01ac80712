"""Reading and writing eDOS datasets in the published ``(4000, 9, 6)`` layout.

Accepted inputs (``open_edos``):

- **HDF5** (``.h5``/``.hdf5``): dataset ``edos`` float ``[N, 4000, 9, 6]``; string datasets
  ``metal``, ``support``, ``adsorbate`` ``[N]``; optional ``e_ads_ev`` ``[N]`` (NaN = unknown),
  ``energy_ev`` ``[4000]`` and any other 1-D numeric ``[N]`` columns (kept as extra columns).
- **zarr** (a ``.zarr`` folder): arrays as in HDF5; the string columns live in the group
  attributes ``metal``/``support``/``adsorbate`` (lists), which every zarr version reads alike.
- **npz** (``.npz``): one sample (``edos`` ``[4000, 9, 6]`` and 0-d ``metal``, ``support``,
  ``adsorbate``, optional ``e_ads_ev``) or a whole dataset (``edos`` ``[N, 4000, 9, 6]`` and
  1-D columns).
- **npy** (``.npy``): one array ``[4000, 9, 6]``; names come from the file name
  ``METAL_SUPPORT_ADSORBATE.npy``.
- **a folder** of ``.npz``/``.npy`` samples (searched recursively, sorted by path); a
  ``labels.csv`` beside them (columns ``file, metal, support, adsorbate[, e_ads_ev]``) overrides
  names and gives energies.

Arrays are read lazily (a batch at a time) so a dataset larger than memory screens fine.
Energies must be on the layout's grid (-14..5.995 eV, 0.005 eV); convert other grids with
``tessera.pipelines.catalysis.vasp`` or ``regrid_edos``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tessera.pipelines.catalysis.layout import (
    EDOS_AXES,
    EDOS_SHAPE,
    LAYOUT_ID,
    ORBITALS,
    canonical_adsorbate,
    canonical_metal,
    canonical_support,
    energy_grid_ev,
)
from tessera.pipelines.errors import CorruptFile, UnsupportedFile

_STRING_COLUMNS = ("metal", "support", "adsorbate")


class EdosDataset:
    """An eDOS dataset: ``N`` arrays ``(4000, 9, 6)`` (read lazily) with per-sample columns.

    ``metal``, ``support``, ``adsorbate`` are canonical names; ``e_ads_ev`` the known adsorption
    energies (NaN where unknown); ``columns`` any other per-sample numeric columns.
    Use as a context manager (or call ``close``) to release the file.
    """

    def __init__(
        self,
        edos: Any,
        *,
        metal: Sequence[str],
        support: Sequence[str],
        adsorbate: Sequence[str],
        e_ads_ev: np.ndarray | None = None,
        columns: dict[str, np.ndarray] | None = None,
        path: Path | None = None,
        attrs: dict[str, Any] | None = None,
        closer: Any = None,
    ) -> None:
        n = len(metal)
        if not (len(support) == len(adsorbate) == n == edos.shape[0]):
            msg = (
                f"column lengths differ: {edos.shape[0]} arrays, {n} metals, {len(support)} supports, "
                f"{len(adsorbate)} adsorbates"
            )
            raise CorruptFile(msg, path=path)
        self.edos = edos
        self.path = path
        try:
            self.metal = [canonical_metal(str(m)) for m in metal]
            self.support = [canonical_support(str(s)) for s in support]
            self.adsorbate = [canonical_adsorbate(str(a)) for a in adsorbate]
        except ValueError as exc:
            raise CorruptFile(f"{exc}; fix the adsorbate column", path=path) from exc
        self.e_ads_ev = (
            np.full(n, np.nan) if e_ads_ev is None else np.asarray(e_ads_ev, dtype=np.float64)
        )
        self.columns = dict(columns or {})
        self.attrs = dict(attrs or {})
        self._closer = closer

    def __len__(self) -> int:
        return len(self.metal)

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Arrays ``[stop - start, 4000, 9, 6]`` as float32."""
        stop = len(self) if stop is None else stop
        try:
            arr = np.asarray(self.edos[start:stop], dtype=np.float32)
        except (OSError, ValueError, KeyError) as exc:
            msg = f"cannot read eDOS samples {start}..{stop} ({exc}); the file is damaged"
            raise CorruptFile(msg, path=self.path) from exc
        if not np.all(np.isfinite(arr)):
            msg = f"eDOS samples {start}..{stop} contain NaN or infinite values"
            raise CorruptFile(msg, path=self.path)
        return arr

    def iter_batches(self, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, arrays)`` batches in order."""
        for start in range(0, len(self), batch_size):
            yield start, self.read(start, min(start + batch_size, len(self)))

    def candidates(self) -> list[tuple[str, str]]:
        """Distinct (metal, support) pairs in order of first appearance."""
        return list(dict.fromkeys(zip(self.metal, self.support, strict=True)))

    def find(self, metal: str, support: str, adsorbate: str) -> int | None:
        """Index of the first sample with these names (canonicalised), or None."""
        key = (canonical_metal(metal), canonical_support(support), canonical_adsorbate(adsorbate))
        for i, row in enumerate(zip(self.metal, self.support, self.adsorbate, strict=True)):
            if row == key:
                return i
        return None

    def close(self) -> None:
        if self._closer is not None:
            self._closer()
            self._closer = None

    def __enter__(self) -> EdosDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_shape(shape: tuple[int, ...], path: Path, *, batched: bool) -> None:
    want = ((-1,) if batched else ()) + EDOS_SHAPE
    ok = len(shape) == len(want) and all(w in (-1, s) for w, s in zip(want, shape, strict=True))
    if not ok:
        what = "[N, 4000, 9, 6]" if batched else "[4000, 9, 6]"
        msg = (
            f"eDOS array has shape {list(shape)}, expected {what} "
            f"(energies x orbitals {','.join(ORBITALS)} x 6 atomic channels)"
        )
        raise CorruptFile(msg, path=path)


def _check_grid(energy: np.ndarray | None, path: Path) -> None:
    if energy is None:
        return
    energy = np.asarray(energy, dtype=np.float64).ravel()
    grid = energy_grid_ev()
    if energy.shape != grid.shape or not np.allclose(energy, grid, atol=1e-4):
        lo, hi = (float(energy.min()), float(energy.max())) if energy.size else (np.nan, np.nan)
        msg = (
            f"energy grid {lo:g}..{hi:g} eV ({energy.size} points) is not the layout's "
            "-14..5.995 eV in 0.005 eV steps; resample it with "
            "tessera.pipelines.catalysis.io.regrid_edos"
        )
        raise CorruptFile(msg, path=path)


def _decode(values: Iterable[Any]) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def open_edos(path: str | os.PathLike[str]) -> EdosDataset:
    """Open an eDOS dataset in any accepted layout (see the module docstring).

    Raises UnsupportedFile for something that is not an eDOS dataset, CorruptFile for a damaged
    one; the message names the file.
    """
    path = Path(path)
    if not path.exists():
        raise UnsupportedFile("no such file or folder", path=path)
    suffix = path.suffix.lower()
    if path.is_dir() and (suffix == ".zarr" or (path / "zarr.json").exists() or (path / ".zgroup").exists()):
        return _open_zarr(path)
    if path.is_dir():
        return _open_folder(path)
    if path.stat().st_size == 0:
        raise CorruptFile("file is empty", path=path)
    if suffix in (".h5", ".hdf5", ".hdf"):
        return _open_h5(path)
    if suffix == ".npz":
        return _open_npz(path)
    if suffix == ".npy":
        arr = _load_npy(path)
        meta = _names_from_filename(path)
        return EdosDataset(arr[None], path=path, **meta)
    msg = "not an eDOS dataset (expected .h5, .zarr, .npz, .npy or a folder of samples)"
    raise UnsupportedFile(msg, path=path)


def _open_h5(path: Path) -> EdosDataset:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise CorruptFile(f"not a readable HDF5 file ({exc})", path=path) from exc
    try:
        if "edos" not in f:
            msg = "HDF5 file has no 'edos' dataset; expected edos [N, 4000, 9, 6] + metal/support/adsorbate"
            raise UnsupportedFile(msg, path=path)
        ds = f["edos"]
        _check_shape(ds.shape, path, batched=True)
        missing = [c for c in _STRING_COLUMNS if c not in f]
        if missing:
            raise CorruptFile(f"HDF5 file lacks the column(s) {missing}", path=path)
        names = {c: _decode(f[c][()]) for c in _STRING_COLUMNS}
        _check_grid(f["energy_ev"][()] if "energy_ev" in f else None, path)
        n = ds.shape[0]
        columns = {
            k: np.asarray(v[()])
            for k, v in f.items()
            if k not in (*_STRING_COLUMNS, "edos", "energy_ev", "e_ads_ev")
            and isinstance(v, h5py.Dataset)
            and v.shape == (n,)
            and v.dtype.kind in "biuf"
        }
        e_ads = np.asarray(f["e_ads_ev"][()]) if "e_ads_ev" in f else None
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        return EdosDataset(
            ds, e_ads_ev=e_ads, columns=columns, path=path, attrs=attrs, closer=f.close, **names
        )
    except Exception:
        f.close()
        raise


def _open_zarr(path: Path) -> EdosDataset:
    import zarr

    try:
        group = zarr.open_group(str(path), mode="r")
        arr = group["edos"]
    except Exception as exc:  # zarr raises several unrelated types for a bad store
        raise CorruptFile(f"not a readable eDOS zarr group ({exc})", path=path) from exc
    _check_shape(tuple(arr.shape), path, batched=True)
    attrs = dict(group.attrs)
    missing = [c for c in _STRING_COLUMNS if c not in attrs]
    if missing:
        raise CorruptFile(f"zarr group attributes lack {missing}", path=path)
    keys = set(group.array_keys())
    _check_grid(group["energy_ev"][...] if "energy_ev" in keys else None, path)
    n = arr.shape[0]
    columns = {}
    for k in keys - {"edos", "energy_ev", "e_ads_ev"}:
        col = group[k]
        if tuple(col.shape) == (n,):
            columns[k] = np.asarray(col[...])
    e_ads = np.asarray(group["e_ads_ev"][...]) if "e_ads_ev" in keys else None
    names = {c: list(attrs.pop(c)) for c in _STRING_COLUMNS}
    return EdosDataset(arr, e_ads_ev=e_ads, columns=columns, path=path, attrs=attrs, **names)


def _npz_scalar(z: Any, key: str) -> Any:
    return z[key].item() if key in z and z[key].ndim == 0 else None


def _open_npz(path: Path) -> EdosDataset:
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise CorruptFile(f"not a readable .npz file ({exc})", path=path) from exc
    with z:
        if "edos" not in z:
            raise UnsupportedFile("npz has no 'edos' array", path=path)
        try:
            edos = z["edos"]
        except (OSError, ValueError, EOFError) as exc:
            raise CorruptFile(f"cannot read 'edos' ({exc}); the file is truncated", path=path) from exc
        _check_grid(z.get("energy_ev", None), path)
        if edos.ndim == 3:
            _check_shape(edos.shape, path, batched=False)
            meta = _names_from_filename(path)
            for key in _STRING_COLUMNS:
                value = _npz_scalar(z, key)
                if value is not None:
                    meta[key] = [str(value)]
            e = _npz_scalar(z, "e_ads_ev")
            return EdosDataset(
                edos[None], path=path, e_ads_ev=None if e is None else np.array([e]), **meta
            )
        _check_shape(edos.shape, path, batched=True)
        missing = [c for c in _STRING_COLUMNS if c not in z]
        if missing:
            raise CorruptFile(f"dataset npz lacks the column(s) {missing}", path=path)
        n = edos.shape[0]
        columns = {
            k: z[k]
            for k in z.files
            if k not in (*_STRING_COLUMNS, "edos", "energy_ev", "e_ads_ev")
            and z[k].shape == (n,)
            and z[k].dtype.kind in "biuf"
        }
        return EdosDataset(
            edos,
            metal=_decode(z["metal"]),
            support=_decode(z["support"]),
            adsorbate=_decode(z["adsorbate"]),
            e_ads_ev=z.get("e_ads_ev", None),
            columns=columns,
            path=path,
        )


def _load_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise CorruptFile(f"not a readable .npy array ({exc})", path=path) from exc
    _check_shape(arr.shape, path, batched=False)
    return arr


def _names_from_filename(path: Path) -> dict[str, list[str]]:
    parts = path.stem.split("_")
    if len(parts) == 3:
        metal, support, ads = parts
        metal = metal.split("-")[-1]  # "4-Co" (period-prefixed folders) -> "Co"
        return {"metal": [metal], "support": [support], "adsorbate": [ads]}
    msg = (
        "cannot tell metal, support and adsorbate: name the file METAL_SUPPORT_ADSORBATE.npy, "
        "store them in the npz, or list it in labels.csv"
    )
    raise CorruptFile(msg, path=path)


class _SampleFiles:
    """Lazy ``[N, 4000, 9, 6]`` view over one file per sample."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.files), *EDOS_SHAPE)

    def __getitem__(self, item: slice) -> np.ndarray:
        out = []
        for f in self.files[item]:
            if f.suffix.lower() == ".npy":
                out.append(np.asarray(_load_npy(f), dtype=np.float32))
            else:
                with open_edos(f) as one:
                    out.append(one.read(0, 1)[0])
        return np.stack(out) if out else np.zeros((0, *EDOS_SHAPE), np.float32)


def _open_folder(path: Path) -> EdosDataset:
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in (".npz", ".npy") and p.is_file())
    if not files:
        msg = "folder holds no .npz/.npy eDOS samples (nor is it a .zarr group)"
        raise UnsupportedFile(msg, path=path)
    labels: dict[str, dict[str, str]] = {}
    label_file = path / "labels.csv"
    if label_file.exists():
        with label_file.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            need = {"file", "metal", "support", "adsorbate"}
            if not need <= set(reader.fieldnames or ()):
                msg = f"labels.csv needs the columns {sorted(need)}, found {reader.fieldnames}"
                raise CorruptFile(msg, path=label_file)
            for row in reader:
                labels[row["file"]] = row
    names: dict[str, list[str]] = {c: [] for c in _STRING_COLUMNS}
    energies = []
    for f in files:
        rel = f.relative_to(path).as_posix()
        row = labels.get(rel) or labels.get(f.name)
        if row is not None:
            meta = {c: [row[c]] for c in _STRING_COLUMNS}
            e = float(row["e_ads_ev"]) if row.get("e_ads_ev", "") not in ("", None) else np.nan
        elif f.suffix.lower() == ".npz":
            with open_edos(f) as one:
                meta = {"metal": one.metal, "support": one.support, "adsorbate": one.adsorbate}
                e = float(one.e_ads_ev[0])
        else:
            _load_npy(f)
            meta = _names_from_filename(f)
            e = np.nan
        for c in _STRING_COLUMNS:
            names[c].append(meta[c][0])
        energies.append(e)
    return EdosDataset(_SampleFiles(files), e_ads_ev=np.array(energies), path=path, **names)


# --------------------------------------------------------------------------------- writing


def _layout_attrs(extra: dict[str, Any] | None) -> dict[str, Any]:
    attrs = {
        "layout": LAYOUT_ID,
        "axes": "N" + EDOS_AXES,
        "orbitals": ",".join(ORBITALS),
        "channels": "metal, then up to 5 adsorbate atoms (binding atom first), zero-padded",
        "energy_reference": "E - E_F (eV)",
        "units": "states/eV, spins summed",
    }
    attrs.update(extra or {})
    return attrs


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


def write_edos_h5(
    path: str | os.PathLike[str],
    samples: Iterable[tuple[dict[str, Any], np.ndarray]],
    *,
    attrs: dict[str, Any] | None = None,
    compression_level: int = 1,
) -> int:
    """Stream ``(record, edos)`` pairs into one HDF5 dataset; returns the sample count.

    ``record`` holds metal, support, adsorbate and any numeric columns (e_ads_ev, ...). Written
    to a temporary name and renamed when complete, so a crash never leaves a half file.
    """
    import h5py

    path = Path(path)
    tmp = _tmp_path(path)
    n = 0
    columns: dict[str, list[Any]] = {}
    with h5py.File(tmp, "w") as f:
        ds = f.create_dataset(
            "edos",
            shape=(0, *EDOS_SHAPE),
            maxshape=(None, *EDOS_SHAPE),
            dtype="f4",
            chunks=(1, *EDOS_SHAPE),
            compression="gzip",
            compression_opts=compression_level,
        )
        for record, edos in samples:
            ds.resize(n + 1, axis=0)
            ds[n] = edos
            for k, v in record.items():
                columns.setdefault(k, []).append(v)
            n += 1
        f.create_dataset("energy_ev", data=energy_grid_ev())
        text = h5py.string_dtype("utf-8")
        for k, values in columns.items():
            if k in _STRING_COLUMNS:
                f.create_dataset(k, data=np.array(values, dtype=object), dtype=text)
            else:
                f.create_dataset(k, data=np.asarray(values))
        for k, v in _layout_attrs(attrs).items():
            f.attrs[k] = v if not isinstance(v, (dict, list)) else json.dumps(v)
    os.replace(tmp, path)
    return n


def write_edos_zarr(
    path: str | os.PathLike[str],
    samples: Iterable[tuple[dict[str, Any], np.ndarray]],
    *,
    n: int,
    attrs: dict[str, Any] | None = None,
) -> int:
    """Stream ``n`` samples into a zarr group (one chunk per sample); returns the count."""
    import zarr

    path = Path(path)
    tmp = _tmp_path(path)
    if tmp.exists():
        shutil.rmtree(tmp)
    group = zarr.open_group(str(tmp), mode="w")
    arr = group.create_array("edos", shape=(n, *EDOS_SHAPE), chunks=(1, *EDOS_SHAPE), dtype="f4")
    columns: dict[str, list[Any]] = {}
    i = 0
    for i, (record, edos) in enumerate(samples):
        arr[i] = edos
        for k, v in record.items():
            columns.setdefault(k, []).append(v)
    count = len(next(iter(columns.values()), []))
    if count != n:
        msg = f"expected {n} samples, got {count}"
        raise ValueError(msg)
    group.create_array("energy_ev", data=energy_grid_ev())
    meta = _layout_attrs(attrs)
    for k, values in columns.items():
        if k in _STRING_COLUMNS:
            meta[k] = [str(v) for v in values]
        else:
            group.create_array(k, data=np.asarray(values))
    group.attrs.update(meta)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return n


def save_sample_npz(
    path: str | os.PathLike[str],
    edos: np.ndarray,
    *,
    metal: str,
    support: str,
    adsorbate: str,
    e_ads_ev: float | None = None,
    **columns: float,
) -> None:
    """Write one sample as ``.npz`` (``edos`` ``[4000, 9, 6]`` + names, energies, grid)."""
    path = Path(path)
    _check_shape(np.shape(edos), path, batched=False)
    extra = {} if e_ads_ev is None else {"e_ads_ev": np.float64(e_ads_ev)}
    extra.update({k: np.float64(v) for k, v in columns.items()})
    tmp = path.with_name(f".{path.stem}.partial.npz")
    np.savez_compressed(
        tmp,
        edos=np.asarray(edos, dtype=np.float32),
        energy_ev=energy_grid_ev(),
        metal=np.str_(metal),
        support=np.str_(support),
        adsorbate=np.str_(adsorbate),
        **extra,
    )
    os.replace(tmp, path)


def regrid_edos(energy_ev: np.ndarray, dos: np.ndarray) -> np.ndarray:
    """Resample DOS ``[E_in, ...]`` (states/eV at ``energy_ev``, eV vs E_F, increasing) onto the layout grid.

    Input grids coarser than 0.005 eV (VASP's usual NEDOS) are interpolated linearly, which
    keeps the state count to the accuracy of the trapezoid rule. Finer grids are binned
    conservatively (the cumulative state count is interpolated at the layout's bin edges and
    differenced), so no narrow peak is lost between samples. Zero outside the input range.
    """
    energy_ev = np.asarray(energy_ev, dtype=np.float64)
    dos = np.asarray(dos, dtype=np.float64)
    if energy_ev.ndim != 1 or energy_ev.size < 2 or np.any(np.diff(energy_ev) <= 0):
        msg = "energies must be a strictly increasing 1-D array of at least 2 points"
        raise ValueError(msg)
    grid = energy_grid_ev()
    step = grid[1] - grid[0]
    flat = dos.reshape(dos.shape[0], -1)
    out = np.empty((grid.size, flat.shape[1]))
    if np.median(np.diff(energy_ev)) >= step:
        for j in range(flat.shape[1]):
            out[:, j] = np.interp(grid, energy_ev, flat[:, j], left=0.0, right=0.0)
        return out.reshape((grid.size, *dos.shape[1:])).astype(np.float32)
    edges = np.append(grid - step / 2, grid[-1] + step / 2)
    cum = np.vstack(
        [np.zeros((1, flat.shape[1])), np.cumsum(0.5 * (flat[1:] + flat[:-1]) * np.diff(energy_ev)[:, None], axis=0)]
    )
    for j in range(flat.shape[1]):
        at_edges = np.interp(edges, energy_ev, cum[:, j], left=0.0, right=cum[-1, j])
        out[:, j] = np.diff(at_edges) / step
    return out.reshape((grid.size, *dos.shape[1:])).astype(np.float32)
