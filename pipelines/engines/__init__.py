"""Inference engines: ONNX Runtime (default) and torch, behind one ``Engine`` interface.

>>> engine = create_engine(plugin, engine="onnx", device="cpu")   # doctest: +SKIP
>>> engine.run({"input": batch_nchw})["logits"].shape              # doctest: +SKIP
(16, 2)

``create_engine`` keeps one engine per process per (plugin folder, role, engine,
device, size variant, threads): tile workers, the viewer and the batch runner share a
session instead of loading the weights again. Importing this package imports neither
torch nor onnxruntime; each engine imports its runtime when first created.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tessera.pipelines.engines.base import Engine, ParityReport
from tessera.pipelines.engines.checkpoints import load_state_dict
from tessera.pipelines.engines.export import export_onnx
from tessera.pipelines.errors import EngineError, PluginError

if TYPE_CHECKING:  # pragma: no cover
    from tessera.pipelines.plugin_system.registry import Plugin

__all__ = [
    "Engine",
    "ParityReport",
    "clear_engine_cache",
    "create_engine",
    "engines_available",
    "export_onnx",
    "load_state_dict",
]

_lock = threading.Lock()
_engines: dict[tuple, Engine] = {}
_creating: dict[tuple, threading.Lock] = {}


def create_engine(
    plugin: Plugin,
    *,
    engine: Literal["onnx", "torch"] = "onnx",
    device: str = "cpu",
    role: str = "model",
    size_variant: str | None = None,
    threads: int | None = None,
    weights: Path | str | None = None,
) -> Engine:
    """The (cached) engine running ``plugin``'s model for ``role`` on ``device``.

    ``device``: cpu, cuda[:N], tensorrt, openvino, coreml, mps, directml or auto (see
    ``engines.devices``); an explicitly requested accelerator that does not start is an
    EngineError, never a silent CPU run. ``threads``: ONNX Runtime intra-op threads
    (default: physical cores). ``weights``: a user checkpoint for the torch engine.
    """
    if engine not in ("onnx", "torch"):
        msg = f"unknown engine {engine!r}; use 'onnx' or 'torch'"
        raise EngineError(msg)
    key = (plugin.id, str(plugin.root), role, engine, device, size_variant, threads,
           None if weights is None else str(Path(weights).resolve()))
    with _lock:
        cached = _engines.get(key)
        if cached is not None:
            return cached
        creating = _creating.setdefault(key, threading.Lock())
    with creating:  # two threads asking at once build it once
        with _lock:
            cached = _engines.get(key)
        if cached is not None:
            return cached
        if engine == "onnx":
            from tessera.pipelines.engines.ort_engine import OnnxEngine

            if weights is not None:
                msg = "a user checkpoint runs with --engine torch (ONNX files come from plugins)"
                raise EngineError(msg)
            try:
                entry = plugin.manifest.file(role, "onnx", size_variant)
            except PluginError:
                msg = (
                    f"plugin {plugin.id!r} ships no ONNX file for role {role!r}; "
                    "use --engine torch"
                )
                raise EngineError(msg, path=plugin.manifest_path) from None
            path = plugin.file_path(role, "onnx", entry.size_variant)
            made: Engine = OnnxEngine(path, device=device, threads=threads,
                                      label=f"{plugin.id}/{role}")
        else:
            from tessera.pipelines.engines.torch_engine import TorchEngine

            made = TorchEngine(plugin, role=role, device=device, size_variant=size_variant,
                               weights=weights)
        with _lock:
            _engines[key] = made
            _creating.pop(key, None)
        return made


def clear_engine_cache() -> None:
    """Forget every cached engine (their sessions close when no one holds them)."""
    with _lock:
        _engines.clear()


def engines_available() -> dict[str, Any]:
    """What can run models here, without importing torch: runtimes, versions, providers."""
    import importlib.metadata
    import importlib.util

    info: dict[str, Any] = {"onnxruntime": None, "torch": None}
    try:
        import onnxruntime as ort

        info["onnxruntime"] = {"version": ort.__version__,
                               "providers": list(ort.get_available_providers())}
    except ImportError:
        pass
    if importlib.util.find_spec("torch") is not None:
        try:
            info["torch"] = {"version": importlib.metadata.version("torch")}
        except importlib.metadata.PackageNotFoundError:
            info["torch"] = {"version": "unknown"}
    return info
