"""Results ``tessera run`` already wrote for a file, reused by the live overlay.

A batch run leaves, per input, ``<out>/<stem>/summary.json`` (written last, so its
presence means finished), ``tiles.csv`` (tile-classify: per-tile probabilities) and,
for segment-2d, ``segmentation.ome.zarr`` (uint8 probabilities at the model's µm/px).
The viewer opening the same file with the same plugin shows those instead of running
the model again, as long as they are for this very file (same resolved path, results
newer than the file) and this model (id and version) on the same tile grid.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tessera.pipelines.runners.base import SUMMARY_NAME
from tessera.pipelines.runners.tiled import RASTER_NAME
from tessera.pipelines.tiling.grid import TileGrid

log = logging.getLogger(__name__)

#: At most this many summary.json files are read while looking (a folder of thousands
#: of run outputs must not stall opening a slide).
MAX_CANDIDATES = 500


@dataclass(frozen=True)
class RunOutput:
    """One finished ``tessera run`` output folder and its summary."""

    folder: Path
    summary: dict[str, Any]

    @property
    def task(self) -> str:
        return str(self.summary.get("plugin", {}).get("task", ""))

    def grid_matches(self, grid: TileGrid) -> bool:
        """True when the run used the same tiles (size, stride, resolution, slide size)."""
        g = self.summary.get("grid", {})
        mine = grid.describe()
        keys = ("l0_shape_yx", "tile_px", "stride_px", "grid_shape")
        if any(list(g.get(k, [])) != list(mine[k]) for k in keys):
            return False
        theirs = g.get("target_downsample_yx") or []
        return len(theirs) == 2 and all(
            abs(float(a) - float(b)) <= 1e-4 * max(1.0, abs(float(b)))
            for a, b in zip(theirs, mine["target_downsample_yx"], strict=True)
        )

    def tile_probabilities(self, class_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(tile_rc int32 [N, 2], float32 [N, K]) from ``tiles.csv`` (tile-classify), or
        for segment-2d the analysed tiles with their class fractions."""
        path = self.folder / self.summary.get("outputs", {}).get("table", "tiles.csv")
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = [f"prob_{n}" for n in class_names]
            if reader.fieldnames is None or any(c not in reader.fieldnames for c in columns):
                columns = [f"fraction_{n}" for n in class_names]
            rc, probs = [], []
            for row in reader:
                rc.append((int(row["tile_row"]), int(row["tile_col"])))
                probs.append([float(row.get(c) or "nan") for c in columns])
        return (np.asarray(rc, dtype=np.int32).reshape(-1, 2),
                np.asarray(probs, dtype=np.float32).reshape(-1, len(class_names)))

    def segmentation_array(self) -> Any | None:
        """The segment-2d probability raster (zarr array (K, Y, X) uint8), or None."""
        path = self.folder / self.summary.get("outputs", {}).get("segmentation", RASTER_NAME) / "0"
        if not path.exists():
            return None
        import zarr

        return zarr.open_array(path, mode="r")


def find_run_output(
    source_path: Path,
    plugin_id: str,
    plugin_version: str,
    *,
    search: Iterable[Path] = (),
    near_source: bool = True,
) -> RunOutput | None:
    """The newest finished run output for ``source_path`` made by this plugin version.

    Looks in each folder of ``search`` (the folder itself, and its subfolders: a
    ``tessera run --out DIR`` folder) and, with ``near_source``, in the source's folder
    and two levels below it. Only summaries whose folder name starts like the file's
    name are read, and at most ``MAX_CANDIDATES`` of them.
    """
    source_path = Path(source_path)
    try:
        target = source_path.resolve()
        source_mtime = source_path.stat().st_mtime
    except OSError:
        return None
    prefix = source_path.name.split(".")[0].lower()
    candidates: list[Path] = []
    for folder in search:
        folder = Path(folder)
        candidates.append(folder / SUMMARY_NAME)
        candidates.extend(folder.glob(f"*/{SUMMARY_NAME}"))
    if near_source:
        parent = source_path.parent
        for pattern in (f"*/{SUMMARY_NAME}", f"*/*/{SUMMARY_NAME}"):
            candidates.extend(p for p in parent.glob(pattern) if p.parent.name.lower().startswith(prefix))
    best: RunOutput | None = None
    best_time = -1.0
    seen: set[Path] = set()
    for path in candidates[:MAX_CANDIDATES]:
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
            mtime = path.stat().st_mtime
        except (OSError, ValueError):
            continue
        if summary.get("status") != "finished":
            continue
        plugin = summary.get("plugin") or {}
        if plugin.get("id") != plugin_id or plugin.get("version") != plugin_version:
            continue
        try:
            if Path(summary.get("input", "")).resolve() != target:
                continue
        except OSError:
            continue
        if mtime < source_mtime:
            log.info("ignoring %s: older than %s", path, source_path)
            continue
        if mtime > best_time:
            best, best_time = RunOutput(folder=path.parent, summary=summary), mtime
    return best
