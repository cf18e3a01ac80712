"""`tessera run`: many inputs with a corrupt one, usage errors, and a real SIGKILL in the
middle of a run followed by a rerun that computes only what was missing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import tessera
from tessera.app.cli.main import main
from tessera.app.cli.run import input_stem


@pytest.fixture(scope="module")
def slides(synth, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-slides")
    paths = []
    for k, shape in enumerate([(1024, 1536), (768, 1280)]):
        s = synth.make_slide(shape, mpp=0.25, seed=10 + k)
        paths.append(synth.write_slide_file(root / f"slide_{k}.svs", s.image, mpp=0.25))
    bad = root / "corrupt.svs"
    bad.write_bytes(paths[0].read_bytes()[:5000])  # truncated copy
    return paths, bad


def test_many_inputs_one_corrupt(slides, plugin_dirs, tmp_path, capsys):
    good, bad = slides
    out = tmp_path / "out"
    code = main(["run", str(plugin_dirs["tile-classify"]), str(good[0]), str(bad), str(good[1]), "--out", str(out)])
    assert code == 1
    captured = capsys.readouterr()
    assert "corrupt.svs" in captured.err and "failed" in captured.err
    for p in good:
        summary = json.loads((out / p.stem / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["tiles"]["computed"] > 0
    assert not (out / "corrupt" / "summary.json").exists()
    log = [json.loads(line) for line in (out / "run.jsonl").read_text().splitlines()]
    assert [r["status"] for r in log] == ["finished", "failed", "finished"]
    assert all("seconds" in r for r in log) and log[0]["timings"]["total_s"] > 0
    # Again: finished inputs are skipped, the corrupt one fails again.
    code = main(["run", str(plugin_dirs["tile-classify"]), str(good[0]), str(bad), "--out", str(out), "--quiet"])
    assert code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    log = [json.loads(line) for line in (out / "run.jsonl").read_text().splitlines()]
    assert [r["status"] for r in log[3:]] == ["skipped", "failed"]


@pytest.mark.parametrize(
    "args",
    [
        ["run", "PLUGIN", "SLIDE"],  # no --out
        ["run", "PLUGIN", "--out", "OUT"],  # no input
        ["run", "PLUGIN", "SLIDE", "--out", "OUT", "--engine", "tensorflow"],
        ["run", "PLUGIN", "SLIDE", "--out", "OUT", "--option", "no-equals"],
        ["run", "PLUGIN", "SLIDE", "--out", "OUT", "--batch-size", "0"],
        ["run", "PLUGIN", "SLIDE", "SLIDE2", "--out", "OUT"],  # two inputs, one output folder
    ],
)
def test_usage_errors_exit_2(args, slides, plugin_dirs, tmp_path):
    good, _ = slides
    other = tmp_path / "elsewhere"
    other.mkdir()
    twin = other / good[0].name
    twin.write_bytes(b"x")
    subst = {"PLUGIN": str(plugin_dirs["tile-classify"]), "SLIDE": str(good[0]), "SLIDE2": str(twin),
             "OUT": str(tmp_path / "o")}
    assert main([subst.get(a, a) for a in args]) == 2


def test_input_stems():
    from pathlib import Path

    assert input_stem(Path("/a/b/slide.ome.tiff")) == "slide"
    assert input_stem(Path("ct.nii.gz")) == "ct"
    assert input_stem(Path("data/plate.ome.zarr")) == "plate"
    assert input_stem(Path("series_dir")) == "series_dir"
    assert input_stem(Path("x.svs")) == "x"


def _tessera(*args: str) -> list[str]:
    return [sys.executable, "-m", "tessera", *args]


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_finishes_only_the_rest(synth, test_plugins, plugin_dirs, tmp_path):
    slide = synth.make_slide((1280, 1920), mpp=0.25, seed=21)
    path = synth.write_slide_file(tmp_path / "slide.svs", slide.image, mpp=0.25)
    slow = test_plugins.make_plugin(tmp_path / "slow-plugin", "tile-classify", slow_s=0.4, plugin_id="test-slow-classify")
    out = tmp_path / "out"
    cmd = _tessera("run", str(slow), str(path), "--out", str(out), "--tiles-per-task", "4", "--quiet")
    chunks = out / "slide" / ".tessera-work" / "chunks"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if chunks.exists() and len(list(chunks.glob("*.npz"))) >= 3:
                break
            assert proc.poll() is None, proc.communicate()[1].decode()
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "slide" / "summary.json").exists()  # nothing reported finished
    marks = sorted(chunks.glob("*.npz"))
    done_tiles = sum(len(np.load(m)["tile_rc"]) for m in marks)
    assert marks and done_tiles > 0

    rerun = subprocess.run(cmd, capture_output=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr.decode()
    summary = json.loads((out / "slide" / "summary.json").read_text())
    assert summary["tiles"]["resumed"] == done_tiles
    assert summary["tiles"]["computed"] == summary["tiles"]["tissue"] - done_tiles
    assert summary["tiles"]["computed"] > 0

    ref_out = tmp_path / "reference"
    ref = subprocess.run(_tessera("run", str(plugin_dirs["tile-classify"]), str(path), "--out", str(ref_out),
                                  "--tiles-per-task", "4", "--quiet"), capture_output=True, timeout=300)
    assert ref.returncode == 0, ref.stderr.decode()

    def heat(folder):
        return np.asarray(tessera.open(folder / "slide" / "heatmap.ome.zarr").levels[0].compute(scheduler="sync"))

    assert np.array_equal(heat(out), heat(ref_out))
    assert (out / "slide" / "tiles.csv").read_text() == (ref_out / "slide" / "tiles.csv").read_text()
    assert not (out / "slide" / ".tessera-work").exists()
