"""VASP DOSCAR/PROCAR/POSCAR -> eDOS layout, on small files written here to the VASP format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tessera.pipelines.catalysis.io import regrid_edos
from tessera.pipelines.catalysis.layout import ORBITALS, energy_grid_ev
from tessera.pipelines.catalysis.vasp import edos_from_vasp, find_sites, read_doscar, read_poscar
from tessera.pipelines.errors import CorruptFile, UnsupportedFile

EFERMI = -1.5
ENERGIES = np.round(np.arange(-20.0, 10.0001, 0.1), 4)  # NEDOS = 301
SPECIES = ["N", "Fe", "C", "O"]  # ion 1 support N, 2 the metal, 3-4 the CO adsorbate


def _gauss(e: np.ndarray, c: float, s: float, area: float) -> np.ndarray:
    return area * np.exp(-0.5 * ((e - c) / s) ** 2) / (s * np.sqrt(2 * np.pi))


def _projected(ion: int, ispin: int) -> np.ndarray:
    """[NEDOS, 9, ispin] DOS per orbital and spin for the test ions (raw energies, before E_F)."""
    out = np.zeros((ENERGIES.size, 9, ispin))
    if ion == 1:  # Fe: dz2 up at -3.5, down at -3.0 (raw); dxy both spins at 0.0
        out[:, 6, 0] = _gauss(ENERGIES, -3.5, 0.3, 1.0)
        out[:, 6, -1] += _gauss(ENERGIES, -3.0, 0.3, 1.0)
        out[:, 4, :] = _gauss(ENERGIES, 0.0, 0.3, 1.0)[:, None]
    elif ion == 2:  # C: pz at -8.5 (raw)
        out[:, 2, :] = _gauss(ENERGIES, -8.5, 0.2, 0.8)[:, None]
    elif ion == 3:  # O: px at -6.5 (raw)
        out[:, 3, :] = _gauss(ENERGIES, -6.5, 0.2, 0.9)[:, None]
    return out


def write_doscar(path: Path, *, ispin: int = 2, lorbit: int = 11, truncate: int | None = None) -> Path:
    nedos = ENERGIES.size
    head = f"  {10.0:14.8f}  {-20.0:14.8f}  {nedos:6d}  {EFERMI:14.8f}  {1.0:14.8f}"
    lines = [
        f"{len(SPECIES):8d}{len(SPECIES):8d}{1:8d}{0:8d}",
        "  0.1107E+02  0.2460E-09  0.2460E-09  0.2000E-08  0.5000E-15",
        "  1.000000000000000E-004",
        "  CAR ",
        " Fe on N-graphene + CO",
        head,
    ]
    for e in ENERGIES:
        cols = [0.0, 0.0] if ispin == 1 else [0.0, 0.0, 0.0, 0.0]
        lines.append(f"{e:12.4f}" + "".join(f"{c:12.4E}" for c in cols))
    for ion in range(len(SPECIES)):
        lines.append(head)
        proj = _projected(ion, ispin)
        for k, e in enumerate(ENERGIES):
            if lorbit == 11:
                vals = proj[k].reshape(-1)  # s_up s_down py_up py_down ... (orbital-major)
            else:
                vals = np.stack([proj[k, 0], proj[k, 1:4].sum(0), proj[k, 4:].sum(0)]).reshape(-1)
            lines.append(f"{e:12.4f}" + "".join(f"{v:12.4E}" for v in vals))
    text = "\n".join(lines[: truncate or len(lines)]) + "\n"
    path.write_text(text)
    return path


def write_poscar(path: Path) -> None:
    path.write_text(
        "Fe-NG + CO\n1.0\n10 0 0\n0 10 0\n0 0 20\nN Fe C O\n1 1 1 1\nCartesian\n"
        "1.9 0.0 10.0\n0.0 0.0 10.0\n0.0 0.0 11.8\n0.0 0.0 12.95\n"
    )


def test_reads_header_and_sums_spins(tmp_path: Path) -> None:
    d = read_doscar(write_doscar(tmp_path / "DOSCAR"))
    assert d.n_ions == 4 and d.ispin == 2 and d.efermi_ev == EFERMI
    assert d.projected is not None and d.projected.shape == (4, 301, 9)
    # Fe dz2: one state per spin -> two states spin-summed
    assert np.trapezoid(d.projected[1, :, 6], d.energy_ev) == pytest.approx(2.0, abs=1e-3)


@pytest.mark.parametrize("ispin", [1, 2])
def test_converts_to_layout_shifted_by_fermi_level(tmp_path: Path, ispin: int) -> None:
    write_doscar(tmp_path / "DOSCAR", ispin=ispin)
    edos = edos_from_vasp(tmp_path, adsorbate="CO", metal_index=2, adsorbate_indices=[3, 4])
    assert edos.shape == (4000, 9, 6) and edos.dtype == np.float32
    e = energy_grid_ev()
    dz2 = edos[:, ORBITALS.index("dz2"), 0]
    states = dz2.sum() * 0.005
    assert states == pytest.approx(2.0, abs=0.01)
    centre = float((dz2 * e).sum() / dz2.sum())
    # states at raw -3.5 and -3.0 eV (two spins, or one ISPIN=1 column) -> -2.0/-1.5 vs E_F
    assert centre == pytest.approx(-1.75, abs=0.02)
    c_pz = edos[:, ORBITALS.index("pz"), 1]
    assert e[np.argmax(c_pz)] == pytest.approx(-7.0, abs=0.01)  # C of CO on channel 1
    assert c_pz.sum() * 0.005 == pytest.approx(1.6 if ispin == 2 else 0.8, abs=0.01)
    o_px = edos[:, ORBITALS.index("px"), 2]
    assert e[np.argmax(o_px)] == pytest.approx(-5.0, abs=0.01)  # O on channel 2
    assert np.all(edos[:, :, 3:] == 0)  # zero padding
    assert np.all(edos[:, :, 0][:, [0, 1, 2, 3, 5, 7, 8]] == 0)


def test_finds_metal_and_adsorbate_from_contcar(tmp_path: Path) -> None:
    write_doscar(tmp_path / "DOSCAR")
    write_poscar(tmp_path / "CONTCAR")
    s = read_poscar(tmp_path / "CONTCAR")
    assert find_sites(s, "CO") == (1, [2, 3])
    auto = edos_from_vasp(tmp_path, adsorbate="CO")
    manual = edos_from_vasp(tmp_path, adsorbate="CO", metal_index=2, adsorbate_indices=[3, 4])
    np.testing.assert_array_equal(auto, manual)


def test_procar_projection_matches_states(tmp_path: Path) -> None:
    write_doscar(tmp_path / "DOSCAR", ispin=1)
    header = "ion      s     py     pz     px    dxy    dyz    dz2    dxz  x2-y2    tot"
    lines = ["PROCAR lm decomposed", "# of k-points:    2         # of bands:    1         # of ions:    4", ""]
    for k, w in ((1, 0.25), (2, 0.75)):
        lines += [f" k-point     {k} :    0.0 0.0 0.0     weight = {w:.8f}", "",
                  "band     1 # energy   -3.50000000 # occ.  1.00000000", "", header]
        for ion in range(1, 5):
            dz2 = 0.6 if ion == 2 else 0.0
            lines.append(f"    {ion}  0.000  0.000  0.000  0.000  0.000  0.000  {dz2:.3f}  0.000  0.000  {dz2:.3f}")
        lines += ["tot    0.000  0.000  0.000  0.000  0.000  0.000  0.600  0.000  0.000  0.600", ""]
    (tmp_path / "PROCAR").write_text("\n".join(lines))
    edos = edos_from_vasp(tmp_path, adsorbate="CO", metal_index=2, adsorbate_indices=[3, 4], source="procar")
    dz2 = edos[:, ORBITALS.index("dz2"), 0]
    # 2 electrons per band (ISPIN=1) x k-weights (sum 1) x projection 0.6 = 1.2 states at -2.0 eV
    assert dz2.sum() * 0.005 == pytest.approx(1.2, abs=0.01)
    assert energy_grid_ev()[np.argmax(dz2)] == pytest.approx(-2.0, abs=0.01)


def test_regrid_conserves_states_from_finer_and_coarser_grids() -> None:
    for step in (0.001, 0.05):
        e = np.arange(-16.0, 8.0, step)
        dos = _gauss(e, -1.0, 0.2, 3.0)
        out = regrid_edos(e, dos)
        assert out.sum() * 0.005 == pytest.approx(3.0, abs=1e-3)


def test_malformed_files_name_the_file(tmp_path: Path) -> None:
    path = write_doscar(tmp_path / "DOSCAR", truncate=700)
    with pytest.raises(CorruptFile, match="truncated") as info:
        read_doscar(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    path = write_doscar(tmp_path / "DOSCAR", lorbit=10)
    with pytest.raises(UnsupportedFile, match="LORBIT = 11"):
        read_doscar(path)
    bad = tmp_path / "garbage" / "DOSCAR"
    bad.parent.mkdir()
    bad.write_text("this is\nnot\na\nDOSCAR\nat\nall\n")
    with pytest.raises(CorruptFile, match="line 1") as info:
        read_doscar(bad)
    assert str(bad) in str(info.value)
    with pytest.raises(UnsupportedFile, match="no DOSCAR"):
        edos_from_vasp(tmp_path / "garbage" / "nothing", adsorbate="CO")
    write_doscar(tmp_path / "DOSCAR")
    with pytest.raises(CorruptFile, match=r"outside 1\.\.4"):
        edos_from_vasp(tmp_path, adsorbate="CO", metal_index=9, adsorbate_indices=[3, 4])


def test_convert_vasp_cli(tmp_path: Path) -> None:
    from tessera.app.cli.main import main
    from tessera.pipelines.catalysis.io import open_edos

    for name in ("fe_co", "broken"):
        (tmp_path / name).mkdir()
    write_doscar(tmp_path / "fe_co" / "DOSCAR")
    write_poscar(tmp_path / "fe_co" / "CONTCAR")
    write_doscar(tmp_path / "broken" / "DOSCAR", truncate=400)
    runs = tmp_path / "runs.csv"
    runs.write_text(
        "path,metal,support,adsorbate,e_ads_ev,metal_index,adsorbate_indices\n"
        "fe_co,Fe,N-graphene,CO,-0.42,,\n"
        "fe_co,Fe,N-graphene,CO,,2,3;4\n"
        "broken,Fe,N-graphene,CO,,2,3;4\n"
    )
    out = tmp_path / "vasp.h5"
    assert main(["screen", "convert-vasp", str(runs), "--out", str(out)]) == 1  # one run failed
    with open_edos(out) as ds:
        assert len(ds) == 2 and ds.metal == ["Fe", "Fe"] and ds.adsorbate == ["CO", "CO"]
        assert ds.e_ads_ev[0] == pytest.approx(-0.42) and np.isnan(ds.e_ads_ev[1])
        a, b = ds.read()
        np.testing.assert_array_equal(a, b)  # CONTCAR-located ions == the given indices
        assert a[:, ORBITALS.index("dz2"), 0].sum() * 0.005 == pytest.approx(2.0, abs=0.01)
