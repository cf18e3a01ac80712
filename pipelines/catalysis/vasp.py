"""VASP output -> the eDOS layout ``(4000, 9, 6)``.

Files read (per calculation folder):

- ``DOSCAR`` — always. Header line 1: ``NIONS NIONS JOBPAR NCDIJ``; line 6:
  ``EMAX EMIN NEDOS EFERMI weight``: E_F (eV) is taken from here and every energy is shifted
  to ``E - E_F``. The total DOS block (NEDOS lines) is skipped. With ``LORBIT = 11`` each ion
  then has a block: a repeat of line 6, and NEDOS lines of ``E`` followed by the lm-projected
  DOS in VASP's order ``s py pz px dxy dyz dz2 dxz x2-y2`` (9 columns; 16 with f states, whose
  7 f columns are dropped). With ``ISPIN = 2`` every orbital has two columns, up then down
  (18 columns), which are **summed** (the layout holds spin-summed DOS). Non-collinear runs
  (``NCDIJ = 4``) give 4 columns per orbital (total, mx, my, mz): only the total is used.
  ``LORBIT = 10`` (s, p, d only) is refused: the layout needs the lm decomposition.
- ``PROCAR`` — instead of the DOSCAR projections when asked (``source="procar"``), e.g. when
  the DOSCAR was written without LORBIT = 11. The lm-decomposed band projections
  ``|<Y_lm|psi_nk>|^2`` of the chosen ions are broadened into a DOS with Gaussians of
  ``sigma_ev`` and weighted by the k-point weights (2 electrons per band for ISPIN = 1, the two
  spin blocks summed for ISPIN = 2). E_F still comes from the DOSCAR header.
- ``CONTCAR`` (or ``POSCAR``) — only when ion indices are not given: the metal is the single
  atom of a transition metal, and the adsorbate the atoms of its elements (C, O, H) closest to
  the metal; within one element, closer atoms come first.

Channels: 0 = metal, 1..5 = adsorbate atoms in the order of ``ADSORBATE_ATOMS`` (binding atom
first). The DOS (states/eV) is resampled onto -14..5.995 eV in 0.005 eV steps conserving
states (``regrid_edos``); states outside the window are dropped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tessera.pipelines.catalysis.io import regrid_edos
from tessera.pipelines.catalysis.layout import ADSORBATE_ATOMS, EDOS_SHAPE, METALS, N_ORBITALS
from tessera.pipelines.errors import CorruptFile, UnsupportedFile


@dataclass
class Doscar:
    """A parsed DOSCAR: energies (eV, not shifted), E_F, and per-ion lm-projected DOS."""

    path: Path
    n_ions: int
    efermi_ev: float
    energy_ev: np.ndarray  # [NEDOS]
    projected: np.ndarray | None  # [n_ions, NEDOS, 9], spins summed; None without LORBIT=11
    ispin: int
    noncollinear: bool


def _floats(line: str, path: Path, lineno: int) -> list[float]:
    try:
        return [float(x) for x in line.split()]
    except ValueError:
        msg = f"line {lineno} is not a row of numbers: {line.strip()[:60]!r}; the DOSCAR is malformed"
        raise CorruptFile(msg, path=path) from None


def read_doscar(path: str | os.PathLike[str]) -> Doscar:
    """Parse a DOSCAR (see the module docstring for which lines and columns are used)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise CorruptFile(f"cannot read the DOSCAR ({exc.strerror or exc})", path=path) from exc
    if len(lines) < 6:
        raise CorruptFile(f"DOSCAR has {len(lines)} lines, fewer than its 6-line header", path=path)
    first = _floats(lines[0], path, 1)
    if len(first) < 4:
        raise CorruptFile("DOSCAR line 1 must hold NIONS NIONS JOBPAR NCDIJ", path=path)
    n_ions, ncdij = int(first[0]), int(first[3])
    head = _floats(lines[5], path, 6)
    if len(head) < 4:
        raise CorruptFile("DOSCAR line 6 must hold EMAX EMIN NEDOS EFERMI", path=path)
    nedos, efermi = int(head[2]), float(head[3])
    if nedos < 2:
        raise CorruptFile(f"DOSCAR declares NEDOS = {nedos}", path=path)
    if len(lines) < 6 + nedos:
        msg = f"DOSCAR is truncated: {len(lines) - 6} total-DOS lines of NEDOS = {nedos}"
        raise CorruptFile(msg, path=path)
    total = np.array([_floats(lines[6 + i], path, 7 + i) for i in range(nedos)]) if nedos else None
    if total is None or total.ndim != 2 or total.shape[1] not in (3, 5):
        msg = "the total-DOS block must have 3 (ISPIN=1) or 5 (ISPIN=2) columns"
        raise CorruptFile(msg, path=path)
    ispin = 1 if total.shape[1] == 3 else 2
    energy = total[:, 0]
    start = 6 + nedos
    if len(lines) <= start or not lines[start].strip():
        return Doscar(path, n_ions, efermi, energy, None, ispin, ncdij == 4)
    per_orbital = 4 if ncdij == 4 else ispin
    projected = np.zeros((n_ions, nedos, N_ORBITALS))
    for ion in range(n_ions):
        block = start + ion * (nedos + 1)
        if len(lines) < block + 1 + nedos:
            msg = f"DOSCAR is truncated in the projected DOS of ion {ion + 1} of {n_ions}"
            raise CorruptFile(msg, path=path)
        rows = [_floats(lines[block + 1 + i], path, block + 2 + i) for i in range(nedos)]
        widths = {len(r) for r in rows}
        if len(widths) != 1:
            msg = f"ion {ion + 1}'s projected DOS rows have different column counts {sorted(widths)}"
            raise CorruptFile(msg, path=path)
        arr = np.array(rows)
        n_orb = (arr.shape[1] - 1) / per_orbital
        if n_orb in (3, 4):  # LORBIT = 10: s, p, d(, f)
            msg = "projected DOS is l-decomposed (LORBIT = 10); rerun with LORBIT = 11 or use the PROCAR"
            raise UnsupportedFile(msg, path=path)
        if n_orb not in (9, 16):
            msg = (
                f"projected DOS has {arr.shape[1] - 1} columns, not 9 or 16 orbitals x "
                f"{per_orbital} (ISPIN = {ispin}{', non-collinear' if ncdij == 4 else ''})"
            )
            raise CorruptFile(msg, path=path)
        cols = arr[:, 1:].reshape(nedos, int(n_orb), per_orbital)
        spin_summed = cols[..., 0] if ncdij == 4 else cols.sum(axis=-1)
        projected[ion] = spin_summed[:, :N_ORBITALS]
    return Doscar(path, n_ions, efermi, energy, projected, ispin, ncdij == 4)


def read_procar_dos(
    path: str | os.PathLike[str], *, ions: Sequence[int], efermi_ev: float, sigma_ev: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """lm-projected DOS of ``ions`` (0-based) from a PROCAR, on the layout grid.

    Returns (energy grid eV vs E_F [4000], DOS [len(ions), 4000, 9] states/eV, spins summed).
    """
    from tessera.pipelines.catalysis.layout import energy_grid_ev

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise CorruptFile(f"cannot read the PROCAR ({exc.strerror or exc})", path=path) from exc
    if not text or "PROCAR" not in text[0]:
        raise UnsupportedFile("not a PROCAR (first line lacks 'PROCAR')", path=path)
    grid = energy_grid_ev()
    out = np.zeros((len(ions), grid.size, N_ORBITALS))
    want = {ion: j for j, ion in enumerate(ions)}
    n_spin_blocks = sum(1 for line in text if line.startswith("# of k-points"))
    occupancy = 2.0 if n_spin_blocks == 1 else 1.0
    weight = energy = None
    seen_bands = 0
    i = 0
    norm = 1.0 / (sigma_ev * np.sqrt(2.0 * np.pi))
    while i < len(text):
        line = text[i]
        if line.lstrip().startswith("k-point") and "weight" in line:
            try:
                weight = float(line.split("weight =")[1].split()[0])
            except (IndexError, ValueError):
                raise CorruptFile(f"line {i + 1}: cannot read the k-point weight", path=path) from None
        elif line.startswith("band"):
            try:
                energy = float(line.split("# energy")[1].split()[0]) - efermi_ev
            except (IndexError, ValueError):
                raise CorruptFile(f"line {i + 1}: cannot read the band energy", path=path) from None
        elif line.startswith("ion") and "dxy" in line:
            if weight is None or energy is None:
                raise CorruptFile(f"line {i + 1}: projections before any k-point/band line", path=path)
            header = line.split()
            orbital_cols = [header.index(o) for o in ("s", "py", "pz", "px", "dxy", "dyz", "dz2", "dxz")]
            orbital_cols.append(header.index("x2-y2") if "x2-y2" in header else header.index("dx2"))
            g = occupancy * weight * norm * np.exp(-0.5 * ((grid - energy) / sigma_ev) ** 2)
            i += 1
            while i < len(text) and text[i].split() and text[i].split()[0].isdigit():
                parts = text[i].split()
                ion = int(parts[0]) - 1
                if ion in want:
                    try:
                        proj = np.array([float(parts[c]) for c in orbital_cols])
                    except (IndexError, ValueError):
                        raise CorruptFile(f"line {i + 1}: malformed projection row", path=path) from None
                    out[want[ion]] += g[:, None] * proj[None, :]
                i += 1
            seen_bands += 1
            continue
        i += 1
    if seen_bands == 0:
        raise CorruptFile("PROCAR holds no lm-decomposed projections (needs LORBIT = 11)", path=path)
    return grid, out.astype(np.float32)


@dataclass
class Structure:
    """Species per atom and Cartesian positions (Å) from a POSCAR/CONTCAR."""

    species: list[str]
    positions: np.ndarray


def read_poscar(path: str | os.PathLike[str]) -> Structure:
    """Parse a VASP 5 POSCAR/CONTCAR (species line required)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        scale = float(lines[1].split()[0])
        lattice = np.array([[float(x) for x in lines[i].split()[:3]] for i in (2, 3, 4)]) * scale
        names = lines[5].split()
        counts = [int(x) for x in lines[6].split()]
        k = 7
        if lines[k].strip()[:1] in "sS":
            k += 1
        cartesian = lines[k].strip()[:1] in "cCkK"
        n = sum(counts)
        coords = np.array([[float(x) for x in lines[k + 1 + i].split()[:3]] for i in range(n)])
    except (IndexError, ValueError, OSError) as exc:
        msg = f"not a VASP 5 POSCAR with a species line ({exc}); give the ion indices instead"
        raise CorruptFile(msg, path=path) from exc
    if len(names) != len(counts) or any(not s.isalpha() for s in names):
        raise CorruptFile("POSCAR line 6 must list the species (VASP 5 format)", path=path)
    species = [s for s, c in zip(names, counts, strict=True) for _ in range(c)]
    positions = coords * scale if cartesian else coords @ lattice
    return Structure(species, positions)


def find_sites(structure: Structure, adsorbate: str, *, path: Path | None = None) -> tuple[int, list[int]]:
    """(metal ion, adsorbate ions in channel order), 0-based, from the structure."""
    metals = [i for i, s in enumerate(structure.species) if s in METALS]
    if len(metals) != 1:
        msg = f"found {len(metals)} transition-metal atoms, expected one; give --metal-index"
        raise CorruptFile(msg, path=path)
    m = metals[0]
    dist = np.linalg.norm(structure.positions - structure.positions[m], axis=1)
    chosen: list[int] = []
    for element in ADSORBATE_ATOMS[adsorbate]:
        candidates = [i for i in np.argsort(dist) if structure.species[i] == element and i not in chosen and i != m]
        if not candidates:
            msg = f"no {element} atom left for *{adsorbate}; give --adsorbate-indices"
            raise CorruptFile(msg, path=path)
        chosen.append(int(candidates[0]))
    return m, chosen


def edos_from_vasp(
    run_dir: str | os.PathLike[str],
    *,
    adsorbate: str,
    metal_index: int | None = None,
    adsorbate_indices: Sequence[int] | None = None,
    source: str = "doscar",
    sigma_ev: float = 0.1,
) -> np.ndarray:
    """One eDOS ``(4000, 9, 6)`` from a VASP calculation folder (indices are 1-based, as in VASP)."""
    run_dir = Path(run_dir)
    doscar_path = run_dir / "DOSCAR"
    if not doscar_path.exists():
        raise UnsupportedFile("no DOSCAR in this folder", path=run_dir)
    doscar = read_doscar(doscar_path)
    if metal_index is None or adsorbate_indices is None:
        struct_path = next((run_dir / n for n in ("CONTCAR", "POSCAR") if (run_dir / n).exists()), None)
        if struct_path is None:
            msg = "no CONTCAR/POSCAR to locate the metal and adsorbate; give the ion indices"
            raise UnsupportedFile(msg, path=run_dir)
        m, ads = find_sites(read_poscar(struct_path), adsorbate, path=struct_path)
        metal = m if metal_index is None else metal_index - 1
        ads_ions = ads if adsorbate_indices is None else [i - 1 for i in adsorbate_indices]
    else:
        metal, ads_ions = metal_index - 1, [i - 1 for i in adsorbate_indices]
    ions = [metal, *ads_ions]
    if len(ions) > EDOS_SHAPE[2]:
        raise CorruptFile(f"{len(ads_ions)} adsorbate atoms; the layout holds at most 5", path=run_dir)
    bad = [i + 1 for i in ions if not 0 <= i < doscar.n_ions]
    if bad:
        raise CorruptFile(f"ion indices {bad} outside 1..{doscar.n_ions}", path=doscar_path)
    out = np.zeros(EDOS_SHAPE, dtype=np.float32)
    if source == "procar":
        _, dos = read_procar_dos(run_dir / "PROCAR", ions=ions, efermi_ev=doscar.efermi_ev, sigma_ev=sigma_ev)
        for ch in range(len(ions)):
            out[:, :, ch] = dos[ch]
        return out
    if doscar.projected is None:
        msg = "DOSCAR has no projected DOS (set LORBIT = 11) — or convert from the PROCAR"
        raise UnsupportedFile(msg, path=doscar_path)
    energy = doscar.energy_ev - doscar.efermi_ev
    for ch, ion in enumerate(ions):
        out[:, :, ch] = regrid_edos(energy, doscar.projected[ion])
    return out
