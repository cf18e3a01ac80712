"""What every runner shares: run options, how workers get the source and the model,
and the summary that marks an input as finished.

Work runs in dask tasks, possibly in other processes or on other machines, so what a
task needs travels as small picklable *specs*, and each worker process opens the real
thing once and keeps it:
- ``SourceRef``: reopens the input with ``tessera.open`` (files), or carries an
  in-memory Source (arrays built in Python, tests).
- ``PluginPredictor``: plugin id or folder + engine + device; the worker calls
  ``get_plugin`` and ``create_engine`` (cached per process) and applies the plugin's
  processing hooks, so the predictor is ``uint8 tiles -> float32 probabilities``.

Any callable with the same contract can stand in for ``PluginPredictor`` (a numpy
function in tests, a torch model): runners take a predictor like MONAI's
``sliding_window_inference`` does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from tessera.pipelines.sources.base import Source
from tessera.pipelines.tiling.tissue import TissueOptions
from tessera.pipelines.writers.atomic import write_text_atomic

if TYPE_CHECKING:
    from tessera.pipelines.plugin_system import Plugin

SUMMARY_NAME = "summary.json"
WORK_DIR_NAME = ".tessera-work"


@dataclass(frozen=True)
class RunOptions:
    """How one ``tessera run`` executes; the same for every input of the run.

    Attributes:
        engine: "onnx" (ONNX Runtime) or "torch".
        device: "cpu", "cuda", "cuda:1", "mps"...
        batch_size: tiles/windows per model call; None: the manifest's ``input.batch_size``.
        scheduler: None or "threads": dask's threaded scheduler in this process (the
            default: fastest here, see README "Batch throughput");
            "local-cluster": a dask.distributed LocalCluster of worker processes;
            anything else: the address of a dask.distributed scheduler ("tcp://host:8786").
        workers: local worker threads/processes; None: the number of CPU cores.
        tiles_per_task: tiles each task reads and runs (a square block of the grid);
            None: 4 x the batch size.
        engine_threads: ONNX Runtime intra-op threads per engine; None: cores / local
            workers (see ``effective_engine_threads``).
        resume: keep finished chunks (and finished inputs) of an earlier run with the
            same inputs, model and settings; False starts afresh.
        tissue: how the tissue/foreground mask is made and used.
        truth: a reference label image to score the result against (segment-3d).
        extra: plugin-specific options (``--option key=value``).
    """

    engine: Literal["onnx", "torch"] = "onnx"
    device: str = "cpu"
    batch_size: int | None = None
    scheduler: str | None = None
    workers: int | None = None
    tiles_per_task: int | None = None
    engine_threads: int | None = None
    resume: bool = True
    tissue: TissueOptions = field(default_factory=TissueOptions)
    truth: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def effective_batch_size(self, manifest_batch_size: int) -> int:
        return int(self.batch_size or manifest_batch_size)

    def effective_tiles_per_task(self, batch_size: int) -> int:
        return int(self.tiles_per_task or max(16, 4 * batch_size))

    def effective_workers(self) -> int:
        return int(self.workers or os.cpu_count() or 1)

    def effective_engine_threads(self) -> int | None:
        """ONNX Runtime threads per engine. Locally, cores / workers: each worker thread
        (or LocalCluster process) runs its own model calls, so more would oversubscribe
        the cores (measured: README "Batch throughput"). On a remote cluster, the
        engine's default (its machine's physical cores) unless set."""
        if self.engine_threads:
            return int(self.engine_threads)
        if self.scheduler in (None, "", "threads", "sync", "local-cluster"):
            from tessera.pipelines.engines.devices import physical_cores

            workers = 1 if self.scheduler == "sync" else self.effective_workers()
            return max(1, physical_cores() // workers)
        return None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["truth"] = None if self.truth is None else str(self.truth)
        return d


@dataclass(frozen=True)
class ModelInfo:
    """What a runner needs to know about a model, from its manifest (or set by hand in
    tests): classes in model order as (name, #rrggbb), the class a heatmap is about, and
    the input geometry."""

    id: str
    version: str
    task: str
    classes: tuple[tuple[str, str], ...]
    positive_class: str | None
    size_px: tuple[int, ...]
    target_mpp: float | None = None
    target_spacing_mm: tuple[float, ...] | None = None
    overlap: float = 0.0
    batch_size: int = 16

    @classmethod
    def from_manifest(cls, manifest: Any) -> ModelInfo:
        spec = manifest.input
        return cls(
            id=manifest.id,
            version=manifest.version,
            task=manifest.task,
            classes=tuple((c.name, c.colour) for c in manifest.output.classes),
            positive_class=manifest.output.positive_class,
            size_px=tuple(int(s) for s in spec.size_px),
            target_mpp=spec.mpp,
            target_spacing_mm=None if spec.target_spacing_mm is None else tuple(spec.target_spacing_mm),
            overlap=float(spec.overlap),
            batch_size=int(spec.batch_size),
        )

    @property
    def class_names(self) -> list[str]:
        return [c[0] for c in self.classes]

    @property
    def positive_index(self) -> int | None:
        return None if self.positive_class is None else self.class_names.index(self.positive_class)


# ---- sources in workers ------------------------------------------------------------------
_SOURCES: dict[tuple, Source] = {}
_SOURCES_LOCK = threading.Lock()


@dataclass(frozen=True)
class SourceRef:
    """How a worker gets the input Source.

    In this process it is the live Source itself (no reopening, handles closed with
    it). Pickled for another process, a file-backed Source travels as its path and
    reader name, reopened there once per process; an in-memory Source (reader
    "memory", arrays built in Python) travels whole.
    """

    path: str
    reader: str | None = None
    live: Source | None = None

    @classmethod
    def of(cls, source: Source) -> SourceRef:
        path = Path(source.path)
        return cls(path=str(path.resolve()) if path.exists() else str(path), reader=source.reader, live=source)

    @property
    def travels_whole(self) -> bool:
        """True when pickling carries the pixels (in-memory sources)."""
        return self.live is not None and (self.reader == "memory" or not Path(self.path).exists())

    def __reduce__(self):
        return (SourceRef, (self.path, self.reader, self.live if self.travels_whole else None))

    def open(self) -> Source:
        """The Source: the live one, or opened once per process and kept."""
        if self.live is not None:
            return self.live
        key = (self.path, self.reader)
        with _SOURCES_LOCK:
            src = _SOURCES.get(key)
            if src is None:
                import tessera

                src = tessera.open(self.path, reader=self.reader)
                if len(_SOURCES) >= 8:  # a worker serves few inputs at a time
                    _SOURCES.pop(next(iter(_SOURCES))).close()
                _SOURCES[key] = src
            return src


# ---- predictors --------------------------------------------------------------------------
class TilePredictor(Protocol):
    """uint8 (or source dtype) tiles [N, H, W, C] -> float32 probabilities:
    [N, K] for tile-classify, [N, K, H, W] for segment-2d."""

    def __call__(self, tiles: np.ndarray) -> np.ndarray: ...


_PREDICTORS: dict[tuple, Any] = {}
_PREDICTORS_LOCK = threading.Lock()


@dataclass(frozen=True)
class PluginPredictor:
    """A plugin's model with its processing hooks, as a picklable predictor.

    Calling it in any process loads the plugin and its engine there (once per process:
    ``create_engine`` caches) and applies ``preprocess -> engine.run -> postprocess``
    from the plugin's processing module, or the task kind's defaults.
    """

    plugin_ref: str  # plugin id or folder
    task: str
    engine: str = "onnx"
    device: str = "cpu"
    role: str = "model"
    threads: int | None = None  # ONNX Runtime intra-op threads; None: the engine's default

    def _loaded(self) -> tuple[Any, Callable, Callable, Any]:
        key = (self.plugin_ref, self.task, self.engine, self.device, self.role, self.threads)
        with _PREDICTORS_LOCK:
            hit = _PREDICTORS.get(key)
            if hit is None:
                from tessera.pipelines.engines import create_engine
                from tessera.pipelines.plugin_system import get_plugin

                plugin = get_plugin(self.plugin_ref)
                kw = {"threads": self.threads} if self.threads and self.engine == "onnx" else {}
                engine = create_engine(plugin, engine=self.engine, device=self.device, role=self.role, **kw)
                pre, post = processing_hooks(plugin, self.task)
                hit = (plugin.manifest, pre, post, engine)
                _PREDICTORS[key] = hit
            return hit

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        manifest, pre, post, engine = self._loaded()
        outputs = engine.run(pre(batch, manifest))
        return np.asarray(post(outputs, manifest), dtype=np.float32)

    @property
    def description(self) -> str:
        return str(getattr(self._loaded()[3], "description", self.engine))


def processing_hooks(plugin: Plugin, task: str) -> tuple[Callable, Callable]:
    """(preprocess, postprocess) for ``task``: the plugin's own, else the task defaults."""
    from tessera.pipelines.errors import PluginError
    from tessera.pipelines.plugin_system.tasks import processing_function

    pre = processing_function(plugin, "preprocess")
    post = processing_function(plugin, "postprocess")
    if pre is None or post is None:
        msg = f"plugin {plugin.id!r} has no preprocess/postprocess for task {task!r}"
        raise PluginError(msg)
    return pre, post


def plugin_ref(plugin: Plugin) -> str:
    """How a worker finds ``plugin`` again: its id when registered, else its folder."""
    try:
        from tessera.pipelines.plugin_system import get_plugin

        if Path(get_plugin(plugin.id).root).resolve() == Path(plugin.root).resolve():
            return plugin.id
    except Exception:  # an unregistered plugin loaded by path
        pass
    return str(Path(plugin.root).resolve())


def model_fingerprint(plugin: Plugin) -> dict[str, Any]:
    """What identifies the model's results: plugin id, version and its files' sha256."""
    m = plugin.manifest
    return {
        "plugin": m.id,
        "version": m.version,
        "files": sorted(f"{f.role}:{f.format}:{f.sha256}" for f in m.files),
        "params": m.params,
    }


# ---- memory ---------------------------------------------------------------------------------
_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
_HEAP_BOUNDED = False


def _libc():
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl): nothing to tune
        return None


def bound_heap() -> None:
    """Keep large buffers out of the heap for the rest of the process (glibc only).

    glibc serves big allocations with mmap (returned to the OS on free) until one is
    freed; then it raises its mmap threshold to that size (up to 32 MB) and serves such
    sizes from the heap, which it rarely gives back. Numpy temporaries of a few MB
    then pile up: the peak memory of a run grew with the number of tiles (the output
    phase of a 60k x 60k slide). A fixed threshold keeps every buffer over 256 KB in
    its own mapping.
    """
    global _HEAP_BOUNDED
    if _HEAP_BOUNDED:
        return
    libc = _libc()
    if libc is not None:
        with contextlib.suppress(AttributeError):
            libc.mallopt(_M_MMAP_THRESHOLD, 256 * 1024)
    _HEAP_BOUNDED = True


def release_free_memory() -> None:
    """Give freed heap pages back to the OS between phases of a run (glibc only);
    ``malloc_trim(0)`` is what dask.distributed calls on its workers for the same reason."""
    libc = _libc()
    if libc is not None:
        with contextlib.suppress(AttributeError):
            libc.malloc_trim(0)


# ---- identity and completion ---------------------------------------------------------------
def input_fingerprint(path: Path) -> dict[str, Any]:
    """Identity of an input file or folder: resolved path, size and modification time."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return {"path": str(p)}
    return {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def signature_of(parts: dict[str, Any]) -> str:
    """A short stable hash of a JSON-able dict (what produced a result)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def finished_summary(out_dir: Path, signature: str) -> dict[str, Any] | None:
    """The summary of a finished earlier run with the same signature, or None."""
    path = Path(out_dir) / SUMMARY_NAME
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return summary if summary.get("signature") == signature else None


def clear_summary(out_dir: Path) -> None:
    """Forget that ``out_dir`` was finished (before its outputs are rewritten)."""
    (Path(out_dir) / SUMMARY_NAME).unlink(missing_ok=True)


def write_summary(out_dir: Path, summary: dict[str, Any]) -> Path:
    """Write summary.json last: its presence (with the run's signature) marks the
    input as finished."""
    path = Path(out_dir) / SUMMARY_NAME
    write_text_atomic(path, json.dumps(summary, indent=2, default=_json_default) + "\n")
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    msg = f"not JSON serialisable: {type(obj).__name__}"
    raise TypeError(msg)
