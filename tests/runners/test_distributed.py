"""The same graph on a real dask.distributed cluster (scheduler + 2 worker processes on
loopback): a worker killed mid-run loses nothing, and the result equals a local run."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

import tessera
from tessera.pipelines.plugin_system import get_plugin
from tessera.pipelines.progress import RecordingProgress
from tessera.pipelines.runners.base import RunOptions
from tessera.pipelines.runners.registry import runner_for

pytestmark = pytest.mark.slow


def test_killed_worker_result_is_complete_and_identical(synth, test_plugins, plugin_dirs, tmp_path):
    from distributed import Client, LocalCluster

    slide = synth.make_slide((768, 1280), mpp=0.25, seed=31)
    path = synth.write_slide_file(tmp_path / "slide.svs", slide.image, mpp=0.25)
    slow = get_plugin(test_plugins.make_plugin(tmp_path / "slow", "segment-2d", slow_s=0.25, plugin_id="test-slow-seg"))
    run = runner_for("segment-2d")
    out = tmp_path / "cluster"
    chunks = out / ".tessera-work" / "chunks"
    result: dict = {}

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        options = RunOptions(scheduler=cluster.scheduler_address, tiles_per_task=4)

        def go():
            try:
                result["summary"] = run(path, slow, out, options=options, progress=RecordingProgress(),
                                        cancel=threading.Event())
            except BaseException as exc:  # reported below
                result["error"] = exc

        worker = threading.Thread(target=go)
        worker.start()
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not (chunks.exists() and len(list(chunks.glob("*.npz"))) >= 2):
                assert worker.is_alive(), result.get("error")
                time.sleep(0.05)
            with Client(cluster.scheduler_address, set_as_default=False) as client:
                pids = client.run(os.getpid)
                victim = next(iter(pids.values()))
                os.kill(victim, signal.SIGKILL)
                n_before = len(list(chunks.glob("*.npz")))
        finally:
            worker.join(timeout=240)
    assert "error" not in result, result.get("error")
    summary = result["summary"]
    assert n_before < summary["tiles"]["tissue"]  # killed while work was left
    assert summary["tiles"]["computed"] == summary["tiles"]["tissue"]

    local = run(path, get_plugin(plugin_dirs["segment-2d"]), tmp_path / "local", options=RunOptions(tiles_per_task=4),
                progress=RecordingProgress(), cancel=threading.Event())
    assert local["classes"] == summary["classes"]

    def arrays(folder):
        img = tessera.open(folder / "segmentation.ome.zarr")
        lab = tessera.open(folder / "segmentation.ome.zarr/labels/classes")
        return (np.asarray(img.levels[0].compute(scheduler="sync")),
                np.asarray(lab.levels[0].compute(scheduler="sync")))

    for a, b in zip(arrays(out), arrays(tmp_path / "local"), strict=True):
        assert np.array_equal(a, b)
