"""Per-chunk completion marks, so a killed run resumes where it stopped.

Layout (inside an input's output folder)::

    .tessera-work/
        state.json          # signature of what produces the chunks (input, model, grid...)
        chunks/<id>.npz     # one finished task: its small results; written last by the task
        ...                 # runner-specific work files (segment-2d rasters in zarr)

A task writes its outputs first and its ``chunks/<id>.npz`` last, under a temporary name
renamed into place, so the file's existence means "this chunk is finished" whatever
process wrote it and however the run ended (Ctrl-C, kill -9, a dead dask worker). On a
rerun with the same signature the finished chunks are skipped; with another signature
(different model, settings or input) or ``resume=False`` the folder is wiped first.
The work folder is deleted once the input's final outputs and summary are written.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tessera.pipelines.writers.atomic import atomic_path, remove_temporaries, write_text_atomic


@dataclass(frozen=True)
class ChunkLedger:
    """Finished-chunk records in ``root`` (picklable: workers write their own marks)."""

    root: Path

    @property
    def chunk_dir(self) -> Path:
        return Path(self.root) / "chunks"

    @classmethod
    def open(cls, root: Path, signature: str, *, resume: bool) -> tuple[ChunkLedger, bool]:
        """Prepare ``root`` for a run with ``signature``; returns (ledger, resumed).

        ``resumed`` is True when earlier finished chunks of the same signature are kept.
        """
        root = Path(root)
        state = root / "state.json"
        resumed = False
        if root.exists():
            try:
                same = json.loads(state.read_text()).get("signature") == signature
            except (OSError, ValueError):
                same = False
            if resume and same:
                resumed = True
                remove_temporaries(root / "chunks")
            else:
                shutil.rmtree(root)
        if not resumed:
            (root / "chunks").mkdir(parents=True, exist_ok=True)
            write_text_atomic(state, json.dumps({"signature": signature}) + "\n")
        return cls(root), resumed

    def is_done(self, chunk_id: str) -> bool:
        return (self.chunk_dir / f"{chunk_id}.npz").exists()

    def done_ids(self) -> set[str]:
        return {p.stem for p in self.chunk_dir.glob("*.npz") if not p.name.startswith(".")}

    def save(self, chunk_id: str, arrays: dict[str, np.ndarray]) -> None:
        """Record a finished chunk with its small results (the completion mark)."""
        with atomic_path(self.chunk_dir / f"{chunk_id}.npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    def load(self, chunk_id: str) -> dict[str, np.ndarray]:
        with np.load(self.chunk_dir / f"{chunk_id}.npz") as data:
            return {k: data[k] for k in data.files}

    def discard(self) -> None:
        """Delete the work folder (after the final outputs are written)."""
        shutil.rmtree(self.root, ignore_errors=True)
