"""``tessera bench read``: both paths timed on the same tiles, pixels compared, JSON shape.

No timing is asserted (timings live in the benchmark's output, never in tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tessera.app.cli.main import main
from tessera.pipelines.bench.read import FAST, OPENSLIDE, bench_read
from tessera.pipelines.errors import UnsupportedFile


def test_bench_read_json(svs_ycbcr: Path, capsys) -> None:
    code = main(["bench", "read", str(svs_ycbcr), "--tiles", "6", "--repeats", "2",
                 "--threads", "1,2", "--json"])  # fmt: skip
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["identical_pixels"] is True and out["checked_tiles"] == 6
    assert out["tile_yx"] == [256, 256] and out["compression"] == "JPEG"
    runs = {(t["path"], t["threads"]): t for t in out["timings"]}
    assert set(runs) == {(p, n) for p in (FAST, OPENSLIDE) for n in (1, 2)}
    for t in runs.values():
        assert len(t["round_times_s"]) == 2 and t["tiles_per_s"] > 0 and t["mb_per_s"] > 0
        assert t["tile_bytes"] == 256 * 256 * 3
    assert set(out["ratio_fast_over_openslide"]) == {"1", "2"}


def test_bench_read_uses_fresh_tiles_each_round(svs_ycbcr: Path) -> None:
    result = bench_read(svs_ycbcr, tiles=5, threads=(1,), repeats=3, level=1)
    assert result.level == 1 and result.identical_pixels
    assert result.timing(FAST, 1).n_tiles == 5


def test_bench_read_refuses_what_the_fast_path_declines(tmp_path: Path) -> None:
    import numpy as np
    import tifffile

    path = tmp_path / "grey.tif"
    tifffile.imwrite(path, np.zeros((64, 64), np.uint16), tile=(32, 32))
    with pytest.raises(UnsupportedFile, match="fast path"):
        bench_read(path, tiles=2, repeats=1)
