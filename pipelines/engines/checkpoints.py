"""Loading weights without ever unpickling arbitrary objects.

A ``.pth``/``.pt``/``.ckpt`` file is a pickle: loading it the classic way runs any code
its author put in it. Tessera loads safetensors files (pure tensor data), and
everything else only with ``torch.load(weights_only=True)``, whose restricted unpickler
accepts tensors, plain containers and numbers and rejects every other global *before*
calling it. A checkpoint that needs more is refused with ModelFileRefused and a remedy
(convert it to safetensors where it is trusted). There is no opt-out flag on purpose.

Checkpoints from training frameworks wrap the weights (``{"state_dict": ...}``,
``{"model": ...}``) and DataParallel prefixes keys with ``module.``; both are undone
here. Layout differences between code bases (timm vs Hugging Face, official repos) are
the plugin's ``convert_checkpoint`` hook's business: ``f(state_dict, *, role) ->
state_dict``, which must return a state dict already in the plugin's own layout
unchanged.
"""

from __future__ import annotations

import inspect
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tessera.pipelines.errors import CorruptFile, MissingDependency, ModelFileRefused, PluginError

if TYPE_CHECKING:  # pragma: no cover
    import torch

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "params")


def import_torch(purpose: str) -> Any:
    """``torch``, or MissingDependency naming the train extra."""
    try:
        import torch
    except ImportError as exc:
        raise MissingDependency("torch", "train", purpose) from exc
    return torch


def checkpoint_format(path: Path) -> str:
    """'safetensors', 'torch-zip' or 'torch-legacy' from the file's first bytes."""
    with path.open("rb") as fh:
        head = fh.read(16)
    if len(head) >= 10 and head[8:10] in (b"{\"", b"{}"):
        return "safetensors"  # u64 little-endian header length, then a JSON header
    if head[:4] == b"PK\x03\x04":
        return "torch-zip"
    if head[:1] == b"\x80":
        return "torch-legacy"  # a bare pickle stream (torch < 1.6 format, or pickle.dump)
    msg = "not a safetensors or torch checkpoint (unrecognised first bytes)"
    raise CorruptFile(msg, path=path)


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors by name from a safetensors file or a weights-only torch checkpoint (on CPU).

    ModelFileRefused when the checkpoint holds objects that need arbitrary unpickling;
    CorruptFile when it is damaged or holds no tensors.
    """
    path = Path(path)
    torch = import_torch("loading a torch checkpoint")
    if not path.is_file():
        msg = "checkpoint file not found"
        raise PluginError(msg, path=path)
    fmt = checkpoint_format(path)
    if fmt == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except (SafetensorError, OSError, ValueError) as exc:
            msg = f"damaged safetensors file ({exc})"
            raise CorruptFile(msg, path=path) from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=fmt == "torch-zip")
    except pickle.UnpicklingError as exc:
        detail = str(exc).split("\n\n")[-1].strip().splitlines()
        why = next((ln for ln in detail if "GLOBAL" in ln or "Unsupported" in ln), "")
        msg = (
            "this checkpoint stores Python objects that can only be loaded by running "
            f"code from the file ({why or 'arbitrary unpickling'}); Tessera refuses it. If you "
            "trust it, re-save only its tensors where it came from, e.g. "
            "`safetensors.torch.save_file(model.state_dict(), 'weights.safetensors')`"
        )
        raise ModelFileRefused(msg.replace("  ", " "), path=path) from exc
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        msg = f"damaged torch checkpoint ({str(exc).splitlines()[0][:200]})"
        raise CorruptFile(msg, path=path) from exc
    return _unwrap(obj, path, torch)


def _unwrap(obj: Any, path: Path, torch: Any) -> dict[str, Any]:
    for _ in range(3):  # {"state_dict": {"model": {...}}} at worst
        if not isinstance(obj, Mapping):
            break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        msg = f"checkpoint holds a {type(obj).__name__}, not a state dict of tensors"
        raise CorruptFile(msg, path=path)
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        msg = "checkpoint holds no tensors"
        raise CorruptFile(msg, path=path)
    if all(k.startswith("module.") for k in tensors):  # saved from DataParallel/DDP
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def convert_for_plugin(
    plugin: Any, state_dict: dict[str, Any], *, role: str = "model"
) -> dict[str, Any]:
    """Run the plugin's ``convert_checkpoint`` hook (if any) on a loaded state dict."""
    hook = plugin.hook("convert_checkpoint")
    if hook is None:
        return state_dict
    params = inspect.signature(hook).parameters
    takes_role = "role" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    converted = hook(state_dict, role=role) if takes_role else hook(state_dict)
    if not isinstance(converted, Mapping):
        msg = "convert_checkpoint must return a dict of tensors"
        raise PluginError(msg, path=plugin.manifest_path)
    return dict(converted)


def fit_state_dict(module: Any, state_dict: dict[str, Any], *, source: Path | str) -> None:
    """``module.load_state_dict(strict=True)`` with a message naming the mismatching keys."""
    result_missing: list[str] = []
    result_unexpected: list[str] = []
    own = module.state_dict()
    result_missing = [k for k in own if k not in state_dict]
    result_unexpected = [k for k in state_dict if k not in own]
    shape_errors = [
        f"{k} {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if result_missing or result_unexpected or shape_errors:
        parts = []
        if result_missing:
            parts.append(f"{len(result_missing)} missing (e.g. {result_missing[:3]})")
        if result_unexpected:
            parts.append(f"{len(result_unexpected)} unexpected (e.g. {result_unexpected[:3]})")
        if shape_errors:
            parts.append(f"shape mismatches (e.g. {shape_errors[:2]})")
        msg = (
            "checkpoint does not fit the model: " + "; ".join(parts)
            + " -- wrong architecture size, or a layout the plugin's convert_checkpoint "
            "hook does not map"
        )
        raise PluginError(msg, path=source)
    module.load_state_dict(state_dict, strict=True)
