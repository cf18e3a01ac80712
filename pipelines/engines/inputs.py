"""Inputs for validating and benchmarking a model: the plugin's own, or random ones.

Random inputs follow the graph: a float input gets standard-normal values (what a
normalised image looks like), integer inputs zeros, boolean inputs False. Dimensions the
graph leaves open are filled from the manifest: the first one with the batch size,
the channel axis with the number of channels, the trailing ones with ``input.size_px``.
A plugin whose inputs mean something (SAM's point labels) supplies
``hooks.example_inputs(role, batch)`` instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}


def numpy_dtype(ort_type: str) -> np.dtype:
    """numpy dtype of an ONNX Runtime type string such as 'tensor(float)'."""
    return np.dtype(_ORT_TYPES.get(ort_type, np.float32))


def manifest_shape(manifest: Any, batch: int) -> list[int]:
    """[N, C, *size_px] from the manifest (the usual image/volume model input)."""
    return [batch, len(manifest.input.channels), *manifest.input.size_px]


def fill_shape(shape: list[int | None], manifest: Any, batch: int) -> list[int]:
    """Concrete shape for a graph input whose open dimensions are None."""
    guess = manifest_shape(manifest, batch)
    if len(shape) != len(guess):
        guess = [batch] + [manifest.input.size_px[-1]] * (len(shape) - 1)
    out = [batch if i == 0 and d is None else (d if d is not None else guess[i])
           for i, d in enumerate(shape)]
    return [int(v) for v in out]


def example_inputs(
    plugin: Any,
    batch: int,
    *,
    role: str = "model",
    specs: list[dict[str, Any]] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Inputs for ``batch`` items: ``hooks.example_inputs`` when the plugin has one.

    ``specs`` are the graph's inputs as [{"name", "shape", "type"}] (an ONNX engine's
    ``input_specs``); without them the role's input names get ``[N, C, *size_px]`` floats.
    """
    own = plugin.hook("example_inputs")
    if own is not None:
        return {k: np.asarray(v) for k, v in own(role, batch).items()}
    rng = np.random.default_rng(seed)
    manifest = plugin.manifest
    if specs is None:
        names = manifest.role_spec(role).inputs
        specs = [{"name": n, "shape": manifest_shape(manifest, batch), "type": "tensor(float)"}
                 for n in names]
    result: dict[str, np.ndarray] = {}
    for spec in specs:
        shape = fill_shape(list(spec["shape"]), manifest, batch)
        dtype = numpy_dtype(spec["type"])
        if np.issubdtype(dtype, np.floating):
            result[spec["name"]] = rng.standard_normal(shape).astype(dtype)
        else:
            result[spec["name"]] = np.zeros(shape, dtype=dtype)
    return result
