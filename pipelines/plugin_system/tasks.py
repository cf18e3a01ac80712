"""Default pre/post-processing per task kind, built from the manifest (numpy only).

A plugin's processing module (``manifest.hooks.processing``) may define any of
``preprocess``, ``postprocess`` and (segment-3d) ``predict_volume``; what it leaves out
falls back to the defaults here, so a plain classifier needs no Python at all.

Contracts (batch first; N = items in the batch, K = classes):

- tile-classify: ``preprocess(tiles: uint8 [N, H, W, C], manifest) -> {"input": float32
  [N, C, H, W]}``: ``* scale``, ``- mean``, ``/ std`` (per channel), NHWC -> NCHW.
  ``postprocess(outputs, manifest) -> float32 [N, K]`` class probabilities: softmax
  over axis 1 of ``outputs["logits"]``.
- segment-2d: same preprocess; ``postprocess -> float32 [N, K, H, W]`` probabilities.
- segment-3d: ``preprocess(patches: float32 [N, D, H, W] raw values, manifest) ->
  {"input": float32 [N, 1, D, H, W]}``: clip to ``value_window`` and map it to [0, 1]
  (HU for CT); ``postprocess -> float32 [N, K, D, H, W]`` probabilities.
- A single logit channel is read as a sigmoid: with two declared classes the result is
  ``[1 - p, p]`` (so K matches the manifest), otherwise ``p`` alone.

The input/output names are the role's (``[models.model]``, default ``input``/``logits``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tessera.pipelines.errors import PluginError
from tessera.pipelines.plugin_system.manifest import Manifest

HOOK_NAMES = ("preprocess", "postprocess", "predict_volume")


def _input_name(manifest: Manifest) -> str:
    return manifest.role_spec("model").inputs[0]


def _output_name(manifest: Manifest, outputs: dict[str, np.ndarray]) -> str:
    name = manifest.role_spec("model").outputs[0]
    if name not in outputs:
        msg = f"model output {name!r} missing (got {sorted(outputs)}); check [models.model] outputs"
        raise PluginError(msg)
    return name


def preprocess_tiles(tiles: np.ndarray, manifest: Manifest) -> dict[str, np.ndarray]:
    """uint8 RGB tiles [N, H, W, C] -> normalised float32 [N, C, H, W] under the input name.

    Extra channels beyond the manifest's (an alpha channel from OpenSlide) are dropped.
    """
    spec = manifest.input
    tiles = np.asarray(tiles)
    if tiles.ndim != 4:
        msg = f"tiles must be [N, H, W, C], got shape {tiles.shape}"
        raise ValueError(msg)
    n_channels = len(spec.channels)
    if tiles.shape[-1] < n_channels:
        msg = f"tiles have {tiles.shape[-1]} channels, the model needs {n_channels}"
        raise ValueError(msg)
    x = tiles[..., :n_channels].astype(np.float32)
    x *= np.float32(spec.scale)
    if spec.mean is not None:
        x -= np.asarray(spec.mean, dtype=np.float32)
    if spec.std is not None:
        x /= np.asarray(spec.std, dtype=np.float32)
    return {_input_name(manifest): np.ascontiguousarray(x.transpose(0, 3, 1, 2))}


def preprocess_volume(patches: np.ndarray, manifest: Manifest) -> dict[str, np.ndarray]:
    """Raw float patches [N, D, H, W] -> float32 [N, 1, D, H, W], value window mapped to [0, 1]."""
    patches = np.asarray(patches, dtype=np.float32)
    if patches.ndim != 4:
        msg = f"patches must be [N, D, H, W], got shape {patches.shape}"
        raise ValueError(msg)
    window = manifest.input.value_window
    if window is not None:
        lo, hi = float(window[0]), float(window[1])
        patches = (np.clip(patches, lo, hi) - np.float32(lo)) / np.float32(hi - lo)
    return {_input_name(manifest): np.ascontiguousarray(patches[:, None])}


def class_probabilities(logits: np.ndarray, n_classes: int) -> np.ndarray:
    """Softmax over axis 1 (stable), or a sigmoid for a single logit channel."""
    logits = np.asarray(logits, dtype=np.float32)
    if logits.ndim < 2:
        msg = f"logits must be [N, K, ...], got shape {logits.shape}"
        raise ValueError(msg)
    if logits.shape[1] == 1:
        p = 1.0 / (1.0 + np.exp(-logits))
        return np.concatenate([1.0 - p, p], axis=1) if n_classes == 2 else p
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32, copy=False)


def postprocess_probabilities(outputs: dict[str, np.ndarray], manifest: Manifest) -> np.ndarray:
    """Class probabilities [N, K, ...] from the model's logits output."""
    logits = outputs[_output_name(manifest, outputs)]
    return class_probabilities(logits, len(manifest.output.classes))


def _postprocess_classify(outputs: dict[str, np.ndarray], manifest: Manifest) -> np.ndarray:
    probs = postprocess_probabilities(outputs, manifest)
    if probs.ndim != 2:
        msg = f"tile-classify logits must be [N, K], got shape {probs.shape}"
        raise PluginError(msg)
    return probs


DEFAULTS: dict[str, dict[str, Callable[..., Any]]] = {
    "tile-classify": {"preprocess": preprocess_tiles, "postprocess": _postprocess_classify},
    "segment-2d": {"preprocess": preprocess_tiles, "postprocess": postprocess_probabilities},
    "segment-3d": {"preprocess": preprocess_volume, "postprocess": postprocess_probabilities},
}


@dataclass(frozen=True)
class Processing:
    """The processing functions a runner uses for one plugin (None: neither plugin nor default)."""

    preprocess: Callable[..., Any] | None
    postprocess: Callable[..., Any] | None
    predict_volume: Callable[..., Any] | None
    custom: frozenset[str]  # which of them the plugin supplied itself


def processing_function(plugin: Any, name: str) -> Callable[..., Any] | None:
    """The plugin's own ``name`` from its processing module, else the task kind's default.

    ``plugin`` is a ``Plugin``. Returns None when neither exists (e.g. ``predict_volume``,
    or any hook of a kind driven by its own runner).
    """
    if name not in HOOK_NAMES:
        msg = f"unknown processing function {name!r}; expected one of {HOOK_NAMES}"
        raise ValueError(msg)
    module = plugin.processing()
    own = getattr(module, name, None) if module is not None else None
    if own is not None:
        if not callable(own):
            msg = f"processing.{name} must be a function"
            raise PluginError(msg, path=plugin.manifest_path)
        return own
    return DEFAULTS.get(plugin.manifest.task, {}).get(name)


def resolve_processing(plugin: Any) -> Processing:
    """All processing functions of a plugin at once (imports its processing module)."""
    module = plugin.processing()
    funcs = {name: processing_function(plugin, name) for name in HOOK_NAMES}
    custom = frozenset(n for n in HOOK_NAMES if module is not None and hasattr(module, n))
    return Processing(**funcs, custom=custom)
