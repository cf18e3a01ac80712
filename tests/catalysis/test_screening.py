"""Screening end to end on synthetic data with a noise-free oracle predictor (no weights needed)."""

from __future__ import annotations

import csv
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from sac_oracle import METALS, SUPPORTS, OraclePredictor

from tessera.pipelines.catalysis.che import DEFAULT_CORRECTIONS_EV, STEP_LABELS, CheSettings
from tessera.pipelines.catalysis.explain import occlusion_scan, shift_orbitals, shifting_experiment
from tessera.pipelines.catalysis.io import open_edos
from tessera.pipelines.catalysis.screening import screen_energies
from tessera.pipelines.progress import NullProgress, RecordingProgress
from tessera.pipelines.synthetic.edos import EnergyModel


class _FakePlugin:
    """Just what the runner reads from a plugin when a predictor is given."""

    class manifest:
        id = "oracle"
        version = "0"
        task = "spectra-regress"
        params: dict = {}  # noqa: RUF012
        files: list = []  # noqa: RUF012

        class input:
            batch_size = 32


def _run(small_edos: Path, out: Path, predictor: OraclePredictor, **extra) -> dict:
    from tessera.pipelines.runners.base import RunOptions
    from tessera.pipelines.runners.spectra_regress import run

    return run(small_edos, _FakePlugin(), out, options=RunOptions(extra=extra), progress=RecordingProgress(),
               cancel=threading.Event(), predictor=predictor)


@pytest.fixture(scope="module")
def screened(small_edos: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("screen")
    return out, _run(small_edos, out, OraclePredictor(), top=3)


def test_scaling_fit_recovers_generator_coefficients(small_edos: Path) -> None:
    oracle = OraclePredictor()
    with open_edos(small_edos) as ds:
        pred = oracle(ds.read())
        result = screen_energies(ds.metal, ds.support, ds.adsorbate, pred)
    em, k = EnergyModel(), DEFAULT_CORRECTIONS_EV
    for z, (a, b, c) in em.scaling.items():
        fit = result.fits[z]
        # G-space slopes equal the generator's E-space ones; intercepts shift by the corrections
        assert fit.a_co == pytest.approx(a, abs=0.01), z
        assert fit.b_oh == pytest.approx(b, abs=0.01), z
        assert fit.c_ev == pytest.approx(c + k[z] - a * k["CO"] - b * k["OH"], abs=0.01), z
        assert fit.r2 > 0.999


@pytest.mark.slow  # shares the ~15 s CPU screening fixture
def test_ranked_csv_is_consistent_che(screened: tuple[Path, dict]) -> None:
    out, summary = screened
    rows = list(csv.DictReader((out / "ranked_candidates.csv").open()))
    assert len(rows) == len(METALS) * len(SUPPORTS) == summary["n_candidates"]
    assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    u = np.array([float(r["U_L_V_vs_RHE"]) for r in rows])
    assert np.all(np.diff(u) <= 1e-9)  # best (least negative) first
    assert u.min() > -2.5 and u.max() < 0.0
    for r in rows:
        steps = np.array([float(r[f"dG{i}_eV"]) for i in range(1, 9)])
        assert float(r["U_L_V_vs_RHE"]) == pytest.approx(-steps.max(), abs=2e-4)
        assert r["limiting_step"] == STEP_LABELS[int(np.argmax(steps))]
        assert steps.sum() == pytest.approx(-1.35, abs=1e-3)
        assert r["source"] == "direct"
        # G = E + (ZPE - TS) correction, per adsorbate
        for z in ("CO", "OH", "COOH"):
            assert float(r[f"G_{z}_eV"]) == pytest.approx(float(r[f"E_{z}_eV"]) + DEFAULT_CORRECTIONS_EV[z], abs=2e-4)
    # the hand-computed path of the best candidate: first step is G_COOH
    best = rows[0]
    assert float(best["dG1_eV"]) == pytest.approx(float(best["G_COOH_eV"]), abs=2e-4)
    # d10 metals bind everything weakly: never near the top
    assert all(r["metal"] != "Zn" for r in rows[:6])
    assert {r["limiting_step"] for r in rows} >= {"CO2 → *COOH", "*OH → * + H2O"}


@pytest.mark.slow  # shares the ~15 s CPU screening fixture
def test_fits_json_and_summary(screened: tuple[Path, dict]) -> None:
    out, summary = screened
    fits = json.loads((out / "fits.json").read_text())
    assert fits["che"]["equilibrium_potential_v_rhe"] == pytest.approx(0.16875)
    assert set(fits["scaling"]["fits"]) >= {"COOH", "CHO", "CH2O", "OCH3", "O", "CO", "OH"}
    assert fits["scaling"]["fits"]["O"]["b_oh"] == pytest.approx(1.6, abs=0.01)
    apex = fits["volcano"]["apex"]
    best = json.loads((out / "summary.json").read_text())["best"][0]
    assert apex["U_L_V_vs_RHE"] >= best["U_L_V_vs_RHE"] - 0.05  # nothing beats the map's apex
    assert summary["mae_vs_reference_ev"] == pytest.approx(0.04, abs=0.015)  # the generator's noise
    preds = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(preds) == summary["n_samples"] == 198


@pytest.mark.slow
@pytest.mark.parametrize(
    "stem", ["volcano", "scaling_relations", "periodic_tables", "periodic_table_BN", "periodic_table_N-graphene",
             "free_energy_top"],
)
def test_figures_written_and_not_blank(screened: tuple[Path, dict], stem: str) -> None:
    from PIL import Image

    out, _ = screened
    with Image.open(out / f"{stem}.png") as im:
        px = np.asarray(im.convert("RGB"), dtype=float)
    assert px.shape[0] > 300 and px.shape[1] > 600
    assert px.std() > 20  # drawn content, not an empty canvas
    svg = (out / f"{stem}.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    if stem.startswith("periodic_table"):
        assert "Fe" in svg and "Pt" in svg  # element symbols are text in the SVG
    if stem == "volcano":
        assert "V vs RHE" in svg


@pytest.mark.slow  # shares the ~15 s CPU screening fixture
def test_top_free_energy_diagrams(screened: tuple[Path, dict]) -> None:
    out, summary = screened
    diagrams = sorted(out.glob("free_energy_0*.png"))
    assert len(diagrams) == 3  # --top 3
    first = summary["best"][0]
    assert diagrams[0].name.startswith(f"free_energy_01_{first['metal']}_")


@pytest.mark.slow  # shares the ~15 s CPU screening fixture
def test_resume_skips_finished_run(small_edos: Path, screened: tuple[Path, dict]) -> None:
    out, summary = screened
    again = OraclePredictor()
    assert _run(small_edos, out, again, top=3) == summary
    assert again.calls == 0


def test_missing_intermediates_come_from_scaling(small_edos: Path) -> None:
    oracle = OraclePredictor()
    with open_edos(small_edos) as ds:
        pred = oracle(ds.read())
        keep = [i for i in range(len(ds)) if not (ds.metal[i] == "Fe" and ds.adsorbate[i] in ("CHO", "CH2O"))]
        cols = [[getattr(ds, k)[i] for i in keep] for k in ("metal", "support", "adsorbate")]
        full = screen_energies(ds.metal, ds.support, ds.adsorbate, pred)
    part = screen_energies(*cols, pred[keep])
    fe = part.candidate("Fe", "BN")
    assert fe.source == "scaling" and np.isfinite(fe.u_l_v)
    assert fe.u_l_v == pytest.approx(full.candidate("Fe", "BN").u_l_v, abs=0.02)


def test_custom_corrections_move_u_l(small_edos: Path) -> None:
    oracle = OraclePredictor()
    with open_edos(small_edos) as ds:
        pred = oracle(ds.read())
        base = screen_energies(ds.metal, ds.support, ds.adsorbate, pred)
        corr = dict(DEFAULT_CORRECTIONS_EV, COOH=DEFAULT_CORRECTIONS_EV["COOH"] + 0.3)
        worse = screen_energies(ds.metal, ds.support, ds.adsorbate, pred, settings=CheSettings(corrections_ev=corr))
    for c in base.candidates:
        w = worse.candidate(c.metal, c.support)
        if c.limiting_step == "CO2 → *COOH":
            assert w.u_l_v == pytest.approx(c.u_l_v - 0.3, abs=1e-9)
        assert w.u_l_v <= c.u_l_v + 1e-12


def test_shifting_and_occlusion_with_oracle(small_edos: Path) -> None:
    oracle = OraclePredictor()
    alpha = EnergyModel().coefficients()
    with open_edos(small_edos) as ds:
        i = ds.find("Fe", "BN", "CO")
        edos = ds.read(i, i + 1)[0]
    shift = shifting_experiment(edos, oracle)
    slopes = shift.slopes()
    assert slopes["all d"] == pytest.approx(alpha["CO"]["alpha"], abs=1e-3)  # rigid shift: eps_d moves 1:1
    assert shift.slopes_vs_eps_d()["all d"] == pytest.approx(alpha["CO"]["alpha"], abs=1e-3)
    assert all(v < 0 for v in slopes.values())  # any d orbital moving up binds CO more strongly
    moved = shift_orbitals(edos, 0.5, ["dz2"])
    e = np.arange(4000)
    assert np.allclose((moved[:, 6, 0] * e).sum() / moved[:, 6, 0].sum() - (edos[:, 6, 0] * e).sum() / edos[:, 6, 0].sum(), 100, atol=0.5)
    occ = occlusion_scan(edos, oracle, window_ev=1.0, stride_ev=0.5)
    assert occ.delta_ev.shape == (10, occ.centres_ev.size)
    s_row = occ.targets.index("s")
    assert np.allclose(occ.delta_ev[s_row], 0.0)  # the oracle ignores s states
    far = np.abs(occ.centres_ev - float(shift.eps_d_ev[0, 10])) > 4.0
    assert np.allclose(occ.delta_ev[0, far], 0.0) and np.abs(occ.delta_ev[0, ~far]).max() > 0.05


def test_progress_reported(small_edos: Path) -> None:
    from tessera.pipelines.catalysis.screening import predict_dataset

    rec = RecordingProgress()
    with open_edos(small_edos) as ds:
        pred = predict_dataset(ds, OraclePredictor(), batch_size=50, progress=rec)
    assert rec.total == 198 and rec.done == 198 and rec.closed and pred.shape == (198,)
    cancel = threading.Event()
    cancel.set()
    from tessera.pipelines.progress import Cancelled

    with open_edos(small_edos) as ds, pytest.raises(Cancelled):
        predict_dataset(ds, OraclePredictor(), progress=NullProgress(), cancel=cancel)
