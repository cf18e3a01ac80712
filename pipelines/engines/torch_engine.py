"""The torch engine: the plugin's own module, for parity checks, GPUs ORT lacks, and research.

The module comes from the plugin's model hook (or the role's ``build``), called as
``f(size_variant, **kwargs)`` with the role's ``[models.<role>] kwargs``; weights come
from the plugin's safetensors/pytorch file for that role (sha256-verified) or from a
user's checkpoint, loaded without unpickling (``checkpoints.load_state_dict``) and
mapped by the plugin's ``convert_checkpoint`` hook.

Thread safety: ``run`` holds a lock around the forward pass. torch already spreads
one batch over all its intra-op threads, so concurrent forwards on a CPU only
oversubscribe the cores, and a module's forward is not documented as re-entrant
(caches in attention or custom layers). Callers that want more throughput send bigger
batches, not more threads.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from tessera.pipelines.engines.checkpoints import (
    convert_for_plugin,
    fit_state_dict,
    import_torch,
    load_state_dict,
)
from tessera.pipelines.errors import EngineError, PluginError


def weights_entry(plugin: Any, role: str, size_variant: str | None) -> Any:
    """The manifest's torch weights file for ``role`` (safetensors preferred)."""
    for fmt in ("safetensors", "pytorch"):
        try:
            return plugin.manifest.file(role, fmt, size_variant)
        except PluginError:
            continue
    msg = f"plugin {plugin.id!r} ships no torch weights for role {role!r}"
    if size_variant:
        msg += f" and size {size_variant!r}"
    raise PluginError(msg + "; use the onnx engine, or pass a checkpoint", path=plugin.manifest_path)


def build_torch_model(
    plugin: Any,
    *,
    role: str = "model",
    size_variant: str | None = None,
    weights: Path | str | None = None,
    load_weights: bool = True,
) -> Any:
    """The plugin's torch module for ``role``, weights loaded, in eval mode, on the CPU.

    ``weights`` is a user checkpoint (any layout the plugin's convert_checkpoint maps);
    by default the plugin's own file for the role. ``load_weights=False`` gives the
    randomly initialised architecture (for tests and export of a new model).
    """
    import_torch(f"the torch engine for plugin {plugin.id!r}")
    spec = plugin.manifest.role_spec(role)
    entry = None
    if load_weights and weights is None:
        entry = weights_entry(plugin, role, size_variant)
    size = size_variant or (entry.size_variant if entry is not None else "demo")
    if spec.build is not None:
        build = plugin.resolve(spec.build, what=f"models.{role}.build")
    else:
        build = plugin.hook("model")
    if build is None:
        msg = f"plugin {plugin.id!r} has no model hook; the torch engine cannot build it"
        raise PluginError(msg, path=plugin.manifest_path)
    module = build(size, **spec.kwargs)
    if load_weights:
        if weights is not None:
            source: Path = Path(weights)
            state = convert_for_plugin(plugin, load_state_dict(source), role=role)
        else:
            source = plugin.file_path(role, entry.format, entry.size_variant)
            state = convert_for_plugin(plugin, load_state_dict(source), role=role)
        fit_state_dict(module, state, source=source)
    return module.eval()


class TorchEngine:
    """A torch module behind the Engine interface; numpy in, numpy out."""

    def __init__(
        self,
        plugin: Any,
        *,
        role: str = "model",
        device: str = "cpu",
        size_variant: str | None = None,
        weights: Path | str | None = None,
        module: Any = None,
    ) -> None:
        torch = import_torch(f"the torch engine for plugin {plugin.id!r}")
        from tessera.pipelines.engines.devices import torch_device

        self._torch = torch
        self.device = torch_device(device)
        spec = plugin.manifest.role_spec(role)
        self.input_names = list(spec.inputs)
        self.output_names = list(spec.outputs)
        t0 = time.perf_counter()
        if module is None:
            module = build_torch_model(plugin, role=role, size_variant=size_variant, weights=weights)
        self.module = module.eval().to(self.device)
        first = next(iter(self.module.parameters()), None)
        self._float_dtype = np.dtype("float32") if first is None else np.dtype(
            str(first.dtype).removeprefix("torch.").replace("bfloat16", "float32")
        )
        self._lock = threading.Lock()
        self.load_s = time.perf_counter() - t0
        self.description = (
            f"torch {torch.__version__} [{self.device}] threads={torch.get_num_threads()}"
        )

    def __repr__(self) -> str:
        return f"TorchEngine({self.description})"

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name for a batch of inputs (fed to forward in ``input_names`` order)."""
        torch = self._torch
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            msg = f"model inputs are {self.input_names}; missing {missing}"
            raise EngineError(msg)
        args = []
        for name in self.input_names:
            arr = np.ascontiguousarray(inputs[name])
            if arr.dtype.kind == "f" and arr.dtype != self._float_dtype:
                arr = arr.astype(self._float_dtype)
            args.append(torch.from_numpy(arr).to(self.device))
        with self._lock, torch.inference_mode():
            out = self.module(*args)
        return outputs_by_name(out, self.output_names)


def outputs_by_name(out: Any, names: list[str]) -> dict[str, np.ndarray]:
    """A forward's result (tensor, tuple in order, or dict) as numpy arrays by output name."""
    import torch

    if isinstance(out, torch.Tensor):
        values = [out]
    elif isinstance(out, dict):
        try:
            values = [out[n] for n in names]
        except KeyError as exc:
            msg = f"forward returned keys {sorted(out)}, the manifest names {names}"
            raise EngineError(msg) from exc
    else:
        values = list(out)
    if len(values) < len(names):
        msg = f"forward returned {len(values)} outputs, the manifest names {names}"
        raise EngineError(msg)
    return {
        name: v.detach().float().cpu().numpy() if v.is_floating_point() else v.detach().cpu().numpy()
        for name, v in zip(names, values, strict=False)
    }
